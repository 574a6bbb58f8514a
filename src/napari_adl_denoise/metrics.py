"""Image-quality metrics for 2D images, RGB images and 3D volumes.

``data_range`` defaults to the *reference's* range (``max - min``), explicitly, never to the
range of a dtype: a uint16 image using 4,000 gray levels would otherwise get a PSNR inflated by
~24 dB. Every function takes ``(reference, test)`` in that order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "compare",
    "delta_e",
    "detail_ratio",
    "gmsd",
    "histogram_distance",
    "line_profile",
    "mse",
    "psnr",
    "residual_statistics",
    "ssim",
    "vifp",
]

VIFP_MIN_SIZE = 65  # four scales of valid filtering (17, 9, 5, 3 taps) and halving


def _pair(
    reference: npt.ArrayLike, test: npt.ArrayLike, channel_axis: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference)
    tst = np.asarray(test)
    if ref.shape != tst.shape:
        raise ValueError(f"reference and test shapes differ: {ref.shape} vs {tst.shape}")
    if channel_axis is not None and (
        not isinstance(channel_axis, int | np.integer) or not -ref.ndim <= channel_axis < ref.ndim
    ):
        raise ValueError(f"channel_axis={channel_axis!r} is out of range for {ref.ndim}D images")
    for name, a in (("reference", ref), ("test", tst)):
        if a.dtype.kind not in "uifb" or a.size == 0:
            raise ValueError(f"{name} must be a non-empty real array, got dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if a.dtype.itemsize > 4 and a.dtype.kind == "f" and np.abs(a).max() > _LARGEST:
            raise ValueError(f"{name} has values beyond float32's range (3.4e38): rescale it first")
    return ref.astype(np.float64), tst.astype(np.float64)


_LARGEST = float(np.finfo(np.float32).max)


def _data_range(ref: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        try:
            data_range = float(data_range)
        except (TypeError, ValueError):
            raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}") from None
    if data_range is None:
        data_range = float(ref.max() - ref.min())
        if data_range == 0:
            raise ValueError("reference is constant; pass data_range explicitly")
    if not np.isfinite(data_range) or data_range <= 0 or data_range > _LARGEST:
        raise ValueError(f"data_range must be a finite number > 0, got {data_range}")
    return float(data_range)


def mse(reference: npt.ArrayLike, test: npt.ArrayLike) -> float:
    """Mean squared error."""
    ref, tst = _pair(reference, test)
    return float(np.mean((ref - tst) ** 2))


def psnr(reference: npt.ArrayLike, test: npt.ArrayLike, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (scikit-image's definition), ``inf`` for identical images."""
    ref, tst = _pair(reference, test)
    if np.array_equal(ref, tst):
        return float("inf")
    # The error in units of the range: no overflow or underflow at extreme intensity scales.
    err = float(np.mean(((ref - tst) / _data_range(ref, data_range)) ** 2))
    return float("inf") if err == 0 else float(-10 * np.log10(err))


def ssim(
    reference: npt.ArrayLike,
    test: npt.ArrayLike,
    data_range: float | None = None,
    channel_axis: int | None = None,
) -> float:
    """Structural similarity (scikit-image; 7-pixel window in 2D and 3D)."""
    from skimage.metrics import structural_similarity

    ref, tst = _pair(reference, test, channel_axis)
    spatial = [s for a, s in enumerate(ref.shape) if channel_axis is None or a != channel_axis % ref.ndim]
    if min(spatial) < 7:
        raise ValueError(f"ssim needs at least 7 pixels along every spatial axis, got shape {ref.shape}")
    return float(
        structural_similarity(ref, tst, data_range=_data_range(ref, data_range), channel_axis=channel_axis)
    )


def delta_e(
    reference: npt.ArrayLike, test: npt.ArrayLike, data_range: float | None = None, channel_axis: int = -1
) -> float:
    """Mean CIEDE2000 colour difference of two RGB images (scikit-image).

    Intensities are read as RGB in ``[0, data_range]`` (e.g. 0-255 for uint8) and clipped to it.
    """
    from skimage.color import deltaE_ciede2000, rgb2lab

    ref, tst = _pair(reference, test, channel_axis)
    if ref.ndim < 3 or ref.shape[channel_axis] != 3:
        raise ValueError(f"delta_e needs RGB images with 3 channels on axis {channel_axis}, got {ref.shape}")
    if data_range is None:
        data_range = float(ref.max()) if ref.min() >= 0 else float(ref.max() - ref.min())
    scale = _data_range(ref, data_range)
    labs = [rgb2lab(np.clip(a / scale, 0, 1), channel_axis=channel_axis) for a in (ref, tst)]
    return float(np.mean(deltaE_ciede2000(*labs, channel_axis=channel_axis)))


