"""The multi-scale adaptive CNN: network, three-phase training on real images, the method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from conftest import drain
from skimage import data

import napari_adl_denoise as adl
from napari_adl_denoise import add_noise, denoise, load_model, save_model
from napari_adl_denoise.cli import main
from napari_adl_denoise.models import AdaptiveCnn, AdaptiveCnnConfig, parse_config
from napari_adl_denoise.training import TrainingConfig, engine, train
from napari_adl_denoise.training.engine import _Trainer

TINY = {"kind": "adaptive_cnn", "feature_channels": [4, 4, 6], "feature_kernels": [3, 5, 7]}
TINY |= {"reconstruction_channels": 8}


def config(images: Path, output: Path, **overrides) -> TrainingConfig:
    raw = {
        "name": "acnn",
        "model": TINY,
        "discriminator": {"filter_base": 4},
        "data": {
            "train": [str(images / "camera.tif"), str(images / "coins.tif")],
            "val": [str(images / "moon.tif")],
            "patch_shape": [32, 32],
            "batch_size": 4,
            "val_patches": 8,
        },
        "noise": [{"sigma": [15, 40]}],
        "optim": {"lr": 3e-3},
        "loss": {"l1": 0, "mse": 1, "atw": 0, "histogram": 0, "lp": 1e-5, "adversarial": 1e-3},
        "phases": {"clean_to_clean": 3, "denoiser_warmup": 3, "discriminator_warmup": 1, "adversarial": 2},
        "validate_every": 100,
        "output": str(output),
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainingConfig.model_validate(raw)


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _moved(module: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p.detach(), q) for p, q in zip(module.parameters(), before, strict=True))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_the_network_keeps_odd_sizes_and_has_the_papers_widths(spatial_dims):
    config = AdaptiveCnnConfig(spatial_dims=spatial_dims, feature_channels=(4, 6), feature_kernels=(3, 5))
    net = AdaptiveCnn(config).eval()
    shape = (17, 33) if spatial_dims == 2 else (9, 17, 13)  # no multiple of 8 needed: no pooling
    assert net(torch.rand(2, 1, *shape)).shape == (2, 1, *shape)
    paper = AdaptiveCnnConfig()
    assert paper.width == 240 and paper.reconstruction_channels == 128 and paper.lp == 0.1
    layers = AdaptiveCnn(paper)
    assert [c.out_channels for c in layers.features] == [32, 40, 48, 56, 64]
    assert isinstance(layers.damping[-1], torch.nn.Sigmoid)
    with pytest.raises(ValueError, match="odd"):
        AdaptiveCnnConfig(feature_kernels=(3, 4, 5, 7, 9))


def test_the_gate_scales_the_features_and_bypassing_it_changes_the_output():
    net = AdaptiveCnn(AdaptiveCnnConfig.model_validate(TINY)).eval()
    x = torch.rand(1, 1, 16, 16)
    gated = net(x)
    net.bypass_damping = True
    assert not torch.allclose(gated, net(x))


def test_the_lp_term_has_a_gradient_on_layers_5_and_6_only():
    net = AdaptiveCnn(AdaptiveCnnConfig.model_validate(TINY))
    penalty = net.regulariser()
    penalty.backward()
    convs = [m for m in net.reconstruction if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 and penalty > 0
    for layer in convs[:2]:
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert convs[2].weight.grad is None  # the output layer is not penalised
    assert all(p.grad is None for p in net.features.parameters())
    # The sparsity push is strongest on small weights (p < 1): |w|^0.1 has its steepest slope at 0.
    small, large = convs[0].weight.abs().argmin(), convs[0].weight.abs().argmax()
    grads = convs[0].weight.grad.abs().flatten()
    assert grads[small] > grads[large]


def test_each_training_phase_trains_what_the_paper_says(images, tmp_path):
    """Phase 1 (clean-to-clean): the damping layers are bypassed and do not train, dropout is on;
    phase 2: the feature layer stays frozen, damping and reconstruction train with the lp term;
    phase 3: the discriminator is updated twice per step and the denoiser still moves."""
    cfg = config(images, tmp_path / "phases", phases={"discriminator_steps": 2})
    trainer = _Trainer(cfg, resume=False, device="cpu")
    net = trainer.generator
    batch = trainer.sampler.batch()

    trainer._enter("clean")
    features, damping, recon = _snapshot(net.features), _snapshot(net.damping), _snapshot(net.reconstruction)
    losses = trainer._generator_step(batch, "clean")
    assert net.bypass_damping and net.dropout.p == pytest.approx(0.7)
    assert _moved(net.features, features) and _moved(net.reconstruction, recon)
    assert not _moved(net.damping, damping) and "lp" not in losses

    trainer._enter("denoiser")
    features, damping, recon = _snapshot(net.features), _snapshot(net.damping), _snapshot(net.reconstruction)
    for _ in range(2):
        losses = trainer._generator_step(batch, "denoiser")
    assert not net.bypass_damping and net.dropout.p == 0
    assert not _moved(net.features, features)
    assert _moved(net.damping, damping) and _moved(net.reconstruction, recon)
    assert losses["lp"] > 0

    calls = []
    trainer.discriminator.register_forward_hook(lambda *_: calls.append(1))
    trainer.state.step = cfg.phases.adversarial_start
    records = []
    gen = trainer.run()
    while trainer.state.step < cfg.phases.total:
        records.append(next(gen))
    gen.close()
    trainer.dist.close()
    assert [r.phase for r in records] == ["adversarial"] * 2
    assert len(calls) == 2 * (2 + 1)  # per step: two discriminator updates, one judging G(y)
    assert {"adversarial", "discriminator", "mse", "lp"} <= set(records[-1].losses)
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(3e-3)  # no adversarial_lr given


def test_the_adversarial_phase_starts_at_its_own_rate_and_ramps_its_weight(images, tmp_path, monkeypatch):
    cfg = config(
        images,
        tmp_path / "ramp",
        optim={"adversarial_lr": 1e-5},
        loss={"adversarial_ramp": 0.99},
        phases={"clean_to_clean": 0, "denoiser_warmup": 0, "discriminator_warmup": 0, "adversarial": 4},
    )
    records, _ = drain(train(cfg, device="cpu"))
    assert [r.lr for r in records] == [1e-5] * 4
    # eq. 7 with an adversarial term of exactly 1: the step's loss is MSE + lp + 1 + s t / T
    monkeypatch.setattr(engine, "adversarial_loss", lambda maps, form: maps[0].sum() * 0 + 1)
    cfg = cfg.model_copy(update={"output": str(tmp_path / "ramp-steps")})
    cfg.loss.adversarial = 1.0
    trainer = _Trainer(cfg, resume=False, device="cpu")
    ramp = []
    for step in (0, 2):
        trainer.state.step = step
        losses = trainer._generator_step(trainer.sampler.batch(), "adversarial")
        ramp.append(losses["denoiser"] - losses["mse"] - 1e-5 * losses["lp"])
    trainer.dist.close()
    assert ramp == pytest.approx([1.0, 1 + 0.99 * 2 / 4], rel=1e-4)
    # Without a clean-to-clean phase the feature layer has nothing to keep: it trains.
    trainer._enter("denoiser")
    assert all(p.requires_grad for p in trainer.generator.features.parameters())


def test_a_full_run_validates_after_the_clean_phase_and_saves_a_model_that_round_trips(images, tmp_path):
    cfg = config(
        images,
        tmp_path / "full",
        phases={"clean_to_clean": 4, "denoiser_warmup": 40, "discriminator_warmup": 0, "adversarial": 0},
        validate_every=4,
    )
    records, path = drain(train(cfg, device="cpu"))
    validated = [r for r in records if r.validation]
    assert validated[0].phase == "clean"
    loaded = load_model(path)
    best = max(r.validation["psnr"] for r in validated if r.phase != "clean")
    assert loaded.card["validation"]["psnr"] == pytest.approx(best)
    assert best > validated[0].validation["noisy_psnr"] + 1  # it denoises after 40 steps
    assert isinstance(loaded.model, AdaptiveCnn) and loaded.config == parse_config(TINY)
    saved = save_model(loaded.model, tmp_path / "copy.safetensors", loaded.card)
    again = load_model(saved)
    x = torch.rand(1, 1, 24, 40)
    torch.testing.assert_close(again.model(x), loaded.model(x))


def test_a_3d_network_trains_all_three_phases_on_a_real_volume(tmp_path):
    from nibabel.testing import data_path

    cfg = TrainingConfig.model_validate(
        {
            "name": "acnn3d",
            "model": {**TINY, "spatial_dims": 3},
            "discriminator": {"spatial_dims": 3, "filter_base": 4},
            "data": {
                "train": [f"{data_path}/anatomical.nii"],
                "val": [f"{data_path}/reoriented_anat_moved.nii"],
                "patch_shape": [16, 16, 16],
                "batch_size": 2,
                "val_patches": 4,
            },
            "noise": [{"sigma": [10, 40]}],
            "optim": {"lr": 1e-2},
            "loss": {"l1": 0, "mse": 1, "atw": 0, "histogram": 0, "lp": 1e-5, "adversarial": 1e-3},
            "phases": {
                "clean_to_clean": 2,
                "denoiser_warmup": 40,
                "discriminator_warmup": 1,
                "adversarial": 2,
            },
            "validate_every": 20,
            "output": str(tmp_path / "run3d"),
        }
    )
    records, path = drain(train(cfg, device="cpu"))
    assert {r.phase for r in records} == {"clean", "denoiser", "discriminator", "adversarial"}
    mse = [r.losses["mse"] for r in records if r.phase == "denoiser"]
    assert np.mean(mse[-10:]) < 0.5 * np.mean(mse[:5])  # the noisy-to-clean phase learns
    loaded = load_model(path)
    assert loaded.config.spatial_dims == 3 and isinstance(loaded.model.features[0], torch.nn.Conv3d)


@pytest.fixture(scope="module")
def tiny_acnn(images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("acnn")
    cfg = config(
        images,
        out,
        phases={"clean_to_clean": 0, "denoiser_warmup": 300, "discriminator_warmup": 0, "adversarial": 0},
        optim={"lr": 1e-2},  # a tiny direct-output network learns slowly at lower rates
        validate_every=50,
    )
    return drain(train(cfg, device="cpu"))[1]


def test_the_method_denoises_2d_and_volumes_tiled_and_cancellable(tiny_acnn):
    clean = data.camera()[100:181, 60:177].astype(np.float32)  # odd sizes
    noisy = add_noise(clean, sigma=25, seed=0)
    whole = denoise(noisy, "adaptive-cnn", model=tiny_acnn)
    tiled = denoise(noisy, "adaptive-cnn", model=tiny_acnn, tile_shape=48, overlap=0.5)
    assert adl.metrics.psnr(clean, whole) > adl.metrics.psnr(clean, noisy) + 1
    # An 11-pixel receptive field, inside the discarded rim of a 24-pixel overlap: tiles agree.
    assert np.abs(tiled - whole).max() < 1e-3 * np.ptp(clean)
    volume = np.stack([noisy[:40, :48]] * 9)
    assert denoise(volume, "adaptive-cnn", model=tiny_acnn).shape == volume.shape  # 2.5D
    steps = adl.iter_denoise(noisy, "adaptive-cnn", model=tiny_acnn, tile_shape=32)
    next(steps)
    steps.close()  # cancelling mid-way raises nothing and leaves no state


def test_the_methods_refuse_each_others_models_in_one_line(tiny_acnn, tiny_2d):
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="adaptive_cnn network.*denoise with method 'adaptive-cnn'"):
        denoise(image, "adl", model=tiny_acnn)
    with pytest.raises(ValueError, match="denoise with method 'adl'"):
        denoise(image, "adaptive-cnn", model=tiny_2d)


def test_the_cli_runs_the_method(tiny_acnn, tmp_path, capsys):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, add_noise(data.camera()[:64, :80], sigma=20, seed=1).astype(np.float32))
    assert main(["denoise", str(source), str(tmp_path / "out.tif"), "--method", "adaptive-cnn",
                 "--model", str(tiny_acnn)]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "adaptive-cnn:" in captured.err and "features" in captured.err  # the plan, first
    assert tifffile.imread(tmp_path / "out.tif").shape == (64, 80)
    assert main(["methods"]) == 0
    assert "adaptive-cnn" in capsys.readouterr().out


def test_fine_tuning_an_adaptive_model_keeps_its_own_data_terms(tiny_acnn, tmp_path):
    from napari_adl_denoise.training import fine_tune

    clean = data.camera()[:96, :128].astype(np.float32)
    saved = drain(fine_tune([clean], tmp_path / "tuned.safetensors", model=tiny_acnn, steps=3, device="cpu"))[
        1
    ]
    tuned = load_model(saved)
    loss = tuned.card["training_config"]["loss"]
    assert isinstance(tuned.model, AdaptiveCnn) and tuned.card["base_model"] == "acnn"
    assert (loss["mse"], loss["l1"], loss["atw"], loss["adversarial"]) == (1, 0, 0, 0) and loss["lp"] > 0
