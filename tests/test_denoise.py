from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import drain, guided_config
from skimage import data

import napari_adl_denoise as adl
from napari_adl_denoise import NoModelError, add_noise, denoise, iter_denoise
from napari_adl_denoise.inference import colour_route, robust_range, shared_colour_noise
from napari_adl_denoise.methods import _learned as learned
from napari_adl_denoise.methods._learned import MIN_TILE
from napari_adl_denoise.methods.adl import DEFAULT_MODELS
from napari_adl_denoise.models import EfficientUnet, EfficientUnetConfig
from napari_adl_denoise.weights import save_model


def _copy_and_freeze(image: np.ndarray) -> np.ndarray:
    before = image.copy()
    image.flags.writeable = False  # any write would raise
    return before


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).integers(0, 255, (33, 47), dtype=np.uint8),
        np.random.default_rng(0).integers(0, 65535, (33, 47), dtype=np.uint16),
        np.random.default_rng(0).integers(-1024, 3000, (17, 33, 41), dtype=np.int16),  # CT, negative
        np.random.default_rng(0).normal(0, 1, (33, 47)).astype(np.float32),
        np.random.default_rng(0).normal(0, 1, (33, 47)).astype(np.float16),
        np.random.default_rng(0).normal(5, 2, (17, 33, 41)).astype(np.float64),
        np.random.default_rng(0).integers(0, 4000, (17, 33, 41)).astype(">i2"),  # big-endian NIfTI data
    ],
    ids=["uint8", "uint16", "int16-ct", "float32", "float16", "float64-3d", "big-endian"],
)
def test_dtypes_keep_shape_and_scale_and_input_is_untouched(image, tiny_2d, tiny_3d):
    before = _copy_and_freeze(image)
    model = tiny_2d if image.ndim == 2 else tiny_3d
    out = denoise(image, model=model)
    np.testing.assert_array_equal(image, before)
    assert out.shape == image.shape and out.dtype == np.float32
    # On the input's intensity scale: the output spans about the input's range.
    lo, hi = np.percentile(image.astype(np.float64), [1, 99])
    assert lo - 0.5 * (hi - lo) < out.mean() < hi + 0.5 * (hi - lo)


def test_normalisation_is_exactly_inverted(identity_method):
    image = np.random.default_rng(0).integers(-1024, 3000, (5, 33, 47), dtype=np.int16)
    out = denoise(image, identity_method, spatial_dims=2)
    np.testing.assert_allclose(out, image, rtol=0, atol=1e-3 * 4024)


def test_constant_image_is_returned_unchanged():
    image = np.full((24, 24), 7, dtype=np.uint8)
    np.testing.assert_array_equal(denoise(image, "tv"), image.astype(np.float32))


@pytest.mark.parametrize("method", ["adl", "nlm", "adaptive-cnn"])
def test_noise_free_regions_are_returned_exactly(method):
    # A masked background and a saturated region, flat over 5x5 pixels: no noise to remove.
    noisy = add_noise(data.camera()[:120, :150], "gaussian", sigma=20, seed=4).clip(0, 255).astype(np.uint8)
    noisy[:50, :60], noisy[80:, 100:] = 0, 255
    before = _copy_and_freeze(noisy)
    out = denoise(noisy, method)
    assert (out[:48, :58] == 0).all() and (out[82:, 102:] == 255).all()
    assert (out[60:80, :90] != noisy[60:80, :90]).mean() > 0.95  # the noisy part is denoised
    np.testing.assert_array_equal(noisy, before)


def test_a_masked_photon_image_keeps_its_zeros_through_the_noise_transform():
    rng = np.random.default_rng(5)
    photons = rng.poisson(data.camera()[:128, :128] / 255 * 20).astype(np.float32)
    photons[:, :50] = 0  # outside the sample: no photons, no noise
    out = denoise(photons, noise_model="auto")  # estimated as photon noise: the transform is used
    assert (out[:, :48] == 0).all()
    volume = np.stack([photons[:, :64]] * 6)
    assert (denoise(volume)[:, 2:-2, :48] == 0).all()  # a volume, over three directions


