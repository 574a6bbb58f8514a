"""Networks: the ADL Efficient-Unet denoiser and discriminator, the multi-scale adaptive CNN
the two-stage noise-attention network and IDResNet (with its SRGAN discriminator), 2D and 3D.
A weights file's config says which family rebuilds it (its ``kind``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Tag, TypeAdapter

from ._base import Denoiser
from .adaptive_cnn import AdaptiveCnn, AdaptiveCnnConfig
from .efficient_unet import (
    DiscriminatorConfig,
    EfficientUnet,
    EfficientUnetConfig,
    EfficientUnetDiscriminator,
)
from .idresnet import IdResNet, IdResNetConfig, SrganDiscriminator, SrganDiscriminatorConfig
from .noise_attention import NoiseAttention, NoiseAttentionConfig

__all__ = [
    "AdaptiveCnn",
    "AdaptiveCnnConfig",
    "AnyConfig",
    "AnyDiscriminatorConfig",
    "Denoiser",
    "DenoiserConfig",
    "DiscriminatorConfig",
    "EfficientUnet",
    "EfficientUnetConfig",
    "EfficientUnetDiscriminator",
    "IdResNet",
    "IdResNetConfig",
    "NoiseAttention",
    "NoiseAttentionConfig",
    "SrganDiscriminator",
    "SrganDiscriminatorConfig",
    "build_discriminator",
    "build_model",
    "parse_config",
]

_NETWORKS: dict[str, type[Denoiser]] = {
    "efficient_unet": EfficientUnet,
    "adaptive_cnn": AdaptiveCnn,
    "noise_attention": NoiseAttention,
    "idresnet": IdResNet,
}
AnyConfig = EfficientUnetConfig | AdaptiveCnnConfig | NoiseAttentionConfig | IdResNetConfig
"""The type of any parsed denoiser config."""


def _kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind or "efficient_unet"  # files and recipes from before the second family


DenoiserConfig = Annotated[
    Annotated[EfficientUnetConfig, Tag("efficient_unet")]
    | Annotated[AdaptiveCnnConfig, Tag("adaptive_cnn")]
    | Annotated[NoiseAttentionConfig, Tag("noise_attention")]
    | Annotated[IdResNetConfig, Tag("idresnet")],
    Discriminator(_kind),
]
"""A denoising network's config; its ``kind`` names the family (Efficient-Unet when absent)."""

_ADAPTER: TypeAdapter = TypeAdapter(DenoiserConfig)


def parse_config(data: str | dict) -> AnyConfig:
    """A denoiser config from JSON text or a dict (pydantic ValidationError if invalid)."""
    return _ADAPTER.validate_json(data) if isinstance(data, str) else _ADAPTER.validate_python(data)


def _discriminator_kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind or "efficient_unet_discriminator"


AnyDiscriminatorConfig = Annotated[
    Annotated[DiscriminatorConfig, Tag("efficient_unet_discriminator")]
    | Annotated[SrganDiscriminatorConfig, Tag("srgan_discriminator")],
    Discriminator(_discriminator_kind),
]
"""A discriminator's config: ADL's Efficient-Unet (per-pixel maps; the default) or SRGAN's
(one logit per image)."""


def build_discriminator(config: DiscriminatorConfig | SrganDiscriminatorConfig):
    """The (untrained) discriminator a config describes."""
    if config.kind == "srgan_discriminator":
        return SrganDiscriminator(config)
    return EfficientUnetDiscriminator(config)


def build_model(config: AnyConfig) -> Denoiser:
    """The (untrained) network a config describes."""
    return _NETWORKS[config.kind](config)
