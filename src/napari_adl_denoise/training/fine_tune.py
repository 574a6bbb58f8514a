"""Fine-tuning a model on the user's own data, held in memory (what the napari dock runs):
clean images with simulated noise, noisy/clean pairs, or noisy images alone (self-supervised)."""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from .._device import resolve_device
from ..inference import layout
from ..methods import default_model_info
from ..models import DiscriminatorConfig
from ..weights import load_model, model_info, save_model, user_model_path
from .config import DataConfig, LossConfig, NoiseSpec, OptimConfig, PhaseConfig, TrainingConfig
from .engine import STOP, TrainProgress, train
from .self_supervised import neighbor2neighbor_loss

__all__ = ["MODES", "PRESETS", "Preset", "estimate_seconds", "fine_tune", "resumable"]

HOLDOUT = 0.2
VALIDATION_OVERHEAD = 1.1
"""Training time per step, validations included, over the time of a bare training step."""
MODES = ("clean", "pairs", "noisy")
"""What the images are: clean (noise is simulated on them), noisy/clean pairs, or noisy only."""


@dataclass(frozen=True)
class Preset:
    """How much a fine-tune trains: patches, batch, steps and a time cap, per dimensionality."""

    name: str
    device: str
    patch: dict[int, int]
    batch: dict[int, int]
    steps: dict[int, int]
    minutes: dict[int, float]
    """The run stops (keeping the best weights so far) after this long."""


PRESETS = {
    # Sized to finish in 3 minutes for a 512x512 image and 5 for a 64^3 volume on 2 CPU cores
    # (benchmarks/bench_fine_tune.py); the time cap holds on slower machines. It runs on a GPU
    # when there is one ("auto"), where it just ends sooner.
    "cpu": Preset("cpu", "auto", {2: 64, 3: 32}, {2: 8, 3: 4}, {2: 600, 3: 300}, {2: 2.5, 3: 4.5}),
    "gpu": Preset("gpu", "auto", {2: 128, 3: 64}, {2: 16, 3: 4}, {2: 4000, 3: 2000}, {2: 15.0, 3: 30.0}),
}


