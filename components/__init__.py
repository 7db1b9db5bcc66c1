"""Thin KFP component wrappers over data_prep, trainer and eval, built for chosen container images."""

from __future__ import annotations

from dataclasses import dataclass

from kfp import dsl

from components import multinode, stages, sweep


@dataclass(frozen=True)
class StageComponents:
    """The components of the DAG (five stages, the gate's publish and skip steps), the multi-node
    training launcher and the sweep's fan-in."""

    prepare_raw_data: object
    convert_to_tfrecords: object
    train_gan: object
    evaluate_gan: object
    collect_benchmark: object
    publish_model: object
    skip_publish: object
    train_gan_jobset: object
    summarize_sweep: object


def build_components(image: str, train_image: str | None = None) -> StageComponents:
    """Wraps each stage function as a lightweight component running in `image`.

    The image already holds caloforge and kfp (infra/docker), so the compiled YAML installs
    nothing at run time: clusters without internet access run it as is.

    Args:
        image: image of every stage (the CPU image: Beam, evaluation, the JobSet launcher).
        train_image: image of the training step (its accelerator's image); default `image`.
    """

    def wrap(func, base_image=image):
        return dsl.component(base_image=base_image, install_kfp_package=False)(func)

    return StageComponents(
        prepare_raw_data=wrap(stages.prepare_raw_data),
        convert_to_tfrecords=wrap(stages.convert_to_tfrecords),
        train_gan=wrap(stages.train_gan, train_image or image),
        evaluate_gan=wrap(stages.evaluate_gan),
        collect_benchmark=wrap(stages.collect_benchmark),
        publish_model=wrap(stages.publish_model),
        skip_publish=wrap(stages.skip_publish),
        train_gan_jobset=wrap(multinode.train_gan_jobset),
        summarize_sweep=wrap(sweep.summarize_sweep),
    )
