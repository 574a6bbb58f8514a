"""Learning from noisy images alone: Neighbor2Neighbor and blind-spot (Noise2Void) losses.

Both assume what most sensor noise is: zero-mean given the signal and independent from pixel to
pixel (Gaussian, Poisson, Poisson-Gaussian). Then a noisy neighbour is an unbiased, independent
target for a pixel, and the network can only learn the signal they share. Noise that is
correlated between pixels (stripes, structured or filtered noise, JPEG blocks) is shared by
neighbours too, so it is learnt as signal and stays.

Neighbor2Neighbor (Huang et al., CVPR 2021): every 2x2 (2x2x2) cell gives one pixel to each of
two half-size images; the network maps one to the other, with a regulariser that keeps the
full-size denoiser consistent with the half-size one. Blind spot (Krull et al., CVPR 2019): a
few pixels are replaced by a random neighbour and the loss is the error at those pixels only.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "blind_spot_input",
    "blind_spot_loss",
    "neighbour_pair",
    "neighbour_score",
    "neighbor2neighbor_loss",
]

BLIND_SPOT_FRACTION = 0.02
"""Pixels masked per patch in the blind-spot loss (Noise2Void: 0.2-2%)."""


def _cells(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *S) -> (N, C, *S/2, 2^d): the 2^d pixels of every 2x2(x2) cell, last."""
    n, c, *spatial = x.shape
    half = [s // 2 for s in spatial]
    x = x[(..., *(slice(0, 2 * h) for h in half))]
    split = [n, c]
    for h in half:
        split += [h, 2]
    d = len(half)
    order = [0, 1, *(2 + 2 * i for i in range(d)), *(3 + 2 * i for i in range(d))]
    return x.reshape(split).permute(order).reshape(n, c, *half, 2**d)


def neighbour_pair(
    shape: torch.Size, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N, 1, *S/2) into each cell: a random pixel and one of its direct neighbours."""
    n, _, *spatial = shape
    d = len(spatial)
    size = (n, 1, *(s // 2 for s in spatial))
    first = torch.randint(0, 2**d, size, generator=generator)
    axis = torch.randint(0, d, size, generator=generator)
    return first, first ^ (1 << axis)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    cells = _cells(x)
    index = index.to(x.device).expand(*cells.shape[:-1])
    return cells.gather(-1, index[..., None])[..., 0]


def neighbor2neighbor_loss(
    model: torch.nn.Module, noisy: torch.Tensor, gamma: float = 2.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Neighbor2Neighbor's loss on a batch of noisy patches (sizes multiples of 16 in practice).

    ``||f(g1(y)) - g2(y)||^2 + gamma * ||f(g1(y)) - g2(y) - (g1(f(y)) - g2(f(y)))||^2``, with
    ``f(y)`` not differentiated (the paper's regulariser; gamma 2 is its choice for real noise).
    """
    with torch.no_grad():
        full = model(noisy)
    first, second = neighbour_pair(noisy.shape, generator)
    g1, g2 = _take(noisy, first), _take(noisy, second)
    out = model(g1)
    reconstruction = torch.mean((out - g2) ** 2)
    regulariser = torch.mean((out - g2 - (_take(full, first) - _take(full, second))) ** 2)
    loss = reconstruction + gamma * regulariser
    return loss, {
        "reconstruction": float(reconstruction.detach()),
        "regulariser": float(regulariser.detach()),
    }


def blind_spot_input(
    noisy: torch.Tensor, fraction: float = BLIND_SPOT_FRACTION, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise2Void's masked input: a random ``fraction`` of the pixels (at least one per patch)
    take the value of a random other pixel within 2 pixels (all channels alike); returns the
    masked input and the mask (N, 1, *S). At a border, an offset that would leave the patch is
    mirrored, so no pixel ever keeps its own value."""
    n, c, *spatial = noisy.shape
    mask = torch.rand((n, 1, *spatial), generator=generator) < fraction
    mask.view(n, -1)[:, 0] |= ~mask.view(n, -1).any(dim=1)
    offsets = torch.randint(-2, 3, (len(spatial), n, 1, *spatial), generator=generator)
    still = (offsets == 0).all(dim=0)
    offsets[0][still] = torch.where(torch.rand(int(still.sum()), generator=generator) < 0.5, -1, 1)
    grids = torch.meshgrid(*(torch.arange(s) for s in spatial), indexing="ij")
    flat = torch.zeros((n, 1, *spatial), dtype=torch.long)
    for size, grid, offset in zip(spatial, grids, offsets, strict=True):
        source = grid + offset
        source = torch.where((source < 0) | (source >= size), grid - offset, source).clamp(0, size - 1)
        flat = flat * size + torch.where(mask, source, grid)
    flat = flat.to(noisy.device).expand(n, c, *spatial).reshape(n, c, -1)
    masked = noisy.reshape(n, c, -1).gather(-1, flat).reshape(noisy.shape)
    return masked, mask.to(noisy.device)


def blind_spot_loss(
    model: torch.nn.Module,
    noisy: torch.Tensor,
    fraction: float = BLIND_SPOT_FRACTION,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Noise2Void's loss: the squared error to the noisy input at the masked pixels of
    :func:`blind_spot_input` only."""
    masked, mask = blind_spot_input(noisy, fraction, generator)
    out = model(masked)
    weight = mask.expand_as(noisy).float()
    loss = torch.sum((out - noisy) ** 2 * weight) / weight.sum()
    return loss, {"blind_spot": float(loss.detach())}


def neighbour_score(
    model: torch.nn.Module,
    noisy: torch.Tensor,
    indices: tuple[torch.Tensor, torch.Tensor],
    scale: torch.Tensor,
) -> float:
    """A quality score that needs no clean data: the PSNR (dB, on the images' [0, 1] scale) of the
    denoised half-size image ``f(g1(y))`` against its noisy neighbour ``g2(y)``.

    For noise independent between pixels its error is the true error plus the noise variance,
    so it ranks models as the true PSNR would, but always reads lower (the reference is noisy).
    """
    first, second = indices
    out = model(_take(noisy, first))
    expand = (slice(None),) + (None,) * (noisy.ndim - 1)
    error = ((out - _take(noisy, second)) * scale[expand].to(noisy.device)) ** 2
    return -10 * math.log10(max(float(error.mean()), 1e-12))
