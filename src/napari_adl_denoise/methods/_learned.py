"""What every learned method shares: the bundled default model, the plan of a job (model, tile,
memory), and the tiled runner with batching, 2.5D for volumes and out-of-memory recovery.

A learned family is one module that calls :func:`register_learned` with its network ``kind``
and its default models; any :class:`~napari_adl_denoise.models.Denoiser` runs here unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import os
import warnings
from collections.abc import Callable, Generator, Mapping

import numpy as np
import torch

from .._device import autocast, resolve_device
from .._tiling import axis_starts, iter_tiles, round_up
from ..models import Denoiser
from ..weights import LoadedModel, ModelInfo, list_models, load_model, model_info
from ._registry import MethodContext, get_method, list_methods, method_for_kind, register_method

__all__ = [
    "ENSEMBLE_PASSES",
    "NoModelError",
    "Plan",
    "as_loaded_model",
    "default_method",
    "default_model_info",
    "plan_denoise",
    "register_learned",
]

log = logging.getLogger(__name__)

MIN_TILE = 16
# Largest default tile edge by device and dimensionality. On the CPU, measured by
# benchmarks/bench_denoise.py (benchmarks/results-cpu.md): 2D 512^2 whole is fastest, and in 3D
# batched 32^3 tiles are almost as fast as the whole volume at a quarter of its memory (bundled
# adl-3d-gray, 128^3: 7.0 s and 504 MB with 32^3 tiles, 17 s with 64^3, 6.9 s and 2.0 GB
# whole). GPUs prefer large tiles; OOM halves them.
DEFAULT_TILE_EDGE = {"cpu": {2: 512, 3: 32}, "mps": {2: 1024, 3: 64}, "cuda": {2: 1024, 3: 128}}
# On the CPU, small tiles run in batches of about this many voxels. PyTorch's choice of its fast
# oneDNN convolution is tuned for 2D and sends a single small 3D tile to a slow path; a batch
# of more than one takes the fast one. adl-3d-gray, 128^3 in channels-last 32^3 tiles on 2
# cores: 16.0 s one at a time, 7.3 s in twos, 7.0 s in threes, 8.1 s in fours, 9.8 s in 16s.
CPU_BATCH_VOXELS = 3 * 32**3
# On the CPU, oneDNN convolves channels-last tensors much faster (2 cores, bundled models: 512^2
# gray 0.67 s -> 0.41 s; 128^3 in 32^3 tiles 11.0 s -> 8.2 s, in fours). Not measured on GPUs.
_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}
ENSEMBLE_PASSES = (1, 2, 4, 8)
"""Allowed ``ensemble`` values: how many flipped or rotated copies of each tile the network
denoises, their results turned back and averaged (geometric self-ensemble). Measured on the
held-out gray images with adl-2d-gray-real (2 cores, 2026-12-02), against one pass: 2 passes
+0.06 dB at Poisson peak 100, 8 passes +0.10 dB there and +0.09 to +0.11 dB at Gaussian sigma
15-50, at 8x the time; a volume over three slicing directions gains only +0.04 dB from 8."""


class NoModelError(LookupError):
    """No model of the method fits the data and none was given."""


def register_learned(
    name: str,
    description: str,
    *,
    kind: str,
    default_models: Mapping[tuple[int, int], str],
    options: tuple[str, ...] = (),
    noise_map: Callable[..., Generator] | None = None,
) -> None:
    """Register a learned method running networks of config ``kind`` through the tiled runner.

    ``default_models`` maps (spatial_dims, channels) of the data to the bundled model used when
    none is given; a 2D model listed for 3D data denoises volumes over their three slicing
    directions. ``options``: keywords of ``denoise(**options)`` handed to the network's
    :meth:`~napari_adl_denoise.models.Denoiser.set_options`; every learned method also takes
    ``ensemble`` (:data:`ENSEMBLE_PASSES`; default :func:`default_passes`: 2 on 2D gray
    images, 1 on colour images and volumes). ``noise_map``: the method's own noise estimate
    (:attr:`~napari_adl_denoise.methods.Method.noise_map`).
    """
    register_method(
        name,
        description,
        learned=True,
        model_kind=kind,
        default_models=default_models,
        options=("ensemble", *options),
        noise_map=noise_map,
    )(lambda ctx: LearnedRunner(ctx, name))


def default_method(spatial_dims: int, channels: int) -> str:
    """ "adl" when a bundled model fits this kind of data, else "nlm" (the best classical default)."""
    try:
        default_model_info(spatial_dims, channels)
    except NoModelError:
        return "nlm"
    return "adl"


def default_model_info(
    spatial_dims: int, channels: int, *, method: str = "adl", same_dims: bool = False
) -> ModelInfo:
    """The method's bundled model for this kind of data (RGB for 3 channels, else gray),
    unloaded: its ``default_models`` choice, else any bundled network of its kind and the data's
    dimensions that is not another method's default (IDGAN never falls back to IDResNet's
    weights). With ``same_dims`` (fine-tuning), a network of the data's own dimensions only,
    not a guided one (``adl-3d-gray`` for volumes)."""
    chosen = get_method(method)
    wanted = 3 if channels == 3 else 1
    others = {n for m in list_methods() if m != method for n in get_method(m).default_models.values()}
    bundled = {
        m.name: m
        for m in list_models(user=False)
        if m.config.kind == chosen.model_kind and m.name not in others - set(chosen.default_models.values())
    }
    preferred = bundled.get(chosen.default_models.get((spatial_dims, wanted), ""))
    if preferred is not None and not (same_dims and not _plain(preferred, spatial_dims)):
        return preferred
    for m in bundled.values():
        if _plain(m, spatial_dims) and m.config.in_channels == wanted:
            return m
    kind = f"{spatial_dims}D {'RGB' if wanted == 3 else 'grayscale'}"
    raise NoModelError(
        f"no {method!r} model for {kind} data is installed; give a .safetensors weights file "
        "(model= or --model; see `adl-denoise models`) or choose another method"
    )


def _plain(model: ModelInfo, spatial_dims: int) -> bool:
    """Of the data's dimensions and no guided network (what fine-tuning starts from)."""
    return model.config.spatial_dims == spatial_dims and not getattr(model.config, "guide", None)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a learned job will run, known before it starts (for the Denoise dock and the CLI)."""

    model: ModelInfo
    tile_shape: tuple[int, ...]
    """The largest tile (of a 2D slice when ``planes``)."""
    memory_bytes: int
    """Approximate peak of one tile's forward pass."""
    planes: bool
    """A 2D model over the three slicing directions of a volume, averaged (:func:`plane_weights`)."""

    def describe(self) -> str:
        """One line: memory, tile and model, e.g. for a status label."""
        tiles = " x ".join(map(str, self.tile_shape))
        how = ", 2D slices in 3 directions" if self.planes else ""
        gib = self.memory_bytes / 2**30
        memory = f"{gib:.1f} GiB" if gib >= 1 else f"{max(self.memory_bytes / 2**20, 1):.0f} MiB"
        return f"~{memory} per tile of {tiles} ({self.model.name}, {self.model.config.summary}{how})"


