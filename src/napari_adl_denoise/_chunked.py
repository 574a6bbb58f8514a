"""Images larger than memory: a dask or zarr array in, a lazy dask array out, block by block.

Each output chunk is computed from its block: the chunk plus, on every side, the context its
tiles need (one tile edge). The tiles lie on the whole image's grid and the intensities are
normalised by the whole image's range, so a chunk equals the in-memory result there to float
rounding, whatever the chunking; the graph holds only picklable data and the model's name (or
the file you gave), so it runs unchanged on a ``dask.distributed`` cluster. Learned methods
only: the classical ones denoise whole images. :func:`iter_write` takes a gray volume through a
2D model slab by slab instead, straight into a Zarr store.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ._device import resolve_device
from ._tiling import round_up
from .inference import (
    FLAT,
    DenoiseProgress,
    IntensityMap,
    check_call,
    check_dims,
    check_dtype,
    check_plane_weights,
    check_values,
    intensity_map,
    keep_flat,
    layout,
)
from .methods import MethodContext
from .methods._learned import Window, _slice_tile, _tile_shape, as_loaded_model
from .methods._learned import plane_weights as shape_weights

__all__ = [
    "denoise_lazy",
    "discard_store",
    "is_lazy",
    "iter_compute",
    "iter_write",
    "scratch_store",
    "write_zarr",
]

# Largest default tile edge out of core (each block carries one tile edge of context per side,
# so tiles are kept small), and the default block edge: 2D models, 3D models.
LAZY_TILE_EDGE = {2: 128, 3: 32}
BLOCK_EDGE = {2: 1024, 3: 256}
_SLAB_VOXELS = 2**26  # the most voxels a slab of iter_write takes to match its input's chunks


def need(module: str):
    """Import an optional package of the ``large`` extra, or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise ValueError(
            f"this needs the optional package {package!r}: pip install 'napari-adl-denoise[large]'"
        ) from None


def is_lazy(image: object) -> bool:
    """A dask or zarr array: denoised block by block, never loaded whole."""
    return type(image).__module__.split(".")[0] in ("dask", "zarr") and hasattr(image, "shape")


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every block needs, picklable: the model by name or file where it has one."""

    method: str
    model: Any
    device: str
    spatial_dims: int
    channels: int
    tile: tuple[int, ...]
    overlap: float
    options: tuple[tuple[str, Any], ...]
    shape: tuple[int, ...]
    """The whole image's spatial shape."""
    depth: tuple[int, ...]
    imap: IntensityMap | None
    plane_weights: tuple[float, ...] | None


