from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import drain, train_tiny
from nibabel.testing import data_path
from skimage import data

from napari_adl_denoise import add_noise, denoise, load_model, model_info
from napari_adl_denoise.cli import main
from napari_adl_denoise.models import EfficientUnet, EfficientUnetConfig
from napari_adl_denoise.training import TrainingConfig, inflate_weights, load_config, train
from napari_adl_denoise.training.surgery import GUIDED_HEAD_SCALE, OPPONENT
from napari_adl_denoise.weights import save_model


def tiny_config(images: Path, output: Path, **overrides) -> TrainingConfig:
    raw = {
        "name": "tiny",
        "model": {"filter_base": 4},
        "discriminator": {"filter_base": 4},
        "data": {
            "train": [str(images / "camera.tif"), str(images / "coins.tif")],
            "val": [str(images / "moon.tif")],
            "patch_shape": [48, 48],
            "batch_size": 4,
            "val_patches": 8,
        },
        "noise": [{"sigma": [15, 40]}],
        "optim": {"lr": 2e-3},
        "phases": {"denoiser_warmup": 30, "discriminator_warmup": 4, "adversarial": 10},
        "validate_every": 11,
        "checkpoint_every": 20,
        "output": str(output),
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainingConfig.model_validate(raw)


def run(config, **kwargs):
    return drain(train(config, **kwargs))


def test_tiny_2d_run_beats_the_noisy_input_and_yields_a_usable_model(images, tmp_path):
    records, path = run(tiny_config(images, tmp_path / "run"))
    assert [r.step for r in records] == list(range(1, 45))
    assert [r.phase for r in records][29:35] == ["denoiser"] + ["discriminator"] * 4 + ["adversarial"]
    assert "discriminator" in records[31].losses and "l1" not in records[31].losses
    assert {"l1", "atw", "histogram", "adversarial", "discriminator"} <= set(records[-1].losses)
    validations = [r.validation for r in records if r.validation]
    assert len(validations) == 4  # steps 11, 22, 33 and 44 (the last)
    best = max(v["psnr"] for v in validations)
    assert best > validations[0]["noisy_psnr"] + 1
    loaded = load_model(path)
    assert loaded.card["validation"]["psnr"] == pytest.approx(best)
    assert loaded.card["training_data"] and loaded.card["steps"] > 0
    noisy = data.moon()[:100, :120] + np.random.default_rng(0).normal(0, 20, (100, 120))
    assert denoise(noisy, model=path).shape == (100, 120)


def test_tiny_3d_run_beats_the_noisy_input(tmp_path):
    config = TrainingConfig.model_validate(
        {
            "name": "tiny3d",
            "model": {"spatial_dims": 3, "filter_base": 4},
            "discriminator": {"spatial_dims": 3, "filter_base": 4},
            "data": {
                "train": [f"{data_path}/anatomical.nii"],
                "val": [f"{data_path}/reoriented_anat_moved.nii"],
                "patch_shape": [16, 16, 16],
                "batch_size": 4,
                "val_patches": 4,
            },
            "noise": [{"kind": "rician", "sigma": [10, 25], "nu": [0, 15]}, {"sigma": [10, 40]}],
            "optim": {"lr": 2e-3},
            "phases": {"denoiser_warmup": 60, "discriminator_warmup": 2, "adversarial": 4},
            "validate_every": 22,
            "output": str(tmp_path / "run3d"),
        }
    )
    records, path = run(config)
    validations = [r.validation for r in records if r.validation]
    assert max(v["psnr"] for v in validations) > validations[0]["noisy_psnr"]
    assert load_model(path).config.spatial_dims == 3


def test_an_inflated_2d_model_starts_3d_training_as_the_2d_model_slice_by_slice(tmp_path):
    config = EfficientUnetConfig(filter_base=4, enhancer_kernel=3, norm="none", output_activation="residual")
    torch.manual_seed(0)
    model2d = EfficientUnet(config).eval()
    save_model(model2d, tmp_path / "m2d.safetensors", card={"name": "m2d"})
    model3d = EfficientUnet(config.model_copy(update={"spatial_dims": 3})).eval()
    model3d.load_state_dict(inflate_weights(tmp_path / "m2d.safetensors", model3d))
    image = torch.rand(1, 1, 24, 40)
    with torch.no_grad():
        expected = model2d(image)
        # a volume whose slices are all this image; the last 8 slices meet the up-convolutions' edge
        got = model3d(image.unsqueeze(2).expand(1, 1, 32, 24, 40).contiguous())
    for z in range(24):
        torch.testing.assert_close(got[:, :, z], expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="does not fit"):
        inflate_weights(
            tmp_path / "m2d.safetensors", EfficientUnet(config.model_copy(update={"filter_base": 12}))
        )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_widened_model_computes_what_the_narrow_one_did_and_can_grow_apart(spatial_dims, tmp_path):
    config = EfficientUnetConfig(filter_base=8, enhancer_kernel=3, norm="none", output_activation="residual")
    torch.manual_seed(0)
    narrow = EfficientUnet(config).eval()
    save_model(narrow, tmp_path / "narrow.safetensors", card={"name": "narrow"})
    wide = EfficientUnet(config.model_copy(update={"filter_base": 16, "spatial_dims": spatial_dims})).eval()
    wide.load_state_dict(inflate_weights(tmp_path / "narrow.safetensors", wide))
    image = torch.rand(1, 1, 24, 40)
    with torch.no_grad():
        expected = narrow(image)
        got = wide(image if spatial_dims == 2 else image.unsqueeze(2).expand(1, 1, 32, 24, 40).contiguous())
    for z in range(1 if spatial_dims == 2 else 24):
        torch.testing.assert_close(got if spatial_dims == 2 else got[:, :, z], expected, atol=1e-5, rtol=1e-4)
    # The two copies of a channel read their inputs with different weights (symmetry broken).
    reader = wide.backbone.enc2.body[0].weight
    assert not torch.allclose(reader[:, 0::2], reader[:, 1::2])
    batch_norm = EfficientUnet(config.model_copy(update={"norm": "batch"}))
    save_model(batch_norm, tmp_path / "bn.safetensors", card={"name": "bn"})
    with pytest.raises(ValueError, match="does not fit"):
        inflate_weights(
            tmp_path / "bn.safetensors",
            EfficientUnet(config.model_copy(update={"filter_base": 16, "norm": "batch"})),
        )


def test_a_gray_model_grows_into_an_rgb_one_that_denoises_in_opponent_colour_space(tmp_path):
    config = EfficientUnetConfig(filter_base=8, enhancer_kernel=3, norm="none", output_activation="residual")
    torch.manual_seed(0)
    gray = EfficientUnet(config).eval()
    save_model(gray, tmp_path / "gray.safetensors", card={"name": "gray"})
    rgb_config = config.model_copy(update={"filter_base": 24, "in_channels": 3, "out_channels": 3})
    rgb = EfficientUnet(rgb_config).eval()
    rgb.load_state_dict(inflate_weights(tmp_path / "gray.safetensors", rgb))
    image = torch.rand(2, 3, 24, 40)
    with torch.no_grad():
        got = rgb(image, multiscale=True)
        opponent = torch.einsum("oc,nchw->nohw", OPPONENT, image).reshape(6, 1, 24, 40)
        for scale, expected in zip(got, gray(opponent, multiscale=True), strict=True):
            expected = torch.einsum("oc,nohw->nchw", OPPONENT, expected.reshape(2, 3, *expected.shape[2:]))
            torch.testing.assert_close(scale, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(OPPONENT @ OPPONENT.T, torch.eye(3))
    with pytest.raises(ValueError, match="does not fit"):  # colour needs three times the width
        inflate_weights(
            tmp_path / "gray.safetensors", EfficientUnet(rgb_config.model_copy(update={"filter_base": 16}))
        )
    narrow = save_model(
        EfficientUnet(config.model_copy(update={"filter_base": 4})), tmp_path / "b4.safetensors"
    )
    with pytest.raises(ValueError, match="does not fit.*cannot widen"):  # a head halves an odd width
        inflate_weights(narrow, EfficientUnet(rgb_config.model_copy(update={"filter_base": 12})))


def test_the_contrast_augmentation_saturates_channels_within_the_images_range():
    from napari_adl_denoise.training.config import DataConfig, NoiseSpec
    from napari_adl_denoise.training.data import PatchSampler

    rgb = np.moveaxis(data.chelsea().astype(np.float32), -1, 0)  # values 0-231
    ends = (0, 231)

    def clean_patches(**kw):
        config = DataConfig(train=["x"], val=["x"], patch_shape=(48, 48), **kw)
        sampler = PatchSampler([rgb], config, [NoiseSpec(sigma=(10, 10))], np.random.default_rng(3))
        return [sampler.sample()[1] for _ in range(40)]

    def extreme(patches):  # the share of channel values at the image's black or white
        return np.mean([np.isin(c, ends).mean() for c in patches])

    stretched = clean_patches(contrast=1.0)
    assert all(c.min() >= 0 and c.max() <= 231 for c in stretched)
    assert extreme(clean_patches()) < 0.01 and extreme(stretched) > 0.1
    saturated = [c for c in stretched if any(np.isin(ch, ends).mean() > 0.5 for ch in c)]
    assert 0 < len(saturated) < 40  # some channels mostly saturated, as in vivid colours
    # Validation patches (augment off) are never stretched.
    plain, unstretched = clean_patches(augment=False), clean_patches(augment=False, contrast=1.0)
    assert all(np.array_equal(a, b) for a, b in zip(plain, unstretched, strict=True))


@pytest.mark.parametrize("kind", ["gaussian", "poisson"])
def test_shared_noise_is_partly_common_to_the_colour_channels_at_the_same_level(kind):
    """``shared``: some patches' noise is partly one field for all channels (a gray image stored
    as RGB, demosaiced photographs), each channel's noise as strong as without it; a gray
    patch, and a spec without it (its random stream unchanged), keep independent noise."""
    from napari_adl_denoise.training.config import DataConfig, NoiseSpec
    from napari_adl_denoise.training.data import PatchSampler

    rgb = np.moveaxis(data.chelsea().astype(np.float32), -1, 0) / 255
    config = DataConfig(train=["x"], val=["x"], patch_shape=(64, 64))
    params = {"sigma": (25, 25)} if kind == "gaussian" else {"peak": (30, 30)}

    def noise(image, **shared):
        sampler = PatchSampler(
            [image], config, [NoiseSpec(kind=kind, **params, **shared)], np.random.default_rng(0)
        )
        return [noisy - clean for noisy, clean, _, _ in (sampler.sample() for _ in range(60))]

    def correlation(r):
        return np.corrcoef(r[0].ravel(), r[1].ravel())[0, 1]

    independent, shared = noise(rgb), noise(rgb, shared=1.0)
    assert abs(np.mean([correlation(r) for r in independent])) < 0.03
    found = [correlation(r) for r in shared]
    assert 0.4 < np.mean(found) < 0.6 and max(found) > 0.9 and min(found) < 0.1  # share uniform in [0, 1]
    assert np.mean([r.std() for r in shared]) == pytest.approx(
        np.mean([r.std() for r in independent]), rel=0.05
    )
    unused = noise(rgb, shared=0.0)
    assert all(np.array_equal(a, b) for a, b in zip(independent, unused, strict=True))
    gray = rgb[:1]
    assert all(np.array_equal(a, b) for a, b in zip(noise(gray), noise(gray, shared=1.0), strict=True))


def test_the_posterize_augmentation_gives_flat_regions_with_sharp_edges():
    from scipy.ndimage import maximum_filter, minimum_filter

    from napari_adl_denoise.training.config import DataConfig, NoiseSpec
    from napari_adl_denoise.training.data import PatchSampler

    camera = data.camera().astype(np.float32)[None]

    def clean_patches(**kw):
        config = DataConfig(train=["x"], val=["x"], patch_shape=(48, 40), **kw)
        sampler = PatchSampler([camera], config, [NoiseSpec(sigma=(10, 10))], np.random.default_rng(5))
        return [sampler.sample()[1][0] for _ in range(30)]

    def flat(patch):  # the share of pixels whose 3x3 neighbourhood is one value
        return np.mean(maximum_filter(patch, 3) == minimum_filter(patch, 3))

    posterized = clean_patches(posterize=1.0)
    assert all(2 <= len(np.unique(p)) <= 8 for p in posterized if np.ptp(p) > 0)
    assert all(p.min() >= camera.min() and p.max() <= camera.max() for p in posterized)
    assert np.mean([flat(p) for p in posterized]) > 0.6 > 0.1 > np.mean([flat(p) for p in clean_patches()])
    plain, unchanged = clean_patches(augment=False), clean_patches(augment=False, posterize=1.0)
    assert all(np.array_equal(a, b) for a, b in zip(plain, unchanged, strict=True))


def test_training_can_start_from_saved_weights(images, tmp_path):
    first = tiny_config(
        images,
        tmp_path / "first",
        phases={"denoiser_warmup": 20, "discriminator_warmup": 0, "adversarial": 0},
        weights_dtype="float32",
        model={"norm": "none"},
    )
    _, path = run(first)
    second = tiny_config(
        images,
        tmp_path / "second",
        init=str(path),
        phases={"denoiser_warmup": 1, "discriminator_warmup": 0, "adversarial": 0},
        optim={"lr": 1e-12},
        model={"norm": "none"},
    )
    records, _ = run(second)
    # the run reports where it starts, and with a vanishing learning rate stays there
    saved = load_model(path).card["validation"]["psnr"]
    assert (records[0].phase, records[0].step) == ("init", 0)
    assert records[0].validation["psnr"] == pytest.approx(saved, abs=1e-4)
    assert records[-1].validation["psnr"] == pytest.approx(saved, abs=0.01)


KILLER = """
import os, signal, sys
from napari_adl_denoise.training import TrainingConfig, train
config = TrainingConfig.model_validate_json(sys.argv[1])
for record in train(config):
    if record.step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up: a real crash
"""


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_weights(images, tmp_path):
    overrides = {
        "phases": {"denoiser_warmup": 8, "discriminator_warmup": 2, "adversarial": 6},
        "validate_every": 4,
        "checkpoint_every": 8,
    }
    straight = tiny_config(images, tmp_path / "straight", **overrides)
    run(straight)
    interrupted = tiny_config(images, tmp_path / "interrupted", **overrides)
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, interrupted.model_dump_json(), "10"], capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    checkpoint = torch.load(tmp_path / "interrupted" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 8
    records, _ = run(interrupted, resume=True)
    assert [r.step for r in records] == list(range(9, 17))
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "interrupted" / "checkpoint.pt", weights_only=True)
    for part in ("generator", "discriminator"):
        for key, value in a[part].items():
            torch.testing.assert_close(b[part][key], value, rtol=1e-5, atol=1e-6)
    assert [h["psnr"] for h in b["history"]] == pytest.approx([h["psnr"] for h in a["history"]])


def test_stopping_keeps_the_best_model_and_a_resumable_checkpoint(images, tmp_path):
    config = tiny_config(images, tmp_path / "run", validate_every=5, checkpoint_every=100)
    steps = train(config)
    for _ in range(7):
        next(steps)
    steps.close()
    assert (tmp_path / "run" / "tiny.safetensors").is_file()
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 7
    with pytest.raises(FileExistsError, match="resume"):
        train(config)
    records, _ = run(config, resume=True)
    assert records[0].step == 8


def test_resume_without_a_checkpoint_and_bad_checkpoints_say_so_in_one_line(images, tmp_path):
    config = tiny_config(images, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume in"):
        train(config, resume=True)
    (tmp_path / "run").mkdir()
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="is truncated or not a checkpoint; delete it to start over"):
        train(config, resume=True)
    ran = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (ran,))

    torch.save({"step": Payload()}, checkpoint)
    with pytest.raises(ValueError, match="was refused by the safe loader"):
        train(config, resume=True)
    assert not ran.exists()


