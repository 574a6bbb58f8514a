"""Denoise 2D images, RGB images, 3D volumes and stacks of them with any registered method."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _vst
from .methods import ENSEMBLE_PASSES, Method, MethodContext, NoModelError, default_model_info, get_method
from .noise import NoiseModel, estimate_noise_model

__all__ = [
    "NOISE_MODELS",
    "DenoiseProgress",
    "denoise",
    "iter_denoise",
    "join_alpha",
    "resolve_noise_model",
    "robust_range",
    "split_alpha",
]

# Intensities are mapped so these percentiles of the input become 0 and 1: robust to a few hot
# or dead pixels, and the same affine map is inverted exactly on the output.
PERCENTILES = (0.1, 99.9)
_SAMPLE = 2**22
FLAT = 5
"""A pixel whose input is exactly constant over ``FLAT`` pixels along every spatial axis around it
holds no noise (a masked or clipped background, padding, saturation): every method returns it as
it was. Noise makes 25 equal neighbours (125 in 3D) practically impossible."""


@dataclass(frozen=True)
class DenoiseProgress:
    """One progress record, yielded after each forward pass over a tile (a batch of small tiles on
    the CPU), or after each item for whole-image methods."""

    method: str
    item: int
    """Index of the 2D slice or 3D volume being denoised, in ``range(n_items)``."""
    n_items: int
    done: int
    """Tiles finished in this item."""
    total: int

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1]."""
        return (self.item + (self.done / self.total if self.total else 0.0)) / self.n_items


def robust_range(image: npt.ArrayLike) -> tuple[float, float]:
    """The ``PERCENTILES`` of ``image`` (min and max if they coincide), on an evenly strided
    subsample if large (the same voxels of a numpy, dask or zarr array)."""
    sample = _subsample(image).reshape(-1)
    lo, hi = np.percentile(sample.astype(np.float64), PERCENTILES)
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return float(lo), float(hi)


def _subsample(image: npt.ArrayLike) -> np.ndarray:
    """Every k-th element along the long axes (64 or more: spatial ones), every element along
    the others (channels, short stacks), at most about ``_SAMPLE`` in all, as numpy."""
    if not hasattr(image, "shape"):
        image = np.asarray(image)
    shape = image.shape
    size = math.prod(shape)
    long = [a for a, n in enumerate(shape) if n >= 64]
    if size <= _SAMPLE or not long:
        return np.asarray(image)
    step = math.ceil((size / _SAMPLE) ** (1 / len(long)))
    return np.asarray(
        image[tuple(slice(None, None, step) if a in long else slice(None) for a in range(len(shape)))]
    )


def layout(
    shape: tuple[int, ...], channel_axis: int | None, spatial_dims: int | None
) -> tuple[int, int, int | None]:
    """Validate the axes; returns (spatial_dims, channels, channel axis as a positive index)."""
    ndim = len(shape)
    if channel_axis is None and spatial_dims is None and ndim == 3 and shape[-1] in (3, 4):
        channel_axis = -1  # an RGB(A) image, as napari guesses it (no volume is 3 or 4 voxels wide)
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise ValueError(f"channel_axis={channel_axis} is out of range for a {ndim}D array")
        channel_axis %= ndim
    channels = shape[channel_axis] if channel_axis is not None else 1
    rest = ndim - (channel_axis is not None)
    if spatial_dims is None:
        spatial_dims = 2 if rest <= 2 else 3
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if rest < spatial_dims:
        raise ValueError(
            f"image of shape {shape} has {rest} non-channel axes; {spatial_dims}D denoising needs "
            f"at least {spatial_dims}"
        )
    return spatial_dims, channels, channel_axis