def plan_denoise(
    shape: tuple[int, ...],
    spatial_dims: int,
    channels: int,
    *,
    method: str = "adl",
    model: str | os.PathLike | None = None,
    device: str = "auto",
    tile_shape: int | tuple[int, ...] | None = None,
    overlap: float = 0.25,
) -> Plan:
    """The model, tile and memory of a learned denoising job on data of spatial ``shape``.

    Reads only the model's metadata. Raises ValueError when the model does not fit the data or
    the method (a 3D model for 2D denoising, other channels, another family) and
    :class:`NoModelError` when no model is given and the method has none bundled for the data.
    """
    info = default_model_info(spatial_dims, channels, method=method) if model is None else model_info(model)
    config = info.config
    _check_fits(info.name, config, spatial_dims, channels, method)
    planes = config.spatial_dims < spatial_dims
    spatial = tuple(shape[-spatial_dims:])
    # A volume through a 2D model: each direction's slices; the largest slice sets the memory.
    views = [(a, spatial[:a] + spatial[a + 1 :]) for a in range(len(spatial))]
    if not planes:
        views = [(None, spatial)]
    resolved = resolve_device(device)
    tiles = [
        _tile_shape(
            tile_shape if a is None else _slice_tile(tile_shape, a),
            tuple(round_up(s) for s in view),
            resolved,
            overlap,
        )
        for a, view in views
    ]
    tile = max(tiles, key=math.prod)
    memory = config.memory_bytes(tile)
    guide = getattr(config, "guide", None)
    if guide is not None:  # its guide's slices run first, on their own tiles
        memory = max(
            memory, plan_denoise(shape, spatial_dims, channels, method=method, model=guide).memory_bytes
        )
    return Plan(info, tile, memory, planes)


