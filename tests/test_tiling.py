from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from napari_adl_denoise import denoise
from napari_adl_denoise._tiling import axis_starts, iter_tiles


@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [
        ((512, 512), (64, 64), 0.25),
        ((40, 48), (16, 16), 0.25),
        ((512,), (32,), 0.1),
        ((104,), (32,), 0.0),
        ((24, 40, 56), (16, 16, 24), 0.5),
        ((64, 64), (64, 64), 0.25),
    ],
)
def test_tiles_cover_the_image_and_weights_sum_to_one(shape, tile, overlap):
    total = np.zeros(shape)
    for slices, weight in iter_tiles(shape, tile, overlap):
        assert all(s.start % 8 == 0 and s.stop - s.start == t for s, t in zip(slices, tile, strict=True))
        total[slices] += weight
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_starts_are_on_the_8_pixel_grid_and_reach_the_end():
    for size, tile in [(512, 96), (520, 64), (48, 32)]:
        starts = axis_starts(size, tile, 0.25)
        assert starts[0] == 0 and starts[-1] == size - tile
        assert all(s % 8 == 0 for s in starts)
        assert all(b - a < tile for a, b in zip(starts, starts[1:], strict=False))


@pytest.mark.parametrize("tile", [64, 96, 128])
def test_small_tiles_agree_with_the_whole_image_without_seams(tile):
    # The bundled model, as users run it (a fixture model trained here varies with the thread
    # count, and so would its seams). Measured: 56 / 63 / 66 dB, 99th-percentile error 0.56 /
    # 0.29 / 0.19 % and largest 4.5 / 3.0 / 2.5 % of the range at tiles of 64 / 96 / 128.
    rng = np.random.default_rng(1)
    clean = data.astronaut()[..., 1].astype(np.float32)
    noisy = clean + rng.normal(0, 25, clean.shape).astype(np.float32)
    whole = denoise(noisy, tile_shape=512)
    tiled = denoise(noisy, tile_shape=tile)
    data_range = float(whole.max() - whole.min())
    assert peak_signal_noise_ratio(whole, tiled, data_range=data_range) > 50
    # No seam: errors stay small near tile edges too, not just on average.
    error = np.abs(whole - tiled)
    assert np.percentile(error, 99) < 0.01 * data_range
    assert error.max() < 0.06 * data_range


def test_tiled_3d_agrees_with_whole_volume(tiny_3d):
    rng = np.random.default_rng(2)
    volume = rng.random((40, 48, 56)).astype(np.float32)
    whole = denoise(volume, model=tiny_3d, tile_shape=(40, 48, 56))
    tiled = denoise(volume, model=tiny_3d, tile_shape=32)
    assert peak_signal_noise_ratio(whole, tiled, data_range=float(whole.max() - whole.min())) > 40


def test_default_tiles_bound_memory_and_stay_balanced():
    import torch

    from napari_adl_denoise.methods._learned import _tile_shape

    cpu = torch.device("cpu")
    assert _tile_shape(None, (512, 512), cpu, 0.25) == (512, 512)  # whole image
    assert _tile_shape(None, (2048, 1024), cpu, 0.25) == (512, 416)  # 5x3 tiles, no slivers
    assert _tile_shape(None, (128, 128, 128), cpu, 0.25) == (32, 32, 32)
    assert _tile_shape(None, (24, 40, 16), cpu, 0.25) == (24, 24, 16)
    assert _tile_shape(100, (64, 256), cpu, 0.25) == (64, 104)  # clamped, multiple of 8
    with pytest.raises(ValueError, match="tile_shape"):
        _tile_shape((64, 64, 64), (64, 256), cpu, 0.25)