def iter_denoise(
    image: npt.ArrayLike,
    method: str = "adl",
    *,
    model: Any = None,
    device: str = "auto",
    tile_shape: int | tuple[int, ...] | None = None,
    overlap: float = 0.25,
    channel_axis: int | None = None,
    spatial_dims: int | None = None,
    intensity_range: tuple[float, float] | None = None,
    noise_model: str | NoiseModel | None = None,
    plane_weights: tuple[float, float, float] | None = None,
    **options: Any,
) -> Generator[DenoiseProgress, None, np.ndarray]:
    """Denoise step by step: a generator yielding :class:`DenoiseProgress`, returning the result.

    Takes the same arguments as :func:`denoise`. Closing the generator (or stopping to iterate)
    cancels the job at the next tile (or batch of small tiles). The result is the generator's return value::

        gen = iter_denoise(volume)
        try:
            while True:
                print(f"{next(gen).fraction:.0%}")
        except StopIteration as stop:
            result = stop.value
    """
    from ._chunked import denoise_lazy, is_lazy, iter_compute

    job = dict(
        model=model,
        device=device,
        tile_shape=tile_shape,
        overlap=overlap,
        intensity_range=intensity_range,
        noise_model=noise_model,
        plane_weights=plane_weights,
        **options,
    )
    if is_lazy(image):  # computed block by block into memory, with progress per block
        lazy = denoise_lazy(image, method, channel_axis=channel_axis, spatial_dims=spatial_dims, **job)
        return (yield from iter_compute(lazy, method=method))
    chosen = check_call(method, model, options)
    weights = check_plane_weights(plane_weights)
    array = np.asarray(image)
    check_dtype(array)
    spatial_dims, channels, channel_axis = layout(array.shape, channel_axis, spatial_dims)
    if channels == 4:  # RGBA: the colour is denoised, the alpha kept exactly
        colour = yield from iter_denoise(
            np.take(array, [0, 1, 2], axis=channel_axis),
            method,
            channel_axis=channel_axis,
            spatial_dims=spatial_dims,
            **job,
        )
        alpha = np.take(array, [3], axis=channel_axis).astype(np.float32)
        return np.concatenate([colour, alpha], axis=channel_axis)
    check_dims(chosen, spatial_dims)
    check_values(array)
    route = None
    if channels == 3:
        route = colour_route(
            array, channel_axis, method, model, spatial_dims, noise_model, intensity_range, device
        )
    if route == "gray":
        # R = G = B everywhere: a gray image stored as colour, whose noise the channels share.
        # The method's gray model denoises it (better than a colour model), into every channel.
        gray = yield from iter_denoise(
            np.moveaxis(array, channel_axis, 0)[0], method, spatial_dims=spatial_dims, **job
        )
        return np.repeat(np.expand_dims(gray, channel_axis), 3, axis=channel_axis)
    if route == "opponent":
        return (
            yield from iter_opponent(
                array, method, channel_axis=channel_axis, spatial_dims=spatial_dims, **job
            )
        )

    # Canonical layout (items, channels, *spatial); views where possible, never written to.
    canonical = np.moveaxis(array, channel_axis, 0) if channel_axis is not None else array[None]
    spatial = canonical.shape[-spatial_dims:]
    lead = canonical.shape[1 : canonical.ndim - spatial_dims]
    n_items = int(np.prod(lead, dtype=np.int64))
    items = np.moveaxis(canonical.reshape(channels, n_items, *spatial), 1, 0)

    imap = intensity_map(array, noise_model, channel_axis, intensity_range, chosen, options)
    runner = None
    if imap is not None:
        ctx = MethodContext(
            spatial_dims, channels, model, device, tile_shape, overlap, dict(options), weights
        )
        runner = chosen.factory(ctx)
    # One item (an image, a volume) becomes the result in place: memory is its float32 input
    # and output, and the tiles; more items fill one array.
    out = np.empty(items.shape, dtype=np.float32) if n_items > 1 or runner is None else None
    for index in range(n_items):
        if runner is None:  # a constant image is its own denoised version
            out[index] = items[index]
            yield DenoiseProgress(method, index, n_items, 1, 1)
            continue
        result = yield from progress_of(runner(imap.normalise(items[index])), method, index, n_items)
        if not np.isfinite(result).all():
            raise ValueError(
                f"method {method!r} gave NaN or infinite values on an image of {spatial}: it may be too "
                "small for it; try another method"
            )
        if out is None:
            out = keep_flat(items[index], imap.restore(result))[None]
        else:
            out[index] = keep_flat(items[index], imap.restore(result))

    restored = np.moveaxis(out, 0, 1).reshape(canonical.shape)
    return np.moveaxis(restored, 0, channel_axis) if channel_axis is not None else restored[0]