def denoise_lazy(
    image: Any,
    method: str = "adl",
    *,
    model: Any = None,
    device: str = "auto",
    tile_shape: int | tuple[int, ...] | None = None,
    overlap: float = 0.25,
    channel_axis: int | None = None,
    spatial_dims: int | None = None,
    intensity_range: tuple[float, float] | None = None,
    noise_model: Any = None,
    plane_weights: tuple[float, float, float] | None = None,
    chunks: int | tuple[int, ...] | None = None,
    **options: Any,
):
    """A lazy dask array of ``denoise(image, ...)`` for a dask or zarr ``image``.

    Checked before anything is computed except the intensity range (a strided subsample) and,
    when asked for, the noise model (planes spread through the image); NaN or infinite values
    raise when their block is computed. ``chunks``: the block edge per spatial axis (default
    1024 for 2D models, 256 for 3D ones and for a 2D model over a volume's three directions);
    a chunk holds every channel and one item of any leading axis. The default tiles are
    smaller than in memory (at most 128 pixels in 2D, 32 voxels in 3D) to keep the blocks'
    context small; the result equals the in-memory ``denoise`` with the same ``tile_shape``.
    """
    da = need("dask.array")
    x, chosen, spatial_dims, channels, channel_axis = _start(
        image, method, model, options, channel_axis, spatial_dims
    )
    weights = check_plane_weights(plane_weights)
    kwargs = dict(
        model=model,
        device=device,
        tile_shape=tile_shape,
        overlap=overlap,
        spatial_dims=spatial_dims,
        intensity_range=intensity_range,
        noise_model=noise_model,
        plane_weights=plane_weights,
        chunks=chunks,
        **options,
    )
    if channels == 4:  # RGBA: the colour is denoised, the alpha kept exactly
        colour = denoise_lazy(
            da.take(x, [0, 1, 2], axis=channel_axis), method, channel_axis=channel_axis, **kwargs
        )
        alpha = da.take(x, [3], axis=channel_axis).astype(np.float32)
        return da.concatenate(
            [
                colour,
                alpha.rechunk(colour.chunks[:channel_axis] + ((1,),) + colour.chunks[channel_axis + 1 :]),
            ],
            axis=channel_axis,
        )
    p = _prepare(x, chosen, spatial_dims, channels, channel_axis, kwargs, options)
    canonical, spatial, tiles, block, imap, loaded = (
        p.canonical,
        p.spatial,
        p.tiles,
        p.block,
        p.imap,
        p.loaded,
    )
    lead = canonical.ndim - 1 - spatial_dims
    axes = tuple(_axis_chunks(n, b) for n, b in zip(spatial, block, strict=True))
    canonical = canonical.rechunk(
        ((channels,),) + tuple((1,) * n for n in canonical.shape[1 : 1 + lead]) + axes
    )
    if imap is None:  # a constant image is its own denoised version
        result = canonical.astype(np.float32)
    else:
        # Context only where an axis has more than one chunk (each at least a tile edge long).
        depth = tuple(t if len(c) > 1 else 0 for t, c in zip(tiles, axes, strict=True))
        job = _Job(
            method,
            _model_ref(model, loaded),
            device,
            spatial_dims,
            channels,
            tiles,
            overlap,
            tuple(sorted(options.items())),
            spatial,
            depth,
            imap,
            weights,
        )
        expanded = da.overlap.overlap(
            canonical, depth=dict(enumerate((0,) * (1 + lead) + depth)), boundary="none"
        )
        result = da.map_blocks(
            _denoise_block,
            expanded,
            job=job,
            chunks=canonical.chunks,
            dtype=np.float32,
            meta=np.empty((0,) * canonical.ndim, np.float32),
        )
    result = result if channel_axis is not None else result[0]
    return da.moveaxis(result, 0, channel_axis) if channel_axis is not None else result


