"""Efficient-Unet, the ADL denoiser, and the Efficient-Unet discriminator (2D and 3D).

Architecture from the ADL paper (Ghahremani et al., section III-A) with the facts in the
project's ``ADL_NOTES.md``. With filter base ``b`` the encoder widths are
``f1 = 3b, f2 = 4b, f3 = 5b`` and the bridge ``fb = 6b`` (b = 32 gives 96/128/160/192, the
paper's denoiser; b = 16 gives 48/64/80/96, the paper's discriminator).

Choices where the paper is vague, kept configurable:

* ``norm="batch"`` matches the reference implementation; ``norm="none"`` is the truly bias-free
  network the paper argues for (batch norm adds an affine shift).
* The content enhancer uses kernel 7 in 2D and 3 in 3D by default (dilations 1, 2, 4); a 7^3
  kernel costs ~2x the 3D compute for little benefit.
* The transformer heads end in a sigmoid as in the paper, so the network works on intensities
  normalised to [0, 1]; ``output_activation="none"`` drops it; ``"residual"`` makes each head
  predict the noise, subtracted from the (area-downsampled) input (residual learning, as in
  DnCNN), which trains faster for the same compute.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ._base import Denoiser, check_input
from ._layers import Norm, ResidualBlock, UpBlock, conv, halving_blocks, norm

__all__ = [
    "GUIDE_CHANNELS",
    "DiscriminatorConfig",
    "EfficientUnet",
    "EfficientUnetConfig",
    "EfficientUnetDiscriminator",
]

GUIDE_CHANNELS = 4
"""A guided network's extra input: its guide's plane-weighted 2.5D mean, then the three slicing
directions' results (along axes 0, 1 and 2)."""


class _UnetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spatial_dims: Literal[2, 3] = 2
    in_channels: Literal[1, 3] = 1
    norm: Norm = "batch"

    @property
    def network_channels(self) -> int:
        """Channels of the network's input."""
        return self.in_channels

    @property
    def widths(self) -> tuple[int, int, int, int]:
        """Encoder widths f1, f2, f3 and the bridge width fb."""
        b = self.filter_base
        return 3 * b, 4 * b, 5 * b, 6 * b


class EfficientUnetConfig(_UnetConfig):
    """Everything needed to rebuild an :class:`EfficientUnet`.

    Parameters
    ----------
    spatial_dims : {2, 3}
        2 for images, 3 for volumes.
    in_channels, out_channels : {1, 3}
        Gray or RGB; ``out_channels`` defaults to ``in_channels``.
    filter_base : int
        ``b`` in the widths 3b/4b/5b/6b; the paper uses 32.
    enhancer_kernel : int, optional
        Odd kernel size of the content enhancer; default 7 in 2D, 3 in 3D.
    norm : {"batch", "none"}
        Normalisation inside the residual blocks.
    output_activation : {"sigmoid", "none", "residual"}
        Activation closing each transformer head; "residual": the heads estimate the noise and
        the output is the input minus that estimate.
    guide : str, optional
        A 3D gray network that refines a 2D model's view of the volume: the name of that 2D
        model (same family), whose results over the volume's three slicing directions, and
        their plane-weighted mean, are four more input channels (:data:`GUIDE_CHANNELS`). The
        output is the mean minus this network's residual estimate, so a network whose heads
        give zeros returns the 2D model's 2.5D result unchanged.
    """

    kind: Literal["efficient_unet"] = "efficient_unet"
    out_channels: Literal[1, 3] | None = None
    filter_base: int = Field(32, ge=2, le=256)
    enhancer_kernel: int | None = Field(None, ge=1, le=15)
    output_activation: Literal["sigmoid", "none", "residual"] = "sigmoid"
    guide: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _fill_defaults(self) -> EfficientUnetConfig:
        if self.out_channels is None:
            self.out_channels = self.in_channels
        if self.guide is not None and (
            self.spatial_dims,
            self.in_channels,
            self.out_channels,
            self.output_activation,
        ) != (3, 1, 1, "residual"):
            raise ValueError("a guided network (guide=) is a 3D gray network with residual heads")
        if self.enhancer_kernel is None:
            self.enhancer_kernel = 7 if self.spatial_dims == 2 else 3
        if self.enhancer_kernel % 2 == 0:
            raise ValueError(f"enhancer_kernel must be odd, got {self.enhancer_kernel}")
        return self

    @property
    def summary(self) -> str:
        """Short text for status lines."""
        return f"b = {self.filter_base}" + (f", refining {self.guide}" if self.guide else "")

    @property
    def network_channels(self) -> int:
        """Channels of the network's input: the image's, and the guide's four."""
        return self.in_channels + (GUIDE_CHANNELS if self.guide else 0)

    def memory_bytes(self, tile_shape: tuple[int, ...]) -> int:
        """Approximate peak bytes of one tile's forward pass (float32, CPU), ~ linear in b:
        measured by benchmarks/bench_denoise.py with b = 32, 1104 MB for 512^2 and 7975 MB for
        128^3."""
        per_voxel_b32 = {2: 4.2e3, 3: 3.8e3}[self.spatial_dims]
        return int(math.prod(tile_shape) * per_voxel_b32 * self.filter_base / 32)


