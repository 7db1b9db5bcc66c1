"""Model presets: the layer recipes of the 3DGAN generator and discriminator, by name."""

from __future__ import annotations

from dataclasses import dataclass

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class ConvSpec:
    """One generator convolution: ZeroPadding3D(padding) -> Conv3D(valid) -> activation [-> BN].

    Attributes:
        filters: Output channels.
        kernel: Kernel size (x, y, z).
        padding: Zero padding added before the convolution on each side (x, y, z).
        batch_norm: Follow the activation with BatchNormalization.
        initializer: Keras kernel initializer name (he_uniform: the published generator's
            hidden convolutions; its output convolution is glorot_normal).
    """

    filters: int
    kernel: Triple
    padding: Triple = (0, 0, 0)
    batch_norm: bool = True
    initializer: str = "he_uniform"


@dataclass(frozen=True)
class GeneratorSpec:
    """Generator: Dense -> reshape(seed_shape) -> UpSampling3D(upsampling) -> convs -> output conv.

    Attributes:
        latent_dim: Input width: [E/scale, angle] followed by latent_dim - 2 normal values.
        seed_shape: (x, y, z, channels) the Dense output is reshaped to.
        upsampling: UpSampling3D factors.
        convs: Hidden convolutions, each followed by ReLU (and BN if asked).
        output: Final single-channel convolution followed by ReLU (showers are >= 0).
        bn_epsilon: BatchNormalization epsilon (3DGAN uses 1e-6).
    """

    latent_dim: int
    seed_shape: tuple[int, int, int, int]
    upsampling: Triple
    convs: tuple[ConvSpec, ...]
    output: ConvSpec
    bn_epsilon: float = 1e-6


@dataclass(frozen=True)
class DiscBlockSpec:
    """Discriminator block: [ZeroPadding3D] -> Conv3D(valid) -> LeakyReLU -> [BN] -> Dropout."""

    filters: int
    kernel: Triple
    padding: Triple = (0, 0, 0)
    batch_norm: bool = True


@dataclass(frozen=True)
class DiscriminatorSpec:
    """Discriminator trunk: Conv3D(same) -> LeakyReLU -> Dropout, blocks, AveragePooling3D, Flatten.

    The four heads (real/fake, energy, measured angle, ECAL sum) are fixed by the model code.
    Convolutions keep Keras' glorot_uniform kernels, as published; bn_epsilon is the
    published BatchNormalization epsilon (Keras' default is 1e-3).
    """

    first_filters: int
    first_kernel: Triple
    blocks: tuple[DiscBlockSpec, ...]
    pool: Triple = (2, 2, 2)
    leaky_alpha: float = 0.3
    dropout: float = 0.2
    bn_epsilon: float = 1e-6


@dataclass(frozen=True)
class ModelPreset:
    """A named model: image shape, generator and discriminator recipes, power transform."""

    name: str
    image_shape: Triple
    generator: GeneratorSpec
    discriminator: DiscriminatorSpec
    power: float = 0.85
    description: str = ""


# The published variable-angle 3DGAN (conventions.md), about 1.37 M generator parameters.
FULL = ModelPreset(
    name="full",
    image_shape=(51, 51, 25),
    generator=GeneratorSpec(
        latent_dim=256,
        seed_shape=(9, 9, 8, 8),
        upsampling=(6, 6, 6),
        convs=(
            ConvSpec(8, (6, 6, 8)),
            ConvSpec(6, (4, 4, 6), padding=(2, 2, 1)),
            ConvSpec(6, (4, 4, 6), padding=(2, 2, 1)),
            ConvSpec(6, (4, 4, 6), padding=(2, 2, 1)),
            ConvSpec(6, (3, 3, 5), padding=(1, 1, 0)),
            ConvSpec(6, (3, 3, 3), padding=(1, 1, 0), batch_norm=False),
        ),
        output=ConvSpec(1, (2, 2, 2), batch_norm=False, initializer="glorot_normal"),
    ),
    discriminator=DiscriminatorSpec(
        first_filters=16,
        first_kernel=(5, 6, 6),
        blocks=(
            DiscBlockSpec(8, (5, 6, 6), padding=(0, 0, 1)),
            DiscBlockSpec(8, (5, 6, 6), padding=(0, 0, 1)),
            DiscBlockSpec(8, (5, 6, 6)),
        ),
    ),
    description="published variable-angle 3DGAN, 51x51x25; for accelerators",
)

