"""Networks: the Efficient-Unet denoiser and discriminator, 2D and 3D."""

from __future__ import annotations

from .efficient_unet import (
    DiscriminatorConfig,
    EfficientUnet,
    EfficientUnetConfig,
    EfficientUnetDiscriminator,
)

__all__ = [
    "DiscriminatorConfig",
    "EfficientUnet",
    "EfficientUnetConfig",
    "EfficientUnetDiscriminator",
]
