"""Real noise: signal-dependent (Poisson, Poisson-Gaussian) noise and noise-free backgrounds.

The noise model a user can state or have estimated, the variance-stabilising transform behind
``denoise(noise_model=...)``, the training noise that teaches the blind models both, and the
blind default on an image whose background carries no noise.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from skimage import data

from napari_adl_denoise import NoiseModel, _vst, add_noise, denoise, estimate_noise_model
from napari_adl_denoise.metrics import psnr
from napari_adl_denoise.training import NoiseSpec
from napari_adl_denoise.training.config import DataConfig
from napari_adl_denoise.training.data import PatchSampler

CAMERA = data.camera().astype(np.float32)


@pytest.mark.parametrize("peak", [20, 100])
def test_estimate_noise_model_finds_the_photon_gain(peak):
    model = estimate_noise_model(add_noise(CAMERA, "poisson", peak=peak, seed=0))
    assert model.kind in ("poisson", "poisson_gaussian")
    assert model.gain == pytest.approx(255 / peak, rel=0.15)


def test_estimate_noise_model_calls_gaussian_noise_gaussian():
    model = estimate_noise_model(add_noise(CAMERA, "gaussian", sigma=20, seed=0))
    assert model.kind == "gaussian" and model.gain == 0
    assert model.sigma == pytest.approx(20, rel=0.15)


def test_estimate_noise_model_ignores_a_noise_free_background():
    masked = np.where(CAMERA > 60, CAMERA, 0)
    noisy = add_noise(masked, "poisson", peak=20, seed=0)
    assert (noisy[masked == 0] == 0).all()  # photon noise leaves a zero background at zero
    assert estimate_noise_model(noisy).gain == pytest.approx(255 / 20, rel=0.15)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gain": -1}, ">= 0"),
        ({"gain": 0, "sigma": 0}, "gain > 0 or sigma > 0"),
        ({"offset": np.nan}, "finite"),
    ],
)
def test_a_bad_noise_model_is_a_one_line_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoiseModel(**{"gain": 1.0, **kwargs})


def test_the_transform_makes_photon_noise_unit_gaussian_and_inverts_without_bias():
    model = NoiseModel(gain=2.0, offset=10.0, sigma=3.0)
    rng = np.random.default_rng(0)
    for photons in (0.5, 3.0, 40.0, 900.0):  # dark to bright, past the inverse's table
        y = 10.0 + 2.0 * rng.poisson(photons, 200_000) + rng.normal(0, 3.0, 200_000)
        t = _vst.forward(y, model)
        if photons >= 3:
            assert t.std() == pytest.approx(1.0, abs=0.06)
        # the exact unbiased inverse of the mean transformed value is the mean intensity
        assert _vst.inverse(np.array([t.mean()]), model)[0] == pytest.approx(
            10 + 2 * photons, abs=0.2 + 0.01 * photons
        )


def test_noise_model_option_beats_blind_bm3d_on_photon_noise():
    pytest.importorskip("bm3d")
    clean = CAMERA[128:320, 128:320]
    noisy = add_noise(clean, "poisson", peak=20, seed=1)
    blind = denoise(noisy, "bm3d")
    stabilised = denoise(noisy, "bm3d", noise_model="poisson_gaussian")
    assert psnr(clean, stabilised) > psnr(clean, blind) + 0.5


def test_noise_model_option_round_trips_through_the_api_and_is_checked():
    clean = CAMERA[:96, :96]
    noisy = add_noise(clean, "poisson", peak=30, seed=0)
    estimated = estimate_noise_model(noisy)
    np.testing.assert_allclose(
        denoise(noisy, noise_model="poisson_gaussian"), denoise(noisy, noise_model=estimated), atol=1e-4
    )
    auto = denoise(noisy, noise_model="auto")  # finds the photon noise, so stabilises too
    np.testing.assert_allclose(auto, denoise(noisy, noise_model=estimated), atol=1e-4)
    assert noisy.dtype == np.float32 and auto.shape == noisy.shape
    gaussian = add_noise(clean, "gaussian", sigma=20, seed=0)
    np.testing.assert_array_equal(denoise(gaussian, noise_model="auto"), denoise(gaussian))
    with pytest.raises(ValueError, match="does not grow with intensity"):
        denoise(gaussian, noise_model="poisson_gaussian")
    with pytest.raises(ValueError, match="unknown noise_model 'photons'"):
        denoise(noisy, noise_model="photons")
    tiny = noisy[:20, :20]  # too little to estimate from: auto denoises it as it is
    np.testing.assert_array_equal(denoise(tiny, noise_model="auto"), denoise(tiny))
    with pytest.raises(ValueError, match="poisson_gaussian.*give a NoiseModel"):
        denoise(tiny, noise_model="poisson_gaussian")


def test_noise_model_option_in_the_cli(tmp_path):
    import tifffile

    noisy = add_noise(CAMERA[:96, :96], "poisson", peak=30, seed=0)
    tifffile.imwrite(tmp_path / "in.tif", noisy)
    cli = [sys.executable, "-m", "napari_adl_denoise.cli", "denoise", str(tmp_path / "in.tif")]
    run = subprocess.run(
        [
            *cli,
            str(tmp_path / "out.tif"),
            "--noise-model",
            "poisson_gaussian",
            "--gain",
            "8.5",
            "--offset",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    expected = denoise(noisy, noise_model=NoiseModel(gain=8.5, offset=0.0))
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out.tif"), expected, atol=1e-4)
    for flags in (["--gain", "8.5"], ["--noise-model", "poisson_gaussian", "--offset", "3"]):
        bad = subprocess.run([*cli, str(tmp_path / "o2.tif"), *flags], capture_output=True, text=True)
        assert bad.returncode == 2 and "--gain" in bad.stderr and "Traceback" not in bad.stderr


def test_training_noise_with_backgrounds_varying_levels_and_photon_ranges():
    spec = NoiseSpec(kind="poisson", peak=(10, 500), background=1.0, varying=1.0)
    assert NoiseSpec(kind="poisson", peak=100).peak == (100, 100)  # cards of older models load
    images = [CAMERA[None] / 255]
    sampler = PatchSampler(
        images, DataConfig(train=["x"], val=["x"], patch_shape=(64, 64)), [spec], np.random.default_rng(0)
    )
    zero_fraction = []
    for _ in range(20):
        noisy, clean, lo, scale = sampler.sample()
        background = clean == 0
        assert (noisy[background] == 0).all()  # noise-free, as in a masked scan
        zero_fraction.append(background.mean())
    assert 0.15 < np.mean(zero_fraction) < 0.85
    with pytest.raises(ValueError, match="peak range"):
        NoiseSpec(kind="poisson", peak=(50, 10))


def test_a_noise_free_background_does_not_talk_the_default_model_out_of_denoising():
    """Shepp-Logan's head phantom (58% exact zeros around it; never trained on) with Gaussian
    noise only inside the head is denoised there at least as well as with noise everywhere.
    adl-2d-gray, trained on noise everywhere, lost 6.5 dB inside (23.75 against 30.20 dB);
    adl-2d-gray-real scored 32.62 against 30.39 dB (the tolerance is 0.5 dB)."""
    phantom = data.shepp_logan_phantom().astype(np.float32)
    head = phantom > 0
    everywhere = add_noise(phantom, "gaussian", sigma=25, seed=0)
    masked = np.where(head, everywhere, 0).astype(np.float32)
    inside = {"data_range": float(np.ptp(phantom))}
    masked_psnr = psnr(phantom[head], denoise(masked)[head], **inside)
    everywhere_psnr = psnr(phantom[head], denoise(everywhere)[head], **inside)
    assert masked_psnr > everywhere_psnr - 0.5
    assert masked_psnr > psnr(phantom[head], masked[head], **inside) + 10