# Same family, cut to what 2 CPU cores train in minutes (the embedded demo): few channels at
# full resolution, where every extra channel costs a Conv3D pass over 65k cells per event.
SMALL = ModelPreset(
    name="small",
    image_shape=(51, 51, 25),
    generator=GeneratorSpec(
        latent_dim=256,
        seed_shape=(9, 9, 5, 4),
        upsampling=(6, 6, 5),
        convs=(
            ConvSpec(4, (2, 2, 3), padding=(0, 0, 1)),
            ConvSpec(4, (2, 2, 1), batch_norm=False),
        ),
        output=ConvSpec(1, (2, 2, 1), batch_norm=False, initializer="glorot_normal"),
    ),
    discriminator=DiscriminatorSpec(
        first_filters=2,
        first_kernel=(3, 3, 3),
        blocks=(DiscBlockSpec(4, (2, 2, 2)),),
        pool=(2, 2, 2),
    ),
    description="reduced 3DGAN on 51x51x25 for CPUs and the embedded demo",
)

# Smallest model on the 51x51x25 grid: for unit tests of the training machinery.
TINY = ModelPreset(
    name="tiny",
    image_shape=(51, 51, 25),
    generator=GeneratorSpec(
        latent_dim=16,
        seed_shape=(9, 9, 5, 2),
        upsampling=(6, 6, 5),
        convs=(ConvSpec(2, (2, 2, 1)),),
        output=ConvSpec(1, (3, 3, 1), batch_norm=False, initializer="glorot_normal"),
    ),
    discriminator=DiscriminatorSpec(
        first_filters=2,
        first_kernel=(3, 3, 3),
        blocks=(DiscBlockSpec(2, (3, 3, 3)),),
        pool=(4, 4, 4),
    ),
    description="minimal model for tests; not a physics model",
)

# The first (fixed-angle) 3DGAN geometry: 25x25x25 cells, theta = pi/2 for every event.
FIXED_ANGLE = ModelPreset(
    name="fixed_angle",
    image_shape=(25, 25, 25),
    generator=GeneratorSpec(
        latent_dim=256,
        seed_shape=(5, 5, 5, 8),
        upsampling=(6, 6, 6),
        convs=(
            ConvSpec(8, (6, 6, 6)),
            ConvSpec(6, (5, 5, 5), padding=(2, 2, 2)),
            ConvSpec(6, (5, 5, 5), padding=(2, 2, 2)),
            ConvSpec(6, (3, 3, 3), padding=(1, 1, 1)),
            ConvSpec(6, (2, 2, 2), padding=(1, 1, 1), batch_norm=False),
        ),
        output=ConvSpec(1, (2, 2, 2), batch_norm=False, initializer="glorot_normal"),
    ),
    discriminator=DiscriminatorSpec(
        first_filters=16,
        first_kernel=(5, 5, 5),
        blocks=(
            DiscBlockSpec(8, (5, 5, 5), padding=(1, 1, 1)),
            DiscBlockSpec(8, (5, 5, 5), padding=(1, 1, 1)),
            DiscBlockSpec(8, (5, 5, 5)),
        ),
    ),
    description="fixed-angle 3DGAN geometry, 25x25x25 (EleEscan files)",
)

PRESETS: dict[str, ModelPreset] = {p.name: p for p in (FULL, SMALL, TINY, FIXED_ANGLE)}


def get_preset(name: str) -> ModelPreset:
    """Look a preset up by name.

    Raises:
        ValueError: naming the valid presets when `name` is unknown.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


def generator_output_shape(spec: GeneratorSpec) -> Triple:
    """Spatial output shape of a generator recipe, computed without TensorFlow."""
    shape = [s * u for s, u in zip(spec.seed_shape[:3], spec.upsampling)]
    for conv in (*spec.convs, spec.output):
        shape = [s + 2 * p - k + 1 for s, p, k in zip(shape, conv.padding, conv.kernel)]
    return tuple(shape)  # type: ignore[return-value]
