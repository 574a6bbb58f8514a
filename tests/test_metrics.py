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


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_compare_on_a_stack_scores_each_image_as_denoise_treats_it(spatial_dims):
    """A (t, z, y, x) series with 3 planes in z: SSIM per volume or per plane, averaged; PSNR and
    MSE over everything, in the whole reference's range."""
    rng = np.random.default_rng(0)
    clean = rng.random((3, 9, 33, 41)) * 100
    noisy = clean + rng.normal(0, 5, clean.shape)
    scores = metrics.compare(clean, noisy, spatial_dims=spatial_dims)
    items = clean.reshape(-1, *clean.shape[-spatial_dims:]), noisy.reshape(-1, *clean.shape[-spatial_dims:])
    data_range = clean.max() - clean.min()
    expected = np.mean([metrics.ssim(c, n, data_range) for c, n in zip(*items, strict=True)])
    assert scores["ssim"] == pytest.approx(expected) and scores["data_range"] == data_range
    assert scores["psnr"] == pytest.approx(metrics.psnr(clean, noisy))
    with pytest.raises(ValueError, match="spatial_dims"):
        metrics.compare(clean[0, 0], noisy[0, 0], spatial_dims=3)


def test_compare_on_an_rgb_stack_keeps_colour():
    clean = np.stack([data.astronaut()[:64, :80], data.coffee()[:64, :80]]).astype(np.float64)
    noisy = np.clip(add_noise(clean, sigma=20, seed=0), 0, 255)
    scores = metrics.compare(clean, noisy, channel_axis=-1, spatial_dims=2)
    per_image = [
        metrics.ssim(c, n, clean.max() - clean.min(), channel_axis=-1)
        for c, n in zip(clean, noisy, strict=True)
    ]
    assert scores["ssim"] == pytest.approx(np.mean(per_image)) and "delta_e" in scores


def test_line_profile_samples_only_inside_the_image():
    image = np.arange(20 * 30, dtype=np.float64).reshape(20, 30)
    fraction, values = metrics.line_profile(image, (5, -10), (5, 39))  # runs 10 px past each side
    np.testing.assert_allclose(values, image[5])  # one sample per pixel, none past the edges
    assert fraction[0] == pytest.approx(10 / 49) and fraction[-1] == pytest.approx(39 / 49)
    fraction, values = metrics.line_profile(image, (25, 0), (30, 29))  # below the image
    assert fraction.size == values.size == 0
    rgb = np.stack([image, image + 3, image + 6], axis=-1)
    _, values = metrics.line_profile(rgb, (0, 0), (0, 29), channel_axis=-1)
    np.testing.assert_allclose(values, image[0] + 3)
    volume = np.stack([image, image * 2])
    _, values = metrics.line_profile(volume, (1, 5, 0), (1, 5, 29))
    np.testing.assert_allclose(values, 2 * image[5])


def test_residual_statistics():
    rng = np.random.default_rng(0)
    clean = rng.random((17, 33))
    stats = metrics.residual_statistics(clean + 1, clean)
    assert stats == pytest.approx({"mean": 1, "std": 0, "min": 1, "max": 1})


def test_detail_ratio_is_one_for_the_same_detail_below_when_smoothed_above_with_noise():
    from scipy.ndimage import gaussian_filter

    from napari_adl_denoise.metrics import detail_ratio

    clean = data.camera()[100:300, 150:350].astype(np.float64)
    noisy = clean + np.random.default_rng(0).normal(0, 20, clean.shape)
    assert detail_ratio(clean, clean) == 1.0
    assert detail_ratio(clean, 2 * clean + 7) == pytest.approx(2.0)  # scale, not offset
    assert detail_ratio(clean, gaussian_filter(clean, 2)) < 0.6 < 1.5 < detail_ratio(clean, noisy)
    rgb = data.astronaut()[:64, :80].astype(np.float64)
    smoothed = gaussian_filter(rgb, (2, 2, 0))
    assert detail_ratio(rgb, smoothed, channel_axis=-1) == pytest.approx(
        detail_ratio(np.moveaxis(rgb, -1, 0), np.moveaxis(smoothed, -1, 0), channel_axis=0)
    )
    assert detail_ratio(rgb, smoothed, channel_axis=-1) < 1
    with pytest.raises(ValueError, match="reference is constant"):
        detail_ratio(np.ones((8, 8)), clean[:8, :8])
    with pytest.raises(ValueError, match="at least 3 pixels"):
        detail_ratio(clean[:2], clean[:2])


def test_gmsd_is_zero_for_the_same_image_and_grows_with_lost_or_false_detail():
    from scipy.ndimage import gaussian_filter

    from napari_adl_denoise.metrics import gmsd

    clean = data.camera().astype(np.float64)
    assert gmsd(clean, clean) == 0.0
    assert gmsd(clean, gaussian_filter(clean, 1)) < gmsd(clean, gaussian_filter(clean, 2))
    assert gmsd(clean, clean + np.random.default_rng(0).normal(0, 25, clean.shape)) > 0.15
    rgb = data.astronaut().astype(np.float64)
    luminance = rgb @ np.array([0.299, 0.587, 0.114])
    blurred = gaussian_filter(rgb, (1.5, 1.5, 0))
    assert gmsd(rgb, blurred, channel_axis=-1) == pytest.approx(
        gmsd(luminance, blurred @ np.array([0.299, 0.587, 0.114]), data_range=np.ptp(rgb))
    )
    with pytest.raises(ValueError, match="2D images"):
        gmsd(np.ones((4, 8, 8)), np.ones((4, 8, 8)), data_range=1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: metrics.ssim(a, a, channel_axis=5), "channel_axis=5 is out of range for 3D images"),
        (lambda a: metrics.vifp(a, a, channel_axis=-4), "channel_axis=-4 is out of range"),
        (lambda a: metrics.gmsd(a, a, channel_axis=3), "channel_axis=3 is out of range"),
        (lambda a: metrics.psnr(a, a + 1, data_range="x"), "data_range must be a finite number > 0, got 'x'"),
        (lambda a: metrics.ssim(a, a, data_range=None, channel_axis="last"), "channel_axis='last'"),
    ],
)
def test_bad_metric_arguments_are_one_line_errors(call, message):
    image = np.random.default_rng(0).random((80, 80, 3))
    with pytest.raises(ValueError, match=message) as info:
        call(image)
    assert "\n" not in str(info.value)