def test_rgb_channel_axis_anywhere(identity_method, tiny_2d):
    rgb = np.random.default_rng(0).integers(0, 255, (33, 47, 3), dtype=np.uint8)
    out_last = denoise(rgb, "tv", channel_axis=-1)
    out_first = denoise(np.moveaxis(rgb, -1, 0), "tv", channel_axis=0)
    assert out_last.shape == rgb.shape
    np.testing.assert_allclose(np.moveaxis(out_first, 0, -1), out_last, atol=1e-4)
    # napari's rule: a 3D array whose last axis has 3 entries is an RGB image unless told otherwise
    np.testing.assert_array_equal(denoise(rgb, "tv"), out_last)
    assert not np.allclose(denoise(rgb, "tv", spatial_dims=3), out_last, atol=1e-3)
    # A gray model on colour data denoises each channel on its own (same value set per channel
    # here, so each channel normalises exactly as it would alone), in one pass as colour data do.
    gray = rgb[..., 0]
    colour = np.stack([gray, gray[::-1, ::-1], gray], axis=-1)
    per_channel = denoise(colour, model=tiny_2d, channel_axis=-1)
    np.testing.assert_allclose(per_channel[..., 0], denoise(gray, model=tiny_2d, ensemble=1), atol=1e-5)
    np.testing.assert_allclose(per_channel[..., 0], per_channel[..., 2], atol=1e-6)


def test_stack_with_spatial_dims_2_is_denoised_slice_by_slice(tiny_2d):
    a = np.random.default_rng(0).random((33, 47)).astype(np.float32)
    b = a[::-1, ::-1].copy()  # same values, so the stack normalises exactly like a single slice
    single = denoise(a, model=tiny_2d)
    stack = denoise(np.stack([a, b, a]), model=tiny_2d, spatial_dims=2)
    assert stack.shape == (3, 33, 47)
    # (percentiles of 3x the samples interpolate slightly differently: ~1e-4)
    np.testing.assert_allclose(stack[0], single, atol=2e-3)
    np.testing.assert_allclose(stack[2], stack[0], atol=1e-6)
    assert not np.allclose(stack[1], single)  # each slice gets its own result


def test_a_part_in_the_whole_images_intensity_range_gets_the_whole_images_result(tiny_2d):
    stack = np.random.default_rng(0).random((4, 33, 47)).astype(np.float32) * np.arange(1, 5)[:, None, None]
    whole = denoise(stack, model=tiny_2d, spatial_dims=2)
    part = denoise(stack[2], model=tiny_2d, intensity_range=robust_range(stack))
    np.testing.assert_allclose(part, whole[2], atol=1e-5)
    assert not np.allclose(denoise(stack[2], model=tiny_2d), whole[2], atol=1e-3)  # its own range differs


def test_4d_time_series_of_volumes(tiny_3d):
    series = np.random.default_rng(0).random((2, 9, 17, 19)).astype(np.float32)
    out = denoise(series, model=tiny_3d)
    assert out.shape == series.shape


def test_progress_is_reported_per_batch_of_tiles(tiny_2d, monkeypatch):
    monkeypatch.setattr(learned, "CPU_BATCH_VOXELS", 4 * 48 * 48)
    records = []
    denoise(np.zeros((100, 100)) + np.eye(100), model=tiny_2d, tile_shape=48, progress=records.append)
    # padded 104 -> tiles at 0, 32, 56 per axis (8-aligned, overlap >= 25%): 9 tiles in batches
    # of 4, 4 and 1, after the start record
    assert [r.done for r in records] == [0, 4, 8, 9]
    assert records[-1].total == 9 and records[-1].fraction == 1.0
    assert all(r.method == "adl" and r.n_items == 1 for r in records)


