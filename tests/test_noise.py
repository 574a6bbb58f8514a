from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from napari_adl_denoise.noise import NOISE_KINDS, add_noise, estimate_noise

N = 400_000  # samples for the statistics tests


def laguerre_half(x: float) -> float:
    """L_{1/2}(x) via its closed form with Bessel functions."""
    from scipy.special import i0e, i1e

    # exp(x/2) * ((1 - x) I0(-x/2) - x I1(-x/2)), written with scaled Bessel functions for x < 0
    return (1 - x) * i0e(-x / 2) - x * i1e(-x / 2)


def test_gaussian_std_matches_sigma_relative_to_the_data_range():
    image = np.zeros(N)
    image[0] = 1000.0  # data range 1000
    noisy = add_noise(image, "gaussian", sigma=25, seed=0)
    assert abs(noisy[1:].std() / (25 / 255 * 1000) - 1) < 0.02
    assert abs(noisy[1:].mean()) < 0.01 * 1000


def test_absolute_units():
    noisy = add_noise(
        np.zeros(N) + np.r_[0, 1000, [0] * (N - 2)], "gaussian", sigma=3, relative=False, seed=0
    )
    assert abs(noisy[2:].std() / 3 - 1) < 0.02


@pytest.mark.parametrize(("a", "sigma"), [(0.0, 10.0), (20.0, 10.0), (60.0, 15.0)])
def test_rician_mean_matches_the_laguerre_closed_form(a, sigma):
    # signal x + nu = a on the 0-255 scale (range 255 via one pixel at 255)
    nu = min(a, 5.0)
    image = np.full(N, a - nu)
    image[0], image[1] = 0.0, 255.0  # data range 255, so sigma is in gray levels
    noisy = add_noise(image, "rician", sigma=sigma, nu=nu, seed=1)[2:]
    expected = sigma * np.sqrt(np.pi / 2) * laguerre_half(-(a**2) / (2 * sigma**2))
    assert abs(noisy.mean() / expected - 1) < 0.01


def test_rayleigh_is_the_zero_signal_rician():
    image = np.zeros(N)
    image[0] = 255.0
    rayleigh = add_noise(image, "rayleigh", sigma=10, seed=0)[1:]
    rician = add_noise(image, "rician", sigma=10, nu=0, seed=0)[1:]
    assert abs(rayleigh.mean() / (10 * np.sqrt(np.pi / 2)) - 1) < 0.01
    assert abs(rayleigh.var() / ((4 - np.pi) / 2 * 100) - 1) < 0.02
    assert abs(rician.mean() / rayleigh.mean() - 1) < 0.01


def test_poisson_variance_equals_mean_times_scale():
    for level in (10.0, 50.0):
        image = np.full(N, level)
        image[0], image[1] = 0.0, 100.0  # range 100
        noisy = add_noise(image, "poisson", peak=20, seed=0)[2:]
        scale = 100 / 20
        assert abs(noisy.mean() / level - 1) < 0.01
        assert abs(noisy.var() / (noisy.mean() * scale) - 1) < 0.02


def test_poisson_gaussian_adds_read_noise_variance():
    image = np.full(N, 50.0)
    image[0], image[1] = 0.0, 255.0
    noisy = add_noise(image, "poisson_gaussian", peak=51, sigma=5, seed=0)[2:]
    assert abs(noisy.var() / (50 * 5 + 25) - 1) < 0.02


def test_speckle_variance_scales_with_intensity():
    image = np.repeat([0.0, 50.0, 200.0], N // 3)
    noisy = add_noise(image, "speckle", sigma=25.5, seed=0)
    stds = [noisy[image == level].std() for level in (50.0, 200.0)]
    assert noisy[image == 0].std() == 0
    assert abs(stds[0] / (50 * 0.1) - 1) < 0.02 and abs(stds[1] / (200 * 0.1) - 1) < 0.02


def test_salt_and_pepper_hits_the_extremes():
    image = np.full(N, 5.0)
    image[0], image[1] = 0.0, 10.0
    noisy = add_noise(image, "salt_pepper", amount=0.1, seed=0)
    assert abs(np.mean(noisy == 10.0) - 0.05) < 0.005 and abs(np.mean(noisy == 0.0) - 0.05) < 0.005


def test_mixed_follows_algorithm_1():
    image = np.full(50_000, 128.0)
    image[0], image[1] = 0.0, 255.0
    kinds = []
    for seed in range(60):
        noisy = add_noise(image, "mixed", seed=seed)[2:]
        assert noisy.std() <= 75 * 1.05  # sigma <= 75 on the 0-255 scale
        kinds.append(noisy.std())
    assert len(set(np.round(kinds, 3))) > 50  # a new random sigma each time


@pytest.mark.parametrize("kind", list(NOISE_KINDS))
@pytest.mark.parametrize("shape", [(33, 47), (17, 33, 41), (33, 47, 3)])
def test_every_kind_is_deterministic_float32_and_leaves_the_input(kind, shape):
    image = (np.random.default_rng(0).random(shape) * 200).astype(np.uint8)
    before = image.copy()
    image.flags.writeable = False
    a = add_noise(image, kind, seed=42)
    b = add_noise(image, kind, seed=42)
    np.testing.assert_array_equal(image, before)
    assert a.dtype == np.float32 and a.shape == shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, add_noise(image, kind, seed=43))


def test_unclipped_by_default_clipped_on_request():
    image = data.camera()
    assert add_noise(image, sigma=50, seed=0).min() < 0
    clipped = add_noise(image, sigma=50, seed=0, clip=True)
    assert clipped.min() >= 0 and clipped.max() <= 255


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"sigma": -1}, "sigma"),
        ({"nu": -2, "kind": "rician"}, "nu"),
        ({"peak": 0, "kind": "poisson"}, "peak"),
        ({"amount": 1.5, "kind": "salt_pepper"}, "amount"),
        ({"kind": "pink"}, "noise kind"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        add_noise(np.eye(8), **kwargs)


def test_nan_input_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        add_noise(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("sigma", [10, 25, 50])
def test_estimate_noise_recovers_sigma_in_the_same_units(sigma):
    noisy = add_noise(data.camera(), sigma=sigma, seed=0)
    assert abs(estimate_noise(noisy) / sigma - 1) < 0.1
    rgb = add_noise(data.astronaut(), sigma=sigma, seed=0)
    assert abs(estimate_noise(rgb, channel_axis=-1) / sigma - 1) < 0.2
    assert estimate_noise(noisy, relative=False) == pytest.approx(sigma, rel=0.15)


@pytest.mark.parametrize("dtype", [bool, complex, object])
def test_estimate_noise_refuses_non_numeric_images(dtype):
    with pytest.raises(ValueError, match="image dtype must be integer or floating point"):
        estimate_noise(np.ones((32, 32), dtype=dtype))
