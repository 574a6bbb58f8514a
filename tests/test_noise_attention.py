"""The two-stage noise-attention network: blocks, both stages' training on real images, the
method and its stage-I noise estimate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import drain
from skimage import data

import napari_adl_denoise as adl
from napari_adl_denoise import add_noise, denoise, load_model
from napari_adl_denoise.cli import main
from napari_adl_denoise.methods.noise_attention import DEFAULT_MODELS, estimate_noise_map
from napari_adl_denoise.models import NoiseAttention, NoiseAttentionConfig
from napari_adl_denoise.models.noise_attention import NoiseAttentionBlock
from napari_adl_denoise.training import TrainingConfig, train

TINY = {"kind": "noise_attention", "features": 8, "growth": 4, "blocks": 1}


def config(images: Path, output: Path, **overrides) -> TrainingConfig:
    raw = {
        "name": "na",
        "model": TINY,
        "discriminator": {"filter_base": 4},
        "data": {
            "train": [str(images / "camera.tif"), str(images / "coins.tif")],
            "val": [str(images / "moon.tif")],
            "patch_shape": [32, 32],
            "batch_size": 4,
            "val_patches": 8,
        },
        "noise": [{"kind": "mixed", "sigma": [0, 75]}],
        "optim": {"lr": 3e-3, "betas": [0.9, 0.99]},
        "loss": {"l1": 1, "atw": 0, "histogram": 0, "stage": 1, "adversarial": 0},
        "phases": {"denoiser_warmup": 40, "discriminator_warmup": 0, "adversarial": 0},
        "validate_every": 20,
        "output": str(output),
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainingConfig.model_validate(raw)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_the_attention_block_and_both_stages_keep_odd_shapes(spatial_dims):
    shape = (17, 33) if spatial_dims == 2 else (9, 17, 13)  # no pooling: any size
    block = NoiseAttentionBlock(spatial_dims, 8)
    image_features, noise_features = torch.rand(2, 8, *shape) + 0.1, torch.randn(2, 8, *shape)
    attended = block(image_features, noise_features)
    assert attended.shape == image_features.shape
    # eq. 9: one attention weight in (0, 1) per pixel, the same for every channel
    ratio = attended / image_features
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)
    assert ((ratio > 0) & (ratio < 1)).all()
    net = NoiseAttention(
        NoiseAttentionConfig(spatial_dims=spatial_dims, **{k: v for k, v in TINY.items() if k != "kind"})
    )
    net.eval()
    x = torch.rand(2, 1, *shape)
    assert net(x).shape == x.shape
    net.set_options(stages=1)
    torch.testing.assert_close(net(x), x - net.estimate_noise(x))  # the stage-I image
    with pytest.raises(ValueError, match="stages must be 1 or 2"):
        net.set_options(stages=3)


def test_a_first_stage_without_its_objective_is_refused(images, tmp_path):
    with pytest.raises(ValueError, match="loss.stage must be > 0"):
        config(images, tmp_path, loss={"stage": 0})
    config(images, tmp_path, model={"detach_estimate": False}, loss={"stage": 0})  # trained through RN


def test_the_papers_size_has_the_papers_parameter_counts():
    """Table VII: NEN 283,776 and RN 302,466 parameters (RGB); ours within 1%."""
    net = NoiseAttention(NoiseAttentionConfig(in_channels=3))
    nen = sum(p.numel() for p in net.nen.parameters())
    rn = sum(p.numel() for p in net.rn.parameters())
    assert nen == pytest.approx(283_776, rel=0.01) and rn == pytest.approx(302_466, rel=0.01)


def test_each_stage_trains_on_its_own_objective_only():
    """The reconstruction's L1 never reaches stage I (it reads the estimate detached), and the
    noise MSE never reaches stage II."""
    net = NoiseAttention(NoiseAttentionConfig.model_validate(TINY)).train()
    clean = torch.rand(2, 1, 16, 16)
    noisy = clean + 0.1 * torch.randn_like(clean)
    (net(noisy) - clean).abs().mean().backward()
    assert all(p.grad is None for p in net.nen.parameters())
    assert all(p.grad is not None for p in net.rn.parameters())
    net.zero_grad(set_to_none=True)
    net(noisy)
    net.stage_loss(noisy, clean).backward()
    assert all(p.grad is None for p in net.rn.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.nen.parameters())


def test_both_stage_losses_fall_on_real_images(images, tmp_path):
    records, path = drain(train(config(images, tmp_path / "run"), device="cpu"))
    stage = [r.losses["stage"] for r in records]
    l1 = [r.losses["l1"] for r in records]
    assert np.mean(stage[-10:]) < 0.5 * np.mean(stage[:5])  # stage I: MSE on the noise
    assert np.mean(l1[-10:]) < 0.5 * np.mean(l1[:5])  # stage II: L1 on the clean image
    loaded = load_model(path)
    assert isinstance(loaded.model, NoiseAttention) and loaded.card["training_config"]["loss"]["stage"] == 1


def test_the_ablation_variant_without_attention_trains_and_round_trips(images, tmp_path):
    cfg = config(
        images, tmp_path / "twn", model={"attention": False}, phases={"denoiser_warmup": 4}, validate_every=4
    )
    _, path = drain(train(cfg, device="cpu"))
    loaded = load_model(path)
    assert not loaded.config.attention and not hasattr(loaded.model.rn["fuse"], "spatial")


@pytest.fixture(scope="module")
def tiny_na(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("na")
    cfg = config(images, out, phases={"denoiser_warmup": 200}, validate_every=50)
    return drain(train(cfg, device="cpu"))[1]


def test_the_method_denoises_tiled_and_cancellable_with_a_stage_one_option(tiny_na):
    clean = data.camera()[100:181, 60:177].astype(np.float32)  # odd sizes
    noisy = add_noise(clean, sigma=25, seed=0)
    whole = denoise(noisy, "noise-attention", model=tiny_na)
    assert adl.metrics.psnr(clean, whole) > adl.metrics.psnr(clean, noisy) + 1
    tiled = denoise(noisy, "noise-attention", model=tiny_na, tile_shape=64, overlap=0.5)
    assert adl.metrics.psnr(whole, tiled) > 40
    stage_one = denoise(noisy, "noise-attention", model=tiny_na, stages=1)
    assert adl.metrics.psnr(clean, stage_one) > adl.metrics.psnr(clean, noisy) + 1
    np.testing.assert_allclose(
        estimate_noise_map(noisy, model=tiny_na), noisy - stage_one, atol=1e-3 * np.ptp(clean)
    )
    volume = np.stack([noisy[:40, :48]] * 9)
    assert denoise(volume, "noise-attention", model=tiny_na).shape == volume.shape  # 2.5D
    steps = adl.iter_denoise(noisy, "noise-attention", model=tiny_na, tile_shape=32)
    next(steps)
    steps.close()
    with pytest.raises(ValueError, match="stages must be 1 or 2"):
        denoise(noisy, "noise-attention", model=tiny_na, stages=0)
    with pytest.raises(ValueError, match="does not take option"):
        denoise(noisy, "adl", stages=1)


def test_even_a_briefly_trained_first_stage_finds_the_noise_and_its_level(tiny_na):
    clean = data.camera()[:128, :128].astype(np.float32)
    spreads = []
    for sigma in (10, 25, 50):
        noisy = add_noise(clean, sigma=sigma, seed=sigma)
        estimate = estimate_noise_map(noisy, model=tiny_na)
        assert np.corrcoef(estimate.ravel(), (noisy - clean).ravel())[0, 1] > 0.5
        spreads.append(estimate.std())
    assert spreads[0] < spreads[1] < spreads[2]


def test_the_cli_runs_both_stages_or_the_first(tiny_na, tmp_path, capsys):
    source = tmp_path / "in.tif"
    noisy = add_noise(data.camera()[:64, :80], sigma=20, seed=1).astype(np.float32)
    tifffile.imwrite(source, noisy)
    args = ["denoise", str(source), "--method", "noise-attention", "--model", str(tiny_na)]
    assert main([*args[:2], str(tmp_path / "two.tif"), *args[2:]]) == 0
    assert "two stages" in capsys.readouterr().err  # the plan, first
    assert main([*args[:2], str(tmp_path / "one.tif"), *args[2:], "--stages", "1"]) == 0
    one = tifffile.imread(tmp_path / "one.tif")
    np.testing.assert_allclose(one, denoise(noisy, "noise-attention", model=tiny_na, stages=1), atol=1e-4)
    assert (
        main([*args[:2], str(tmp_path / "out.tif"), *args[2:], "--noise-map", str(tmp_path / "noise.tif")])
        == 0
    )
    np.testing.assert_allclose(tifffile.imread(tmp_path / "noise.tif"), noisy - one, atol=1e-3)
    capsys.readouterr()
    assert (
        main([*args[:2], str(tmp_path / "x.tif"), "--method", "nlm", "--noise-map", str(tmp_path / "n.tif")])
        == 2
    )
    assert "method 'nlm' makes no noise estimate" in capsys.readouterr().err
    assert main([*args[:2], str(tmp_path / "x.tif"), *args[2:], "--noise-map", str(tmp_path / "n.png")]) == 2
    assert not (tmp_path / "x.tif").exists()  # refused before any work


def test_the_bundled_stage_one_output_is_the_noise_and_tracks_its_level():
    """On a real image, the bundled model's stage-I estimate has the simulated noise's standard
    deviation (within 15%; measured -5% to +8%) at each level, and follows the true noise."""
    assert DEFAULT_MODELS[(2, 1)] == "noise-attention-2d-gray"
    clean = data.camera().astype(np.float32)
    for sigma in (10, 25, 50):
        noisy = add_noise(clean, sigma=sigma, seed=sigma)
        estimate = estimate_noise_map(noisy)
        true = noisy - clean
        assert estimate.std() == pytest.approx(true.std(), rel=0.15)
        assert np.corrcoef(estimate.ravel(), true.ravel())[0, 1] > 0.7  # measured 0.77, 0.93, 0.97
    restored = denoise(noisy, "noise-attention")
    assert adl.metrics.psnr(clean, restored) > adl.metrics.psnr(clean, noisy) + 10  # measured +12.1


def test_fine_tuning_keeps_both_stage_objectives(tiny_na, tmp_path):
    from napari_adl_denoise.training import fine_tune

    clean = data.camera()[:96, :128].astype(np.float32)
    records, saved = drain(
        fine_tune([clean], tmp_path / "tuned.safetensors", model=tiny_na, steps=3, device="cpu")
    )
    tuned = load_model(saved)
    loss = tuned.card["training_config"]["loss"]
    assert isinstance(tuned.model, NoiseAttention) and (loss["stage"], loss["l1"]) == (1, 1)
    assert "stage" in records[-1].losses
