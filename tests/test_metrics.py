from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage import metrics as skm
from skimage.color import deltaE_ciede2000, rgb2lab

from napari_adl_denoise import metrics
from napari_adl_denoise.noise import add_noise


@pytest.fixture(params=["2d", "3d"])
def pair(request):
    rng = np.random.default_rng(0)
    if request.param == "2d":
        clean = data.camera()[::2, ::2].astype(np.float64)
    else:
        clean = np.stack([data.camera()[k : k + 96 : 1, 100:196] for k in range(0, 40, 2)]).astype(np.float64)
    noisy = clean + rng.normal(0, 20, clean.shape)
    return clean, noisy


def test_psnr_ssim_mse_equal_scikit_image(pair):
    clean, noisy = pair
    data_range = clean.max() - clean.min()
    assert metrics.psnr(clean, noisy) == pytest.approx(
        skm.peak_signal_noise_ratio(clean, noisy, data_range=data_range), abs=1e-6
    )
    assert metrics.ssim(clean, noisy) == pytest.approx(
        skm.structural_similarity(clean, noisy, data_range=data_range), abs=1e-6
    )
    assert metrics.mse(clean, noisy) == pytest.approx(skm.mean_squared_error(clean, noisy), abs=1e-6)


def test_data_range_is_the_references_not_the_dtypes():
    rng = np.random.default_rng(0)
    clean = rng.integers(1000, 5000, (64, 64)).astype(np.uint16)
    noisy = (clean + rng.normal(0, 100, clean.shape)).astype(np.uint16)
    expected = skm.peak_signal_noise_ratio(clean, noisy, data_range=float(clean.max() - clean.min()))
    assert metrics.psnr(clean, noisy) == pytest.approx(expected)
    assert metrics.compare(clean, noisy)["data_range"] == clean.max() - clean.min()
    assert metrics.psnr(clean, noisy, data_range=65535) > expected + 20  # the dtype pitfall


def test_vifp_agrees_with_sewar():
    sewar = pytest.importorskip("sewar")
    clean = data.camera()[:200, :220]
    for test in (add_noise(clean, sigma=15, seed=0), np.clip(clean * 0.7 + 30, 0, 255)):
        ours = metrics.vifp(clean, test, data_range=255)
        theirs = sewar.full_ref.vifp(clean.astype(np.float64), test.astype(np.float64))
        assert ours == pytest.approx(theirs, abs=1e-3)


def test_vifp_properties_2d_and_3d():
    clean = data.camera()[:128, :128].astype(np.float64)
    assert metrics.vifp(clean, clean) == pytest.approx(1.0)
    light, heavy = (add_noise(clean, sigma=s, seed=0) for s in (5, 40))
    assert 1 > metrics.vifp(clean, light) > metrics.vifp(clean, heavy) > 0
    camera = data.camera().astype(np.float64)
    volume = np.stack([camera[k : k + 70, :70] for k in range(70)])
    noisy = add_noise(volume, sigma=20, seed=0)
    assert 0 < metrics.vifp(volume, noisy) < 1
    # invariant to the intensity scale (the model's noise variance is defined on 0-255)
    assert metrics.vifp(clean * 16, light * 16) == pytest.approx(metrics.vifp(clean, light))


def test_delta_e_equals_scikit_image_ciede2000():
    clean = data.astronaut()
    noisy = np.clip(add_noise(clean, sigma=20, seed=0), 0, 255)
    expected = deltaE_ciede2000(rgb2lab(clean / 255.0), rgb2lab(noisy / 255.0)).mean()
    assert metrics.delta_e(clean, noisy) == pytest.approx(expected, abs=1e-6)
    assert metrics.delta_e(clean, clean) == 0


def test_compare_gives_all_metrics():
    clean = data.astronaut()[:128, :128]
    noisy = np.clip(add_noise(clean, sigma=20, seed=0), 0, 255)
    scores = metrics.compare(clean, noisy, channel_axis=-1)
    assert set(scores) == {"psnr", "ssim", "mse", "vifp", "delta_e", "data_range"}
    assert scores["psnr"] == pytest.approx(metrics.psnr(clean, noisy))
    small = metrics.compare(np.eye(16), np.eye(16) * 0.9)
    assert "vifp" not in small and "delta_e" not in small


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros((8, 8)), np.zeros((8, 9))), "shapes differ"),
        ((np.eye(8), np.full((8, 8), np.nan)), "test contains NaN"),
        ((np.full((8, 8), np.nan), np.eye(8)), "reference contains NaN"),
        ((np.ones((8, 8)), np.eye(8)), "constant"),
    ],
)
def test_bad_input_names_the_problem(args, message):
    with pytest.raises(ValueError, match=message):
        metrics.compare(*args)
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(np.eye(8), np.eye(8) * 2, data_range=-1)