class CountingModel(torch.nn.Module):
    """Wraps a network and counts forward calls and tiles; raises OOM above ``limit`` voxels."""

    def __init__(self, net, limit=None):
        super().__init__()
        # A copy: the runner makes the network channels-last, and ``net`` is a shared fixture.
        self.net, self.limit, self.calls, self.tiles = copy.deepcopy(net), limit, 0, 0
        self.config = net.config

    def forward(self, x):
        self.calls += 1
        self.tiles += x.shape[0]
        if self.limit is not None and x[0, 0].numel() > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.net(x)


def test_closing_the_generator_cancels_between_batches_of_tiles(tiny_2d, monkeypatch):
    counting = CountingModel(tiny_2d)
    monkeypatch.setattr(
        learned, "as_loaded_model", lambda m, sd, c, method: adl.LoadedModel("c", counting, tiny_2d.config)
    )
    monkeypatch.setattr(learned, "CPU_BATCH_VOXELS", 2 * 32 * 32)  # two tiles per batch
    steps = iter_denoise(np.random.default_rng(0).random((128, 128)), tile_shape=32, ensemble=1)
    records = [next(steps) for _ in range(3)]
    steps.close()
    assert [(r.done, r.total) for r in records] == [(0, 25), (2, 25), (4, 25)]
    assert (counting.calls, counting.tiles) == (2, 4)  # one pass: nothing after the close


def test_batched_tiles_give_the_same_result_as_one_by_one(tiny_2d, monkeypatch):
    image = np.random.default_rng(0).random((100, 90)).astype(np.float32)
    batched = denoise(image, model=tiny_2d, tile_shape=32)
    monkeypatch.setattr(learned, "CPU_BATCH_VOXELS", 1)
    np.testing.assert_allclose(batched, denoise(image, model=tiny_2d, tile_shape=32), atol=1e-5)


def test_out_of_memory_halves_the_tile_and_gives_the_same_result(tiny_2d, monkeypatch):
    image = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    oom = CountingModel(tiny_2d, limit=48 * 48)
    monkeypatch.setattr(
        learned, "as_loaded_model", lambda m, sd, c, method: adl.LoadedModel("c", oom, tiny_2d.config)
    )
    recovered = denoise(image, tile_shape=96, overlap=0.5)
    monkeypatch.undo()
    reference = denoise(image, model=tiny_2d, tile_shape=(48, 48), overlap=0.5)
    np.testing.assert_allclose(recovered, reference, atol=1e-4)


def test_out_of_memory_at_the_smallest_tile_on_cpu_is_a_clear_error(tiny_2d, monkeypatch):
    oom = CountingModel(tiny_2d, limit=1)
    monkeypatch.setattr(
        learned, "as_loaded_model", lambda m, sd, c, method: adl.LoadedModel("c", oom, tiny_2d.config)
    )
    with pytest.raises(MemoryError, match=f"tile \\({MIN_TILE}, {MIN_TILE}\\) on the CPU"):
        denoise(np.random.default_rng(0).random((64, 64)), device="cpu")


def test_registry_lists_methods_and_rejects_unknown_ones():
    names = adl.list_methods()
    assert names[0] == "adl" and {"nlm", "tv", "wavelet", "bm3d", "bm4d"} <= set(names)
    with pytest.raises(ValueError, match="choose one of: adl, .*nlm"):
        denoise(np.zeros((16, 16)), "unknown")


@pytest.mark.parametrize("method", ["nlm", "tv", "wavelet"])
def test_classical_methods_reduce_noise_in_2d_3d_and_rgb(method):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    clean2d = np.sin(yy / 6.0) + np.cos(xx / 9.0)
    cases = [
        (clean2d, {}),
        (np.stack([clean2d] * 9), {}),
        (np.stack([clean2d, clean2d.T, -clean2d], axis=-1), {"channel_axis": -1}),
    ]
    for clean, kwargs in cases:
        noisy = clean + rng.normal(0, 0.3, clean.shape)
        out = denoise(noisy, method, **kwargs)
        assert out.shape == clean.shape
        assert np.mean((out - clean) ** 2) < 0.6 * np.mean((noisy - clean) ** 2)


