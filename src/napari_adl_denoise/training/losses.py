"""ADL losses (paper eq. 4-8), for 2D and 3D tensors of shape (N, C, *spatial).

Fixes over the reference implementation (see the project's ADL notes): the ATW loss sums all
levels; the histogram is a differentiable soft histogram; the discriminator's fake is the
denoised output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "adversarial_loss",
    "atw_details",
    "atw_loss",
    "denoiser_loss",
    "discriminator_loss",
    "histogram_loss",
    "soft_histogram",
]

B3_SPLINE = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def _smooth_along(x: torch.Tensor, axis: int, dilation: int) -> torch.Tensor:
    """Convolve every channel with the B3-spline along one spatial axis, holes of ``dilation``."""
    spatial_dims = x.ndim - 2
    channels = x.shape[1]
    shape = [1] * spatial_dims
    shape[axis] = 5
    kernel = x.new_tensor(B3_SPLINE).reshape(1, 1, *shape).repeat(channels, 1, *([1] * spatial_dims))
    pad = [0, 0] * spatial_dims
    # F.pad lists the last axis first.
    pad[2 * (spatial_dims - 1 - axis)] = pad[2 * (spatial_dims - 1 - axis) + 1] = 2 * dilation
    conv = F.conv2d if spatial_dims == 2 else F.conv3d
    dilations = [1] * spatial_dims
    dilations[axis] = dilation
    return conv(F.pad(x, pad, mode="reflect"), kernel, dilation=dilations, groups=channels)


def atw_details(x: torch.Tensor, levels: int = 4) -> list[torch.Tensor]:
    """À-trous wavelet detail images ``c_{j-1} - c_j`` for j = 1..levels.

    ``c_0 = x`` and ``c_j`` smooths ``c_{j-1}`` with the separable B3-spline whose taps are
    ``2^(j-1)`` apart, with reflect padding. Levels whose reach does not fit the image (padding
    ``2^j`` must be smaller than every spatial size) are left out.
    """
    spatial = x.shape[2:]
    details = []
    current = x
    for j in range(1, levels + 1):
        dilation = 2 ** (j - 1)
        if 2 * dilation >= min(spatial):
            break
        smooth = current
        for axis in range(len(spatial)):
            smooth = _smooth_along(smooth, axis, dilation)
        details.append(current - smooth)
        current = smooth
    return details


def atw_loss(output: torch.Tensor, target: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Pyramidal texture loss: L1 between ATW details, summed over all levels."""
    pairs = zip(atw_details(output, levels), atw_details(target, levels), strict=True)
    return sum((F.l1_loss(o, t) for o, t in pairs), output.new_zeros(()))


def soft_histogram(x: torch.Tensor, bins: int = 64, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Differentiable histogram per sample and channel: shape (N, C, bins), each summing to ``bins``.

    Each value votes for the bin centres with a Gaussian kernel one bin wide (kernel density on
    a fixed grid), so gradients flow, unlike ``torch.histc``. Scaled so a flat histogram is 1
    per bin, which keeps the log-cosh distance in its informative range.
    """
    width = (high - low) / bins
    centres = torch.linspace(low + width / 2, high - width / 2, bins, device=x.device, dtype=x.dtype)
    values = x.flatten(2).unsqueeze(-1)  # (N, C, P, 1)
    votes = torch.exp(-0.5 * ((values - centres) / width) ** 2)
    hist = votes.sum(dim=2)
    return bins * hist / hist.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def histogram_loss(output: torch.Tensor, target: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Mean log-cosh distance between soft histograms, per channel, averaged over channels."""
    diff = soft_histogram(output, bins) - soft_histogram(target, bins)
    # log(cosh(d)) written stably: |d| + log1p(exp(-2|d|)) - log 2
    return (diff.abs() + torch.log1p(torch.exp(-2 * diff.abs())) - math.log(2.0)).mean()


def _area_downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    pool = F.avg_pool2d if x.ndim == 4 else F.avg_pool3d
    return pool(x, factor) if factor > 1 else x


def denoiser_loss(
    outputs: tuple[torch.Tensor, ...],
    target: torch.Tensor,
    *,
    l1: float = 1.0,
    atw: float = 1.0,
    histogram: float = 1.0,
    atw_levels: int = 4,
    histogram_bins: int = 64,
    mse: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Multiscale denoiser loss (eq. 5): L1 + ATW + histogram at full, 1/2 and 1/4 scale, plus
    an optional MSE term.

    ``outputs`` are the heads' (full, half, quarter) images, or fewer for a single-scale network;
    the target is area-downsampled to match. Returns the total and its parts (summed over
    scales) for logging.
    """
    parts = {"l1": 0.0, "atw": 0.0, "histogram": 0.0} | ({"mse": 0.0} if mse else {})
    total = target.new_zeros(())
    for scale, output in enumerate(outputs):
        reference = _area_downsample(target, 2**scale)
        terms = {
            "l1": (l1, lambda o=output, r=reference: F.l1_loss(o, r)),
            "mse": (mse, lambda o=output, r=reference: F.mse_loss(o, r)),
            "atw": (atw, lambda o=output, r=reference: atw_loss(o, r, atw_levels)),
            "histogram": (histogram, lambda o=output, r=reference: histogram_loss(o, r, histogram_bins)),
        }
        for name, (weight, term) in terms.items():
            if weight:
                value = term()
                total = total + weight * value
                parts[name] += float(value.detach())
    return total, parts


def discriminator_loss(
    real_maps: tuple[torch.Tensor, ...], fake_maps: tuple[torch.Tensor, ...], form: str = "hinge"
) -> torch.Tensor:
    """The discriminator's loss on its maps of raw logits, summed over the maps.

    ``"hinge"``: ADL's per-pixel hinge loss (eq. 6-8) over the bridge map and the three decoder
    maps, ``mean relu(1 - D(x)) + mean relu(1 + D(G(y)))`` for each. ``"log"``: the original
    GAN's ``-log sigmoid(D(x)) - log(1 - sigmoid(D(G(y))))`` (IDGAN's eq. 2), written with
    softplus for stability.
    """
    if form == "log":
        terms = (
            F.softplus(-real).mean() + F.softplus(fake).mean()
            for real, fake in zip(real_maps, fake_maps, strict=True)
        )
    else:
        terms = (
            F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            for real, fake in zip(real_maps, fake_maps, strict=True)
        )
    return sum(terms, real_maps[0].new_zeros(()))


def adversarial_loss(fake_maps: tuple[torch.Tensor, ...], form: str = "hinge") -> torch.Tensor:
    """The denoiser's adversarial term summed over the maps: ``-mean D(G(y))`` (hinge GAN) or
    ``-log sigmoid(D(G(y)))`` (``"log"``, IDGAN's eq. 6, the non-saturating form)."""
    if form == "log":
        return sum((F.softplus(-fake).mean() for fake in fake_maps), fake_maps[0].new_zeros(()))
    return sum((-fake.mean() for fake in fake_maps), fake_maps[0].new_zeros(()))
