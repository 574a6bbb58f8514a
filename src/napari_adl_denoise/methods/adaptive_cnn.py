"""The multi-scale adaptive CNN for blind denoising: multi-scale features, damping gate, 1x1
reconstruction with an lp penalty, trained in three phases (clean-to-clean, noisy-to-clean,
adversarial)."""

from __future__ import annotations

from ._learned import register_learned

DEFAULT_MODELS: dict[tuple[int, int], str] = {
    (2, 1): "adaptive-cnn-2d-gray",
    (3, 1): "adaptive-cnn-2d-gray",
}
"""Bundled models by (spatial_dims, channels); volumes get the 2D model over their three
slicing directions."""

register_learned(
    "adaptive-cnn",
    "Multi-scale adaptive CNN with damping layers (blind; three-phase training, lp regulariser)",
    kind="adaptive_cnn",
    default_models=DEFAULT_MODELS,
)
