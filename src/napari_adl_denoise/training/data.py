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

__all__ = [
    "Batch",
    "GuidedSampler",
    "NoisySampler",
    "PairSampler",
    "PatchSampler",
    "load_images",
    "make_sampler",
]

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
    (a noise-free background, a varying level and noise shared by the channels when it asks
    for them).
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
        self.ranges = [(float(img.min()), float(img.max())) for img in images]

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

    def _stretch(self, clean: np.ndarray, index: int) -> np.ndarray:
        """Each channel stretched by its own gain (log-uniform in [1, 4]) about a level within its
        range, clipped to the image's range: saturated colours and clipped highlights and shadows
        (flat at the image's extremes, with the noise still on top), which photographs hold and
        the training images rarely do."""
        lo, hi = self.ranges[index]
        out = np.empty_like(clean)
        for c, channel in enumerate(clean):
            level = self.rng.uniform(channel.min(), channel.max())
            gain = np.exp(self.rng.uniform(0.0, np.log(4.0)))
            out[c] = np.clip(level + gain * (channel - level), lo, hi)
        return out

    def _posterize(self, clean: np.ndarray) -> np.ndarray:
        """The patch smoothed (sigma 0.5-3 pixels) and cut into 2-8 intensity bands of equal width,
        each band one random level within the patch's range, rising with the band: regions of
        exactly constant intensity with sharp edges (phantoms, label maps, flat-shaded images),
        which natural images never give. Channels share the bands and keep their own ranges."""
        from scipy.ndimage import gaussian_filter

        spatial = (0,) + (self.rng.uniform(0.5, 3.0),) * (clean.ndim - 1)
        smooth = gaussian_filter(clean, spatial)
        luma = smooth.mean(axis=0)
        k = int(self.rng.integers(2, 9))
        lo, hi = float(luma.min()), float(luma.max())
        band = np.minimum((k * (luma - lo) / max(hi - lo, 1e-6)).astype(np.int64), k - 1)
        out = np.empty_like(clean)
        for c, channel in enumerate(smooth):
            levels = np.sort(self.rng.uniform(channel.min(), channel.max(), k))
            out[c] = levels[band]
        return out

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
        if self.data.augment and self.data.contrast and self.rng.random() < self.data.contrast:
            clean = self._stretch(clean, index)
        if self.data.augment and self.data.posterize and self.rng.random() < self.data.posterize:
            clean = self._posterize(clean)
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
        if spec.shared and len(clean) > 1 and self.rng.random() < spec.shared:
            # a second draw's channel mean, scaled to one channel's variance, shared by all
            common = (add_noise(clean, kind, relative=False, seed=seed + 2, **params) - clean).mean(axis=0)
            share = self.rng.uniform(0.0, 1.0)
            noisy = clean + np.sqrt(1 - share) * (noisy - clean) + np.sqrt(share * len(clean)) * common
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