OPPONENT = np.array(
    [
        [1 / math.sqrt(3)] * 3,
        [1 / math.sqrt(2), 0, -1 / math.sqrt(2)],
        [1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)],
    ]
)
"""Rows: the luminance (R + G + B) / sqrt(3) and two colour differences, orthonormal, so noise that
is independent and equal in R, G and B is so in these three channels too, while noise the
channels share lies in the luminance alone."""
SHARED_NOISE = (0.6, 5 / 255)
"""A colour image goes to :func:`iter_opponent` when the noise in its colour differences has under
0.6 times the luminance's variance (over 18 % of each channel's noise variance shared, where the
two routes measured level) and the shared part is at least 5/255 of the intensity range."""

COLOUR_ROUTES = {
    "gray": "a gray image stored as colour: the gray model, into each channel",
    "opponent": "noise the colour channels share: the gray model on the luminance and colour differences",
}
"""What each :func:`colour_route` does, in words (the command line and the Denoise dock say it)."""


def gray_as_colour(array: np.ndarray, channel_axis: int) -> bool:
    """Whether the three channels of a colour ``array`` are equal everywhere (a gray image stored
    as colour), compared through views: a large image is not copied."""
    channels = np.moveaxis(array, channel_axis, 0)
    return np.array_equal(channels[0], channels[1]) and np.array_equal(channels[0], channels[2])


def colour_route(
    array: np.ndarray,
    channel_axis: int,
    method: str,
    model: Any,
    spatial_dims: int,
    noise_model: Any = None,
    intensity_range: tuple[float, float] | None = None,
    device: str = "auto",
) -> str | None:
    """How the learned ``method`` denoises a colour ``array`` (in memory) when no ``model`` is
    asked for, by its bundled gray model where a colour model is not made for the noise:
    ``"gray"``, the channels are equal everywhere (a gray image stored as colour); ``"opponent"``,
    a 2D image whose noise the channels largely share (:func:`shared_colour_noise`, checked
    for the blind noise model only), denoised by :func:`iter_opponent`; None, the colour model."""
    if not get_method(method).learned or model is not None:
        return None
    try:
        default_model_info(spatial_dims, 1, method=method)
    except NoModelError:
        return None
    if gray_as_colour(array, channel_axis):
        return "gray"
    if spatial_dims != 2 or noise_model not in (None, "blind"):
        return None
    try:
        default_model_info(spatial_dims, 3, method=method)
    except NoModelError:
        return None
    measured = shared_colour_noise(array, channel_axis, method, intensity_range, device)
    if measured is None:
        return None
    luminance, difference, shared = measured
    ratio, level = SHARED_NOISE
    return "opponent" if difference**2 < ratio * luminance**2 and shared >= level else None


