"""Training data: clean images from files, random patches, augmentation and simulated noise.

Every image is scaled to [0, 1] by its own min and max, so noise sigma on the papers' 0-255
scale is ``sigma / 255`` in absolute units. Each sample's input is then normalised exactly as
:func:`napari_adl_denoise.denoise` will normalise a whole noisy image at inference (robust
percentiles of the noisy image, estimated from a fixed subsample of the source image with the
same noise), and the target with the same affine map, so training and inference agree.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..inference import robust_range
from ..io import read_image
from ..noise import add_noise
from .config import DataConfig, NoiseSpec

__all__ = ["Batch", "NoisySampler", "PairSampler", "PatchSampler", "load_images", "make_sampler"]

_SUBSAMPLE = 20_000


def _split(array: np.ndarray, spatial_dims: int, channels: int) -> list[np.ndarray]:
    """Arrays of shape (C, *spatial); leading axes (slices, time) become separate images."""
    if channels == 3:
        if array.shape[-1] not in (3, 4):
            raise ValueError(f"an RGB model needs colour images (last axis 3), got shape {array.shape}")
        array = np.moveaxis(array[..., :3], -1, 0)
    else:
        if array.ndim > spatial_dims and array.shape[-1] in (3, 4):  # colour file for a gray model
            array = array[..., :3].mean(axis=-1)
        array = array[None]
    if array.ndim - 1 < spatial_dims:
        raise ValueError(f"a {spatial_dims}D model needs {spatial_dims}D images, got shape {array.shape[1:]}")
    lead = array.shape[1 : array.ndim - spatial_dims]
    flat = array.reshape(array.shape[0], -1, *array.shape[array.ndim - spatial_dims :])
    return [flat[:, i] for i in range(int(np.prod(lead, dtype=int)))]


def load_images(
    sources: Sequence[str | np.ndarray],
    spatial_dims: int,
    channels: int,
    min_shape: Sequence[int],
    keep_constant: bool = False,
) -> list[np.ndarray]:
    """Read (files or glob patterns; arrays are taken as given), split and scale to [0, 1];
    images smaller than ``min_shape`` are reflect-padded. Constant images are dropped unless
    ``keep_constant`` (so that pairs stay in step). Arrays are never modified."""
    arrays = (
        a for source in sources for a in ([source] if isinstance(source, np.ndarray) else _read(source))
    )
    images = []
    for array in arrays:
        for image in _split(array, spatial_dims, channels):
            image = image.astype(np.float32)
            lo, hi = float(image.min()), float(image.max())
            if hi <= lo and not keep_constant:
                continue  # a constant image teaches nothing
            image = (image - lo) / max(hi - lo, 1e-12)
            pad = [(0, 0)] + [(0, max(m - s, 0)) for s, m in zip(image.shape[1:], min_shape, strict=True)]
            images.append(np.pad(image, pad, mode="reflect") if any(p[1] for p in pad) else image)
    if not images:
        named = [s if isinstance(s, str) else f"array of shape {s.shape}" for s in sources]
        raise ValueError(f"no usable (non-constant) image in {named}")
    return images


def _read(pattern: str) -> Iterator[np.ndarray]:
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        raise FileNotFoundError(f"no training file matches {pattern!r}")
    for path in matches:
        yield read_image(path).data


@dataclass
class Batch:
    """Network input and target (normalised like inference) plus the clean patch on [0, 1]."""

    noisy: torch.Tensor
    target: torch.Tensor
    clean: torch.Tensor
    lo: torch.Tensor
    scale: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in (self.noisy, self.target, self.clean, self.lo, self.scale)))


class PatchSampler:
    """Draws batches of noisy/clean patch pairs; all randomness comes from one numpy Generator.

    Images are chosen uniformly, so a big image does not dominate the small ones; then a
    uniform position, a random rotation by 90 degrees (in a plane whose patch sides are equal)
    and flips, and a noise model by weight with parameters drawn as :class:`NoiseSpec` says
    (a noise-free background and a varying level when it asks for them).
    """

    def __init__(
        self, images: list[np.ndarray], data: DataConfig, noise: list[NoiseSpec], rng: np.random.Generator
    ) -> None:
        self.images = images
        self.data = data
        self.noise = noise
        self.rng = rng
        weights = np.array([spec.weight for spec in noise], dtype=np.float64)
        self.noise_p = weights / weights.sum()
        sample_rng = np.random.default_rng(0)
        self.subsamples = [
            img.reshape(img.shape[0], -1)[:, sample_rng.integers(0, img[0].size, _SUBSAMPLE)]
            for img in images
        ]

    def _patch(self, index: int) -> np.ndarray:
        image = self.images[index]
        shape = self.data.patch_shape
        start = [self.rng.integers(0, s - p + 1) for s, p in zip(image.shape[1:], shape, strict=True)]
        patch = image[(slice(None), *(slice(a, a + p) for a, p in zip(start, shape, strict=True)))]
        if self.data.augment:
            spatial = list(range(1, patch.ndim))
            planes = [
                (a, b)
                for i, a in enumerate(spatial)
                for b in spatial[i + 1 :]
                if shape[a - 1] == shape[b - 1]
            ]
            if planes:
                plane = planes[self.rng.integers(len(planes))]
                patch = np.rot90(patch, int(self.rng.integers(4)), axes=plane)
            for axis in spatial:
                if self.rng.random() < 0.5:
                    patch = np.flip(patch, axis=axis)
        return np.ascontiguousarray(patch)

    def _smooth_field(self, shape: tuple[int, ...]) -> np.ndarray:
        """A smooth random field on [0, 1]: a 3-per-axis random grid, linearly interpolated."""
        from scipy.ndimage import zoom

        field = zoom(self.rng.random((3,) * len(shape)), [s / 3 for s in shape], order=1)
        field = field[tuple(slice(0, s) for s in shape)]
        return (field - field.min()) / max(float(np.ptp(field)), 1e-6)

    def _background(self, clean: np.ndarray) -> np.ndarray:
        """Where a masked scan keeps its signal: above a smoothed intensity threshold (the dark
        surroundings of an object) or inside a random smooth region; 20-80% becomes background."""
        from scipy.ndimage import gaussian_filter

        spatial = clean.shape[1:]
        if self.rng.random() < 0.5:
            field = gaussian_filter(clean.mean(axis=0), 2.0)
        else:
            field = self._smooth_field(spatial)
        return field > np.quantile(field, self.rng.uniform(0.2, 0.8))

    def sample(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """One (noisy, clean, lo, hi) pair; ``lo, hi`` is the inference normalisation."""
        index = int(self.rng.integers(len(self.images)))
        clean = self._patch(index)
        spec = self.noise[int(self.rng.choice(len(self.noise), p=self.noise_p))]
        params = {
            "sigma": float(self.rng.uniform(*spec.sigma)) / 255,
            "nu": float(self.rng.uniform(*spec.nu)) / 255,
            "sigma_max": spec.sigma[1] / 255,
            "amount": spec.amount,
        }
        seed = int(self.rng.integers(2**63))
        # The options draw only when used, so a plain spec keeps its random stream.
        low, high = spec.peak
        params["peak"] = low if low == high else float(np.exp(self.rng.uniform(np.log(low), np.log(high))))
        mask = self._background(clean) if spec.background and self.rng.random() < spec.background else None
        if mask is not None:
            clean = clean * mask
        kind = spec.kind
        if kind == "mixed":  # one draw for the patch and its normalisation below (sigma: above)
            kind = "gaussian" if self.rng.random() < 0.5 else "speckle"
        noisy = add_noise(clean, kind, relative=False, seed=seed, **params)
        if spec.varying and self.rng.random() < spec.varying:
            floor = self.rng.uniform(0.0, 1.0)
            level = floor + (1 - floor) * self._smooth_field(clean.shape[1:])
            noisy = clean + level * (noisy - clean)
        if mask is not None:
            noisy = noisy * mask
            lo, hi = robust_range(noisy)  # the source image has no such background to sample
        else:
            source = self.subsamples[index]
            lo, hi = robust_range(add_noise(source, kind, relative=False, seed=seed + 1, **params))
        return noisy.astype(np.float32), clean.astype(np.float32), lo, max(hi - lo, 1e-6)

    def batch(self, size: int | None = None) -> Batch:
        samples = [self.sample() for _ in range(size or self.data.batch_size)]
        noisy, clean = (np.stack([s[i] for s in samples]) for i in (0, 1))
        lo = np.array([s[2] for s in samples], dtype=np.float32)
        scale = np.array([s[3] for s in samples], dtype=np.float32)
        expand = (slice(None),) + (None,) * (noisy.ndim - 1)
        return Batch(
            torch.from_numpy((noisy - lo[expand]) / scale[expand]).float(),
            torch.from_numpy((clean - lo[expand]) / scale[expand]).float(),
            torch.from_numpy(clean).float(),
            torch.from_numpy(lo),
            torch.from_numpy(scale),
        )


class PairSampler(PatchSampler):
    """The user's own noisy/clean pairs (low/high dose, short/long exposure, single/averaged
    frames): the same crop and augmentation of both, no simulated noise. The target is the clean
    image mapped onto the noisy image's intensities by the straight line that fits them best
    (least squares of noisy on clean, unbiased since the noise is in the noisy image), so a dim
    low-dose image pairs with its brighter reference and the output keeps the input's scale."""

    def __init__(
        self, noisy: list[np.ndarray], clean: list[np.ndarray], data: DataConfig, rng: np.random.Generator
    ) -> None:
        if len(noisy) != len(clean):
            raise ValueError(f"{len(noisy)} noisy images but {len(clean)} targets: one target per image")
        for i, (n, c) in enumerate(zip(noisy, clean, strict=True)):
            if n.shape != c.shape:
                raise ValueError(f"pair {i + 1}: image {n.shape[1:]} and target {c.shape[1:]} differ")
        self.channels = noisy[0].shape[0]
        pairs = [np.concatenate(p) for p in zip(noisy, clean, strict=True)]
        super().__init__(pairs, data, [NoiseSpec()], rng)
        self.maps = []
        for i, sub in enumerate(self.subsamples):
            x, y = sub[self.channels :].ravel(), sub[: self.channels].ravel()
            slope, offset = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, 0.0)
            if not slope > 0:
                raise ValueError(
                    f"pair {i + 1}: the target's intensities do not rise with the image's (not its pair?)"
                )
            self.maps.append((float(slope), float(offset), robust_range(y)))

    def sample(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        index = int(self.rng.integers(len(self.images)))
        patch = self._patch(index)
        slope, offset, (lo, hi) = self.maps[index]
        target = patch[self.channels :] * slope + offset
        return patch[: self.channels], target.astype(np.float32), lo, max(hi - lo, 1e-6)


class NoisySampler(PatchSampler):
    """Noisy patches only (self-supervised): the target is the noisy patch itself, and the
    normalisation is the noisy image's own, as at inference."""

    def __init__(self, images: list[np.ndarray], data: DataConfig, rng: np.random.Generator) -> None:
        super().__init__(images, data, [NoiseSpec()], rng)
        self.ranges = [robust_range(s) for s in self.subsamples]

    def sample(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        index = int(self.rng.integers(len(self.images)))
        patch = self._patch(index)
        lo, hi = self.ranges[index]
        return patch, patch, lo, max(hi - lo, 1e-6)


def make_sampler(
    sources: Sequence[str | np.ndarray],
    targets: Sequence[str | np.ndarray],
    spatial_dims: int,
    channels: int,
    data: DataConfig,
    noise: list[NoiseSpec],
    rng: np.random.Generator,
) -> PatchSampler:
    """The sampler for ``data.mode``: clean images with simulated noise, pairs, or noisy only."""
    patch = data.patch_shape
    if data.mode == "pairs":
        return PairSampler(
            load_images(sources, spatial_dims, channels, patch, keep_constant=True),
            load_images(targets, spatial_dims, channels, patch, keep_constant=True),
            data,
            rng,
        )
    images = load_images(sources, spatial_dims, channels, patch)
    if data.mode == "noisy":
        return NoisySampler(images, data, rng)
    return PatchSampler(images, data, noise, rng)
