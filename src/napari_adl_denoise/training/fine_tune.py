"""Fine-tuning a model on the user's own clean images, held in memory (what the napari dock runs)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from ..inference import _layout
from ..methods import default_model_info
from ..models import DiscriminatorConfig
from ..weights import load_model, model_info, save_model, user_model_path
from .config import DataConfig, LossConfig, NoiseSpec, OptimConfig, PhaseConfig, TrainingConfig
from .engine import TrainProgress, train

__all__ = ["fine_tune"]

PATCH = {2: 64, 3: 32}
BATCH = {2: 8, 3: 4}
HOLDOUT = 0.2


def fine_tune(
    images: Sequence[npt.ArrayLike],
    output: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    channel_axis: int | None = None,
    spatial_dims: int | None = None,
    noise: Sequence[NoiseSpec] | None = None,
    steps: int = 500,
    lr: float = 1e-4,
    validation: Sequence[npt.ArrayLike] | None = None,
    device: str = "auto",
    seed: int = 0,
) -> Generator[TrainProgress, None, Path]:
    """Adapt a model to your data: a generator of :class:`TrainProgress`, returning the saved path.

    ``images`` are clean (high signal-to-noise) images of your modality; noise is simulated on
    random patches of them, as the bundled models were trained, with the model's own data terms
    (L1 and texture for ADL, MSE and lp for the adaptive CNN).
    The weights with the best validation PSNR, the starting ones included, are written to
    ``output`` (a ``.safetensors`` file with its model card) once the run ends; closing the
    generator stops the run and writes nothing. The images are never modified.

    Parameters
    ----------
    images : sequence of array_like
        Laid out as for :func:`napari_adl_denoise.denoise` (2D, RGB with ``channel_axis``, 3D,
        or stacks of them); all of one kind.
    output : str or path-like
        Where the fine-tuned model goes: a ``.safetensors`` path, or a plain name (no folder, no
        suffix) to save it among your models (:func:`~napari_adl_denoise.user_models_dir`), where
        :func:`~napari_adl_denoise.list_models` lists it and ``model=name`` finds it.
    model : str or path-like, optional
        The starting model: a name (see :func:`~napari_adl_denoise.list_models`) or a
        ``.safetensors`` path; by default the bundled model for the data.
    channel_axis, spatial_dims : int, optional
        As for :func:`napari_adl_denoise.denoise`.
    noise : sequence of NoiseSpec, optional
        The noise to simulate (0-255 scale of each image's range); by default the starting
        model's own training noise (its card), else Gaussian sigma in [0, 55].
    steps : int
        Training steps (batches of 8 patches of 64^2 in 2D, 4 of 32^3 in 3D).
    lr : float
        Adam's learning rate; small, so the model adapts rather than forgets.
    validation : sequence of array_like, optional
        Held-out images that choose the best weights. By default the last fifth of each image
        along its longest spatial axis is held out of training for this.
    device : str
        As for :func:`napari_adl_denoise.denoise`.
    seed : int
        Seeds patches and noise.

    Returns
    -------
    pathlib.Path
        The saved file (the generator's return value).

    Raises
    ------
    ValueError
        Bad images, an unsuitable model or output, or a non-positive ``steps`` or ``lr``.

    Examples
    --------
    >>> from napari_adl_denoise.training import fine_tune
    >>> run = fine_tune([volume], "my-mri", steps=300)  # doctest: +SKIP
    >>> for record in run:  # doctest: +SKIP
    ...     if record.validation:
    ...         print(record.step, record.validation["psnr"])
    >>> denoise(noisy_volume, model="my-mri")  # doctest: +SKIP
    """
    output = output_path(output)
    output.parent.mkdir(parents=True, exist_ok=True)  # the user models folder may not exist yet
    if steps < 1 or lr <= 0:
        raise ValueError(f"steps must be >= 1 and lr > 0, got steps={steps}, lr={lr}")
    train_arrays, sd, channels = _arrays(images, channel_axis, spatial_dims, "images")
    info = default_model_info(sd, channels, same_dims=True) if model is None else model_info(model)
    config = info.config
    if (config.spatial_dims, config.in_channels) != (sd, channels):
        raise ValueError(
            f"model {info.name!r} takes {config.spatial_dims}D data with {config.in_channels} "
            f"channel(s), but the images are {sd}D with {channels}"
        )
    if validation is None:
        train_arrays, val_arrays = zip(*(_hold_out(a, sd, channels) for a in train_arrays), strict=True)
    else:
        val_arrays, *layout = _arrays(validation, channel_axis, spatial_dims, "validation")
        if tuple(layout) != (sd, channels):
            raise ValueError("validation images must be laid out like the training images")
    if noise is None:
        noise = [NoiseSpec.model_validate(n) for n in info.card.get("noise", [])] or [NoiseSpec()]

    def names(arrays, label):
        return [f"{label} {i + 1} of shape {a.shape}" for i, a in enumerate(arrays)]

    with tempfile.TemporaryDirectory(prefix="adl-fine-tune-") as run_dir:
        run_config = TrainingConfig(
            name="fine-tune",
            description=f"{info.name} fine-tuned on {len(train_arrays)} image(s)",
            model=config,
            discriminator=DiscriminatorConfig(spatial_dims=sd, in_channels=channels),
            data=DataConfig(
                train=names(train_arrays, "image"),
                val=names(val_arrays, "validation image"),
                patch_shape=(PATCH[sd],) * sd,
                batch_size=BATCH[sd],
            ),
            noise=list(noise),
            optim=OptimConfig(lr=lr),
            loss=_loss(info.card),
            phases=PhaseConfig(denoiser_warmup=steps, discriminator_warmup=0, adversarial=0),
            validate_every=max(steps // 10, 1),
            checkpoint_every=steps,
            seed=seed,
            output=run_dir,
            init=str(info.path),
        )
        images_in = {"train": list(train_arrays), "val": list(val_arrays)}
        best = yield from train(run_config, device=device, images=images_in)
        tuned = load_model(best)
        card = {**tuned.card, "base_model": info.name}
        card["training_config"]["output"] = str(output.parent)
        save_model(tuned.model, output, card, dtype=torch.float16)
    return output


def output_path(output: str | os.PathLike) -> Path:
    """The file ``fine_tune`` writes for ``output``; ValueError (one line) if it cannot."""
    output = Path(output)
    if len(output.parts) == 1 and not output.suffix:
        return user_model_path(str(output))
    if output.suffix != ".safetensors":
        raise ValueError(f"output must be a .safetensors file or a plain model name, got {output.name!r}")
    if not output.parent.is_dir():
        raise ValueError(f"output folder does not exist: {output.parent}")
    return output


def _arrays(
    images: Sequence[npt.ArrayLike], channel_axis: int | None, spatial_dims: int | None, what: str
) -> tuple[list[np.ndarray], int, int]:
    """Arrays with colour last and no single-channel axis, and their common (spatial_dims, channels)."""
    if isinstance(images, np.ndarray) or not len(images):
        raise ValueError(f"{what} must be a non-empty list of arrays")
    arrays, layouts = [], set()
    for image in images:
        array = np.asarray(image)
        if array.dtype.kind not in "uif" or array.size == 0:
            raise ValueError(f"{what} must be non-empty numeric arrays, got {array.dtype} {array.shape}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"{what} contain NaN or infinite values")
        sd, channels, axis = _layout(array.shape, channel_axis, spatial_dims)
        if channels not in (1, 3):
            raise ValueError(f"fine-tuning takes gray or RGB images, got {channels} channels")
        if axis is not None:  # colour last, as in files; a single channel axis goes
            array = np.moveaxis(array, axis, -1) if channels == 3 else np.take(array, 0, axis=axis)
        arrays.append(array)
        layouts.add((sd, channels))
    if len(layouts) > 1:
        raise ValueError(f"{what} mix kinds of data ({sorted(layouts)}): fine-tune on one kind at a time")
    ((sd, channels),) = layouts
    return arrays, sd, channels


def _hold_out(array: np.ndarray, spatial_dims: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(training part, validation part): the last fifth along the longest spatial axis (views)."""
    first = array.ndim - (channels == 3) - spatial_dims
    axis = first + int(np.argmax(array.shape[first : first + spatial_dims]))
    size = array.shape[axis]
    held = max(round(size * HOLDOUT), 1)
    if size - held < 1:
        raise ValueError(f"image of shape {array.shape} is too small to hold out a validation part")
    cut = [slice(None)] * array.ndim
    cut[axis] = slice(None, size - held)
    rest = list(cut)
    rest[axis] = slice(size - held, None)
    return array[tuple(cut)], array[tuple(rest)]


def _loss(card: dict) -> LossConfig:
    """The starting model's own data terms (its card's recipe; L1 + ATW when it has none),
    without the histogram, adversarial and content terms (IDGAN's feature network may be a file
    of the machine that trained it): a short run adapts, it does not re-train."""
    trained = card.get("training_config", {}).get("loss", {})
    off = {"histogram": 0, "adversarial": 0, "adversarial_ramp": 0, "content": 0, "feature_net": None}
    try:
        return LossConfig.model_validate({**trained, **off})
    except ValueError:  # a card from another version: the default terms
        return LossConfig(histogram=0, adversarial=0)