ADAPTIVE_CNN = {"kind": "adaptive_cnn", "feature_channels": [4, 4], "feature_kernels": [3, 5]}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["adl", "adaptive-cnn"])
def test_two_process_gloo_ddp_keeps_replicas_in_sync(images, tmp_path, family):
    """Also when a phase change freezes or bypasses layers (the adaptive CNN): DDP must follow."""
    phases = {"denoiser_warmup": 3, "discriminator_warmup": 1, "adversarial": 2}
    loss = {}
    if family == "adaptive-cnn":
        phases["clean_to_clean"] = 2
        loss = {"mse": 1, "l1": 0, "atw": 0, "histogram": 0, "lp": 1e-5}
    config = tiny_config(
        images, tmp_path / "ddp", phases=phases, loss=loss, validate_every=3, checkpoint_every=8
    )
    if family == "adaptive-cnn":
        config = TrainingConfig.model_validate({**config.model_dump(), "model": ADAPTIVE_CNN})
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent(f"""
        import gc, os, sys, torch
        from napari_adl_denoise.training import TrainingConfig
        from napari_adl_denoise.training.engine import _Trainer
        config = TrainingConfig.model_validate_json(open({str(tmp_path / "config.json")!r}).read())
        trainer = _Trainer(config, resume=False, device="cpu")
        for _ in trainer.run():
            pass
        # No DDP wrapper outlives the run: it would keep the process group until Python exits.
        ddp = torch.nn.parallel.DistributedDataParallel
        assert not any(isinstance(o, ddp) for o in gc.get_objects()), "a DDP wrapper outlived the run"
        total = sum(p.double().sum().item() for p in trainer.generator.parameters())
        open(os.path.join({str(tmp_path)!r}, f"rank{{os.environ['RANK']}}.txt"), "w").write(repr(total))
    """)
    )
    (tmp_path / "config.json").write_text(config.model_dump_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    # The ranks' own stderr precedes torchrun's summary: enough of both to see why a rank aborted.
    assert proc.returncode == 0, proc.stderr[-8000:]
    sums = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert sums[0] == sums[1]  # gradients were averaged: identical replicas
    checkpoint = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and len(checkpoint["rng"]) == 2
    assert checkpoint["rng"][0] != checkpoint["rng"][1]  # each process draws its own patches
    assert (tmp_path / "ddp" / "tiny.safetensors").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"patch_shape": [48, 48, 48]}}, "patch_shape needs 2 sizes"),
        ({"data": {"patch_shape": [44, 48]}}, "multiples of 8"),
        ({"noise": [{"sigma": [30, 10]}]}, "low <= high"),
        (
            {"phases": {"denoiser_warmup": 0, "discriminator_warmup": 0, "adversarial": 0}},
            "at least one step",
        ),
        ({"discriminator": {"spatial_dims": 3}}, "must match"),
        ({"extra": 1}, "Extra inputs"),
        ({"data": {"mode": "noisy", "posterize": 0.2}}, "change clean images: not with data.mode noisy"),
    ],
)
def test_bad_configs_say_what_is_wrong(change, message, images, tmp_path):
    raw = json.loads(tiny_config(images, tmp_path).model_dump_json())
    for key, value in change.items():
        raw[key] = (
            {**raw[key], **value} if isinstance(raw.get(key), dict) and isinstance(value, dict) else value
        )
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=message) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_cli_train_prints_validation_lines_and_writes_the_model(images, tmp_path, capsys):
    config = tiny_config(
        images,
        tmp_path / "cli",
        phases={"denoiser_warmup": 6, "discriminator_warmup": 1, "adversarial": 1},
        validate_every=4,
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
    assert main(["train", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("val PSNR") == 2 and "wrote" in out
    assert (tmp_path / "cli" / "tiny.safetensors").is_file()
    assert main(["train", str(path)]) == 2  # refuses to overwrite the run
    assert "resume" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "absent.yaml")]) == 2