def test_sigma_option_reaches_classical_methods():
    noisy = np.random.default_rng(0).normal(0, 1, (32, 32))
    assert not np.allclose(denoise(noisy, "tv", sigma=0.01), denoise(noisy, "tv", sigma=0.3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": np.zeros((0, 5))}, "empty"),
        ({"image": np.array([[np.nan, 1.0], [2.0, 3.0]])}, "NaN"),
        ({"image": np.zeros((8, 8), dtype=bool)}, "dtype"),
        ({"image": np.zeros(16)}, "has 1 non-channel axes; 2D denoising needs at least 2"),
        ({"image": np.zeros((8, 8)), "spatial_dims": 4}, "spatial_dims"),
        ({"image": np.zeros((8, 8)), "channel_axis": 3}, "channel_axis"),
        ({"image": np.zeros((8, 8, 8)), "method": "bm3d", "spatial_dims": 3}, "bm3d"),
        ({"image": np.zeros((8, 8)), "method": "tv", "strength": 2}, "does not take option"),
        ({"image": np.zeros((8, 8)), "method": "tv", "model": "x"}, "learned methods only"),
        ({"image": np.eye(8), "device": "tpu"}, "device"),
        ({"image": np.eye(8), "overlap": 1.5}, "overlap"),
        ({"image": np.eye(8), "intensity_range": (1, 1)}, "intensity_range must be two finite numbers"),
        ({"image": np.eye(8), "intensity_range": (0, np.nan)}, "intensity_range"),
        ({"image": np.eye(8), "intensity_range": 5}, "intensity_range must be two finite numbers"),
        ({"image": np.eye(8), "intensity_range": (0, 1, 2)}, "intensity_range must be two finite numbers"),
        ({"image": np.eye(8), "method": "nlm", "sigma": -1}, "sigma must be a finite number > 0, got -1"),
        ({"image": np.eye(8), "method": "tv", "sigma": np.nan}, "sigma must be a finite number > 0"),
        ({"image": np.eye(8), "method": "wavelet", "sigma": "x"}, "sigma must be a finite number > 0"),
        ({"image": np.eye(8) * 1e300}, "exceed float32's range"),
        ({"image": np.eye(8), "ensemble": 3}, "ensemble must be one of 1, 2, 4, 8, got 3"),
        ({"image": np.eye(8), "ensemble": True}, "ensemble must be one of 1, 2, 4, 8, got True"),
        ({"image": np.eye(8), "method": "nlm", "ensemble": 2}, "does not take option"),
    ],
)
def test_bad_input_is_a_one_line_value_error(kwargs, message, tiny_2d):
    kwargs = {"method": "adl", **kwargs}
    if kwargs["method"] == "adl" and "model" not in kwargs:
        kwargs["model"] = tiny_2d
    with pytest.raises(ValueError, match=message) as info:
        denoise(**kwargs)
    assert "\n" not in str(info.value)


def test_a_3d_model_cannot_denoise_2d_data(tiny_3d):
    with pytest.raises(ValueError, match="3D model"):
        denoise(np.random.default_rng(0).random((16, 16)), model=tiny_3d)