def _gaussian_window(size: int, ndim: int) -> list[np.ndarray]:
    """Separable normalised Gaussian of ``size`` taps with sigma = size / 5, one per axis."""
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-(t**2) / (2 * (size / 5) ** 2))
    return [g / g.sum()] * ndim


def _filter_valid(x: np.ndarray, window: list[np.ndarray]) -> np.ndarray:
    """Separable correlation keeping only fully overlapped positions ('valid')."""
    from scipy.ndimage import correlate1d

    for axis, w in enumerate(window):
        x = correlate1d(x, w, axis=axis, mode="constant")
        half = len(w) // 2
        x = x[(slice(None),) * axis + (slice(half, x.shape[axis] - half),)]
    return x


def _vifp_single(ref: np.ndarray, tst: np.ndarray, sigma_nsq: float) -> float:
    eps = 1e-10
    num = den = 0.0
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1
        window = _gaussian_window(size, ref.ndim)
        if scale > 1:
            step = (slice(None, None, 2),) * ref.ndim
            ref = _filter_valid(ref, window)[step]
            tst = _filter_valid(tst, window)[step]
        if min(ref.shape) < size:
            raise ValueError(f"vifp needs at least {VIFP_MIN_SIZE} pixels along every spatial axis")
        mu_r, mu_t = _filter_valid(ref, window), _filter_valid(tst, window)
        var_r = np.maximum(_filter_valid(ref * ref, window) - mu_r**2, 0)
        var_t = np.maximum(_filter_valid(tst * tst, window) - mu_t**2, 0)
        cov = _filter_valid(ref * tst, window) - mu_r * mu_t
        # Distortion channel test = g * reference + additive noise of variance sv_sq.
        g = cov / (var_r + eps)
        sv_sq = var_t - g * cov
        flat = var_r < eps
        g[flat], sv_sq[flat], var_r[flat] = 0, var_t[flat], 0
        silent = var_t < eps
        g[silent], sv_sq[silent] = 0, 0
        negative = g < 0
        sv_sq[negative], g[negative] = var_t[negative], 0
        sv_sq = np.maximum(sv_sq, eps)
        num += np.sum(np.log10(1 + g**2 * var_r / (sv_sq + sigma_nsq)))
        den += np.sum(np.log10(1 + var_r / sigma_nsq))
    return float(num / den)


def vifp(
    reference: npt.ArrayLike,
    test: npt.ArrayLike,
    data_range: float | None = None,
    channel_axis: int | None = None,
    sigma_nsq: float = 2.0,
) -> float:
    """Pixel-domain visual information fidelity (Sheikh & Bovik 2006), 2D or 3D.

    The multi-scale pixel-domain form: four scales of Gaussian windows of 17, 9, 5 and 3 taps
    (sigma = taps / 5) with dyadic downsampling, and the model's visual noise variance
    ``sigma_nsq = 2`` defined for 0-255 images; intensities are therefore rescaled so that
    ``data_range`` spans 255. Channels are scored separately and averaged. 1 means identical,
    lower is worse, above 1 means contrast enhancement.
    """
    ref, tst = _pair(reference, test, channel_axis)
    gain = 255.0 / _data_range(ref, data_range)
    if channel_axis is None:
        return _vifp_single(ref * gain, tst * gain, sigma_nsq)
    return float(
        np.mean(
            [
                _vifp_single(r * gain, t * gain, sigma_nsq)
                for r, t in zip(
                    np.moveaxis(ref, channel_axis, 0), np.moveaxis(tst, channel_axis, 0), strict=True
                )
            ]
        )
    )


def detail_ratio(reference: npt.ArrayLike, test: npt.ArrayLike, channel_axis: int | None = None) -> float:
    """How much fine detail ``test`` has against ``reference``: the mean gradient magnitude
    (central differences along every spatial axis) of ``test`` over that of ``reference``.

    1 means as much edge and texture energy as the reference; below 1, detail was smoothed
    away; above 1, the test carries more than the reference: residual noise or artefacts. Read
    it beside PSNR: a denoiser that keeps detail sits closer to 1 at a similar PSNR. Channels
    (``channel_axis``) are pooled; the scale cancels, so no ``data_range`` is needed.
    """
    ref, tst = _pair(reference, test, channel_axis)
    if channel_axis is not None:
        ref, tst = np.moveaxis(ref, channel_axis, 0), np.moveaxis(tst, channel_axis, 0)
    first = 1 if channel_axis is not None else 0
    if ref.ndim - first < 1 or min(ref.shape[first:]) < 3:
        raise ValueError(f"detail_ratio needs at least 3 pixels along every spatial axis, got {ref.shape}")

    def magnitude(a: np.ndarray) -> float:
        grads = np.gradient(a, axis=tuple(range(first, a.ndim)))
        grads = grads if isinstance(grads, list | tuple) else [grads]
        return float(np.mean(np.sqrt(sum(g * g for g in grads))))

    base = magnitude(ref)
    if base == 0:
        raise ValueError("reference is constant: it has no detail to compare with")
    return magnitude(tst) / base


