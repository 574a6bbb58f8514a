"""Two-stage denoising with self-guided noise attention (2D and 3D).

From the paper in ``seeds/002`` (section II-B, Fig. 4 and 5):

* **Stage I, the noise estimation network (NEN)** maps the noisy image to its residual noise
  ``N_E``: a 3x3 convolution, residual-in-residual dense blocks (RRDB: three residual dense
  blocks of five convolutions with growth 8, LeakyReLU), each followed by a 1x1 **noise gate**
  that carries the block's input past it ("short-distance residual feature propagation between
  consecutive RRDB blocks"), and a 3x3 convolution to the image's channels. Trained with L2 on
  the true residual noise (``noisy - clean``).
* **Stage II, the reconstruction network (RN)** takes the noisy image and ``N_E``. The
  self-guided **noise attention block** (eq. 7-9) convolves both into 32 feature maps each
  (``I_T``, ``N_T``), concatenates them (``X_C``), turns the channel mean and channel maximum of
  ``X_C`` into one sigmoid map per pixel (``A_C``, CBAM-style spatial attention) and weighs the
  image features with it (``S_A = A_C * I_T``). RRDBs with noise gates follow, then a 3x3
  convolution. Trained with L1 on the clean image.

Choices where the paper is silent, each kept configurable:

* Widths: 32 feature channels (the attention block's 32 filters) and 3 RRDBs per network at the
  paper's size; with growth 8 that gives 0.29 M (NEN) and 0.30 M (RN) parameters in RGB, within
  1% of the paper's Table VII (283,776 and 302,466). The bundled model is narrower (its card).
  Neither network has ESRGAN's long skip or trunk convolution around its RRDBs.
* A noise gate is an additive 1x1 convolution beside each RRDB (a skip with its own weights), not
  a sigmoid-multiplied gate.
* Convolutions carry biases; LeakyReLU slope 0.2 and the residual scaling 0.2 inside dense and
  residual-in-residual blocks are ESRGAN's, whose RRDB the paper cites ([38]).
* The attention map's convolution is 7x7 (CBAM's); its input is the mean and the maximum over
  the 64 concatenated channels (eq. 8). Its two inputs, ``I_T`` and ``N_T``, are 3x3
  convolutions of the noisy image and of ``N_E`` (the paper's "standard 3x3 convolution"), each
  convolved again inside the block (eq. 7's ``C``).
* ``N_E`` is signed and unbounded (the paper's "[0, 1]" cannot hold noise of both signs).
* **Coarse to refine**: the RN outputs a correction to the stage-I image, ``I_N - N_E + RN(...)``
  (``refine_residual``), so the second stage starts from the first stage's answer.
* **Training the stages together**: both networks train at once on every batch, each on its
  own objective (the paper optimises them "with separate objective functions"): the RN's L1
  does not reach the NEN, whose estimate it reads detached (``detach_estimate``). Validation
  (the learning-rate schedule and the kept weights) scores the two-stage output only.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from ._base import Denoiser, DenoiserConfigBase, check_input
from ._layers import conv

__all__ = ["NoiseAttention", "NoiseAttentionConfig"]

_SLOPE = 0.2  # LeakyReLU
_RESIDUAL_SCALE = 0.2  # ESRGAN's scaling of the dense blocks' residuals


class NoiseAttentionConfig(DenoiserConfigBase):
    """Everything needed to rebuild a :class:`NoiseAttention` network.

    Parameters
    ----------
    spatial_dims : {2, 3}
        2 for images, 3 for volumes.
    in_channels, out_channels : {1, 3}
        Gray or RGB; ``out_channels`` defaults to ``in_channels``.
    features : int
        Feature channels of both networks and of the attention block (paper: 32).
    growth : int
        Growth rate of the residual dense blocks (paper: 8).
    blocks : int
        RRDBs in each network (paper: not given; 3 matches its parameter count).
    attention : bool
        The noise attention block (``False``: the paper's "TWN" ablation, the two inputs'
        features simply concatenated).
    refine_residual : bool
        Stage II corrects the stage-I image (``I_N - N_E``) instead of drawing the image anew.
    detach_estimate : bool
        Stage II reads the noise estimate without sending its gradient back to stage I.
    """

    kind: Literal["noise_attention"] = "noise_attention"
    features: int = Field(32, ge=4, le=256)
    growth: int = Field(8, ge=1, le=128)
    blocks: int = Field(3, ge=1, le=16)
    attention: bool = True
    refine_residual: bool = True
    detach_estimate: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> NoiseAttentionConfig:
        if self.out_channels != self.in_channels:
            raise ValueError("a two-stage network outputs as many channels as it reads")
        return self

    @property
    def summary(self) -> str:
        """Short text for status lines."""
        return f"two stages of {self.blocks} RRDB{'s' if self.blocks > 1 else ''}, {self.features} features"

    def memory_bytes(self, tile_shape: tuple[int, ...]) -> int:
        """Approximate peak bytes of one tile's forward pass (float32): a dense block's
        concatenated maps (features + 4 x growth) plus the block input and the residual paths."""
        width = 3 * self.features + 4 * self.growth
        return int(math.prod(tile_shape) * 4 * width)


class _DenseBlock(nn.Module):
    """Residual dense block: five 3x3 convolutions, each reading all earlier maps (growth
    ``growth``), the last back to ``features``; ``x + 0.2 * out``."""

    def __init__(self, sd: int, features: int, growth: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            conv(sd, features + i * growth, growth if i < 4 else features, bias=True) for i in range(5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for i, layer in enumerate(self.convs):
            out = layer(torch.cat(maps, dim=1))
            if i < 4:
                maps.append(F.leaky_relu(out, _SLOPE))
        return x + _RESIDUAL_SCALE * out


class _GatedRrdb(nn.Module):
    """Residual-in-residual dense block (three dense blocks, ``x + 0.2 * out``) plus the 1x1
    noise gate carrying the block's input past it."""

    def __init__(self, sd: int, features: int, growth: int) -> None:
        super().__init__()
        self.dense = nn.Sequential(*(_DenseBlock(sd, features, growth) for _ in range(3)))
        self.gate = conv(sd, features, features, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _RESIDUAL_SCALE * self.dense(x) + self.gate(x)


def _trunk(sd: int, features: int, growth: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(_GatedRrdb(sd, features, growth) for _ in range(blocks)))


class NoiseAttentionBlock(nn.Module):
    """Eq. 7-9: ``S_A = sigmoid(conv7([mean_c X_C; max_c X_C])) * I_T`` with
    ``X_C = [conv3(N_T); conv3(I_T)]``."""

    def __init__(self, sd: int, features: int) -> None:
        super().__init__()
        self.noise = conv(sd, features, features, bias=True)
        self.image = conv(sd, features, features, bias=True)
        self.spatial = conv(sd, 2, 1, 7, bias=True)

    def forward(self, image_features: torch.Tensor, noise_features: torch.Tensor) -> torch.Tensor:
        xc = torch.cat([self.noise(noise_features), self.image(image_features)], dim=1)
        pooled = torch.cat([xc.mean(dim=1, keepdim=True), xc.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial(pooled)) * image_features


class NoiseAttention(Denoiser):
    """The two-stage network (see the module docstring); ``forward`` returns the clean image.

    ``stages = 1`` (set by ``denoise(..., stages=1)``) makes ``forward`` return the stage-I image
    ``I_N - N_E`` instead; :meth:`estimate_noise` gives ``N_E`` itself.

    Examples
    --------
    >>> net = NoiseAttention(NoiseAttentionConfig(features=8, growth=4, blocks=1))
    >>> net(torch.rand(1, 1, 24, 32)).shape
    torch.Size([1, 1, 24, 32])
    >>> net3d = NoiseAttention(NoiseAttentionConfig(spatial_dims=3, features=8, growth=4, blocks=1))
    >>> net3d(torch.rand(1, 1, 8, 16, 16)).shape
    torch.Size([1, 1, 8, 16, 16])
    """

    def __init__(self, config: NoiseAttentionConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or NoiseAttentionConfig()
        sd, ch, f = c.spatial_dims, c.in_channels, c.features
        self.nen = nn.ModuleDict(
            {
                "head": conv(sd, ch, f, bias=True),
                "trunk": _trunk(sd, f, c.growth, c.blocks),
                "tail": conv(sd, f, ch, bias=True),
            }
        )
        rn: dict[str, nn.Module] = {
            "image": conv(sd, ch, f, bias=True),
            "noise": conv(sd, ch, f, bias=True),
            "trunk": _trunk(sd, f, c.growth, c.blocks),
            "tail": conv(sd, f, ch, bias=True),
        }
        rn["fuse"] = NoiseAttentionBlock(sd, f) if c.attention else conv(sd, 2 * f, f, 1, bias=True)
        self.rn = nn.ModuleDict(rn)
        self.stages = 2
        self.last_estimate: torch.Tensor | None = None

    def __getstate__(self) -> dict:
        # A copy (``copy.deepcopy``, pickling) never carries the last pass's graph-bound estimate.
        return {**super().__getstate__(), "last_estimate": None}

    def train(self, mode: bool = True) -> NoiseAttention:
        self.last_estimate = None
        return super().train(mode)

    def estimate_noise(self, x: torch.Tensor) -> torch.Tensor:
        """Stage I: the residual noise ``N_E`` of ``x`` (so ``x - N_E`` is the stage-I image)."""
        return self.nen["tail"](self.nen["trunk"](self.nen["head"](x)))

    def forward(self, x: torch.Tensor, multiscale: bool = False):
        c = self.config
        check_input(x, c.spatial_dims, c.in_channels)
        estimate = self.estimate_noise(x)
        self.last_estimate = estimate if self.training and torch.is_grad_enabled() else None
        if self.stages == 1:
            out = x - estimate
            return (out,) if multiscale else out
        noise = estimate.detach() if c.detach_estimate else estimate
        image_features, noise_features = self.rn["image"](x), self.rn["noise"](noise)
        if c.attention:
            fused = self.rn["fuse"](image_features, noise_features)
        else:
            fused = self.rn["fuse"](torch.cat([image_features, noise_features], dim=1))
        out = self.rn["tail"](self.rn["trunk"](fused))
        if c.refine_residual:
            out = out + (x - noise)
        return (out,) if multiscale else out

    def stage_loss(self, noisy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Stage I's objective (eq. 11): the MSE of the last training forward pass's noise
        estimate against the true residual noise ``noisy - target``."""
        estimate, self.last_estimate = self.last_estimate, None
        if estimate is None:
            raise RuntimeError("stage_loss needs a forward pass in training mode first")
        return F.mse_loss(estimate.float(), noisy - target)

    def set_options(self, *, stages: int = 2) -> None:
        """``stages=1``: output the stage-I image ``I_N - N_E`` (the noise estimate's
        complement); ``2`` (default): the full two-stage result."""
        if stages not in (1, 2):
            raise ValueError(f"stages must be 1 or 2, got {stages!r}")
        self.stages = stages