def test_a_2d_model_denoises_a_volume_along_all_three_axes_weighted_by_plane(tiny_2d):
    volume = np.random.default_rng(0).random((10, 33, 41)).astype(np.float32)  # a thin axis too
    whole = robust_range(volume)
    out = denoise(volume, model=tiny_2d, spatial_dims=3)
    by_axis = [
        np.moveaxis(
            denoise(
                np.moveaxis(volume, a, 0), model=tiny_2d, spatial_dims=2, intensity_range=whole, ensemble=1
            ),
            0,
            a,
        )
        for a in range(3)
    ]
    # each direction weighs as many voxels as its slicing plane has: the 33x41 planes most
    weights = np.array([33 * 41, 10 * 41, 10 * 33]) / (33 * 41 + 10 * 41 + 10 * 33)
    np.testing.assert_allclose(learned.plane_weights((10, 33, 41)), weights)
    assert out.shape == volume.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, np.tensordot(weights, by_axis, axes=1), atol=1e-5)
    assert np.abs(by_axis[0] - by_axis[1]).mean() > 1e-3  # the directions do differ
    assert learned.plane_weights((64, 64, 64)) == pytest.approx((1 / 3,) * 3)  # a cube: the mean
    # weights of your own (normalised): in-plane only is the slices along the first axis
    np.testing.assert_allclose(denoise(volume, model=tiny_2d, plane_weights=(2, 0, 0)), by_axis[0], atol=1e-5)
    for bad in [(1, 1), (1, -1, 1), (0, 0, 0), (1, float("nan"), 1), "abc"]:
        with pytest.raises(ValueError, match="plane_weights must be three non-negative numbers"):
            denoise(volume, model=tiny_2d, plane_weights=bad)


