"""One small factory for every dimension-dependent layer (2D or 3D, chosen by ``spatial_dims``)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Norm = Literal["batch", "none"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    dilation: int = 1,
    bias: bool = False,
) -> nn.Module:
    """'Same' convolution (output size = input size / stride), bias-free unless asked."""
    return _CONV[spatial_dims](
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=dilation * (kernel_size - 1) // 2,
        dilation=dilation,
        bias=bias,
    )


def up_conv(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """Bias-free 3x3 transposed convolution that exactly doubles every spatial size."""
    return _CONV_T[spatial_dims](
        in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=False
    )


def norm(spatial_dims: int, channels: int, kind: Norm) -> nn.Module:
    """Batch norm, or identity for a truly bias-free network (``kind="none"``)."""
    if kind == "batch":
        return _BATCH_NORM[spatial_dims](channels)
    return nn.Identity()


class ResidualBlock(nn.Module):
    """conv(stride) -> norm -> ReLU -> conv -> norm, plus a strided 1x1 shortcut; then ReLU."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        norm_kind: Norm = "batch",
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(spatial_dims, in_channels, out_channels, stride=stride),
            norm(spatial_dims, out_channels, norm_kind),
            nn.ReLU(inplace=True),
            conv(spatial_dims, out_channels, out_channels),
            norm(spatial_dims, out_channels, norm_kind),
        )
        self.shortcut = conv(spatial_dims, in_channels, out_channels, 1, stride=stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


class UpBlock(nn.Module):
    """Decoder stage: transposed conv x2 -> concatenate skip features -> residual block."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        norm_kind: Norm,
    ) -> None:
        super().__init__()
        self.up = up_conv(spatial_dims, in_channels, out_channels)
        self.block = ResidualBlock(
            spatial_dims, out_channels + skip_channels, out_channels, norm_kind=norm_kind
        )

    def forward(self, x, skips):
        return self.block(torch.cat([self.up(x), *skips], dim=1))


def halving_blocks(
    spatial_dims: int, in_channels: int, n_blocks: int, norm_kind: Norm
) -> tuple[nn.Sequential, int]:
    """``n_blocks`` residual blocks, each halving the channels; returns (blocks, out_channels)."""
    blocks = []
    channels = in_channels
    for _ in range(n_blocks):
        blocks.append(ResidualBlock(spatial_dims, channels, max(channels // 2, 1), norm_kind=norm_kind))
        channels = max(channels // 2, 1)
    return nn.Sequential(*blocks), channels