def fine_tune(
    images: Sequence[npt.ArrayLike],
    output: str | os.PathLike,
    *,
    mode: Literal["clean", "pairs", "noisy"] = "clean",
    targets: Sequence[npt.ArrayLike] | None = None,
    model: str | os.PathLike | None = None,
    channel_axis: int | None = None,
    spatial_dims: int | None = None,
    noise: Sequence[NoiseSpec] | None = None,
    preset: Literal["cpu", "gpu"] = "cpu",
    steps: int | None = None,
    max_minutes: float | None = None,
    lr: float = 1e-4,
    validation: Sequence[npt.ArrayLike] | None = None,
    device: str | None = None,
    adversarial: bool = False,
    seed: int = 0,
    resume: bool = False,
) -> Generator[TrainProgress, str | None, Path]:
    """Adapt a model to your data: a generator of :class:`TrainProgress`, returning the saved path.

    Three modes, by what you have:

    - ``"clean"``: clean (high signal-to-noise) images of your modality; noise is simulated on
      random patches of them, as the bundled models were trained, with the model's own data
      terms (L1 and texture for ADL, MSE and lp for the adaptive CNN).
    - ``"pairs"``: noisy images and, in ``targets``, their clean references in the same order and
      of the same shapes (low/high dose, short/long exposure, single/averaged frames;
      registration is yours). The references are mapped onto the images' intensities by the
      straight line that fits them best, so a dim low-dose image may pair with a bright one.
    - ``"noisy"``: noisy images and nothing else, learnt self-supervised by Neighbor2Neighbor
      (:mod:`~napari_adl_denoise.training.self_supervised`). It removes noise that is
      independent from pixel to pixel (Gaussian, Poisson, Poisson-Gaussian); noise correlated
      between pixels (stripes, structured or filtered noise) looks like signal to it and stays.
      Its validation ``score`` needs no clean data: the PSNR of the denoised half-size image
      against its noisy neighbour, lower than the true PSNR but ranking models alike.

    The weights with the best validation score (``record.validation["score"]``: PSNR against
    the clean references, or the neighbour score), the starting ones included, are written to
    ``output`` (a ``.safetensors`` file with its model card) when the run ends, when the time cap
    passes, or when ``run.send("stop")`` asks it to stop; closing the generator stops the run
    and writes nothing. The images are never modified.

    Parameters
    ----------
    images : sequence of array_like
        Laid out as for :func:`napari_adl_denoise.denoise` (2D, RGB with ``channel_axis``, 3D,
        or stacks of them); all of one kind.
    output : str or path-like
        Where the fine-tuned model goes: a ``.safetensors`` path, or a plain name (no folder, no
        suffix) to save it among your models (:func:`~napari_adl_denoise.user_models_dir`), where
        :func:`~napari_adl_denoise.list_models` lists it and ``model=name`` finds it.
    mode : {"clean", "pairs", "noisy"}
        What ``images`` are (above).
    targets : sequence of array_like, optional
        With ``mode="pairs"``: the clean reference of each image, same order and shape.
    model : str or path-like, optional
        The starting model: a name (see :func:`~napari_adl_denoise.list_models`) or a
        ``.safetensors`` path; by default the bundled model for the data.
    channel_axis, spatial_dims : int, optional
        As for :func:`napari_adl_denoise.denoise`.
    noise : sequence of NoiseSpec, optional
        ``mode="clean"``: the noise to simulate (0-255 scale of each image's range); by default
        the starting model's own training noise (its card), else Gaussian sigma in [0, 55].
    preset : {"cpu", "gpu"}
        Patch size, batch, steps, time cap and device (:data:`PRESETS`): ``"cpu"`` finishes in
        about 3 minutes for a 2D image and 5 for a volume on 2 cores; ``"gpu"`` trains longer
        on bigger batches on a CUDA or MPS device.
    steps : int, optional
        Training steps, instead of the preset's (and then without its time cap).
    max_minutes : float, optional
        Stop after this many minutes of training (the best weights are saved), instead of the
        preset's cap.
    lr : float
        Adam's learning rate; small, so the model adapts rather than forgets.
    validation : sequence of array_like, optional
        Held-out images (``"clean"`` or ``"noisy"`` mode) that choose the best weights. By
        default the last fifth of each image along its longest spatial axis (of both images of a
        pair) is held out of training for this.
    device : str, optional
        As for :func:`napari_adl_denoise.denoise`; by default the preset's.
    adversarial : bool
        ADL's adversarial phase (``"clean"`` and ``"pairs"`` modes): a discriminator learns to
        tell the clean images from the model's output for the first tenth of the steps, then
        both train in turn, the model with ADL's histogram (0.05) and adversarial (0.01) terms
        added to its data terms. Off by default: it did not pay in the fine-tuning benchmark
        (README, "Fine-tuning on your own data").
    seed : int
        Seeds patches and noise.
    resume : bool
        Continue a run that was killed or failed (a crash, a power cut, a full disk). A run
        keeps its state beside ``output``, in a hidden ``.NAME.fine-tune`` folder,
        checkpointed at every validation; give the same images and arguments. The folder goes
        when the run ends, stops or is closed; a run that does not resume replaces it.

    Returns
    -------
    pathlib.Path
        The saved file (the generator's return value).

    Raises
    ------
    ValueError
        Bad images or targets, an unknown mode or preset, an unsuitable model or output, a
        non-positive ``steps``, ``max_minutes`` or ``lr``, or a GPU preset without a GPU.

    Examples
    --------
    >>> from napari_adl_denoise.training import fine_tune
    >>> run = fine_tune([noisy_stack], "my-microscope", mode="noisy")  # doctest: +SKIP
    >>> for record in run:  # doctest: +SKIP
    ...     if record.validation:
    ...         print(record.step, record.validation["score"])
    >>> denoise(noisy_stack, model="my-microscope")  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    recipe = PRESETS[preset]
    if (steps is not None and steps < 1) or lr <= 0 or (max_minutes is not None and max_minutes <= 0):
        raise ValueError(
            f"steps and max_minutes must be positive and lr > 0, got {steps}, {max_minutes}, {lr}"
        )
    if mode == "pairs" and targets is None:
        raise ValueError("mode='pairs' needs targets: the clean reference of each image")
    if mode != "pairs" and targets is not None:
        raise ValueError(f"targets go with mode='pairs', not mode={mode!r}")
    if adversarial and mode == "noisy":
        raise ValueError(
            "adversarial fine-tuning needs clean images (mode 'clean' or 'pairs') for its discriminator"
        )
    if mode == "pairs" and validation is not None:
        raise ValueError(
            "mode='pairs' holds out part of each pair for validation; validation= is for the other modes"
        )
    output = output_path(output)
    output.parent.mkdir(parents=True, exist_ok=True)  # the user models folder may not exist yet
    run_dir = _state_dir(output)
    if resume and not (run_dir / "checkpoint.pt").is_file():
        raise ValueError(f"no killed fine-tune of {output.name} to resume (nothing in {run_dir})")
    device = resolve_device(device or recipe.device)
    if preset == "gpu" and device.type == "cpu":
        raise ValueError("preset 'gpu' runs on a CUDA or MPS device, not the CPU: use preset 'cpu'")
    train_arrays, sd, channels = _arrays(images, channel_axis, spatial_dims, "images")
    info = default_model_info(sd, channels, same_dims=True) if model is None else model_info(model)
    config = info.config
    if (config.spatial_dims, config.in_channels) != (sd, channels):
        raise ValueError(
            f"model {info.name!r} takes {config.spatial_dims}D data with {config.in_channels} "
            f"channel(s), but the images are {sd}D with {channels}"
        )
    target_arrays: list[np.ndarray] = []
    if mode == "pairs":
        target_arrays, *layout = _arrays(targets, channel_axis, spatial_dims, "targets")
        if len(target_arrays) != len(train_arrays):
            raise ValueError(
                f"{len(train_arrays)} images but {len(target_arrays)} targets: give one target per image"
            )
        for i, (a, b) in enumerate(zip(train_arrays, target_arrays, strict=True)):
            if a.shape != b.shape:
                raise ValueError(
                    f"pair {i + 1}: image of shape {a.shape} and target of shape {b.shape} differ"
                )
    val_targets: list[np.ndarray] = []
    if validation is None:
        train_arrays, val_arrays = _split_all(train_arrays, sd, channels)
        if mode == "pairs":
            target_arrays, val_targets = _split_all(target_arrays, sd, channels)
    else:
        val_arrays, *layout = _arrays(validation, channel_axis, spatial_dims, "validation")
        if tuple(layout) != (sd, channels):
            raise ValueError("validation images must be laid out like the training images")
    if noise is None:
        noise = [NoiseSpec.model_validate(n) for n in info.card.get("noise", [])] or [NoiseSpec()]
    # the preset's time cap goes with its steps; steps of your own run to their end
    deadline = 60 * max_minutes if max_minutes else math.inf if steps else 60 * recipe.minutes[sd]
    steps = steps or recipe.steps[sd]

    def names(arrays, label):
        return [f"{label} {i + 1} of shape {a.shape}" for i, a in enumerate(arrays)]

    what = {
        "clean": "clean image(s)",
        "pairs": "noisy/clean pair(s)",
        "noisy": "noisy image(s), self-supervised",
    }
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    try:
        run_config = TrainingConfig(
            name="fine-tune",
            description=f"{info.name} fine-tuned on {len(train_arrays)} {what[mode]}",
            model=config,
            discriminator=DiscriminatorConfig(spatial_dims=sd, in_channels=channels),
            data=DataConfig(
                train=names(train_arrays, "image"),
                val=names(val_arrays, "validation image"),
                mode=mode,
                train_targets=names(target_arrays, "target"),
                val_targets=names(val_targets, "validation target"),
                patch_shape=(recipe.patch[sd],) * sd,
                batch_size=recipe.batch[sd],
            ),
            noise=list(noise) if mode == "clean" else [NoiseSpec()],
            optim=OptimConfig(lr=lr),
            loss=_loss(info.card, adversarial),
            phases=_phases(steps, adversarial),
            validate_every=max(steps // 20, 1),
            checkpoint_every=max(steps // 20, 1),
            seed=seed,
            output=str(run_dir),
            init=str(info.path),
        )
        arrays = {
            "train": train_arrays,
            "val": val_arrays,
            "train_targets": target_arrays,
            "val_targets": val_targets,
        }
        run = train(run_config, resume=resume, device=str(device), images=arrays)
        command = None
        try:
            while True:
                record = run.send(command)
                command = yield record
                if record.elapsed > deadline:
                    command = STOP
        except StopIteration as stop:
            best = stop.value
        finally:
            run.close()
        tuned = load_model(best)
        card = {**tuned.card, "base_model": info.name, "fine_tune": {"mode": mode, "preset": preset}}
        card["training_config"]["output"] = str(output.parent)
        save_model(tuned.model, output, card, dtype=torch.float16)
    except GeneratorExit:  # closed: cancelled, nothing to resume
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    # a failed or interrupted run keeps its state, to resume once the cause is fixed
    shutil.rmtree(run_dir, ignore_errors=True)
    return output


def estimate_seconds(
    model: str | os.PathLike | None = None,
    *,
    spatial_dims: int = 2,
    channels: int = 1,
    mode: Literal["clean", "pairs", "noisy"] = "clean",
    preset: Literal["cpu", "gpu"] = "cpu",
    steps: int | None = None,
    max_minutes: float | None = None,
    device: str | None = None,
) -> float:
    """How long :func:`fine_tune` will train on this machine, in seconds: two of its training
    steps timed on random patches (after a warm-up one; a few seconds on a CPU), times the
    steps, plus validation, capped by the time limit. Arguments as for :func:`fine_tune`.

    Raises
    ------
    ValueError
        As :func:`fine_tune` for the same choices.
    """
    if mode not in MODES or preset not in PRESETS:
        raise ValueError(f"mode must be one of {', '.join(MODES)} and preset one of {', '.join(PRESETS)}")
    recipe = PRESETS[preset]
    info = default_model_info(spatial_dims, channels, same_dims=True) if model is None else model_info(model)
    resolved = resolve_device(device or recipe.device)
    net = load_model(info.path).model.to(resolved).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-6)
    shape = (recipe.batch[spatial_dims], channels, *(recipe.patch[spatial_dims],) * spatial_dims)
    noisy = torch.rand(shape, device=resolved)

    def step() -> None:
        if mode == "noisy":
            loss, _ = neighbor2neighbor_loss(net, noisy)
        else:
            loss = sum(torch.mean(torch.abs(o)) for o in net(noisy, multiscale=True))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(2):
        step()
    if resolved.type == "cuda":
        torch.cuda.synchronize(resolved)
    per_step = (time.perf_counter() - start) / 2
    cap = 60 * max_minutes if max_minutes else math.inf if steps else 60 * recipe.minutes[spatial_dims]
    return min(per_step * (steps or recipe.steps[spatial_dims]) * VALIDATION_OVERHEAD, cap)


def _split_all(arrays: list[np.ndarray], sd: int, channels: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    parts = [_hold_out(a, sd, channels) for a in arrays]
    return [p[0] for p in parts], [p[1] for p in parts]


def resumable(output: str | os.PathLike) -> bool:
    """Whether a fine-tune to ``output`` was killed or failed and kept its state to resume.

    Parameters
    ----------
    output : str or path-like
        As for :func:`fine_tune`: a ``.safetensors`` path or a plain model name.

    Returns
    -------
    bool
        True when ``fine_tune(..., output, resume=True)`` can continue that run; False also for
        an output that ``fine_tune`` would refuse.
    """
    try:
        return (_state_dir(output_path(output)) / "checkpoint.pt").is_file()
    except ValueError:
        return False


def _state_dir(output: Path) -> Path:
    """Where a run to ``output`` keeps its resume state: hidden, beside the output."""
    return output.parent / f".{output.stem}.fine-tune"


def output_path(output: str | os.PathLike) -> Path:
    """The file ``fine_tune`` writes for ``output``; ValueError (one line) if it cannot."""
    output = Path(output)
    if len(output.parts) == 1 and not output.suffix:
        return user_model_path(str(output))
    if output.suffix != ".safetensors":
        raise ValueError(f"output must be a .safetensors file or a plain model name, got {output.name!r}")
    if not output.parent.is_dir():
        raise ValueError(f"output folder does not exist: {output.parent}")
    if not os.access(output.parent, os.W_OK):
        raise ValueError(f"cannot write to the output folder {output.parent}")
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
        sd, channels, axis = layout(array.shape, channel_axis, spatial_dims)
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


def _phases(steps: int, adversarial: bool) -> PhaseConfig:
    if not adversarial:
        return PhaseConfig(denoiser_warmup=steps, discriminator_warmup=0, adversarial=0)
    warm_up = steps // 10
    return PhaseConfig(denoiser_warmup=0, discriminator_warmup=warm_up, adversarial=steps - warm_up)


def _loss(card: dict, adversarial: bool = False) -> LossConfig:
    """The starting model's own data terms (its card's recipe; L1 + ATW when it has none),
    without the histogram, adversarial and content terms (IDGAN's feature network may be a file
    of the machine that trained it): a short run adapts, it does not re-train. ``adversarial``
    adds ADL's histogram and adversarial terms at the engine's default weights."""
    trained = card.get("training_config", {}).get("loss", {})
    off = {"histogram": 0, "adversarial": 0, "adversarial_ramp": 0, "content": 0, "feature_net": None}
    if adversarial:
        defaults = LossConfig()
        off |= {"histogram": defaults.histogram, "adversarial": defaults.adversarial}
    try:
        return LossConfig.model_validate({**trained, **off})
    except ValueError:  # a card from another version: the default terms
        return LossConfig.model_validate(off)