def shared_colour_noise(
    array: np.ndarray,
    channel_axis: int,
    method: str = "adl",
    intensity_range: tuple[float, float] | None = None,
    device: str = "auto",
) -> tuple[float, float, float] | None:
    """The noise of a 2D colour image's luminance and colour differences (``OPPONENT``), and the
    level of the part the channels share, relative to the intensity range.

    Measured as what the method's bundled gray model (one pass) removes from each of the three
    channels of a central crop of at most 256x256 pixels (of the middle image of a stack): the
    residual of a denoiser keeps little of the image's texture, unlike a filter's. Noise that
    is independent in R, G and B is equal in the three; noise they share is in the luminance
    only. None for an image under 16 pixels across, or a constant one.
    """
    rgb = np.moveaxis(array, channel_axis, -1)
    item = rgb[tuple(n // 2 for n in rgb.shape[:-3])]
    h, w = item.shape[:2]
    if min(h, w) < 16:
        return None
    top, left = (h - min(h, 256)) // 2, (w - min(w, 256)) // 2
    crop = np.asarray(item[top : top + 256, left : left + 256], dtype=np.float64)
    lo, hi = image_range(array, intensity_range)
    if not hi > lo:
        return None
    noise = []
    for k, row in enumerate(OPPONENT):
        channel = (crop @ row).astype(np.float32)
        window = _opponent_range(k, lo, hi)
        denoised = denoise(channel, method, intensity_range=window, ensemble=1, device=device)
        noise.append(float(np.std(channel - denoised)))
    luminance, difference = noise[0], math.sqrt((noise[1] ** 2 + noise[2] ** 2) / 2)
    shared = math.sqrt(max(luminance**2 - difference**2, 0.0) / 3)  # per channel
    return luminance / (hi - lo), difference / (hi - lo), shared / (hi - lo)


def _opponent_range(k: int, lo: float, hi: float) -> tuple[float, float]:
    """The intensity range of ``OPPONENT`` channel ``k`` for an image ranging ``lo``-``hi``: one
    scale for the three, sqrt(3) times the image's (so the luminance of a gray image stored as
    colour is normalised as the gray image itself), the colour differences centred on zero."""
    half = math.sqrt(3) * (hi - lo) / 2
    centre = math.sqrt(3) * (lo + hi) / 2 if k == 0 else 0.0
    return centre - half, centre + half


def iter_opponent(
    image: npt.ArrayLike,
    method: str = "adl",
    *,
    channel_axis: int = -1,
    intensity_range: tuple[float, float] | None = None,
    **job: Any,
) -> Generator[DenoiseProgress, None, np.ndarray]:
    """Denoise a colour image whose noise the channels share with the method's gray model: its
    luminance and two colour differences (``OPPONENT``) are denoised one by one as gray images,
    on one scale, and turned back into R, G and B. The generator of :func:`iter_denoise`, whose
    other arguments it takes (``model``: a gray one, or None for the bundled one).

    Independent noise comes out 0.06-0.74 dB worse than from the colour model, shared noise
    2-12 dB better (README, "noise the colour channels share").
    """
    array = np.asarray(image)
    rgb = np.moveaxis(array, channel_axis, -1)  # a view
    lo, hi = image_range(array, intensity_range)
    out = np.zeros(rgb.shape, dtype=np.float32)
    for k, row in enumerate(OPPONENT):
        channel = np.zeros(rgb.shape[:-1], dtype=np.float32)
        for c, weight in enumerate(row.astype(np.float32)):
            channel += weight * rgb[..., c]  # float32 one channel at a time: no float64 copy
        steps = iter_denoise(channel, method, intensity_range=_opponent_range(k, lo, hi), **job)
        out += (yield from _renumbered(steps, k, len(OPPONENT)))[..., None] * row.astype(np.float32)
    lead = rgb.shape[:-3] if job.get("spatial_dims", 2) == 2 else rgb.shape[:-4]
    first, out_first = np.moveaxis(rgb, -1, 0), np.moveaxis(out, -1, 0)
    for index in np.ndindex(*lead):  # flat input keeps its values exactly, as on every route
        keep_flat(first[(slice(None), *index)], out_first[(slice(None), *index)])
    return np.moveaxis(out, -1, channel_axis)


def _renumbered(
    steps: Generator[DenoiseProgress, None, np.ndarray], part: int, parts: int
) -> Generator[DenoiseProgress, None, np.ndarray]:
    """``steps``' records as part ``part`` of ``parts`` equal parts of one job; its result."""
    try:
        record = next(steps)
        while True:
            n = record.n_items
            yield DenoiseProgress(record.method, part * n + record.item, parts * n, record.done, record.total)
            record = next(steps)
    except StopIteration as stop:
        return stop.value


def keep_flat(x: np.ndarray, result: np.ndarray, start: tuple[int, ...] | None = None) -> np.ndarray:
    """``result`` with the input's values where ``x`` is exactly flat (see ``FLAT``), in place.

    Both are ``(channels, *spatial)``; ``result`` may be a part of ``x``'s extent beginning at
    ``start`` (a block's chunk within its context). Computed a slab of rows at a time.
    """
    from scipy import ndimage

    r = FLAT // 2
    start = start or (0,) * (x.ndim - 1)
    rows = max(1, _SAMPLE // max(1, math.prod(result.shape[2:])))
    for c in range(x.shape[0]):
        for a in range(0, result.shape[1], rows):
            b = min(a + rows, result.shape[1])
            lo, hi = max(start[0] + a - r, 0), min(start[0] + b + r, x.shape[1])
            part = np.asarray(x[c, lo:hi])
            part = part.astype(np.float32) if part.dtype == np.float16 else part  # scipy lacks float16
            flat = ndimage.maximum_filter(part, FLAT, mode="nearest") == ndimage.minimum_filter(
                part, FLAT, mode="nearest"
            )
            crop = (
                slice(start[0] + a - lo, start[0] + b - lo),
                *(slice(s, s + n) for s, n in zip(start[1:], result.shape[2:], strict=True)),
            )
            flat, values = flat[crop], part[crop]
            result[c, a:b][flat] = values[flat]
    return result


def check_plane_weights(weights: Any) -> tuple[float, float, float] | None:
    """``plane_weights`` as three floats summing to 1 (``None`` stays), or ValueError (one line)."""
    if weights is None:
        return None
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(w) and w >= 0 for w in values) or sum(values) <= 0:
        raise ValueError(f"plane_weights must be three non-negative numbers, not all zero, got {weights!r}")
    return tuple(w / sum(values) for w in values)


def check_call(method: str, model: Any, options: dict[str, Any]) -> Method:
    """The method, once its availability, options, ``model`` and ``sigma`` are checked."""
    chosen = get_method(method)
    if not chosen.available:
        raise ValueError(
            f"method {method!r} needs the optional package {chosen.requires!r} "
            "(pip install 'napari-adl-denoise[baselines]')"
        )
    unknown = sorted(set(options) - set(chosen.options))
    if unknown:
        accepted = ", ".join(chosen.options) or "none"
        raise ValueError(
            f"method {method!r} does not take option(s) {', '.join(unknown)} (accepted: {accepted})"
        )
    if model is not None and not chosen.learned:
        raise ValueError(f"model= applies to learned methods only, not to {method!r}")
    sigma = options.get("sigma")
    if sigma is not None:
        try:
            valid = math.isfinite(float(sigma)) and float(sigma) > 0
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    passes = options.get("ensemble")
    if passes is not None and (isinstance(passes, bool) or passes not in ENSEMBLE_PASSES):
        raise ValueError(f"ensemble must be one of {', '.join(map(str, ENSEMBLE_PASSES))}, got {passes!r}")
    return chosen


def check_dtype(array: Any) -> None:
    """One line unless ``array`` is a non-empty integer or floating-point array."""
    if array.dtype.kind not in "uif":
        raise ValueError(f"image dtype must be integer or floating point, got {array.dtype}")
    if math.prod(array.shape) == 0:
        raise ValueError(f"image is empty (shape {array.shape})")


def check_dims(chosen: Method, spatial_dims: int) -> None:
    if spatial_dims not in chosen.spatial_dims:
        supported = " or ".join(f"{d}D" for d in chosen.spatial_dims)
        raise ValueError(f"method {chosen.name!r} denoises {supported} data, not {spatial_dims}D")


def check_values(array: np.ndarray) -> None:
    """One line if ``array`` holds NaN or infinity, or values beyond float32 (the result's type)."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values")
    if array.dtype.itemsize > 4 and max(-float(array.min()), float(array.max())) > float(
        np.finfo(np.float32).max
    ):
        raise ValueError("image values exceed float32's range (3.4e38), the result's type: rescale it first")


@dataclass(frozen=True)
class IntensityMap:
    """The map from image intensities to the [0, 1]-normalised scale the methods work on (after
    the variance-stabilising transform, if any), and its exact inverse."""

    lo: float
    scale: float
    stabiliser: NoiseModel | None = None

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """A new float32 array, computed in float64 a part at a time (a large offset keeps its
        precision, and memory holds one float32 copy of ``x``)."""
        out = np.empty(x.shape, dtype=np.float32)
        lead = next((k for k in range(x.ndim + 1) if math.prod(x.shape[k:]) <= _SAMPLE), x.ndim)
        for index in np.ndindex(*x.shape[:lead]):
            part = np.asarray(x[index], dtype=np.float64)
            if self.stabiliser is not None:
                part = _vst.forward(part, self.stabiliser)
            out[index] = (part - self.lo) / self.scale
        return out

    def restore(self, y: np.ndarray) -> np.ndarray:
        """``y`` (float32, a method's result) on the image's scale, in place where it can be."""
        if self.stabiliser is not None:
            return _vst.inverse(y.astype(np.float64) * self.scale + self.lo, self.stabiliser).astype(
                np.float32
            )
        y = y.astype(np.float32, copy=False)
        y *= self.scale
        y += self.lo
        return y


def image_range(image: Any, intensity_range: Any = None) -> tuple[float, float]:
    """``intensity_range`` as two floats, checked (ValueError, one line), or by default
    :func:`robust_range` of ``image``."""
    if intensity_range is None:
        lo, hi = robust_range(image)
        if not np.isfinite([lo, hi]).all():  # a lazy image's values are checked block by block
            raise ValueError("image contains NaN or infinite values")
        return lo, hi
    try:
        lo, hi = (float(v) for v in intensity_range)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not (np.isfinite([lo, hi]).all() and hi > lo):
        raise ValueError(f"intensity_range must be two finite numbers, low < high, got {intensity_range!r}")
    return lo, hi


def intensity_map(
    image: Any,
    noise_model: str | NoiseModel | None,
    channel_axis: int | None,
    intensity_range: tuple[float, float] | None,
    chosen: Method,
    options: dict[str, Any],
) -> IntensityMap | None:
    """The job's :class:`IntensityMap`, or None for a constant image (its own denoised version).
    A classical method under a transform gets the transform's unit noise as its ``sigma``."""
    stabiliser = resolve_noise_model(noise_model, image, channel_axis=channel_axis)
    lo, hi = image_range(image, intensity_range)
    if stabiliser is not None:  # monotone: it maps the percentiles to the transformed image's
        lo, hi = (float(v) for v in _vst.forward(np.array([lo, hi]), stabiliser))
    scale = hi - lo
    if stabiliser is not None and "sigma" in chosen.options and options.get("sigma") is None:
        options["sigma"] = 1.0 / scale if scale > 0 else 1.0  # the transform's unit noise, normalised
    return IntensityMap(lo, scale, stabiliser) if scale > 0 else None


def progress_of(
    steps: Generator[tuple[int, int], None, np.ndarray], method: str, item: int, n_items: int
) -> Generator[DenoiseProgress, None, np.ndarray]:
    """A runner's ``(done, total)`` pairs as :class:`DenoiseProgress` records; its result."""
    try:
        while True:
            done, total = next(steps)
            yield DenoiseProgress(method, item, n_items, done, total)
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


NOISE_MODELS = ("blind", "auto", "poisson_gaussian")
"""``noise_model`` choices: ``"blind"`` (the default) denoises the image as it is; ``"auto"``
estimates the noise (:func:`~napari_adl_denoise.noise.estimate_noise_model`) and stabilises its
variance when it grows with intensity; ``"poisson_gaussian"`` always does."""


def resolve_noise_model(
    choice: str | NoiseModel | None, image: npt.ArrayLike, *, channel_axis: int | None = None
) -> NoiseModel | None:
    """The noise model whose variance ``denoise(noise_model=choice)`` stabilises, or None.

    Estimated on ``image`` for ``"auto"`` and ``"poisson_gaussian"``; a part of an image (a
    preview) gets the whole image's result from ``resolve_noise_model(choice, whole)`` passed on
    as a :class:`~napari_adl_denoise.noise.NoiseModel`. A NoiseModel without gain (Gaussian)
    needs no transform: None.
    """
    if choice is None or isinstance(choice, NoiseModel):
        return choice if choice is None or choice.gain > 0 else None
    if not isinstance(choice, str) or choice not in NOISE_MODELS:
        raise ValueError(
            f"unknown noise_model {choice!r}; choose one of: {', '.join(NOISE_MODELS)}, or a NoiseModel"
        )
    if choice == "blind":
        return None
    array = image if type(image).__module__.split(".")[0] == "dask" else np.asarray(image)
    channels_first = np.moveaxis(array, channel_axis, 0) if channel_axis is not None else array
    try:
        estimated = estimate_noise_model(channels_first)
    except ValueError as exc:
        if choice == "auto":  # too little to judge by: as it is
            return None
        raise ValueError(f"noise_model='poisson_gaussian': {exc}; give a NoiseModel") from None
    if estimated.gain > 0:
        return estimated
    if choice == "poisson_gaussian":
        raise ValueError(
            "the noise does not grow with intensity in this image (estimated Gaussian, sigma "
            f"{estimated.sigma:.3g}); use noise_model='blind' or give a NoiseModel"
        )
    return None


def denoise(
    image: npt.ArrayLike,
    method: str = "adl",
    *,
    model: Any = None,
    device: str = "auto",
    tile_shape: int | tuple[int, ...] | None = None,
    overlap: float = 0.25,
    channel_axis: int | None = None,
    spatial_dims: int | None = None,
    intensity_range: tuple[float, float] | None = None,
    noise_model: str | NoiseModel | None = None,
    plane_weights: tuple[float, float, float] | None = None,
    progress: Callable[[DenoiseProgress], object] | None = None,
    **options: Any,
) -> np.ndarray:
    """Denoise a 2D image, an RGB image, a 3D volume or a stack of them.

    Parameters
    ----------
    image : array_like
        uint8, uint16, int16 (negative CT values are fine), float32 or float64. Never modified.
        A dask or Zarr array (learned methods) gives a lazy dask array, computed block by block
        and equal to the in-memory result with the same ``tile_shape``; ``chunks=`` then sets
        the block edge (README, "Images larger than memory").
    method : str
        A name from :func:`~napari_adl_denoise.list_methods` ("adl", "nlm", "tv", ...).
    model : str, path, LoadedModel or Denoiser, optional
        A learned method's weights: a model name (bundled or yours, see
        :func:`~napari_adl_denoise.list_models`), a ``.safetensors`` file, or a network of the
        method's family. By default the method's bundled model for the data (2D gray, 2D RGB or
        3D); if none is installed a :class:`NoModelError` says so (untrained weights never
        denoise an image).
    device : str
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
        ``"mps"``. GPUs run in mixed precision; on CUDA out-of-memory the tile is halved and
        retried, and finally the job moves to the CPU with a warning.
    tile_shape : int or tuple of int, optional
        Tile size per spatial axis (rounded up to a multiple of 8). Default: 512x512 / about
        32^3 on CPU, larger on GPU. Memory is bounded by the tile, not the image.
    overlap : float
        Fraction of a tile shared with its neighbours: the outer quarter of each overlap is
        discarded (too little context there) and the middle half cross-faded. Tiles under
        ~128 pixels need a larger overlap (e.g. 0.5) to be indistinguishable from a whole-image
        result.
    channel_axis : int, optional
        Axis holding colour channels (e.g. -1 for an RGB image). Default: -1 for a 3D array
        whose last axis has 3 or 4 entries when ``spatial_dims`` is not given (napari's RGB
        rule), else none. With 4 channels (RGBA) the colour is denoised and the alpha returned
        exactly as it was. When no ``model`` is given, two kinds of colour image (in memory; a
        dask or Zarr array keeps the colour model) go to the method's bundled gray model
        (:func:`~napari_adl_denoise.inference.colour_route`): one whose channels are equal
        everywhere (a gray image stored as RGB), its result copied into each channel; and, with
        the blind noise model, a 2D one whose noise the channels largely share, denoised by
        :func:`~napari_adl_denoise.inference.iter_opponent`.
    spatial_dims : {2, 3}, optional
        2: denoise slice by slice over the last two axes; 3: the last three axes are a volume.
        Default: 2 for 2D data, 3 otherwise. Leading axes (time, slices) are looped over.
    intensity_range : (float, float), optional
        The intensities mapped to 0 and 1 before denoising (and back after). Default: the 0.1
        and 99.9 percentiles of ``image``. The networks are not shift-invariant, so a part of
        an image (a slice, a chunk of a large volume) gives the whole image's result only with
        the whole image's range: :func:`~napari_adl_denoise.inference.robust_range` of it.
    noise_model : {"blind", "auto", "poisson_gaussian"} or NoiseModel, optional
        Default (``None``, ``"blind"``): the image as it is; the default gray model is trained for
        Gaussian, Poisson, Poisson-Gaussian and Rician noise. ``"poisson_gaussian"`` or a
        :class:`~napari_adl_denoise.noise.NoiseModel` (gain, offset, read-out sigma, when you
        know your camera) stabilises the variance with the generalised Anscombe transform
        first, denoises the now Gaussian noise and inverts the transform without bias;
        ``"auto"`` does so when :func:`~napari_adl_denoise.noise.estimate_noise_model` finds
        the noise growing with intensity. A classical method is then given the transform's
        noise level as its ``sigma`` (a ``sigma`` you give is then on the transformed,
        normalised scale).
    plane_weights : (float, float, float), optional
        When a 2D model denoises a volume (2.5D): how much the slices along each of its three
        axes count in the result, normalised to sum to 1. Default:
        :func:`~napari_adl_denoise.methods.plane_weights` of the volume's shape (by the
        voxels of each slicing plane, so a short axis, often the coarsely sampled one, counts
        least); a part of a larger volume gets the whole volume's result only with the whole
        volume's weights. Ignored by 3D models and 2D images.
    progress : callable, optional
        Called with a :class:`DenoiseProgress` after every tile.
    **options
        Method options, e.g. ``sigma`` (noise level on the [0, 1]-normalised scale) for the
        classical methods. Every learned method takes ``ensemble`` (1, 2, 4 or 8): the network
        also denoises that many flipped or rotated copies of each tile, turned back and
        averaged, at that many times the time. Default: 2 on 2D gray images, 1 on colour
        images (whose larger network would be too slow) and volumes (which already average
        three slicing directions with a 2D model); 8 gains about 0.1 dB over 1.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        float32, same shape and intensity scale as ``image`` (no clipping or rounding to the
        input dtype); lazy for a dask or Zarr ``image``. Pixels whose input is exactly constant
        over 5 pixels along every spatial axis (a masked background, saturation) hold no noise
        and keep their values exactly.

    Raises
    ------
    ValueError
        Unknown method, bad shape, axes, dtype, options, or NaN values (one-line message).

    Examples
    --------
    2D with a classical method, and a 3D volume with ADL weights from a file:

    >>> from skimage import data
    >>> clean = denoise(data.camera()[:64, :64], method="tv")
    >>> volume = denoise(mri, model="my-adl-3d.safetensors", tile_shape=64)  # doctest: +SKIP
    """
    from ._chunked import denoise_lazy, is_lazy

    job = dict(
        model=model,
        device=device,
        tile_shape=tile_shape,
        overlap=overlap,
        channel_axis=channel_axis,
        spatial_dims=spatial_dims,
        intensity_range=intensity_range,
        noise_model=noise_model,
        plane_weights=plane_weights,
        **options,
    )
    if is_lazy(image):
        if progress is not None:
            raise ValueError(
                "progress= is not called for a dask or zarr image (the result is lazy); use "
                "iter_denoise, or dask's own progress bar when you compute it"
            )
        return denoise_lazy(image, method, **job)
    steps = iter_denoise(image, method, **job)
    try:
        while True:
            record = next(steps)
            if progress is not None:
                progress(record)
    except StopIteration as stop:
        return stop.value


def split_alpha(data: np.ndarray, rgb: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """RGBA data's colour, to denoise, and its alpha, kept as it is (the Denoise dock, the Layers
    menu action and ``adl-denoise denoise`` on PNG); gray + alpha (2 channels) gives the gray
    image; other data and no alpha."""
    if rgb and data.shape[-1] in (2, 4):
        return (data[..., 0] if data.shape[-1] == 2 else data[..., :3]), data[..., -1:]
    return data, None


def join_alpha(result: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``result`` with the alpha :func:`split_alpha` kept, in the result's dtype."""
    if alpha is None:
        return result
    colour = result if result.ndim == alpha.ndim else result[..., None]  # gray + alpha
    return np.concatenate([colour, alpha.astype(result.dtype)], axis=-1)
