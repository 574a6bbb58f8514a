"""The multi-scale adaptive CNN for blind denoising (2D and 3D).

From the paper in ``seeds/001`` (section 2.1, Fig. 1). Seven layers:

1. the **multi-scale feature extraction layer**: parallel convolutions of progressively larger
   kernels read the image directly, with 32, 40, 48, 56 and 64 output channels, concatenated
   (240 channels), like a naive inception layer;
2-4. the **damping layers**: three 1x1 layers of 240 channels, the last ending in a sigmoid,
   give a 0-1 gate that is multiplied with the features, so features that noise corrupts can be
   turned down;
5-7. the **reconstruction layers**: 1x1 layers of 128 channels, the last one with the image's
   channels. An lp penalty (p = 0.1) on the weights of layers 5 and 6 selects a few feature maps
   (:meth:`AdaptiveCnn.regulariser`).

Choices where the paper is silent, each kept configurable:

* Kernel sizes 3, 5, 7, 9, 11 (the paper says only "progressively larger"): odd sizes keep the
  'same' padding centred, and steps of two give an 11-pixel receptive field, about the scale of
  the paper's 64x64 training crops' textures.
* ReLU after the feature layer and between the 1x1 layers, a sigmoid closing the damping gate
  (the paper's "value between 0 and 1"), and a linear last layer (the paper's model reconstructs
  the image itself, not the noise).
* Convolutions carry biases (the paper does not ask for a bias-free network); the lp penalty
  applies to weights, not biases.
* The penalty is ``sum((|w| + 1e-3) ** p)``: the offset keeps its gradient finite at zero
  weights, where ``|w| ** 0.1`` has an infinite slope (the paper reports an exploding loss for
  too small a p).
* Dropout 0.7 after the feature layer is element-wise (``nn.Dropout``), active only in the
  clean-to-clean phase, in which the damping gate is bypassed (the paper's "short-circuited").
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ._base import Denoiser, DenoiserConfigBase, check_input
from ._layers import conv

__all__ = ["AdaptiveCnn", "AdaptiveCnnConfig"]

_LP_OFFSET = 1e-3


class AdaptiveCnnConfig(DenoiserConfigBase):
    """Everything needed to rebuild an :class:`AdaptiveCnn`.

    Parameters
    ----------
    spatial_dims : {2, 3}
        2 for images, 3 for volumes.
    in_channels, out_channels : {1, 3}
        Gray or RGB; ``out_channels`` defaults to ``in_channels``.
    feature_channels, feature_kernels : tuple of int
        Channels and odd kernel sizes of the parallel convolutions of the feature layer (paper:
        32, 40, 48, 56, 64).
    damping_layers : int
        Number of 1x1 damping layers (paper: 3); 0 leaves the features ungated (ablation).
    reconstruction_channels : int
        Width of the 1x1 reconstruction layers before the last (paper: 128).
    reconstruction_layers : int
        Number of reconstruction layers including the last (paper: 3).
    lp : float
        The exponent p of the sparsity penalty on the first two reconstruction layers (paper: 0.1).
    dropout : float
        Dropout after the feature layer in the clean-to-clean phase (paper: 0.7).
    """

    kind: Literal["adaptive_cnn"] = "adaptive_cnn"
    feature_channels: tuple[int, ...] = Field((32, 40, 48, 56, 64), min_length=1, max_length=8)
    feature_kernels: tuple[int, ...] = Field((3, 5, 7, 9, 11), min_length=1, max_length=8)
    damping_layers: int = Field(3, ge=0, le=8)
    reconstruction_channels: int = Field(128, ge=1, le=1024)
    reconstruction_layers: int = Field(3, ge=2, le=8)
    lp: float = Field(0.1, gt=0, le=2)
    dropout: float = Field(0.7, ge=0, lt=1)

    @model_validator(mode="after")
    def _consistent(self) -> AdaptiveCnnConfig:
        if len(self.feature_channels) != len(self.feature_kernels):
            raise ValueError("feature_channels and feature_kernels need one entry per convolution")
        if any(not 1 <= c <= 512 for c in self.feature_channels):
            raise ValueError(f"feature_channels must be 1-512 each, got {self.feature_channels}")
        if any(k < 1 or k > 15 or k % 2 == 0 for k in self.feature_kernels):
            raise ValueError(f"feature_kernels must be odd sizes up to 15, got {self.feature_kernels}")
        return self

    @property
    def width(self) -> int:
        """Channels of the feature layer and of the damping layers."""
        return sum(self.feature_channels)

    @property
    def summary(self) -> str:
        """Short text for status lines."""
        return f"{self.width} features"

    def memory_bytes(self, tile_shape: tuple[int, ...]) -> int:
        """Approximate peak bytes of one tile's forward pass (float32): about five feature-wide
        maps alive at once (the branches, the features, the gate and its product)."""
        return int(math.prod(tile_shape) * 4 * (5 * self.width + 2 * self.reconstruction_channels))


class AdaptiveCnn(Denoiser):
    """The multi-scale adaptive CNN (see the module docstring).

    Examples
    --------
    >>> net = AdaptiveCnn(AdaptiveCnnConfig(feature_channels=(4, 4), feature_kernels=(3, 5)))
    >>> net(torch.rand(1, 1, 24, 32)).shape
    torch.Size([1, 1, 24, 32])
    >>> net3d = AdaptiveCnn(AdaptiveCnnConfig(spatial_dims=3, feature_channels=(4,), feature_kernels=(3,)))
    >>> net3d(torch.rand(1, 1, 8, 16, 16)).shape
    torch.Size([1, 1, 8, 16, 16])
    """

    def __init__(self, config: AdaptiveCnnConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or AdaptiveCnnConfig()
        sd, width = config.spatial_dims, config.width
        self.features = nn.ModuleList(
            conv(sd, config.in_channels, c, k, bias=True)
            for c, k in zip(config.feature_channels, config.feature_kernels, strict=True)
        )
        self.dropout = nn.Dropout(0.0)
        damping: list[nn.Module] = []
        for i in range(config.damping_layers):
            last = i == config.damping_layers - 1
            damping += [conv(sd, width, width, 1, bias=True), nn.Sigmoid() if last else nn.ReLU(inplace=True)]
        self.damping = nn.Sequential(*damping) if damping else None
        self.bypass_damping = False
        widths = [width] + [config.reconstruction_channels] * (config.reconstruction_layers - 1)
        layers: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:], strict=False):
            layers += [conv(sd, cin, cout, 1, bias=True), nn.ReLU(inplace=True)]
        layers.append(conv(sd, widths[-1], config.out_channels, 1, bias=True))
        self.reconstruction = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, multiscale: bool = False):
        check_input(x, self.config.spatial_dims, self.config.in_channels)
        features = torch.relu(torch.cat([branch(x) for branch in self.features], dim=1))
        features = self.dropout(features)
        if self.damping is not None and not self.bypass_damping:
            features = features * self.damping(features)
        out = self.reconstruction(features)
        return (out,) if multiscale else out

    def set_training_phase(self, phase: str, *, learnt_features: bool) -> None:
        """Clean-to-clean (``"clean"``): dropout after the features, damping bypassed. Later
        phases: no dropout, damping on, and the feature layer frozen when it was learnt in a
        clean-to-clean phase (the paper's second phase)."""
        clean = phase == "clean"
        self.dropout.p = self.config.dropout if clean else 0.0
        self.bypass_damping = clean
        if self.damping is not None:  # bypassed: no gradient, so nothing for DDP to wait for
            self.damping.requires_grad_(not clean)
        self.features.requires_grad_(clean or not learnt_features)

    def sparse_weights(self) -> list[torch.Tensor]:
        """The weights the lp penalty applies to: the first two reconstruction layers (the
        paper's layers 5 and 6), or all but the last when there are fewer."""
        convs = [m for m in self.reconstruction if isinstance(m, nn.Conv2d | nn.Conv3d)]
        return [m.weight for m in convs[:-1][:2]]

    def regulariser(self) -> torch.Tensor:
        """``sum((|w| + 1e-3) ** p)`` over :meth:`sparse_weights`: small for few large weights."""
        p = self.config.lp
        zero = self.features[0].weight.new_zeros(())
        return sum((((w.abs() + _LP_OFFSET) ** p).sum() for w in self.sparse_weights()), start=zero)
