"""The classical filters: non-local means, total variation, wavelet shrinkage, BM3D and BM4D."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ._registry import MethodContext, Runner, register_method


def _sigma(item: np.ndarray, ctx: MethodContext) -> float:
    """The noise sigma on the normalised scale: given, or estimated (wavelet MAD)."""
    from skimage.restoration import estimate_sigma

    if ctx.options.get("sigma") is not None:
        return float(ctx.options["sigma"])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # Each channel is a single-channel spatial array; skimage guesses colour from a short last axis.
        warnings.filterwarnings("ignore", message="image is size", category=UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma = float(np.mean([estimate_sigma(channel) for channel in item]))
    if not np.isfinite(sigma):
        raise ValueError(f"an image of {item.shape[1:]} is too small to estimate its noise; give sigma")
    return sigma


def _classical(denoise_one: Callable[[np.ndarray, float, MethodContext], np.ndarray]) -> Callable:
    """Wrap a whole-item classical denoiser (channels first) as a runner factory."""

    def factory(ctx: MethodContext) -> Runner:
        def run(item: np.ndarray) -> Generator[tuple[int, int], None, np.ndarray]:
            yield 0, 1
            if item.min() == item.max():  # a constant item (a blank slice) is its own result
                yield 1, 1
                return item.astype(np.float32)
            out = denoise_one(item, _sigma(item, ctx), ctx)
            yield 1, 1
            return np.asarray(out, dtype=np.float32).reshape(item.shape)

        return run

    return factory


def _channel_args(item: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    if item.shape[0] == 1:
        return item[0], {}
    return item, {"channel_axis": 0}


@register_method(
    "nlm",
    "Non-local means (scikit-image), sigma estimated by wavelet MAD unless given",
    options=("sigma",),
)
def _nlm(ctx: MethodContext) -> Runner:
    def one(item, sigma, ctx):
        from skimage.restoration import denoise_nl_means

        data, kw = _channel_args(item)
        patch, distance = (5, 6) if ctx.spatial_dims == 2 else (3, 3)
        return denoise_nl_means(
            data,
            patch_size=patch,
            patch_distance=distance,
            h=0.8 * sigma,
            sigma=sigma,
            fast_mode=True,
            preserve_range=True,
            **kw,
        )

    return _classical(one)(ctx)


@register_method(
    "tv",
    "Total-variation denoising (Chambolle, scikit-image), weight = sigma",
    options=("sigma",),
)
def _tv(ctx: MethodContext) -> Runner:
    def one(item, sigma, ctx):
        from skimage.restoration import denoise_tv_chambolle

        data, kw = _channel_args(item)
        return denoise_tv_chambolle(data, weight=max(sigma, 1e-4), **kw)

    return _classical(one)(ctx)


@register_method(
    "wavelet",
    "Wavelet shrinkage (BayesShrink, soft threshold, scikit-image)",
    options=("sigma",),
)
def _wavelet(ctx: MethodContext) -> Runner:
    def one(item, sigma, ctx):
        from skimage.restoration import denoise_wavelet

        data, kw = _channel_args(item)
        return denoise_wavelet(data, sigma=sigma, method="BayesShrink", mode="soft", rescale_sigma=True, **kw)

    return _classical(one)(ctx)


@register_method(
    "bm3d",
    "BM3D (2D; optional `bm3d` package, not redistributable)",
    spatial_dims=(2,),
    requires="bm3d",
    options=("sigma",),
)
def _bm3d(ctx: MethodContext) -> Runner:
    def one(item, sigma, ctx):
        import bm3d

        if item.shape[0] == 3:
            return np.moveaxis(bm3d.bm3d_rgb(np.moveaxis(item, 0, -1), sigma), -1, 0)
        return np.stack([bm3d.bm3d(channel, sigma_psd=sigma) for channel in item])

    return _classical(one)(ctx)


@register_method(
    "bm4d",
    "BM4D (3D; optional `bm4d` package, not redistributable)",
    spatial_dims=(3,),
    requires="bm4d",
    options=("sigma",),
)
def _bm4d(ctx: MethodContext) -> Runner:
    def one(item, sigma, ctx):
        import bm4d

        return np.stack([bm4d.bm4d(channel, sigma_psd=sigma) for channel in item])

    return _classical(one)(ctx)
