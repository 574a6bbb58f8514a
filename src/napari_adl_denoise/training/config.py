"""The training configuration: one pydantic document per run, saved with the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..models import AnyDiscriminatorConfig, DenoiserConfig, DiscriminatorConfig, EfficientUnetConfig
from ..noise import NoiseKind

__all__ = [
    "DataConfig",
    "LossConfig",
    "NoiseSpec",
    "OptimConfig",
    "PhaseConfig",
    "TrainingConfig",
    "load_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoiseSpec(_Strict):
    """One noise model drawn during training.

    ``sigma`` and ``nu`` are drawn uniformly in their ranges (0-255 scale), ``peak`` (Poisson
    photons at the brightest pixel; one number or a range) log-uniformly, since photon counts
    span orders of magnitude. Two options make the noise look like real data's, where a blind
    model trained on uniform noise fails (a noise-free background talks it out of denoising the
    object): with probability ``varying`` the noise is scaled by a smooth random map (between a
    random floor and 1), and with probability ``background`` part of the patch (below a smoothed
    intensity threshold, or a random smooth region) becomes exact zeros carrying no noise, as in
    skull-stripped, masked or zero-filled scans. With probability ``shared`` a colour patch's
    noise is partly common to its channels: a share of its variance drawn uniformly in [0, 1]
    is one noise field for all three (a gray image stored as RGB has all of it; demosaiced and
    compressed photographs some); gray patches ignore it.
    """

    kind: NoiseKind = "gaussian"
    sigma: tuple[float, float] = (0.0, 55.0)
    nu: tuple[float, float] = (0.0, 0.0)
    peak: tuple[float, float] = (100.0, 100.0)
    amount: float = Field(0.05, ge=0, le=1)
    weight: float = Field(1.0, gt=0)
    varying: float = Field(0.0, ge=0, le=1)
    background: float = Field(0.0, ge=0, le=1)
    shared: float = Field(0.0, ge=0, le=1)

    @field_validator("peak", mode="before")
    @classmethod
    def _peak_range(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _ranges(self) -> NoiseSpec:
        for name in ("sigma", "nu"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} range must satisfy 0 <= low <= high, got {(low, high)}")
        if not 0 < self.peak[0] <= self.peak[1]:
            raise ValueError(f"peak range must satisfy 0 < low <= high, got {self.peak}")
        return self


class DataConfig(_Strict):
    """Where the images come from and how patches are drawn.

    ``mode`` says what the images are. ``clean``: clean images, on which ``noise`` is simulated.
    ``pairs``: ``train`` and ``val`` are noisy images and ``train_targets`` and ``val_targets``
    their clean references, in the same order and of the same shapes (low/high dose,
    short/long exposure, single/averaged frames; registration is the user's job). ``noisy``:
    noisy images and nothing else, learnt self-supervised (``loss.self_supervised``).
    """

    train: list[str] = Field(min_length=1, description="files or glob patterns (TIFF, NIfTI, PNG, NPY)")
    val: list[str] = Field(min_length=1, description="held-out files or globs for validation")
    mode: Literal["clean", "pairs", "noisy"] = "clean"
    train_targets: list[str] = Field(default_factory=list, description="with mode pairs: clean references")
    val_targets: list[str] = Field(default_factory=list, description="with mode pairs: clean references")
    patch_shape: tuple[int, ...] = (64, 64)
    batch_size: int = Field(8, ge=1)
    augment: bool = True
    contrast: float = Field(
        0.0,
        ge=0,
        le=1,
        description="with augment: the fraction of patches whose channels are each stretched (gain 1-4) "
        "about a random level and clipped to the image's range: saturated colours, clipped highlights",
    )
    posterize: float = Field(
        0.0,
        ge=0,
        le=1,
        description="with augment: the fraction of patches made piecewise constant (smoothed, then "
        "2-8 levels within the patch's range): phantoms, label maps, flat-shaded regions",
    )
    val_patches: int = Field(32, ge=1)
    pool: int = Field(96, ge=1, description="a guided network's noisy crops kept with their guide's channels")


class OptimConfig(_Strict):
    """Adam for both networks; ReduceLROnPlateau on validation PSNR in 'max' mode.
    ``adversarial_lr``, when set, becomes the denoiser's learning rate as the adversarial phase
    starts (the adaptive CNN's paper: 1e-5 there)."""

    lr: float = Field(1e-4, gt=0)
    discriminator_lr: float = Field(1e-4, gt=0)
    adversarial_lr: float | None = Field(None, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(5, ge=0)
    min_lr: float = Field(1e-6, ge=0)


class PhaseConfig(_Strict):
    """Steps of each phase, run in this order.

    ``clean_to_clean`` (the adaptive CNN's first phase) trains the denoiser to reconstruct clean
    patches from themselves; the network adapts itself to it (dropout, bypassed layers; see
    :meth:`~napari_adl_denoise.models.Denoiser.set_training_phase`). Its validation scores are
    logged but never pick the saved weights. ``discriminator_steps``: discriminator updates on
    each batch of the adversarial phase (that paper shows it the data twice).
    """

    clean_to_clean: int = Field(0, ge=0)
    denoiser_warmup: int = Field(1000, ge=0)
    discriminator_warmup: int = Field(200, ge=0)
    adversarial: int = Field(1000, ge=0)
    discriminator_steps: int = Field(1, ge=1, le=8)

    @property
    def total(self) -> int:
        return self.clean_to_clean + self.denoiser_warmup + self.discriminator_warmup + self.adversarial

    @property
    def adversarial_start(self) -> int:
        return self.total - self.adversarial

    def phase_at(self, step: int) -> str:
        if step < self.clean_to_clean:
            return "clean"
        if step < self.clean_to_clean + self.denoiser_warmup:
            return "denoiser"
        if step < self.adversarial_start:
            return "discriminator"
        return "adversarial"


class LossConfig(_Strict):
    """Loss weights.

    The paper sets the L1, texture and histogram weights to 1 for its own histogram scale and
    gives no adversarial weight. Our soft histogram is a bin density (1 per bin when flat), on
    which weight 1 dominates L1 and stalls training (measured on a tiny 3D run: 18.3 dB after 60
    steps against 21.1 dB with 0.05 and 21.3 dB without the term), so the default is 0.05.
    The adversarial weight 0.01 keeps the hinge term from dominating the L1 term.

    ``mse`` is the adaptive CNN's data term; ``lp`` weighs the network's own weight penalty
    (:meth:`~napari_adl_denoise.models.Denoiser.regulariser`) outside the clean-to-clean phase;
    ``stage`` weighs the network's own intermediate objective
    (:meth:`~napari_adl_denoise.models.Denoiser.stage_loss`: the noise-attention network's
    stage-I noise MSE); ``adversarial_ramp`` (s) scales the adversarial weight by
    ``1 + s * t / T`` over the adversarial phase's ``T`` steps (that paper's eq. 7, s = 0.99).
    ``mse`` is also IDResNet's loss.

    ``gan`` is the adversarial loss's form: ADL's per-pixel ``"hinge"``, or the original GAN's
    ``"log"`` loss (IDGAN's eq. 2 and 6: ``-log D(x) - log(1 - D(G(y)))`` for the
    discriminator, ``-log D(G(y))`` for the denoiser). ``content`` weighs IDGAN's content loss
    (eq. 7), the mean squared distance between the feature maps of ``feature_net`` (a VGG19
    weights file, or a denoiser model whose encoder substitutes for it; see
    :func:`~napari_adl_denoise.training.load_feature_network`) of the denoised and the clean
    image, in every phase but clean-to-clean.
    """

    l1: float = Field(1.0, ge=0)
    mse: float = Field(0.0, ge=0)
    atw: float = Field(1.0, ge=0)
    histogram: float = Field(0.05, ge=0)
    adversarial: float = Field(0.01, ge=0)
    adversarial_ramp: float = Field(0.0, ge=0)
    lp: float = Field(0.0, ge=0)
    stage: float = Field(0.0, ge=0)
    content: float = Field(0.0, ge=0)
    feature_net: str | None = None
    gan: Literal["hinge", "log"] = "hinge"
    self_supervised: Literal["neighbor2neighbor", "blind_spot"] = "neighbor2neighbor"
    """The loss of ``data.mode: noisy`` (it replaces every other term there; see
    :mod:`napari_adl_denoise.training.self_supervised`)."""
    gamma: float = Field(2.0, ge=0)
    """Neighbor2Neighbor's regulariser weight."""
    atw_levels: int = Field(4, ge=1, le=8)
    histogram_bins: int = Field(64, ge=4, le=1024)

    @model_validator(mode="after")
    def _feature_net_for_content(self) -> LossConfig:
        if self.content and not self.feature_net:
            raise ValueError("loss.content needs loss.feature_net (a VGG19 file or a substitute model)")
        return self


class TrainingConfig(_Strict):
    """A complete, reproducible training run."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    model: DenoiserConfig = EfficientUnetConfig()
    discriminator: AnyDiscriminatorConfig = DiscriminatorConfig()
    data: DataConfig
    noise: list[NoiseSpec] = Field(default_factory=lambda: [NoiseSpec()], min_length=1)
    optim: OptimConfig = OptimConfig()
    phases: PhaseConfig = PhaseConfig()
    loss: LossConfig = LossConfig()
    validate_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    seed: int = 0
    output: str = "runs/{name}"
    init: str | None = None
    """Start the denoiser from these weights (a bundled model name or a ``.safetensors`` path),
    e.g. to fine-tune on your own data. A 2D model can start a 3D one (see
    :func:`~napari_adl_denoise.training.inflate_weights`). Ignored when resuming a checkpoint."""
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported); ignored on CPU."""
    weights_dtype: Literal["float32", "float16"] = "float16"
    keep: Literal["best", "last"] = "best"
    """Which validated weights the run's model file holds: the best by validation PSNR, or the
    latest (for a loss that trades PSNR for something else, like IDGAN's detail loss; the
    learning rates then stay as set, since the plateau schedule follows PSNR)."""

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        sd = self.model.spatial_dims
        if len(self.data.patch_shape) != sd:
            raise ValueError(
                f"data.patch_shape needs {sd} sizes for a {sd}D model, got {self.data.patch_shape}"
            )
        if any(p < 16 or p % 8 for p in self.data.patch_shape):
            raise ValueError(
                f"data.patch_shape sizes must be multiples of 8 and >= 16, got {self.data.patch_shape}"
            )
        if (self.discriminator.spatial_dims, self.discriminator.in_channels) != (sd, self.model.in_channels):
            raise ValueError("discriminator.spatial_dims and in_channels must match the model's")
        if self.phases.total < 1:
            raise ValueError("phases must add up to at least one step")
        if getattr(self.model, "detach_estimate", False) and not self.loss.stage:
            raise ValueError(
                "loss.stage must be > 0 for a noise_attention model: nothing else trains its first stage"
            )
        data = self.data
        if (data.mode == "pairs") != bool(data.train_targets or data.val_targets):
            raise ValueError("data.train_targets and val_targets go with data.mode pairs, and it needs them")
        if data.mode == "pairs" and not (data.train_targets and data.val_targets):
            raise ValueError("data.mode pairs needs both train_targets and val_targets")
        if data.mode != "clean" and (data.contrast or data.posterize):
            raise ValueError(
                f"data.contrast and data.posterize change clean images: not with data.mode {data.mode}"
            )
        if data.mode == "noisy" and (self.phases.adversarial or self.phases.discriminator_warmup):
            raise ValueError("data.mode noisy has no clean images for a discriminator: no adversarial phases")
        if self.phases.denoiser_warmup + self.phases.adversarial < 1:
            raise ValueError(
                "phases need denoiser_warmup or adversarial steps: they choose the saved weights"
            )
        return self

    @property
    def output_dir(self) -> Path:
        return Path(self.output.format(name=self.name))


def load_config(path: str | Path) -> TrainingConfig:
    """Read a YAML or JSON training config (one-line ValueError if invalid)."""
    import yaml
    from pydantic import ValidationError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    try:
        raw = (
            yaml.safe_load(path.read_text())
            if path.suffix in (".yaml", ".yml")
            else json.loads(path.read_text())
        )
        return TrainingConfig.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "config"
        raise ValueError(f"{path}: {where}: {error['msg']}") from None
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