def test_a_self_ensemble_averages_flipped_and_rotated_passes_two_by_default_on_gray_images(tiny_2d, tiny_3d):
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    once = denoise(image, model=tiny_2d, ensemble=1)
    turned = denoise(image[::-1, ::-1], model=tiny_2d, ensemble=1)[::-1, ::-1]
    assert np.abs(once - turned).max() > 1e-3  # the network alone is not rotation-invariant
    # 2D data: the image and its 180-degree rotation, averaged, unless told otherwise
    np.testing.assert_allclose(denoise(image, model=tiny_2d), (once + turned) / 2, atol=1e-5)
    # all eight symmetries of the square: a rotated or mirrored image gives the same result turned
    eight = denoise(image, model=tiny_2d, ensemble=8)
    np.testing.assert_allclose(
        denoise(np.rot90(image), model=tiny_2d, ensemble=8), np.rot90(eight), atol=1e-5
    )
    np.testing.assert_allclose(denoise(image.T, model=tiny_2d, ensemble=8), eight.T, atol=1e-5)
    # colour images: one pass by default (their network is the costly one)
    rgb = np.random.default_rng(2).random((40, 48, 3)).astype(np.float32)
    once = denoise(rgb, model=tiny_2d, channel_axis=-1, ensemble=1)
    np.testing.assert_array_equal(denoise(rgb, model=tiny_2d, channel_axis=-1), once)
    assert np.abs(denoise(rgb, model=tiny_2d, channel_axis=-1, ensemble=2) - once).max() > 1e-3
    # volumes: one pass by default (a 2D model already averages three directions); a 3D model's
    # eight passes are its flips
    volume = np.random.default_rng(1).random((16, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(denoise(volume, model=tiny_2d), denoise(volume, model=tiny_2d, ensemble=1))
    flips = denoise(volume, model=tiny_3d, ensemble=8)
    np.testing.assert_allclose(
        denoise(volume[::-1, :, ::-1], model=tiny_3d, ensemble=8), flips[::-1, :, ::-1], atol=1e-5
    )


def test_more_passes_denoise_a_real_image_better():
    clean = data.camera()[:200, :168].astype(np.float32)
    noisy = add_noise(clean, "gaussian", sigma=25, seed=0)
    scores = {n: adl.metrics.psnr(clean, denoise(noisy, ensemble=n)) for n in (1, 2, 8)}
    assert scores[8] > scores[2] > scores[1] + 0.05, scores


def test_a_volume_through_a_2d_model_batches_its_slices_and_reports_progress(tiny_2d, monkeypatch):
    monkeypatch.setattr(learned, "CPU_BATCH_VOXELS", 16 * 48 * 48)
    records, out = drain(iter_denoise(np.random.default_rng(0).random((12, 20, 20)), model=tiny_2d))
    # one record before each direction's first batch, then one per batch of 16 slices
    assert len(records) == 3 * (1 + 1)
    fractions = [r.fraction for r in records]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert out.shape == (12, 20, 20)


def test_each_slicing_direction_plans_its_own_tiles(tiny_2d, monkeypatch):
    """A flat volume's directions have different slices: one direction's tile must not carry
    over to the next (the result would depend on the order), and a 3D tile gives each its two."""
    volume = np.random.default_rng(0).random((8, 40, 72)).astype(np.float32)
    seen = []
    original = learned._tile_shape
    monkeypatch.setattr(learned, "_tile_shape", lambda *args: seen.append(original(*args)) or original(*args))
    denoise(volume, model=tiny_2d, spatial_dims=3)
    assert seen == [(40, 72), (8, 72), (8, 40)]
    seen.clear()
    denoise(volume, model=tiny_2d, spatial_dims=3, tile_shape=(16, 24, 32))
    assert seen == [(24, 32), (8, 32), (8, 24)]  # a tile never exceeds the 8 padded planes


def test_volumes_default_to_the_2d_gray_model_over_three_directions():
    from napari_adl_denoise import plan_denoise

    volume = add_noise(_phantom_volume(), sigma=25, seed=0)
    default = DEFAULT_MODELS[3, 1]
    np.testing.assert_allclose(denoise(volume), denoise(volume, model=default), atol=1e-6)
    planned = plan_denoise(volume.shape, 3, 1)
    assert planned.model.name == default and planned.planes and len(planned.tile_shape) == 2
    assert plan_denoise(volume.shape, 3, 1, model="adl-3d-gray").planes is False


def _phantom_volume() -> np.ndarray:
    """A real 2D image (scikit-image's Shepp-Logan phantom) grown into a 20-slice volume."""
    from skimage.transform import resize

    phantom = resize(data.shepp_logan_phantom(), (48, 56))
    return np.stack([phantom * (0.6 + 0.4 * np.cos(k / 6)) for k in range(20)]).astype(np.float32)


def test_the_callers_model_is_left_as_it_was(tiny_2d, tmp_path):
    net = copy.deepcopy(tiny_2d).train()
    loaded = adl.LoadedModel("mine", copy.deepcopy(tiny_2d).train(), tiny_2d.config)
    image = np.random.default_rng(0).random((40, 40))
    np.testing.assert_allclose(denoise(image, model=net), denoise(image, model=loaded), atol=1e-6)
    for model in (net, loaded.model):
        assert model.training
        assert all(p.is_contiguous() for p in model.state_dict().values())
    adl.save_model(net, tmp_path / "mine.safetensors")


def test_adl_without_an_installed_model_refuses_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(adl.weights, "bundled_dir", lambda: tmp_path)
    with pytest.raises(NoModelError, match="no 'adl' model for 2D grayscale data is installed"):
        denoise(np.random.default_rng(0).random((16, 16)))


def test_cuda_unavailable_is_reported():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="not available"):
        denoise(np.eye(16), "adl", model="unused", device="cuda")


@pytest.mark.gpu
def test_cuda_result_matches_cpu(tiny_2d):
    image = np.random.default_rng(0).random((128, 128)).astype(np.float32)
    cpu = denoise(image, model=tiny_2d, device="cpu")
    gpu = denoise(image, model=tiny_2d, device="cuda")
    assert np.abs(cpu - gpu).max() < 0.02 * (cpu.max() - cpu.min())  # mixed precision


def test_an_rgba_image_is_denoised_in_colour_and_keeps_its_alpha():
    rgb = data.astronaut()[:96, :128].astype(np.float32)
    noisy = add_noise(rgb, "gaussian", sigma=25, seed=0)
    alpha = np.linspace(0, 255, rgb.shape[1], dtype=np.float32)[None, :, None].repeat(rgb.shape[0], 0)
    rgba = np.concatenate([noisy, alpha], axis=-1)
    before = rgba.copy()
    result = denoise(rgba, method="tv")
    assert result.shape == rgba.shape and result.dtype == np.float32
    np.testing.assert_array_equal(result[..., 3], alpha[..., 0])  # the alpha exactly
    np.testing.assert_allclose(result[..., :3], denoise(noisy, method="tv"), atol=1e-4)  # colour as RGB
    np.testing.assert_array_equal(rgba, before)
    planar = denoise(np.moveaxis(rgba, -1, 0), method="tv", channel_axis=0)  # any colour axis
    np.testing.assert_allclose(np.moveaxis(planar, 0, -1), result, atol=1e-4)


def test_a_guided_3d_network_refines_its_2d_guides_view_of_the_volume(tiny_2d, tmp_path):
    """The guide's three directions and their plane-weighted mean are the network's extra
    input, and the mean is what its residual heads correct: a network whose heads give zeros
    returns the guide's 2.5D result."""
    save_model(tiny_2d, tmp_path / "guide.safetensors", card={"name": "guide"})
    config = guided_config(tmp_path / "guide.safetensors")
    net = EfficientUnet(config).eval()
    volume = np.random.default_rng(0).random((10, 33, 41)).astype(np.float32)
    for head in (net.head_full, net.head_half, net.head_quarter):
        torch.nn.init.zeros_(head.to_image.weight)
    np.testing.assert_allclose(denoise(volume, model=net), denoise(volume, model=tiny_2d), atol=1e-5)
    torch.nn.init.normal_(net.head_full.to_image.weight, std=0.5)
    out = denoise(volume, model=net, tile_shape=(16, 40, 48))  # one tile: the network by hand
    lo, hi = robust_range(volume)
    whole = (lo, hi)
    planes = [
        np.moveaxis(
            denoise(
                np.moveaxis(volume, a, 0), model=tiny_2d, spatial_dims=2, intensity_range=whole, ensemble=1
            ),
            0,
            a,
        )
        for a in range(3)
    ]
    mean = np.tensordot(learned.plane_weights(volume.shape), planes, axes=1)
    x = np.stack([volume, mean, *planes]).astype(np.float32)
    x = np.pad((x - lo) / (hi - lo), [(0, 0), (0, 6), (0, 7), (0, 7)], mode="reflect")
    with torch.no_grad():
        by_hand = net(torch.from_numpy(x)[None])[0, 0, :10, :33, :41].numpy() * (hi - lo) + lo
    np.testing.assert_allclose(out, by_hand, atol=1e-4 * float(np.abs(by_hand).max()))
    assert np.abs(out - denoise(volume, model=tiny_2d)).mean() > 1e-3
    # a guided network is 3D, gray, residual; its guide is a 2D model; it does volumes only
    for bad in ({"spatial_dims": 2}, {"in_channels": 3}, {"output_activation": "sigmoid"}):
        with pytest.raises(ValueError, match="guided network"):
            EfficientUnetConfig(**{**config.model_dump(), **bad})
    with pytest.raises(ValueError, match="3D model"):
        denoise(volume[0], model=net)
    save_model(EfficientUnet(config.model_copy(update={"guide": None})), tmp_path / "g3.safetensors")
    wrong = EfficientUnet(config.model_copy(update={"guide": str(tmp_path / "g3.safetensors")}))
    with pytest.raises(ValueError, match="needs a 2D guide"):
        denoise(volume, model=wrong)


def test_a_gray_image_stored_as_colour_goes_to_the_gray_model():
    """R = G = B everywhere: the noise is shared by the channels, which the gray model handles
    and a colour model is not made for; one coloured pixel, or a model asked for, keeps the colour
    path. The input is never modified."""
    gray = add_noise(data.camera()[:96, :128], "gaussian", sigma=25, seed=3)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    before = rgb.copy()
    out = denoise(rgb, channel_axis=-1)
    np.testing.assert_array_equal(rgb, before)
    expected = denoise(gray)
    assert out.shape == rgb.shape and all(np.array_equal(out[..., c], expected) for c in range(3))
    planar = denoise(np.moveaxis(rgb, -1, 0), channel_axis=0)
    np.testing.assert_array_equal(np.moveaxis(planar, 0, -1), out)
    rgba = np.concatenate([rgb, np.full_like(rgb[..., :1], 255)], axis=-1)
    np.testing.assert_array_equal(denoise(rgba, channel_axis=-1)[..., :3], out)
    marked = rgb.copy()
    marked[5, 5, 0] += 40  # one red pixel: a colour image, whose noise the channels still share
    assert colour_route(marked, -1, "adl", None, 2) == "opponent"
    assert not np.array_equal(denoise(marked, channel_axis=-1)[..., 1], expected)
    colour_model = denoise(rgb, channel_axis=-1, model=DEFAULT_MODELS[(2, 3)])
    assert not np.array_equal(colour_model[..., 0], expected)


def _shared(clean: np.ndarray, sigma: float, share: float, seed: int) -> np.ndarray:
    """``clean`` (channels last) with Gaussian noise of ``sigma`` per channel, ``share`` of whose
    variance is one field common to the three channels."""
    rng = np.random.default_rng(seed)
    own = rng.normal(0, sigma, clean.shape)
    common = rng.normal(0, sigma, clean.shape[:-1] + (1,))
    return (clean + np.sqrt(1 - share) * own + np.sqrt(share) * common).astype(np.float32)


def test_colour_noise_the_channels_share_goes_through_the_gray_model():
    """Noise that R, G and B largely share, which the colour model was not made for: its
    luminance and colour differences are denoised by the gray model instead, several dB better;
    independent noise keeps the colour model exactly; flat input keeps its values; the input
    is never modified; progress runs once from 0 to 1."""
    clean = data.astronaut()[100:196, 180:308].astype(np.float32)
    clean[:, :12] = 0  # a masked border: no noise there
    colour_model = DEFAULT_MODELS[(2, 3)]
    for share in (0.5, 1.0):
        noisy = _shared(clean, 25, share, seed=1)
        noisy[:, :12] = 0
        before = noisy.copy()
        assert colour_route(noisy, -1, "adl", None, 2) == "opponent"
        records = []
        out = denoise(noisy, channel_axis=-1, progress=records.append)
        np.testing.assert_array_equal(noisy, before)
        fractions = [r.fraction for r in records]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert out.shape == noisy.shape and out.dtype == np.float32
        np.testing.assert_array_equal(out[:, :10], 0)
        gain = adl.metrics.psnr(clean, out) - adl.metrics.psnr(
            clean, denoise(noisy, channel_axis=-1, model=colour_model)
        )
        assert gain > 2.0, (share, gain)
        planar = denoise(np.moveaxis(noisy, -1, 0), channel_axis=0)
        np.testing.assert_allclose(np.moveaxis(planar, 0, -1), out, atol=1e-3)
    independent = _shared(clean, 25, 0.0, seed=1)
    luminance, difference, shared = shared_colour_noise(independent, -1)
    assert 0.7 < difference / luminance < 1.5 and shared < 5 / 255
    assert colour_route(independent, -1, "adl", None, 2) is None
    np.testing.assert_array_equal(
        denoise(independent, channel_axis=-1), denoise(independent, channel_axis=-1, model=colour_model)
    )
    assert colour_route(clean, -1, "adl", None, 2) is None  # texture the channels share is no noise
    shared_noise = _shared(clean, 25, 1.0, seed=2)
    assert colour_route(shared_noise, -1, "adl", colour_model, 2) is None  # a model asked for
    assert colour_route(shared_noise, -1, "adl", None, 2, noise_model="auto") is None
    assert colour_route(shared_noise, -1, "nlm", None, 2) is None
    assert shared_colour_noise(shared_noise[:12, :40], -1) is None  # too small to measure
