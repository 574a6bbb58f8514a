"""ADL (adversarial distortion learning): the Efficient-Unet denoiser, 2D and 3D."""

from __future__ import annotations

from ._learned import register_learned

DEFAULT_MODELS: dict[tuple[int, int], str] = {
    (2, 1): "adl-2d-gray-real",
    (2, 3): "adl-2d-rgb-real",
    (3, 1): "adl-2d-gray-real",
}
"""The bundled model ``denoise`` uses for (spatial_dims, channels) when none is given, chosen by
``benchmarks/bench_quality.py`` (README, "Benchmark"). Gray images get ``adl-2d-gray-real``,
trained for Poisson, Rician and spatially varying noise, noise-free backgrounds and flat
(piecewise-constant) regions: 1.3-9.8 dB better than ``adl-2d-gray`` there, 0.08-0.13 dB below
it on uniform Gaussian noise. Colour images get ``adl-2d-rgb-real``: ``adl-2d-rgb`` taught the
same noise (but Rician), saturated and clipped colours, and flat colour regions. Volumes get the
gray model over their three slicing directions, averaged with weights by slicing plane (2.5D,
:func:`~napari_adl_denoise.methods.plane_weights`), which beat the 3D network ``adl-3d-gray`` on
the held-out volumes at every noise level."""

register_learned(
    "adl",
    "ADL's Efficient-Unet (bundled weights trained with its L1 + ATW texture losses; its adversarial "
    "phase was measured and not adopted; or your own weights)",
    kind="efficient_unet",
    default_models=DEFAULT_MODELS,
)
