"""The registry of denoising methods, learned and classical.

Every method registers under a name with a one-line description; the Python API, the CLI and
the napari widgets read their choices from here. A method is a *runner factory*: given the
job's :class:`MethodContext` it returns a callable that denoises one item of shape
``(channels, *spatial)`` (intensities normalised to about [0, 1]) as a generator yielding
``(done, total)`` progress pairs and returning the denoised item.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Method", "MethodContext", "get_method", "list_methods", "register_method"]

Runner = Callable[[np.ndarray], Generator[tuple[int, int], None, np.ndarray]]


@dataclass
class MethodContext:
    """What a method needs to know about one denoising job."""

    spatial_dims: int
    channels: int
    model: Any = None
    device: str = "auto"
    tile_shape: int | tuple[int, ...] | None = None
    overlap: float = 0.25
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A registered denoising method."""

    name: str
    description: str
    factory: Callable[[MethodContext], Runner]
    learned: bool = False
    spatial_dims: tuple[int, ...] = (2, 3)
    requires: str | None = None
    """Optional package the method needs (``None``: always available)."""
    options: tuple[str, ...] = ()
    """Keyword options the method accepts through ``denoise(**options)``."""

    @property
    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


_REGISTRY: dict[str, Method] = {}


def register_method(
    name: str,
    description: str,
    *,
    learned: bool = False,
    spatial_dims: tuple[int, ...] = (2, 3),
    requires: str | None = None,
    options: tuple[str, ...] = (),
) -> Callable[[Callable[[MethodContext], Runner]], Callable[[MethodContext], Runner]]:
    """Decorator registering a runner factory as a method called ``name``."""

    def decorate(factory: Callable[[MethodContext], Runner]) -> Callable[[MethodContext], Runner]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        _REGISTRY[name] = Method(name, description, factory, learned, spatial_dims, requires, options)
        return factory

    return decorate


def list_methods() -> list[str]:
    """Names of all registered methods, learned ones first.

    Examples
    --------
    >>> "adl" in list_methods()
    True
    """
    return sorted(_REGISTRY, key=lambda n: (not _REGISTRY[n].learned, n))


def get_method(name: str) -> Method:
    """The registered method called ``name``.

    Raises
    ------
    ValueError
        If no method has that name (the message lists the choices).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(list_methods())}") from None


def _sigma(item: np.ndarray, ctx: MethodContext) -> float:
    """The noise sigma on the normalised scale: given, or estimated (wavelet MAD)."""
    from skimage.restoration import estimate_sigma

    if ctx.options.get("sigma") is not None:
        return float(ctx.options["sigma"])
    with warnings.catch_warnings():
        # Each channel is a single-channel spatial array; skimage guesses colour from a short last axis.
        warnings.filterwarnings("ignore", message="image is size", category=UserWarning)
        return float(np.mean([estimate_sigma(channel) for channel in item]))


def _classical(denoise_one: Callable[[np.ndarray, float, MethodContext], np.ndarray]) -> Callable:
    """Wrap a whole-item classical denoiser (channels first) as a runner factory."""

    def factory(ctx: MethodContext) -> Runner:
        def run(item: np.ndarray) -> Generator[tuple[int, int], None, np.ndarray]:
            yield 0, 1
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


@register_method(
    "adl",
    "ADL's Efficient-Unet (bundled weights trained with its L1 + ATW texture losses, not yet its "
    "adversarial phase; or your own weights)",
    learned=True,
)
def _adl(ctx: MethodContext) -> Runner:
    from ._adl import AdlRunner

    return AdlRunner(ctx)
