"""What the report draws: the Monte Carlo halves, each generator's sample and results, side data.

Everything here is small: per-event feature arrays (ShowerFeatures, tens of values per event),
summed projections, the discriminator's outputs on a subsample and the training log. The report
never sees a shower.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eval.discriminator_view import DiscriminatorOutputs
from eval.features import ShowerFeatures
from eval.projections import ProjectionSums
from eval.training_log import SnapshotTable, TrainingLog

REFERENCE_STYLE = {"color": "black", "linestyle": "-"}
INDEPENDENT_STYLE = {"color": "tab:blue", "linestyle": "--"}
GENERATOR_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")


@dataclass
class GeneratorView:
    """One generator as the report shows it.

    Attributes:
        label: Name in legends and tables.
        features: Features of its showers (made for Monte Carlo half B's conditions).
        results: ``eval.evaluate.judge`` output: ``generated`` and ``noise_floor`` comparisons,
            ``null``, ``verdict``, ``counts``.
        projections: Summed x-y and y-z projections of its showers.
        discriminator: Its own training run's discriminator on subsamples, keyed "reference",
            "independent", "generated"; None when the run left no discriminator.
        discriminator_note: Why there is no discriminator, or which checkpoint it came from.
        training: Losses per step of its training run.
        training_note: Why there is no training log.
        snapshots: Sampling-fraction error per snapshot, when snapshots were compared.
        source: Where the generator came from (its folder).
    """

    label: str
    features: ShowerFeatures
    results: dict
    projections: ProjectionSums | None = None
    discriminator: dict[str, DiscriminatorOutputs] | None = None
    discriminator_note: str = ""
    training: TrainingLog | None = None
    training_note: str = ""
    snapshots: SnapshotTable | None = None
    source: str = ""


@dataclass
class Sample:
    """One drawn sample: its key, legend label, line style and features."""

    key: str
    label: str
    style: dict
    features: ShowerFeatures
    projections: ProjectionSums | None = None


@dataclass
class ReportInputs:
    """Everything the figures read.

    Attributes:
        reference: Monte Carlo half A, the reference of every comparison.
        independent: Monte Carlo half B (the noise floor's sample; its conditions were given to
            every generator).
        generators: One view per generator, in the order given.
        reference_projections, independent_projections: Summed projections of A and B.
        min_events_per_bin: Bins with fewer events were not compared (EvalConfig).
    """

    reference: ShowerFeatures
    independent: ShowerFeatures
    generators: list[GeneratorView]
    reference_projections: ProjectionSums | None = None
    independent_projections: ProjectionSums | None = None
    min_events_per_bin: int = 5
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.generators:
            raise ValueError("a report needs at least one generator")

    @property
    def noise_floor(self) -> dict:
        """Monte Carlo A vs B: the same for every generator (one floor)."""
        return self.generators[0].results["noise_floor"]

    def mc_samples(self) -> list[Sample]:
        return [
            Sample("reference", "Monte Carlo A (reference)", REFERENCE_STYLE, self.reference, self.reference_projections),
            Sample("independent", "Monte Carlo B (noise floor)", INDEPENDENT_STYLE, self.independent,
                   self.independent_projections),
        ]

    def generator_samples(self) -> list[Sample]:
        return [
            Sample(f"generated:{i}", g.label, {"color": GENERATOR_COLOURS[i % len(GENERATOR_COLOURS)], "linestyle": "-"},
                   g.features, g.projections)
            for i, g in enumerate(self.generators)
        ]

    def samples(self) -> list[Sample]:
        """Reference, independent Monte Carlo, then every generator: the draw order."""
        return self.mc_samples() + self.generator_samples()