class GuidedSampler(PatchSampler):
    """Training data of a guided 3D network (``EfficientUnetConfig.guide``): each input patch
    is the noisy volume and its guide's four channels (the 2D model's three slicing directions
    and their plane-weighted mean), computed by the runner that denoising uses.

    The guide needs whole slices for its context, which costs about a second per crop on a CPU,
    so noisy crops with their guide channels are kept in a pool of ``data.pool`` crops (each
    ``crop`` voxels a side; some made thin, or with 2-3x thicker slices, since real volumes are
    often anisotropic), one crop is replaced every ``refresh`` batches, and the patches of a
    batch are drawn from the pool with flips and axis permutations (the guide's directions
    permuted with the axes).
    """

    def __init__(
        self,
        images: list[np.ndarray],
        data: DataConfig,
        noise: list[NoiseSpec],
        rng: np.random.Generator,
        guide: str,
        *,
        refresh: int = 4,
        crop: tuple[int, int] = (40, 88),
    ) -> None:
        from ..methods import MethodContext, get_method, method_for_kind
        from ..weights import model_info

        super().__init__(images, data, noise, rng)
        method = method_for_kind(model_info(guide).config.kind, guide).name
        context = MethodContext(3, 1, guide, "auto", options={"ensemble": 1})  # the GPU if any
        self.guide = get_method(method).factory(context)
        self.crop = crop
        self.refresh = refresh
        self.batches = 0
        self.pool = [self._crop() for _ in range(data.pool)]

    def _patch(self, index: int) -> np.ndarray:
        """A crop of volume ``index``: sometimes thin along one axis, or with thicker slices
        (the mean of 2 or 3 neighbours, as a scanner's thick slice)."""
        image = self.images[index]
        shape = [int(self.rng.integers(self.crop[0], self.crop[1] + 1)) for _ in range(3)]
        axis, thick, kind = int(self.rng.integers(3)), 1, self.rng.random()
        if kind < 0.15:
            shape[axis] = int(self.rng.integers(8, 21))
        elif kind < 0.35:
            thick = int(self.rng.integers(2, 4))
        sizes = zip(shape, image.shape[1:], strict=True)
        shape = [min(s * (thick if a == axis else 1), n) for a, (s, n) in enumerate(sizes)]
        start = [int(self.rng.integers(0, n - s + 1)) for s, n in zip(shape, image.shape[1:], strict=True)]
        patch = image[(slice(None), *(slice(a, a + s) for a, s in zip(start, shape, strict=True)))]
        if thick > 1 and patch.shape[axis + 1] >= 2 * thick:
            n = patch.shape[axis + 1] // thick * thick
            patch = np.take(patch, range(n), axis=axis + 1)
            split = patch.shape[: axis + 1] + (n // thick, thick) + patch.shape[axis + 2 :]
            patch = patch.reshape(split).mean(axis=axis + 2)
        return np.ascontiguousarray(patch, dtype=np.float32)

    def _crop(self) -> tuple[np.ndarray, np.ndarray, float, float, tuple[int, ...]]:
        """A noisy crop, normalised as inference would, its guide channels stacked after it;
        the clean crop on the same scale; the normalisation; the crop's size before padding."""
        from .._tiling import round_up

        noisy, clean, lo, scale = self.sample()
        noisy = (noisy - lo) / scale
        steps = self.guide.directions(noisy)
        try:
            while True:
                next(steps)
        except StopIteration as stop:
            guide = stop.value
        x = np.concatenate([noisy, guide]).astype(np.float32)
        target = ((clean - lo) / scale).astype(np.float32)
        # Reflect-padded to a multiple of 8 and at least a patch, as the runner pads its tiles.
        size = x.shape[1:]
        pad = [(0, 0)] + [
            (0, max(p, round_up(n)) - n) for n, p in zip(size, self.data.patch_shape, strict=True)
        ]
        if any(after for _, after in pad):
            x, target = np.pad(x, pad, mode="reflect"), np.pad(target, pad, mode="reflect")
        return x, target, lo, scale, size

    def batch(self, size: int | None = None) -> Batch:
        self.batches += 1
        if self.batches % self.refresh == 0:
            self.pool[int(self.rng.integers(len(self.pool)))] = self._crop()
        inputs, targets, los, scales = [], [], [], []
        shape = self.data.patch_shape
        for _ in range(size or self.data.batch_size):
            x, target, lo, scale, _ = self.pool[int(self.rng.integers(len(self.pool)))]
            start = [int(self.rng.integers(0, n - p + 1)) for n, p in zip(x.shape[1:], shape, strict=True)]
            window = (slice(None), *(slice(a, a + p) for a, p in zip(start, shape, strict=True)))
            x, target = x[window], target[window]
            if self.data.augment:
                order = [int(a) for a in self.rng.permutation(3)]
                x = np.transpose(x, (0, *(1 + a for a in order)))[[0, 1, *(2 + a for a in order)]]
                target = np.transpose(target, (0, *(1 + a for a in order)))
                for axis in range(1, 4):
                    if self.rng.random() < 0.5:
                        x, target = np.flip(x, axis), np.flip(target, axis)
            inputs.append(np.ascontiguousarray(x))
            targets.append(np.ascontiguousarray(target))
            los.append(lo)
            scales.append(scale)
        lo_t = torch.tensor(los, dtype=torch.float32)
        scale_t = torch.tensor(scales, dtype=torch.float32)
        target_t = torch.from_numpy(np.stack(targets))
        expand = (slice(None),) + (None,) * (target_t.ndim - 1)
        return Batch(
            torch.from_numpy(np.stack(inputs)),
            target_t,
            target_t * scale_t[expand] + lo_t[expand],
            lo_t,
            scale_t,
        )


def make_sampler(
    sources: Sequence[str | np.ndarray],
    targets: Sequence[str | np.ndarray],
    spatial_dims: int,
    channels: int,
    data: DataConfig,
    noise: list[NoiseSpec],
    rng: np.random.Generator,
    guide: str | None = None,
) -> PatchSampler:
    """The sampler for ``data.mode``: clean images with simulated noise, pairs, or noisy only;
    with a ``guide`` (a guided 3D network's), clean volumes with the guide's channels."""
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
    if guide is not None:
        return GuidedSampler(images, data, noise, rng, guide)
    return PatchSampler(images, data, noise, rng)
