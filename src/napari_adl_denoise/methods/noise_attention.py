"""Two-stage denoising with self-guided noise attention (Sharif, Naqvi and Loh): a noise estimation network,
then a reconstruction network that weighs the image's features by attention on the estimated
noise. ``denoise(..., method="noise-attention", stages=1)`` returns the stage-I image, and
:func:`estimate_noise_map` the stage-I noise estimate itself."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import numpy.typing as npt

from ._learned import register_learned

__all__ = ["estimate_noise_map", "iter_estimate_noise_map"]

NAME = "noise-attention"

DEFAULT_MODELS: dict[tuple[int, int], str] = {
    (2, 1): "noise-attention-2d-gray",
    (2, 3): "noise-attention-2d-gray",
    (3, 1): "noise-attention-2d-gray",
}
"""Bundled models by (spatial_dims, channels): the gray model for all, colour images channel by
channel and volumes over their three slicing directions."""


def iter_estimate_noise_map(image: npt.ArrayLike, **kwargs: Any) -> Generator[Any, None, np.ndarray]:
    """:func:`estimate_noise_map` step by step, like :func:`~napari_adl_denoise.iter_denoise`."""
    from ..inference import iter_denoise

    if "method" in kwargs or "stages" in kwargs:
        raise ValueError(
            "estimate_noise_map runs stage I of 'noise-attention'; give neither method nor stages"
        )
    stage_one = yield from iter_denoise(image, NAME, stages=1, **kwargs)
    return np.asarray(image, dtype=np.float32) - stage_one


def estimate_noise_map(image: npt.ArrayLike, **kwargs: Any) -> np.ndarray:
    """The noise the two-stage network's first stage finds in ``image``: ``image`` minus the
    stage-I image, in ``image``'s intensity units (float32, same shape).

    Takes :func:`~napari_adl_denoise.denoise`'s keyword arguments (``model``, ``device``,
    ``tile_shape``, ``channel_axis``...) except ``method`` and ``stages``. Its standard deviation
    over a flat region is the network's estimate of the noise level there.

    Examples
    --------
    >>> from skimage import data
    >>> import numpy as np
    >>> clean = data.camera()[:128, :128].astype(np.float32)
    >>> noisy = clean + np.random.default_rng(0).normal(0, 25, clean.shape)
    >>> noise = estimate_noise_map(noisy)  # its std is about 25 here
    """
    steps = iter_estimate_noise_map(image, **kwargs)
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value


register_learned(
    NAME,
    "Two-stage network: noise estimation, then reconstruction guided by noise attention (blind; "
    "Gaussian and speckle noise)",
    kind="noise_attention",
    default_models=DEFAULT_MODELS,
    options=("stages",),
    noise_map=iter_estimate_noise_map,
)
