"""IDResNet, the generator of IDGAN, and its SRGAN-style discriminator (2D and 3D).

From the paper in ``seeds/003`` (section 3.1, Fig. 1): SRResNet's generator with three changes,
(1) no batch normalisation, (2) 32 residual blocks instead of 16, (3) no PixelShuffler layers,
since denoising keeps the image's size:

* a 9x9 convolution to ``features`` channels and a PReLU;
* ``blocks`` residual blocks, each ``x + conv(PReLU(conv(x)))`` with 3x3 convolutions;
* a 3x3 convolution, added to the first convolution's output (SRResNet's long skip);
* a 9x9 convolution to the image's channels.

Inputs are scaled to [0, 1] and targets to [-1, 1], as the paper does: the last convolution
draws the image on the [-1, 1] scale and :meth:`IdResNet.forward` returns ``(t + 1) / 2``, so the
network fits the plugin's [0, 1] convention while a loss on ``2 * out - 1`` is the paper's (the
MSE there is 4x the MSE on [0, 1]; the recipes write the paper's weights on that scale).

Choices where the paper is silent, each kept configurable:

* The output is linear (``output_activation="linear"``), not SRGAN's tanh: the plugin's
  percentile normalisation puts the brightest pixels a little above 1, which a tanh could only
  approach, and a linear output gives MSE its full gradient near the range ends.
  ``"tanh"`` is the SRGAN choice.
* ``image_residual`` (off, the paper's) adds the input, ``2 * x - 1``, to the last convolution,
  so the network predicts the noise instead of the image (DnCNN's residual learning).
* Convolutions carry biases and each PReLU has one slope per channel.

The discriminator (:class:`SrganDiscriminator`) is SRGAN's: a 3x3 convolution and LeakyReLU
(0.2), then seven 3x3 convolution + batch norm + LeakyReLU blocks whose widths double every
second block and whose strides alternate 2 and 1 (64, 64/2, 128, 128/2, 256, 256/2, 512, 512/2
at the paper's size), a dense layer of 1024, LeakyReLU and a dense layer to one logit. One
change makes it take any patch size: the last block's maps are averaged over space before the
dense layers (SRGAN flattens a fixed 6x6 map of its 96x96 crops).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ._base import Denoiser, DenoiserConfigBase, check_input
from ._layers import conv, norm

__all__ = ["IdResNet", "IdResNetConfig", "SrganDiscriminator", "SrganDiscriminatorConfig"]

_SLOPE = 0.2  # SRGAN's LeakyReLU


class IdResNetConfig(DenoiserConfigBase):
    """Everything needed to rebuild an :class:`IdResNet`.

    Parameters
    ----------
    spatial_dims : {2, 3}
        2 for images, 3 for volumes.
    in_channels, out_channels : {1, 3}
        Gray or RGB; ``out_channels`` defaults to ``in_channels``.
    features : int
        Channels of every convolution but the last (paper: 64).
    blocks : int
        Residual blocks (paper: 32).
    outer_kernel : int
        Kernel of the first and last convolutions (paper: 9).
    output_activation : {"linear", "tanh"}
        On the [-1, 1] image the last convolution draws (see the module docstring).
    image_residual : bool
        Predict the noise and subtract it from the input (not the paper's).
    """

    kind: Literal["idresnet"] = "idresnet"
    features: int = Field(64, ge=4, le=256)
    blocks: int = Field(32, ge=1, le=64)
    outer_kernel: int = Field(9, ge=1, le=15)
    output_activation: Literal["linear", "tanh"] = "linear"
    image_residual: bool = False

    @model_validator(mode="after")
    def _odd_kernel(self) -> IdResNetConfig:
        if self.outer_kernel % 2 == 0:
            raise ValueError(f"outer_kernel must be odd, got {self.outer_kernel}")
        return self

    @property
    def summary(self) -> str:
        """Short text for status lines."""
        return f"{self.blocks} residual blocks, {self.features} features"

    def memory_bytes(self, tile_shape: tuple[int, ...]) -> int:
        """Approximate peak bytes of one tile's forward pass (float32): the long skip's maps,
        a block's input, its hidden maps and its output alive at once."""
        return int(math.prod(tile_shape) * 4 * 5 * self.features)


class _ResidualBlock(nn.Module):
    """``x + conv(PReLU(conv(x)))``: SRResNet's block without batch norm."""

    def __init__(self, sd: int, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(sd, features, features, bias=True),
            nn.PReLU(features),
            conv(sd, features, features, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class IdResNet(Denoiser):
    """The IDResNet generator (see the module docstring).

    Examples
    --------
    >>> net = IdResNet(IdResNetConfig(features=8, blocks=2))
    >>> net(torch.rand(1, 1, 24, 30)).shape
    torch.Size([1, 1, 24, 30])
    >>> net3d = IdResNet(IdResNetConfig(spatial_dims=3, features=4, blocks=1, outer_kernel=3))
    >>> net3d(torch.rand(1, 1, 8, 16, 12)).shape
    torch.Size([1, 1, 8, 16, 12])
    """

    def __init__(self, config: IdResNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or IdResNetConfig()
        sd, f, k = config.spatial_dims, config.features, config.outer_kernel
        self.head = nn.Sequential(conv(sd, config.in_channels, f, k, bias=True), nn.PReLU(f))
        self.blocks = nn.Sequential(*(_ResidualBlock(sd, f) for _ in range(config.blocks)))
        self.trunk = conv(sd, f, f, bias=True)
        self.tail = conv(sd, f, config.out_channels, k, bias=True)

    def forward(self, x: torch.Tensor, multiscale: bool = False):
        check_input(x, self.config.spatial_dims, self.config.in_channels)
        features = self.head(x)
        signed = self.tail(features + self.trunk(self.blocks(features)))  # the [-1, 1] image
        if self.config.image_residual:
            signed = signed + (2 * x - 1)
        if self.config.output_activation == "tanh":
            signed = torch.tanh(signed)
        out = (signed + 1) / 2
        return (out,) if multiscale else out


class SrganDiscriminatorConfig(BaseModel):
    """Everything needed to rebuild a :class:`SrganDiscriminator`.

    Parameters
    ----------
    spatial_dims : {2, 3}
        2 for images, 3 for volumes.
    in_channels : {1, 3}
        Gray or RGB.
    filter_base : int
        Width of the first convolutions; later ones double every second block (paper: 64).
    dense : int
        Width of the hidden dense layer (paper: 1024).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["srgan_discriminator"] = "srgan_discriminator"
    spatial_dims: Literal[2, 3] = 2
    in_channels: Literal[1, 3] = 1
    filter_base: int = Field(64, ge=2, le=256)
    dense: int = Field(1024, ge=1, le=4096)


class SrganDiscriminator(nn.Module):
    """SRGAN's discriminator (see the module docstring). ``forward(x)`` returns a tuple with
    one map: a raw logit per image, shape ``(N, 1)``.

    Examples
    --------
    >>> d = SrganDiscriminator(SrganDiscriminatorConfig(in_channels=3, filter_base=4, dense=8))
    >>> [m.shape for m in d(torch.rand(2, 3, 40, 24))]
    [torch.Size([2, 1])]
    """

    def __init__(self, config: SrganDiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or SrganDiscriminatorConfig()
        sd, b = config.spatial_dims, config.filter_base
        layers: list[nn.Module] = [conv(sd, config.in_channels, b, bias=True), nn.LeakyReLU(_SLOPE)]
        width = b
        for i in range(7):  # strides 2, 1, 2, 1, ...; widths b, 2b, 2b, 4b, 4b, 8b, 8b
            out = b * 2 ** ((i + 1) // 2)
            layers += [
                conv(sd, width, out, stride=2 if i % 2 == 0 else 1),
                norm(sd, out, "batch"),
                nn.LeakyReLU(_SLOPE),
            ]
            width = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(width, config.dense), nn.LeakyReLU(_SLOPE), nn.Linear(config.dense, 1)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        check_input(x, self.config.spatial_dims, self.config.in_channels)
        pooled = self.features(x).flatten(2).mean(dim=2)
        return (self.classifier(pooled),)
