"""Thin KFP component wrappers over data_prep, trainer and eval, built for a chosen container image."""

from __future__ import annotations

from dataclasses import dataclass

from kfp import dsl

from components import stages


@dataclass(frozen=True)
class StageComponents:
    """The five components of the DAG, all built on one image."""

    prepare_raw_data: object
    convert_to_tfrecords: object
    train_gan: object
    evaluate_gan: object
    collect_benchmark: object


def build_components(image: str) -> StageComponents:
    """Wraps each stage function as a lightweight component running in `image`.

    The image already holds caloforge and kfp (infra/docker), so the compiled YAML installs
    nothing at run time: clusters without internet access run it as is.
    """

    def wrap(func):
        return dsl.component(base_image=image, install_kfp_package=False)(func)

    return StageComponents(
        prepare_raw_data=wrap(stages.prepare_raw_data),
        convert_to_tfrecords=wrap(stages.convert_to_tfrecords),
        train_gan=wrap(stages.train_gan),
        evaluate_gan=wrap(stages.evaluate_gan),
        collect_benchmark=wrap(stages.collect_benchmark),
    )