def _axis_chunks(size: int, block: int) -> tuple[int, ...]:
    """Chunks of ``block`` along an axis of ``size``, the remainder joined to the last one (a
    chunk must be as long as the context its neighbours take from it)."""
    n = max(1, size // block)
    return (block,) * (n - 1) + (size - (n - 1) * block,)


def _start(image, method, model, options, channel_axis, spatial_dims):
    """The image as a dask array, the method and the layout, checked."""
    da = need("dask.array")
    x = da.from_zarr(image) if type(image).__module__.startswith("zarr") else da.asarray(image)
    chosen = check_call(method, model, options)
    if not chosen.learned:
        raise ValueError(
            f"method {method!r} denoises whole images; a dask or zarr array is denoised block by "
            "block with a learned method (or load it first: numpy.asarray)"
        )
    check_dtype(x)
    return x, chosen, *layout(x.shape, channel_axis, spatial_dims)


@dataclasses.dataclass
class _Prepared:
    """A lazy job, checked: the data in canonical layout ``(channels, *lead, *spatial)``."""

    canonical: Any
    spatial: tuple[int, ...]
    tiles: tuple[int, ...]
    """One tile edge per spatial axis (out of core)."""
    block: tuple[int, ...]
    imap: IntensityMap | None
    loaded: Any
    planes: bool


def _prepare(x, chosen, spatial_dims, channels, channel_axis, kwargs, options) -> _Prepared:
    """Everything :func:`denoise_lazy` checks and resolves before it builds its graph."""
    method, model, device = chosen.name, kwargs["model"], kwargs["device"]
    tile_shape, overlap, chunks = kwargs["tile_shape"], kwargs["overlap"], kwargs["chunks"]
    check_dims(chosen, spatial_dims)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")

    loaded = as_loaded_model(model, spatial_dims, channels, method)  # checks the model fits
    guide = getattr(loaded.config, "guide", None)
    if guide is not None:  # it reads its guide's whole slices, which blocks do not hold
        raise ValueError(
            f"model {loaded.name!r} refines {guide!r} over whole volumes in memory; out of "
            f"core give model={guide!r}, or load the volume (numpy.asarray)"
        )
    planes = loaded.config.spatial_dims < spatial_dims
    canonical = need("dask.array").moveaxis(x, channel_axis, 0) if channel_axis is not None else x[None]
    spatial = tuple(canonical.shape[-spatial_dims:])
    padded = tuple(round_up(s) for s in spatial)
    resolved = resolve_device(device)
    model_sd = loaded.config.spatial_dims
    if tile_shape is None:
        edge = LAZY_TILE_EDGE[model_sd]
        tile_shape = tuple(min(edge, p) for p in padded)
    # One tile edge per axis, the same for every slicing direction (the in-memory default too).
    if planes:
        per_axis = [0] * spatial_dims
        requested = (
            tile_shape if isinstance(tile_shape, tuple | list) else _as_tuple(tile_shape, spatial_dims)
        )
        for axis in range(spatial_dims):
            view = padded[:axis] + padded[axis + 1 :]
            tile = _tile_shape(_slice_tile(tuple(requested), axis), view, resolved, overlap)
            for b, t in zip([b for b in range(spatial_dims) if b != axis], tile, strict=True):
                per_axis[b] = max(per_axis[b], t)
        tiles = tuple(per_axis)
    else:
        tiles = _tile_shape(tile_shape, padded, resolved, overlap)
    if chunks is None:
        chunks = BLOCK_EDGE[3 if spatial_dims == 3 else 2]
    block = _as_tuple(chunks, spatial_dims)
    if any(int(b) < 1 for b in block):
        raise ValueError(f"chunks must be positive, got {chunks!r}")
    block = tuple(max(int(b), t) for b, t in zip(block, tiles, strict=True))  # a chunk >= its context

    imap = intensity_map(x, kwargs["noise_model"], channel_axis, kwargs["intensity_range"], chosen, options)
    return _Prepared(canonical, spatial, tiles, block, imap, loaded, planes)


def _model_ref(model: Any, loaded: Any) -> Any:
    """What a block loads the model from: a bundled or user model's name (each worker finds it
    in its own installation), the file a path names, else the network itself."""
    if model is None:
        return loaded.name
    if isinstance(model, str | os.PathLike):
        return str(Path(model).resolve()) if Path(model).is_file() else str(model)
    return loaded


def _as_tuple(value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    if isinstance(value, int | np.integer):
        return (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"expected an int or {n} ints, got {value}")
    return value


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _load(path: str):
    from .weights import load_model

    return load_model(path)


def _denoise_block(block: np.ndarray, *, job: _Job, block_info: dict | None = None) -> np.ndarray:
    """One output chunk from its block (the chunk and its context): canonical layout
    ``(channels, *lead, *spatial)``."""
    from .methods import get_method

    sd = job.spatial_dims
    location = block_info[None]["array-location"][-sd:]
    lo = tuple(a for a, _ in location)
    hi = tuple(b for _, b in location)
    start = tuple(max(0, a - d) for a, d in zip(lo, job.depth, strict=True))
    window = Window(job.shape, start, lo, hi)
    check_values(block)
    model = _load(job.model) if isinstance(job.model, str) else job.model
    items = block.reshape(block.shape[0], -1, *block.shape[-sd:])
    out = np.empty((block.shape[0], items.shape[1], *window.size), dtype=np.float32)
    # One block at a time per process: a network's forward pass already uses every core, and
    # two blocks at once would double the memory for nothing.
    with _LOCK:
        ctx = MethodContext(
            sd, job.channels, model, job.device, job.tile, job.overlap, dict(job.options), job.plane_weights
        )
        runner = get_method(job.method).factory(ctx)
        for i in range(items.shape[1]):
            steps = runner(job.imap.normalise(items[:, i]), window)
            try:
                while True:
                    next(steps)
            except StopIteration as stop:
                if not np.isfinite(stop.value).all():
                    raise ValueError(f"method {job.method!r} gave NaN or infinite values") from None
                offset = tuple(a - b for a, b in zip(lo, start, strict=True))
                out[:, i] = keep_flat(items[:, i], job.imap.restore(stop.value), offset)
    return out.reshape(*block.shape[:-sd], *window.size)


def iter_compute(
    result: Any, store: str | os.PathLike | None = None, *, method: str = "adl"
) -> Generator[DenoiseProgress, None, Any]:
    """Compute a lazy result block by block, yielding a :class:`DenoiseProgress` per block.

    Into memory (returns a numpy array), or with ``store`` into a new Zarr store at that path
    (returns the path), written under a temporary name and renamed when complete: a cancelled or
    failed run leaves nothing. Closing the generator cancels after the current block.
    """
    dask = need("dask")
    blocks = list(np.ndindex(*result.numblocks))
    starts = [np.cumsum((0, *c)) for c in result.chunks]

    def where(index):
        return tuple(slice(int(s[i]), int(s[i + 1])) for s, i in zip(starts, index, strict=True))

    yield DenoiseProgress(method, 0, len(blocks), 0, 1)
    with contextlib.ExitStack() as stack:
        if store is None:
            out = np.empty(result.shape, dtype=result.dtype)
        else:
            target = Path(store)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
            out = _zarr_array(tmp, result)
        with dask.config.set(scheduler="synchronous"):
            for n, index in enumerate(blocks):
                out[where(index)] = result.blocks[index].compute()
                yield DenoiseProgress(method, n, len(blocks), 1, 1)
        if store is None:
            return out
        _replace_dir(tmp, target)
        return target


def _zarr_array(path: Path, like: Any):
    zarr = need("zarr")
    chunks = tuple(max(c) for c in like.chunks)
    return zarr.open(str(path), mode="w", shape=like.shape, chunks=chunks, dtype=like.dtype)


def _replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished ``tmp`` folder at ``target``, replacing an old one only once it is whole."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / target.name)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old / target.name, target)  # the old store back where it was
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def iter_write(
    image: Any,
    store: str | os.PathLike,
    method: str = "adl",
    *,
    model: Any = None,
    device: str = "auto",
    tile_shape: int | tuple[int, ...] | None = None,
    overlap: float = 0.25,
    channel_axis: int | None = None,
    spatial_dims: int | None = None,
    intensity_range: tuple[float, float] | None = None,
    noise_model: Any = None,
    plane_weights: tuple[float, float, float] | None = None,
    chunks: int | tuple[int, ...] | None = None,
    slab: int = 64,
    **options: Any,
) -> Generator[DenoiseProgress, None, Path]:
    """Denoise ``image`` (numpy, dask or zarr) into a new Zarr store at ``store``, holding
    neither the image nor the result: a generator of :class:`DenoiseProgress`, returning the path.

    A gray volume through a 2D model (the default for volumes) goes ``slab`` slices at a time
    along each axis in turn, the three directions summed in the store: the in-memory result
    with the in-memory tiles, at the in-memory speed, in the memory of a slab. Anything else
    goes through the blocks of :func:`denoise_lazy` (``chunks``). Same arguments as
    :func:`napari_adl_denoise.denoise`; written under a temporary name and renamed when
    complete (:func:`iter_compute`), and closing the generator cancels.
    """
    kwargs = dict(
        model=model,
        device=device,
        tile_shape=tile_shape,
        overlap=overlap,
        spatial_dims=spatial_dims,
        intensity_range=intensity_range,
        noise_model=noise_model,
        plane_weights=plane_weights,
        chunks=chunks,
    )
    x, chosen, sd, channels, axis = _start(image, method, model, dict(options), channel_axis, spatial_dims)
    weights = check_plane_weights(plane_weights)
    if axis is None and sd == 3 and slab >= 1:
        p = _prepare(x, chosen, sd, channels, axis, kwargs, options)
        if p.planes and p.imap is not None:
            return (
                yield from _iter_slabs(
                    p, Path(store), method, tile_shape, overlap, device, int(slab), options, weights
                )
            )
    lazy = denoise_lazy(image, method, channel_axis=channel_axis, **kwargs, **options)
    return (yield from iter_compute(lazy, store, method=method))


def _iter_slabs(p: _Prepared, target: Path, method, tile_shape, overlap, device, slab, options, weights):
    """The three directions of a gray volume (or a stack of them), slab by slab, summed in a
    Zarr store in the order and precision the in-memory path sums them."""
    from .inference import progress_of
    from .methods import get_method

    x = p.canonical[0]  # (*lead, Z, Y, X)
    lead, spatial = x.shape[:-3], x.shape[-3:]
    # Slabs as thick as the input's chunks along their axis where memory allows (each chunk is
    # then read once per direction), in whole multiples of ``slab``, the store's chunk edge.
    thick = [
        slab
        * max(
            1, min(math.ceil(max(x.chunks[-3 + d]) / slab), _SLAB_VOXELS // (math.prod(spatial) // n) // slab)
        )
        for d, n in enumerate(spatial)
    ]
    runs = [
        (item, d, s) for item in np.ndindex(*lead) for d in range(3) for s in range(0, spatial[d], thick[d])
    ]
    weights = weights or shape_weights(spatial)
    ctx = MethodContext(3, 1, p.loaded, device, tile_shape, overlap, dict(options))
    runner = get_method(method).factory(ctx)
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        zarr = need("zarr")
        out = zarr.open(str(tmp), mode="w", shape=x.shape, chunks=(1,) * len(lead) + (slab,) * 3, dtype="f4")
        for n, (item, d, s) in enumerate(runs):
            where = (*item, *(slice(s, s + thick[d]) if a == d else slice(None) for a in range(3)))
            if d == 2:  # read with FLAT // 2 more planes either side: keep_flat's context below
                first = max(s - FLAT // 2, 0)
                context = np.asarray(
                    x[(*item, slice(None), slice(None), slice(first, s + thick[d] + FLAT // 2))]
                )
                raw = context[..., s - first : s - first + thick[d]]
            else:
                raw = np.asarray(x[where])
            check_values(raw)
            stack_ = np.moveaxis(p.imap.normalise(raw), d, 0)[None]  # (1, slices, *plane)
            runner.requested_tile = _slice_tile(tile_shape, d)
            steps = runner._denoise(stack_, Window.whole(stack_.shape[2:]), scale=weights[d])
            result = yield from progress_of(steps, method, n, len(runs))
            result = np.moveaxis(result[0], 0, d)
            if d == 0:
                out[where] = result
            elif d == 1:
                out[where] = out[where] + result
            else:  # the last direction: the sum restored, and flat input kept
                out[where] = keep_flat(
                    context[None], p.imap.restore(out[where] + result)[None], (0, 0, s - first)
                )[0]
        _replace_dir(tmp, target)
    return target


def scratch_store() -> Path:
    """A path for a Zarr store in a new folder of the user cache (on disk, where ``/tmp`` may be
    memory), deleted when Python exits: the Denoise dock's results of lazy layers, which napari
    reads from there (and :func:`discard_store` deletes with their layer)."""
    import platformdirs

    cache = platformdirs.user_cache_path("napari-adl-denoise") / "lazy-results"
    cache.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="result-", dir=cache)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return Path(folder) / "result.zarr"


def discard_store(store: Path) -> None:
    """Delete a :func:`scratch_store` and its folder."""
    shutil.rmtree(Path(store).parent, ignore_errors=True)


def write_zarr(result: Any, store: str | os.PathLike) -> Path:
    """Write a lazy result to a new Zarr store block by block (see :func:`iter_compute`)."""
    steps = iter_compute(result, store)
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value