def test_cli_max_minutes_stops_with_a_resumable_checkpoint(images, tmp_path, capsys):
    config = tiny_config(images, tmp_path / "timed", validate_every=100, checkpoint_every=100, keep="last")
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    assert main(["train", str(path), "--max-minutes", "0.0001"]) == 0
    assert "continue with --resume" in capsys.readouterr().out
    assert torch.load(tmp_path / "timed" / "checkpoint.pt", weights_only=True)["step"] == 1
    # the weights saved are those of the step it stopped at, scored (keep: last), not step 0's
    card = model_info(tmp_path / "timed" / "tiny.safetensors").card
    assert card["steps"] == 1 and "psnr" in card["validation"]


def test_the_adversarial_term_judges_g_of_y_and_trains_the_denoiser_only(images, tmp_path):
    """ADL's fix of the reference code: the discriminator's fake is the denoised G(y) (not the
    noisy input), the denoiser gets the adversarial gradient, and the denoiser's step leaves the
    discriminator's weights and batch-norm statistics as they were (a fake-only batch)."""
    from napari_adl_denoise.training.engine import _Trainer

    config = tiny_config(images, tmp_path / "adv", loss={"l1": 0, "atw": 0, "histogram": 0, "adversarial": 1})
    trainer = _Trainer(config, resume=False, device="cpu")
    batch = trainer.sampler.batch()
    seen = []
    trainer.discriminator.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    d_before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    g_before = [p.detach().clone() for p in trainer.generator.parameters()]
    losses = trainer._generator_step(batch, "adversarial")
    assert losses["adversarial"] != 0
    with torch.no_grad():
        expected = _with_weights(trainer.generator, g_before)(batch.noisy)
    torch.testing.assert_close(seen[0], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(seen[0], batch.noisy)
    after = list(trainer.generator.parameters())
    moved = [not torch.equal(p.detach(), q) for p, q in zip(after, g_before, strict=True)]
    assert sum(moved) > len(moved) // 2  # the adversarial term alone moved the denoiser
    for name, value in trainer.discriminator.state_dict().items():
        if "num_batches_tracked" not in name:
            torch.testing.assert_close(value, d_before[name], atol=0, rtol=0, msg=f"{name} changed")
    trainer.dist.close()


def _with_weights(model: EfficientUnet, weights: list[torch.Tensor]) -> EfficientUnet:
    import copy

    clone = copy.deepcopy(model).train()  # as in the step: batch statistics, if any
    for p, w in zip(clone.parameters(), weights, strict=True):
        p.data.copy_(w)
    return clone


def test_a_guided_3d_network_learns_from_its_guides_channels_and_starts_near_its_guide(tmp_path):
    """Its patches carry the guide's four channels, computed by the denoising runner on whole
    crops; from an unguided 3D model it starts near the guide's 2.5D result and trains from there."""
    from skimage.metrics import peak_signal_noise_ratio

    from napari_adl_denoise.training.data import GuidedSampler, load_images, make_sampler

    small = {"filter_base": 4, "enhancer_kernel": 3, "norm": "none", "output_activation": "residual"}
    save_model(train_tiny(), tmp_path / "guide.safetensors")  # a real, if small, 2D denoiser
    save_model(EfficientUnet(EfficientUnetConfig(spatial_dims=3, **small)), tmp_path / "init.safetensors")
    raw = {
        "name": "guided",
        "model": {"spatial_dims": 3, **small, "guide": str(tmp_path / "guide.safetensors")},
        "discriminator": {"spatial_dims": 3, "filter_base": 4},
        "data": {
            "train": [f"{data_path}/anatomical.nii"],
            "val": [f"{data_path}/reoriented_anat_moved.nii"],
            "patch_shape": [16, 16, 16],
            "batch_size": 2,
            "val_patches": 2,
            "pool": 2,
        },
        "noise": [{"sigma": [10, 40]}],
        "init": str(tmp_path / "init.safetensors"),
        "phases": {"denoiser_warmup": 4, "discriminator_warmup": 0, "adversarial": 0},
        "validate_every": 2,
        "output": str(tmp_path / "run"),
    }
    config = TrainingConfig.model_validate(raw)
    images = load_images(config.data.train, 3, 1, config.data.patch_shape)
    data = config.data.model_copy(update={"augment": False})
    sampler = GuidedSampler(images, data, config.noise, np.random.default_rng(0), raw["model"]["guide"])
    x, _, _, _, size = sampler.pool[0]
    crop = (slice(None), *(slice(0, n) for n in size))
    _, expected = drain(sampler.guide.directions(x[:1][crop]))
    np.testing.assert_allclose(x[1:][crop], expected, atol=1e-6)
    batch = sampler.batch()
    assert batch.noisy.shape == (2, 5, 16, 16, 16) and batch.target.shape == (2, 1, 16, 16, 16)

    records, path = run(config)
    assert records[0].phase == "init"
    # it starts near its guide: the image-reading filters read the guide with zeros, the heads
    # are the source's scaled down, and its first validation is close to the guide's 2.5D mean
    source, guided = load_model(tmp_path / "init.safetensors").model, EfficientUnet(config.model)
    state = inflate_weights(tmp_path / "init.safetensors", guided)
    first = state["backbone.enc1.shortcut.weight"]
    assert first.shape[1] == 5 and not first[:, 1:].any()
    torch.testing.assert_close(first[:, :1], source.state_dict()["backbone.enc1.shortcut.weight"])
    torch.testing.assert_close(
        state["head_full.to_image.weight"], GUIDED_HEAD_SCALE * source.head_full.to_image.weight.detach()
    )
    val = make_sampler(
        config.data.val,
        [],
        3,
        1,
        config.data.model_copy(update={"augment": False}),
        config.noise,
        np.random.default_rng([config.seed, 2**31]),
        guide=raw["model"]["guide"],
    ).batch(2)
    mean = (
        val.noisy[:, 1:2] * val.scale[:, None, None, None, None] + val.lo[:, None, None, None, None]
    ).numpy()
    pairs = zip(mean, val.clean.numpy(), strict=True)
    expected = np.mean([peak_signal_noise_ratio(c[0], m[0], data_range=1.0) for m, c in pairs])
    assert records[0].validation["psnr"] == pytest.approx(expected, abs=0.5)
    loaded = load_model(path)
    assert loaded.config.guide == raw["model"]["guide"]
    volume = add_noise(
        np.asarray(load_images([f"{data_path}/anatomical.nii"], 3, 1, (1, 1, 1))[0][0]), seed=0
    )
    assert denoise(volume, model=path).shape == volume.shape