def gmsd(
    reference: npt.ArrayLike,
    test: npt.ArrayLike,
    data_range: float | None = None,
    channel_axis: int | None = None,
) -> float:
    """Gradient magnitude similarity deviation (Xue et al. 2014) of a 2D image: 0 when every
    edge and texture of ``reference`` is in ``test`` with its strength, larger as they are lost
    or false ones appear. Beside :func:`detail_ratio` (how much detail), it says whether the
    detail is the reference's.

    The published form: intensities rescaled so that ``data_range`` spans 255, colour to
    luminance (ITU-R BT.601 weights), 2x2 average downsampling, 3x3 Prewitt gradients, the
    per-pixel similarity ``(2 m_r m_t + c) / (m_r^2 + m_t^2 + c)`` with ``c = 170``, and the
    standard deviation of that map.
    """
    from scipy.ndimage import convolve, uniform_filter

    ref, tst = _pair(reference, test, channel_axis)
    gain = 255.0 / _data_range(ref, data_range)
    if channel_axis is not None:
        weights = np.array([0.299, 0.587, 0.114])
        if ref.shape[channel_axis] != 3:
            raise ValueError(f"gmsd needs 3 colour channels on channel_axis, got {ref.shape[channel_axis]}")
        ref, tst = (np.tensordot(np.moveaxis(a, channel_axis, -1), weights, axes=1) for a in (ref, tst))
    if ref.ndim != 2 or min(ref.shape) < 4:
        raise ValueError(f"gmsd takes 2D images of at least 4x4 pixels, got shape {ref.shape}")
    prewitt = np.array([[1, 0, -1]] * 3) / 3.0

    def magnitude(a: np.ndarray) -> np.ndarray:
        a = uniform_filter(a * gain, 2, mode="reflect")[::2, ::2]
        return np.hypot(convolve(a, prewitt, mode="reflect"), convolve(a, prewitt.T, mode="reflect"))

    m_r, m_t = magnitude(ref), magnitude(tst)
    similarity = (2 * m_r * m_t + 170.0) / (m_r**2 + m_t**2 + 170.0)
    return float(similarity.std())


def histogram_distance(
    reference: npt.ArrayLike, test: npt.ArrayLike, data_range: float | None = None
) -> float:
    """How far the intensity distribution of ``test`` is from that of ``reference``, whatever
    their positions: the earth mover's (Wasserstein-1) distance between their histograms, as a
    fraction of ``data_range`` (0 = the same intensities; 0.01 = shifted by 1% of the range on
    average). ADL's histogram loss aims at this: a smoothing denoiser narrows the histogram and
    loses the clean image's intensity spread even where its PSNR is high.
    """
    ref, tst = _pair(reference, test)
    distance = np.mean(np.abs(np.sort(ref, axis=None) - np.sort(tst, axis=None)))
    return float(distance / _data_range(ref, data_range))


def _items(
    a: np.ndarray, channel_axis: int | None, spatial_dims: int | None
) -> tuple[np.ndarray, int | None]:
    """``a`` as a stack of items of ``spatial_dims`` spatial axes (plus the channel axis, last)."""
    if channel_axis is not None:
        a = np.moveaxis(a, channel_axis, -1)
    spatial = a.ndim - (channel_axis is not None)
    dims = spatial if spatial_dims is None else spatial_dims
    if spatial_dims is not None and (dims not in (2, 3) or dims > spatial):
        raise ValueError(f"spatial_dims must be 2 or 3 and at most the image's {spatial} spatial axes")
    item = a.shape[spatial - dims :]
    return a.reshape(-1, *item), (-1 if channel_axis is not None else None)