def as_loaded_model(model: object, spatial_dims: int, channels: int, method: str = "adl") -> LoadedModel:
    """Accept ``None`` (the method's bundled default), a name or path, a LoadedModel or a
    network (:class:`~napari_adl_denoise.models.Denoiser`)."""
    if model is None:
        loaded = load_model(default_model_info(spatial_dims, channels, method=method).path)
    # The caller's network is copied: the runner switches it to eval mode, another device and
    # channels-last, which would surprise them (safetensors refuses to save a channels-last one).
    elif isinstance(model, LoadedModel):
        loaded = dataclasses.replace(model, model=copy.deepcopy(model.model))
    elif isinstance(model, Denoiser):
        loaded = LoadedModel("custom", copy.deepcopy(model), model.config)
    elif isinstance(model, str | os.PathLike):
        loaded = load_model(model)
    else:
        raise ValueError(f"model must be a name, a path or a network, got {type(model).__name__}")
    _check_fits(loaded.name, loaded.config, spatial_dims, channels, method)
    return loaded


def _check_fits(name: str, config, spatial_dims: int, channels: int, method: str) -> None:
    """One-line ValueError unless the method can run the model on such data (a 2D model can do
    volumes)."""
    if config.kind != get_method(method).model_kind:
        owner = method_for_kind(config.kind, name)
        hint = f"; denoise with method {owner.name!r}" if owner else ""
        raise ValueError(f"model {name!r} is an {config.kind} network, not one of method {method!r}{hint}")
    if config.spatial_dims > spatial_dims:
        raise ValueError(
            f"model {name!r} is a {config.spatial_dims}D model but the data is denoised in "
            f"{spatial_dims}D; denoise it in {config.spatial_dims}D or choose another model"
        )
    if config.in_channels not in (channels, 1) or config.out_channels != config.in_channels:
        raise ValueError(f"model {name!r} takes {config.in_channels} channel(s) but the image has {channels}")


def _tile_shape(
    requested: int | tuple[int, ...] | None,
    padded: tuple[int, ...],
    device: torch.device,
    overlap: float,
) -> tuple[int, ...]:
    """The tile shape to use: the caller's (rounded up to a multiple of 8), or by default the
    smallest tiles that cover each axis with as few tiles as the default edge needs (overlap
    costs (1 + overlap)^3 in 3D, so tiles are balanced rather than fixed-size)."""
    sd = len(padded)
    if requested is None:
        edge = DEFAULT_TILE_EDGE[device.type][sd]
        requested = tuple(_balanced(p, edge, overlap) for p in padded)
    elif isinstance(requested, int):
        requested = (requested,) * sd
    if len(requested) != sd or any(int(t) < 1 for t in requested):
        raise ValueError(f"tile_shape must be a positive int or {sd} positive ints, got {requested}")
    return tuple(min(max(MIN_TILE, round_up(int(t))), p) for t, p in zip(requested, padded, strict=True))


