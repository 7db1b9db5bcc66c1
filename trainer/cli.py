"""`caloforge train`: flags generated from TrainConfig; TensorFlow loads only after the flags parse.

Kept apart from trainer.train (which imports TensorFlow at the top) so that --help and flag
errors answer at once instead of after TensorFlow's ~20 s start-up.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

from data_prep.config_cli import ConfigArgumentParser, add_verbose_flag, build_config_parser, parse_config
from data_prep.console import configure_console, import_quietly
from trainer.config import TrainConfig

DESCRIPTION = "Train 3DGAN from a converted dataset (manifest.json); one flag per TrainConfig field."


def build_parser() -> ConfigArgumentParser:
    """Flags generated from TrainConfig's fields, one flag per field (--field-name)."""
    return build_config_parser(TrainConfig, prog="caloforge train", description=DESCRIPTION)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: parse flags into a TrainConfig, train, print the summary as JSON."""
    parser = build_parser()
    add_verbose_flag(parser)
    config, args = parse_config(parser, TrainConfig, argv)
    configure_console(args.verbose)
    import_quietly("tensorflow", args.verbose)  # only once the flags are known to be good
    from trainer.train import train

    result = train(config)
    print(json.dumps(result.to_dict(), sort_keys=True))
    return 0