def compare(
    reference: npt.ArrayLike,
    test: npt.ArrayLike,
    data_range: float | None = None,
    channel_axis: int | None = None,
    spatial_dims: int | None = None,
) -> dict[str, float]:
    """All metrics of ``test`` against ``reference``.

    Parameters
    ----------
    spatial_dims
        2 or 3: the last 2 or 3 axes (besides ``channel_axis``) are an image; the axes before them
        are a stack of images, as :func:`napari_adl_denoise.denoise` treats them. SSIM and VIFP
        are then the mean over the stack's images; PSNR, MSE and DeltaE are over all values, with
        one ``data_range`` (the whole reference's). Default: every axis is spatial.

    Returns
    -------
    dict
        ``psnr``, ``ssim``, ``mse``, ``vifp`` (when every spatial axis has >= 65 pixels, see
        ``VIFP_MIN_SIZE``), ``delta_e`` (RGB only) and the ``data_range`` used.

    Examples
    --------
    >>> from skimage import data
    >>> clean = data.camera()
    >>> scores = compare(clean, add_noise(clean, sigma=25, seed=0))  # doctest: +SKIP
    >>> round(scores["psnr"], 1)  # doctest: +SKIP
    20.2
    >>> scores = compare(clean_tzyx, denoised_tzyx, spatial_dims=3)  # doctest: +SKIP
    """
    ref, tst = _pair(reference, test)
    data_range = _data_range(ref, data_range)
    refs, axis = _items(ref, channel_axis, spatial_dims)
    tsts, _ = _items(tst, channel_axis, spatial_dims)
    scores = {
        "psnr": psnr(ref, tst, data_range),
        "ssim": float(np.mean([ssim(r, t, data_range, axis) for r, t in zip(refs, tsts, strict=True)])),
        "mse": mse(ref, tst),
    }
    spatial = refs.shape[1:-1] if axis is not None else refs.shape[1:]
    if min(spatial) >= VIFP_MIN_SIZE:
        scores["vifp"] = float(
            np.mean([vifp(r, t, data_range, axis) for r, t in zip(refs, tsts, strict=True)])
        )
    if channel_axis is not None and ref.shape[channel_axis] == 3:
        scores["delta_e"] = delta_e(ref - ref.min(), tst - ref.min(), data_range, channel_axis)
    scores["data_range"] = data_range
    return scores


def residual_statistics(noisy: npt.ArrayLike, denoised: npt.ArrayLike) -> dict[str, float]:
    """Mean, standard deviation, min and max of the residual ``noisy - denoised``: without a clean
    reference, what a denoiser removed (zero-mean and structureless if it removed only noise)."""
    a, b = _pair(noisy, denoised)
    residual = a - b
    return {
        "mean": float(residual.mean()),
        "std": float(residual.std()),
        "min": float(residual.min()),
        "max": float(residual.max()),
    }


def line_profile(
    image: npt.ArrayLike,
    start: npt.ArrayLike,
    stop: npt.ArrayLike,
    channel_axis: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Intensities along the segment from ``start`` to ``stop``, only where it lies in the image.

    ``start`` and ``stop`` are coordinates of every axis but ``channel_axis`` (pixel centres are
    at 0, 1, ..., n - 1); the part of the segment outside the image is left out, never filled
    with edge values. Samples are one pixel apart, linearly interpolated; channels are averaged.

    Returns
    -------
    fraction, values
        Where each sample lies on the whole segment (0 at ``start``, 1 at ``stop``), and its
        intensity; both empty when the segment misses the image.
    """
    from scipy.ndimage import map_coordinates

    data = np.asarray(image)
    if channel_axis is not None:
        data = np.moveaxis(data, channel_axis, -1)
    shape = data.shape[:-1] if channel_axis is not None else data.shape
    p0, p1 = np.asarray(start, dtype=np.float64), np.asarray(stop, dtype=np.float64)
    if p0.shape != (len(shape),) or p1.shape != (len(shape),):
        raise ValueError(f"start and stop need {len(shape)} coordinates, got {p0.shape} and {p1.shape}")
    # the part of the segment p0 + t (p1 - p0), t in [0, 1], inside 0 <= x <= n - 1 on every axis
    lo, hi = 0.0, 1.0
    for a, b, n in zip(p0, p1, shape, strict=True):
        if a == b:
            if not 0 <= a <= n - 1:
                lo, hi = 1.0, 0.0
            continue
        t0, t1 = sorted(((0 - a) / (b - a), (n - 1 - a) / (b - a)))
        lo, hi = max(lo, t0), min(hi, t1)
    if lo > hi:
        return np.empty(0), np.empty(0)
    length = float(np.linalg.norm(p1 - p0)) * (hi - lo)
    fraction = np.linspace(lo, hi, max(int(np.ceil(round(length, 6))) + 1, 2))  # a 59 px span, not 59.0000001
    coords = (p0[:, None] + fraction[None] * (p1 - p0)[:, None]).clip(0, np.asarray(shape)[:, None] - 1)
    # read only the box around the line (one plane of a volume), in floating point
    first = np.floor(coords.min(axis=1)).astype(int)
    last = np.minimum(np.ceil(coords.max(axis=1)).astype(int) + 1, shape)
    box = np.asarray(data[tuple(slice(a, b) for a, b in zip(first, last, strict=True))], dtype=np.float64)
    coords = coords - first[:, None]
    if channel_axis is None:
        return fraction, map_coordinates(box, coords, order=1)
    channels = [map_coordinates(box[..., c], coords, order=1) for c in range(box.shape[-1])]
    return fraction, np.mean(channels, axis=0)