def _slice_tile(tile: int | tuple[int, ...] | None, axis: int) -> int | tuple[int, ...] | None:
    """A volume's tile request for the slices across ``axis``: a 3D tile loses that axis."""
    if isinstance(tile, tuple | list) and len(tile) == 3:
        return tuple(t for a, t in enumerate(tile) if a != axis)
    return tile


def _balanced(size: int, edge: int, overlap: float) -> int:
    """The smallest tile that covers ``size`` with as many tiles as tiles of ``edge`` would need."""
    if size <= edge:
        return size
    n = len(axis_starts(size, edge, overlap))
    return min(edge, round_up(math.ceil(size / (n - (n - 1) * overlap))))


class LearnedRunner:
    """Denoises items tile by tile with one model on one device, shrinking tiles on OOM."""

    def __init__(self, ctx: MethodContext, method: str) -> None:
        if not 0 <= ctx.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {ctx.overlap}")
        self.ctx = ctx
        self.device = resolve_device(ctx.device)
        self.loaded = as_loaded_model(ctx.model, ctx.spatial_dims, ctx.channels, method)
        self.requested_tile = ctx.tile_shape
        options = dict(ctx.options)
        passes = int(options.pop("ensemble", None) or default_passes(ctx.spatial_dims, ctx.channels))
        self.symmetries = symmetries(self.loaded.config.spatial_dims, passes)
        if options:  # checked before any tile runs
            self.loaded.model.set_options(**options)
        self.model = self._place(self.loaded.model.eval())
        # A guided 3D network refines its 2D guide's view of the volume in three directions.
        guide = getattr(self.loaded.config, "guide", None)
        self.guide = None
        if guide is not None:
            guide_ctx = dataclasses.replace(ctx, model=guide, tile_shape=None, options={"ensemble": 1})
            self.guide = LearnedRunner(guide_ctx, method)
            if self.guide.loaded.config.spatial_dims != 2:
                raise ValueError(f"model {self.loaded.name!r} needs a 2D guide, but {guide!r} is not one")

    def _memory_format(self) -> torch.memory_format:
        if self.device.type == "cpu":
            return _CHANNELS_LAST[self.loaded.config.spatial_dims]
        return torch.contiguous_format

    def _place(self, model: Denoiser) -> Denoiser:
        return model.to(self.device, memory_format=self._memory_format())

    def __call__(
        self, item: np.ndarray, window: Window | None = None
    ) -> Generator[tuple[int, int], None, np.ndarray]:
        """Denoise one item of shape ``(channels, *spatial)``, or with a ``window`` the part
        ``[window.lo, window.hi)`` of an image of which ``item`` is a block."""
        sd = item.ndim - 1
        window = window or Window.whole(item.shape[1:])
        if sd > self.loaded.config.spatial_dims:
            return (yield from self._planes(item, window))
        if self.guide is not None:
            return (yield from self._guided(item, window))
        return (yield from self._denoise(item, window))

    def _guided(self, volume: np.ndarray, window: Window) -> Generator[tuple[int, int], None, np.ndarray]:
        """The guide's three directions over the volume (:meth:`directions`; out of core a
        guided network gives way to its guide), then this network on the volume and those four
        channels."""
        guide = yield from _scaled(self.guide.directions(volume), 0, 3)
        return (yield from _scaled(self._denoise(np.concatenate([volume, guide]), window), 3, 4))

    def directions(
        self, volume: np.ndarray, window: Window | None = None
    ) -> Generator[tuple[int, int], None, np.ndarray]:
        """A gray volume ``(1, *spatial)`` through this 2D model as the guide of a 3D network
        (``EfficientUnetConfig.guide``): ``(4, *size)``, the
        plane-weighted mean (:func:`plane_weights`, or the job's own) and the three slicing
        directions' results, over the window."""
        window = window or Window.whole(volume.shape[1:])
        planes = yield from self._planes(volume, window, separate=True)
        weights = self.ctx.plane_weights or plane_weights(window.shape)
        mean = sum(w * p for w, p in zip(weights, planes, strict=True))
        return np.concatenate([mean, *planes])

    def _planes(
        self, volume: np.ndarray, window: Window, separate: bool = False
    ) -> Generator[tuple[int, int], None, np.ndarray]:
        """A volume through a 2D model: all slices along each axis in turn (batched, so a thin
        axis costs little), the three results averaged with :func:`plane_weights`, or with
        ``separate`` returned one by one, ``(3, channels, *size)``."""
        axes = range(1, volume.ndim)
        out = np.zeros(((len(axes),) if separate else ()) + (volume.shape[0], *window.size), dtype=np.float32)
        weights = (1.0,) * len(axes) if separate else self.ctx.plane_weights or plane_weights(window.shape)
        requested = self.requested_tile
        for k, axis in enumerate(axes):
            # Each direction plans its own tiles (a 3D tile_shape gives each its two sizes); an
            # out-of-memory retry shrinks only the direction it happened in. Only the window's
            # slices along the axis are needed; each direction adds into the one result.
            self.requested_tile = _slice_tile(requested, axis - 1)
            first = window.lo[axis - 1] - window.start[axis - 1]
            slices = volume[(slice(None),) * axis + (slice(first, first + window.size[axis - 1]),)]
            steps = self._denoise(
                np.moveaxis(slices, axis, 1),
                window.without(axis - 1),
                np.moveaxis(out[k] if separate else out, axis, 1),
                scale=weights[k],
            )
            try:
                while True:
                    done, total = next(steps)
                    yield k * total + done, len(axes) * total
            except StopIteration:
                pass
            finally:
                steps.close()
        self.requested_tile = requested
        return out

    def _denoise(
        self, item: np.ndarray, window: Window, out: np.ndarray | None = None, scale: float = 1.0
    ) -> Generator[tuple[int, int], None, np.ndarray]:
        """Denoise ``item`` of shape ``(channels, *spatial)``, or ``(channels, n, *spatial)``: a
        stack of ``n`` images that share tiles and batches (the slices of a volume); the
        result, times ``scale``, covers the window, added into ``out`` if given."""
        sd = self.loaded.config.spatial_dims
        self._padded = tuple(round_up(s) for s in window.shape)
        tile = self._first_tile = _tile_shape(
            self.requested_tile, self._padded, self.device, self.ctx.overlap
        )
        channels = self.loaded.config.out_channels if self.guide is not None else item.shape[0]
        shape = (channels, *item.shape[1:-sd], *window.size)
        # On the CPU the tiles add straight into ``out``; a GPU may run out of memory half way
        # and start again, so its tiles fill a buffer of their own.
        into = out if out is not None and self.device.type == "cpu" else np.zeros(shape, dtype=np.float32)
        while True:
            try:
                yield from self._run_tiles(item, tile, window, into, scale)
                break
            except torch.cuda.OutOfMemoryError:
                into[...] = 0
                tile = self._recover(tile)
        self.requested_tile = tile  # later items start from the size that fitted
        if out is None:
            return into
        if into is not out:
            out += into
        return out

    def _recover(self, tile: tuple[int, ...]) -> tuple[int, ...]:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        largest = max(range(len(tile)), key=lambda a: tile[a])
        if tile[largest] >= 2 * MIN_TILE:
            smaller = list(tile)
            smaller[largest] = round_up(math.ceil(tile[largest] / 2))
            log.info("out of memory with tile %s on %s; retrying with %s", tile, self.device, smaller)
            return tuple(smaller)
        if self.device.type == "cpu":
            raise MemoryError(f"out of memory even with tile {tile} on the CPU")
        warnings.warn(
            f"out of memory on {self.device} even with tile {tile}; continuing on the CPU",
            RuntimeWarning,
            stacklevel=2,
        )
        self.device = torch.device("cpu")
        self.model = self._place(self.model)
        # No larger than the first tile: a block of a larger image holds context for that.
        default = _tile_shape(None, self._padded, self.device, self.ctx.overlap)
        return tuple(min(a, b) for a, b in zip(default, self._first_tile, strict=True))

    def _run_tiles(
        self, x: np.ndarray, tile: tuple[int, ...], window: Window, out: np.ndarray, scale: float = 1.0
    ) -> Generator[tuple[int, int], None, None]:
        """The tiles of the whole image's grid (padded to a multiple of 8) that meet the window,
        run on the block ``x`` and blended into ``out`` (times ``scale``), the window: the whole
        image's result there, whatever the block."""
        sd = len(tile)
        stack = x.reshape(x.shape[0], -1, *x.shape[-sd:])  # (channels, images, *spatial)
        into = out.reshape(out.shape[0], -1, *out.shape[-sd:])
        if not np.may_share_memory(into, out):
            raise AssertionError("the result must take a stack's layout without a copy")
        groups = (
            [stack]
            if x.shape[0] == self.loaded.config.network_channels
            else [stack[i : i + 1] for i in range(x.shape[0])]
        )
        grid = [
            (sl, w * scale)
            for sl, w in iter_tiles(self._padded, tile, self.ctx.overlap)
            if all(s.start < hi and s.stop > lo for s, lo, hi in zip(sl, window.lo, window.hi, strict=True))
        ]
        units = [(i, sl, w) for i in range(stack.shape[1]) for sl, w in grid]
        batch = max(1, CPU_BATCH_VOXELS // math.prod(tile)) if self.device.type == "cpu" else 1
        total = len(units) * len(groups)
        done = 0
        yield done, total
        for g, group in enumerate(groups):
            channels = slice(None) if len(groups) == 1 else slice(g, g + 1)
            for first in range(0, len(units), batch):
                chunk = units[first : first + batch]
                patches = np.stack([_patch(group[:, i], window.local(sl)) for i, sl, _ in chunk])
                with torch.inference_mode(), autocast(self.device):
                    batch_in = torch.from_numpy(patches).to(self.device, memory_format=self._memory_format())
                    y = self._forward(batch_in).float().cpu().numpy()
                for (i, sl, weight), denoised in zip(chunk, y, strict=True):
                    inside, part = window.clip(sl)
                    into[(channels, i, *inside)] += (denoised * weight)[(slice(None), *part)]
                done += len(chunk)
                yield done, total

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network on ``x`` and on its :attr:`symmetries`, each turned back, averaged."""
        total = None
        for transpose, axes in self.symmetries:
            y = torch.flip(x, axes) if axes else x
            y = y.transpose(-2, -1) if transpose else y
            if axes or transpose:
                y = y.contiguous(memory_format=self._memory_format())
            y = self.model(y)
            y = y.transpose(-2, -1) if transpose else y
            y = torch.flip(y, axes) if axes else y
            total = y.float() if total is None else total + y
        return total / len(self.symmetries)


def _scaled(
    steps: Generator[tuple[int, int], None, np.ndarray], first: int, last: int, parts: int = 4
) -> Generator[tuple[int, int], None, np.ndarray]:
    """A job's ``(done, total)`` as the share from ``first`` to ``last`` of ``parts`` of a
    larger one (in thousandths); its result."""
    try:
        while True:
            done, total = next(steps)
            share = (first + (last - first) * done / max(total, 1)) / parts
            yield round(1000 * share), 1000
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


def default_passes(spatial_dims: int, channels: int) -> int:
    """The self-ensemble's passes when none are asked for: 2 on 2D gray images, where they cost
    least (10.8x BM3D's speed with 2 passes on a 512x512 image, 2026-12-07); 1 on colour images,
    whose larger network with 2 passes fell to 4.3x BM3D's speed, under the 5x target, for about
    +0.08 dB; 1 on volumes, which a 2D model already sees in three directions."""
    return 2 if (spatial_dims, channels) == (2, 1) else 1


def symmetries(spatial_dims: int, passes: int) -> list[tuple[bool, tuple[int, ...]]]:
    """The first ``passes`` of a self-ensemble's transforms, as (transpose the last two axes,
    axes to flip) applied in that order: no change, the point reflection (a 180-degree rotation
    in 2D), the other flips; then in 2D the same transposed."""
    axes = tuple(range(-spatial_dims, 0))
    flips = [(), axes] + [c for r in range(1, spatial_dims) for c in itertools.combinations(axes, r)]
    found = [(False, f) for f in flips] + ([(True, f) for f in flips] if spatial_dims == 2 else [])
    return found[:passes]


def plane_weights(shape: tuple[int, ...]) -> tuple[float, ...]:
    """How a volume of spatial ``shape`` weighs the results of a 2D model along each axis: by
    the voxels of the slicing plane, so 1 / the axis' length, summing to 1.

    A larger plane gives the model more context, and a short axis is most often the coarsely
    sampled one (thick slices, time points), whose planes look least like the 2D images the model
    learnt. Measured on held-out volumes against the plain mean (README, "Volumes"): equal on
    near-cubic ones, +0.5 to +0.8 dB on a 30-frame stack and on 3x thicker slices.
    """
    inverse = [1.0 / n for n in shape]
    return tuple(w / sum(inverse) for w in inverse)


def _patch(image: np.ndarray, tile: tuple[slice, ...]) -> np.ndarray:
    """``image[:, tile]`` (channels first), reflect-padded where the tile passes the image's end
    (only the whole image's padding to a multiple of 8 lies there): as if the whole image had
    been padded, without copying it."""
    spatial = image.shape[1:]
    beyond = [max(0, s.stop - n) for s, n in zip(tile, spatial, strict=True)]
    patch = image[
        (slice(None), *(slice(s.start, min(s.stop, n)) for s, n in zip(tile, spatial, strict=True)))
    ]
    if any(beyond):
        patch = np.pad(patch, [(0, 0)] + [(0, b) for b in beyond], mode="reflect")
    return patch


@dataclasses.dataclass(frozen=True)
class Window:
    """A block of a larger image and the part of it to denoise, in the image's coordinates: the
    image's spatial ``shape``, the block's first voxel ``start``, and ``[lo, hi)``, which the
    block holds together with the context its tiles need (one tile edge a side). Tiles lie on the
    whole image's grid, so a window's result equals the whole image's result there."""

    shape: tuple[int, ...]
    start: tuple[int, ...]
    lo: tuple[int, ...]
    hi: tuple[int, ...]

    @classmethod
    def whole(cls, shape: tuple[int, ...]) -> Window:
        zeros = (0,) * len(shape)
        return cls(tuple(shape), zeros, zeros, tuple(shape))

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(h - lo for lo, h in zip(self.lo, self.hi, strict=True))

    def without(self, axis: int) -> Window:
        """The window of the slices across ``axis``."""
        return Window(*(tuple(v for a, v in enumerate(f) if a != axis) for f in dataclasses.astuple(self)))

    def local(self, tile: tuple[slice, ...]) -> tuple[slice, ...]:
        """``tile`` (image coordinates) in the block."""
        return tuple(slice(s.start - b, s.stop - b) for s, b in zip(tile, self.start, strict=True))

    def clip(self, tile: tuple[slice, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """The part of ``tile`` inside the window: where it lies in the window, and in the tile."""
        bounds = [
            (max(s.start, lo), min(s.stop, hi), s.start, lo)
            for s, lo, hi in zip(tile, self.lo, self.hi, strict=True)
        ]
        inside = tuple(slice(a - lo, b - lo) for a, b, _, lo in bounds)
        part = tuple(slice(a - t, b - t) for a, b, t, _ in bounds)
        return inside, part