class DiscriminatorConfig(_UnetConfig):
    """Everything needed to rebuild an :class:`EfficientUnetDiscriminator` (paper: b = 16)."""

    kind: Literal["efficient_unet_discriminator"] = "efficient_unet_discriminator"
    filter_base: int = Field(16, ge=2, le=256)


class ContentEnhancer(nn.Module):
    """Full-resolution residual block on the raw input with dilations 1, 2 and 4."""

    def __init__(self, spatial_dims: int, in_channels: int, width: int, kernel: int, norm_kind):
        super().__init__()
        branch = width // 2
        self.branches = nn.ModuleList(
            conv(spatial_dims, in_channels, branch, kernel, dilation=d) for d in (1, 2, 4)
        )
        self.merge = nn.Sequential(
            norm(spatial_dims, 3 * branch, norm_kind),
            nn.ReLU(inplace=True),
            conv(spatial_dims, 3 * branch, width, kernel),
            norm(spatial_dims, width, norm_kind),
        )
        self.shortcut = conv(spatial_dims, in_channels, width, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.act(self.merge(features) + self.shortcut(x))


class _Head(nn.Module):
    """Residual blocks halving the channels n times, then an activation and a 1x1 conv."""

    def __init__(self, spatial_dims, in_channels, out_channels, n_blocks, norm_kind, act_in, act_out):
        super().__init__()
        self.blocks, width = halving_blocks(spatial_dims, in_channels, n_blocks, norm_kind)
        self.act_in = act_in
        self.to_image = conv(spatial_dims, width, out_channels, 1)
        self.act_out = act_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_out(self.to_image(self.act_in(self.blocks(x))))


class _UnetBackbone(nn.Module):
    """Encoder E1 (stride 1), E2, E3, bridge (stride 2 each) and the three decoder stages."""

    def __init__(self, config: _UnetConfig, extra_full_res_skip: int = 0) -> None:
        super().__init__()
        sd, nk = config.spatial_dims, config.norm
        f1, f2, f3, fb = config.widths
        self.enc1 = ResidualBlock(sd, config.network_channels, f1, norm_kind=nk)
        self.enc2 = ResidualBlock(sd, f1, f2, stride=2, norm_kind=nk)
        self.enc3 = ResidualBlock(sd, f2, f3, stride=2, norm_kind=nk)
        self.bridge = ResidualBlock(sd, f3, fb, stride=2, norm_kind=nk)
        self.dec1 = UpBlock(sd, fb, f3, f3, nk)
        self.dec2 = UpBlock(sd, f3, f2, f2, nk)
        self.dec3 = UpBlock(sd, f2, f1 + extra_full_res_skip, f1, nk)

    def forward(self, x: torch.Tensor, full_res_skips: tuple[torch.Tensor, ...] = ()):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        bridge = self.bridge(e3)
        d1 = self.dec1(bridge, (e3,))
        d2 = self.dec2(d1, (e2,))
        d3 = self.dec3(d2, (e1, *full_res_skips))
        return bridge, d1, d2, d3


def _check_input(x: torch.Tensor, spatial_dims: int, in_channels: int) -> None:
    check_input(x, spatial_dims, in_channels)
    if any(s % 8 for s in x.shape[2:]):
        raise ValueError(f"spatial sizes must be multiples of 8 (pad them), got {tuple(x.shape[2:])}")


class EfficientUnet(Denoiser):
    """The ADL denoiser.

    ``forward(x)`` returns the full-resolution denoised image; ``forward(x, multiscale=True)``
    returns ``(full, half, quarter)`` from the transformer heads T1, T2 and T3, which the
    multiscale training loss compares with the area-downsampled reference.

    Examples
    --------
    >>> net = EfficientUnet(EfficientUnetConfig(spatial_dims=3, filter_base=8))
    >>> net(torch.rand(1, 1, 16, 24, 32)).shape
    torch.Size([1, 1, 16, 24, 32])
    """

    def __init__(self, config: EfficientUnetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EfficientUnetConfig()
        sd, nk = config.spatial_dims, config.norm
        f1, f2, f3, _ = config.widths
        self.enhancer = ContentEnhancer(sd, config.network_channels, f1, config.enhancer_kernel, nk)
        self.backbone = _UnetBackbone(config, extra_full_res_skip=f1)
        out = nn.Sigmoid() if config.output_activation == "sigmoid" else nn.Identity()
        head = {
            "out_channels": config.out_channels,
            "norm_kind": nk,
            "act_in": nn.Identity(),
            "act_out": out,
        }
        self.head_full = _Head(sd, f1, n_blocks=1, **head)
        self.head_half = _Head(sd, f2, n_blocks=2, **head)
        self.head_quarter = _Head(sd, f3, n_blocks=3, **head)

    def forward(self, x: torch.Tensor, multiscale: bool = False):
        _check_input(x, self.config.spatial_dims, self.config.network_channels)
        _, d1, d2, d3 = self.backbone(x, (self.enhancer(x),))
        full = self._output(self.head_full(d3), x, 1)
        if not multiscale:
            return full
        return full, self._output(self.head_half(d2), x, 2), self._output(self.head_quarter(d1), x, 4)

    def _output(self, head: torch.Tensor, x: torch.Tensor, factor: int) -> torch.Tensor:
        if self.config.output_activation != "residual":
            return head
        pool = nn.functional.avg_pool2d if self.config.spatial_dims == 2 else nn.functional.avg_pool3d
        base = x[:, 1:2] if self.config.guide else x  # a guided network refines the 2.5D mean
        return (base if factor == 1 else pool(base, factor)) - head


class EfficientUnetDiscriminator(nn.Module):
    """The ADL discriminator: an Efficient-Unet without content enhancer.

    ``forward(x)`` returns four maps of raw per-pixel logits: the bridge map (1/8 scale) and the
    full, 1/2 and 1/4 scale decoder maps, for the per-pixel hinge loss (paper eq. 6-8).
    """

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DiscriminatorConfig()
        sd, nk = config.spatial_dims, config.norm
        f1, f2, f3, fb = config.widths
        self.backbone = _UnetBackbone(config)
        self.bridge_map = conv(sd, fb, 1, 1)
        head = {
            "out_channels": 1,
            "norm_kind": nk,
            "act_in": nn.LeakyReLU(0.2),
            "act_out": nn.Identity(),
        }
        self.map_full = _Head(sd, f1, n_blocks=1, **head)
        self.map_half = _Head(sd, f2, n_blocks=2, **head)
        self.map_quarter = _Head(sd, f3, n_blocks=3, **head)

    def forward(self, x: torch.Tensor):
        _check_input(x, self.config.spatial_dims, self.config.in_channels)
        bridge, d1, d2, d3 = self.backbone(x)
        return self.bridge_map(bridge), self.map_full(d3), self.map_half(d2), self.map_quarter(d1)
