"""Fine-tuning from noisy/clean pairs and from noisy images alone; stopping early; your models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import drain
from skimage import data

from napari_adl_denoise import (
    add_noise,
    delete_model,
    denoise,
    export_model,
    list_models,
    load_model,
    metrics,
    model_info,
    rename_model,
    save_model,
)
from napari_adl_denoise.cli import main
from napari_adl_denoise.io import write_image
from napari_adl_denoise.training import TrainingConfig, fine_tune
from napari_adl_denoise.training.engine import STOP
from napari_adl_denoise.training.fine_tune import resumable
from napari_adl_denoise.training.self_supervised import (
    _take,
    blind_spot_input,
    blind_spot_loss,
    neighbor2neighbor_loss,
    neighbour_pair,
)

CLEAN = data.moon()[:256, :320].astype(np.float32)  # the last fifth of columns is held out
NOISY = add_noise(CLEAN, "speckle", sigma=30, seed=3)  # new to adl-2d-gray (Gaussian-trained)


def held_out_gain(path) -> float:
    """PSNR gain of the network over adl-2d-gray on the held-out columns, which no step trained
    on (one pass each: the self-ensemble's gain comes on top for both)."""
    clean, noisy = CLEAN[:, 256:], NOISY[:, 256:]
    tuned, start = (metrics.psnr(clean, denoise(noisy, model=m, ensemble=1)) for m in (path, "adl-2d-gray"))
    return tuned - start


def test_pairs_improve_on_the_starting_model_and_leave_the_images_alone(tmp_path):
    noisy, clean = NOISY.copy(), CLEAN.copy()
    run = fine_tune(
        [noisy],
        tmp_path / "p.safetensors",
        mode="pairs",
        targets=[clean],
        model="adl-2d-gray",
        steps=40,
        lr=3e-4,
    )
    records, path = drain(run)
    np.testing.assert_array_equal(noisy, NOISY)
    np.testing.assert_array_equal(clean, CLEAN)
    scores = [r.validation["psnr"] for r in records if r.validation]
    assert max(scores[1:]) > scores[0] + 0.3  # against the held-out clean columns
    card = model_info(path).card
    assert card["fine_tune"] == {"mode": "pairs", "preset": "cpu"}
    assert held_out_gain(path) > 0.2


def test_a_dim_low_dose_image_pairs_with_its_bright_reference(tmp_path):
    """The reference is mapped onto the image's intensities, so the output keeps the input's."""
    dim = NOISY * 0.25 + 10
    _, path = drain(
        fine_tune(
            [dim],
            tmp_path / "d.safetensors",
            mode="pairs",
            targets=[CLEAN],
            model="adl-2d-gray",
            steps=20,
            lr=3e-4,
        )
    )
    out = denoise(dim[:, 256:], model=path)
    assert abs(out.mean() - (CLEAN[:, 256:] * 0.25 + 10).mean()) < 1.0


def test_noisy_images_alone_improve_on_the_starting_model(tmp_path):
    records, path = drain(
        fine_tune([NOISY], tmp_path / "n.safetensors", mode="noisy", model="adl-2d-gray", steps=40, lr=3e-4)
    )
    first = records[0].validation
    assert "psnr" not in first and first["score"] > first["noisy_score"]  # no clean data anywhere
    assert model_info(path).card["fine_tune"]["mode"] == "noisy"
    assert held_out_gain(path) > 0.15


def test_stop_scores_the_latest_steps_and_saves_the_best_weights_so_far(tmp_path, monkeypatch):
    from napari_adl_denoise.training import engine

    validated = []
    original = engine._Trainer._validate
    monkeypatch.setattr(
        engine._Trainer, "_validate", lambda self: validated.append(self.state.step) or original(self)
    )
    output = tmp_path / "s.safetensors"
    run = fine_tune([NOISY], output, mode="noisy", model="adl-2d-gray", steps=1000)
    records = [next(run), next(run), next(run)]
    try:
        run.send(STOP)
    except StopIteration as stop:
        assert stop.value == output
    assert records[-1].step == 2 and output.is_file()
    assert validated == [0, 2]  # step 2 was not a validation step, so stopping scored it
    assert model_info(output).card["steps"] in (0, 2)


def test_the_time_cap_stops_and_saves(tmp_path):
    records, path = drain(
        fine_tune([NOISY], tmp_path / "t.safetensors", mode="noisy", steps=10_000, max_minutes=0.001)
    )
    assert records[-1].step < 10 and path.is_file()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "pairs"}, "mode='pairs' needs targets"),
        ({"targets": [CLEAN]}, "targets go with mode='pairs'"),
        (
            {"mode": "pairs", "targets": [CLEAN[:, :300]]},
            r"image of shape \(256, 320\) and target of shape \(256, 300\)",
        ),
        ({"mode": "pairs", "targets": [CLEAN, CLEAN]}, "1 images but 2 targets"),
        ({"mode": "pairs", "targets": [CLEAN], "validation": [CLEAN]}, "holds out part of each pair"),
        ({"mode": "smart"}, "mode must be one of clean, pairs, noisy"),
        ({"preset": "tpu"}, "preset must be one of cpu, gpu"),
        ({"preset": "gpu"}, "preset 'gpu' runs on a CUDA or MPS device"),
        ({"max_minutes": 0}, "must be positive"),
        ({"mode": "noisy", "adversarial": True}, "adversarial fine-tuning needs clean images"),
    ],
)
def test_bad_choices_say_what_is_wrong(kwargs, message, tmp_path):
    if kwargs.get("preset") == "gpu" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match=message):
        next(fine_tune([NOISY], tmp_path / "m.safetensors", **kwargs))


def test_a_target_that_is_not_the_images_pair_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pair 1: the target's intensities do not rise with the image's"):
        next(fine_tune([NOISY], tmp_path / "m.safetensors", mode="pairs", targets=[CLEAN.max() - CLEAN]))


def test_noisy_mode_refuses_adversarial_phases():
    data_cfg = {"train": ["a.tif"], "val": ["b.tif"], "mode": "noisy"}
    with pytest.raises(ValueError, match="no clean images for a discriminator"):
        TrainingConfig(name="x", data=data_cfg)
    with pytest.raises(ValueError, match="go with data.mode pairs"):
        TrainingConfig(name="x", data={"train": ["a"], "val": ["b"], "train_targets": ["c"]})
    with pytest.raises(ValueError, match="needs both train_targets and val_targets"):
        TrainingConfig(name="x", data={"train": ["a"], "val": ["b"], "mode": "pairs", "train_targets": ["c"]})


@pytest.mark.parametrize("shape", [(2, 1, 8, 6), (1, 2, 4, 6, 2), (1, 1, 9, 7)])
def test_neighbour_subimages_take_two_adjacent_pixels_of_every_cell(shape):
    """Decoded back to coordinates: every pair is two direct neighbours of one 2x2(x2) cell,
    and the same choice applies to every channel and to the network's output."""
    spatial = shape[2:]
    coords = torch.stack(torch.meshgrid(*(torch.arange(s) for s in spatial), indexing="ij"))
    first, second = neighbour_pair(torch.Size(shape), torch.Generator().manual_seed(0))
    picked = []
    for index in (first, second):
        axes = [_take(c.expand(*shape).float(), index) for c in coords]
        picked.append(torch.stack(axes))  # (d, N, C, *S/2): the coordinates taken
    a, b = picked
    assert ((a - b).abs().sum(dim=0) == 1).all()  # direct neighbours
    cell = torch.stack(torch.meshgrid(*(torch.arange(s // 2) for s in spatial), indexing="ij"))
    for p in picked:
        assert (torch.div(p, 2, rounding_mode="floor") == cell[:, None, None]).all()  # inside the cell
        assert (p[:, :, :1] == p[:, :, -1:]).all()  # the same pixels in every channel


def test_self_supervised_losses_train_the_denoiser():
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    noisy = torch.rand(2, 1, 32, 32)
    for loss_fn in (neighbor2neighbor_loss, blind_spot_loss):
        net.zero_grad()
        loss, parts = loss_fn(net, noisy, generator=torch.Generator().manual_seed(1))
        loss.backward()
        assert torch.isfinite(loss) and parts and net.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(4, 2, 16, 16), (2, 1, 8, 8, 8)])
def test_the_blind_spot_never_shows_a_pixel_its_own_value(shape):
    values = torch.randperm(int(np.prod(shape))).float().reshape(shape)  # every value distinct
    masked, mask = blind_spot_input(values, fraction=0.5, generator=torch.Generator().manual_seed(3))
    where = mask.expand(shape)
    assert mask.sum() > 0 and (masked[where] != values[where]).all()
    assert (masked[~where] == values[~where]).all()
    moved = (
        values.reshape(shape[0], shape[1], -1)[:, :1] == masked.reshape(shape[0], shape[1], -1)[:, :1, None]
    )
    assert moved.any()  # taken from the same patch


def test_your_models_can_be_renamed_exported_and_deleted(tiny_2d, user_models, tmp_path, capsys):
    user_models.mkdir(parents=True)
    save_model(tiny_2d, user_models / "mine.safetensors")
    assert model_info("mine").data_kind == "2D gray"
    assert rename_model("mine", "cells") == user_models / "cells.safetensors"
    assert "mine" not in {m.name for m in list_models()} and model_info("cells").name == "cells"
    exported = export_model("cells", tmp_path / "shared.safetensors")
    assert load_model(exported).config == load_model("cells").config
    save_model(tiny_2d, user_models / "other.safetensors")
    with pytest.raises(ValueError, match="exists already"):
        rename_model("cells", "other")
    with pytest.raises(ValueError, match="is a bundled model's name"):
        rename_model("cells", "adl-2d-gray")
    with pytest.raises(ValueError, match="'adl-2d-gray' is a bundled model: it cannot be renamed or deleted"):
        delete_model("adl-2d-gray")
    with pytest.raises(ValueError, match="you have no model called 'mine'"):
        delete_model("mine")
    with pytest.raises(ValueError, match="export to a .safetensors file"):
        export_model("cells", tmp_path / "absent" / "x.safetensors")
    delete_model("cells")
    assert not (user_models / "cells.safetensors").exists() and exported.is_file()
    assert main(["models"]) == 0 and "2D gray" in capsys.readouterr().out


def test_cli_fine_tunes_from_pairs_and_from_noisy_images(tmp_path, capsys):
    noisy, clean = tmp_path / "noisy.tif", tmp_path / "clean.tif"
    write_image(noisy, NOISY[:128, :160])
    write_image(clean, CLEAN[:128, :160])
    out = tmp_path / "pairs.safetensors"
    assert (
        main(["fine-tune", str(out), str(noisy), "--mode", "pairs", "--targets", str(clean), "--steps", "2"])
        == 0
    )
    assert model_info(out).card["fine_tune"]["mode"] == "pairs" and f"wrote {out}" in capsys.readouterr().out
    out = tmp_path / "noisy.safetensors"
    assert main(["fine-tune", str(out), str(noisy), "--mode", "noisy", "--steps", "2"]) == 0
    assert (
        "neighbour score" in capsys.readouterr().out and model_info(out).card["fine_tune"]["mode"] == "noisy"
    )
    assert main(["fine-tune", str(out), str(noisy), "--mode", "pairs"]) == 2
    assert "--targets goes with --mode pairs" in capsys.readouterr().err
    assert main(["fine-tune", str(out), str(noisy), "--mode", "noisy", "--noise", "gaussian"]) == 2
    assert "--noise goes with --mode clean" in capsys.readouterr().err


def test_the_adversarial_option_trains_a_discriminator_and_keeps_the_best_weights(tmp_path):
    run = fine_tune(
        [NOISY],
        tmp_path / "a.safetensors",
        mode="pairs",
        targets=[CLEAN],
        model="adl-2d-gray",
        steps=10,
        adversarial=True,
    )
    records, path = drain(run)
    assert [r.phase for r in records[1:]] == ["discriminator"] + ["adversarial"] * 9
    assert "discriminator" in records[1].losses and "adversarial" in records[-1].losses
    card = model_info(path).card
    assert (
        card["training_config"]["loss"]["histogram"] > 0
        and card["training_config"]["loss"]["adversarial"] > 0
    )


def test_a_killed_fine_tune_resumes_where_it_was_and_then_cleans_up(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    write_image(tmp_path / "noisy.tif", NOISY)
    output = tmp_path / "k.safetensors"
    state = tmp_path / ".k.fine-tune"
    args = ["fine-tune", str(output), str(tmp_path / "noisy.tif"), "--mode", "noisy", "--steps", "160"]
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from napari_adl_denoise.cli import main; main(sys.argv[1:])",
            *args,
        ]
    )
    try:
        deadline = time.monotonic() + 300
        while not (state / "checkpoint.pt").is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # a checkpoint or two later
    finally:
        child.send_signal(signal.SIGKILL)  # no chance to clean up or save
        child.wait()
    assert (state / "checkpoint.pt").is_file() and not output.exists()
    assert resumable(output) and not resumable(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="no killed fine-tune of other.safetensors"):
        next(fine_tune([NOISY], tmp_path / "other.safetensors", mode="noisy", resume=True))
    with pytest.raises(ValueError, match="another model config"):  # a resume that cannot go on ...
        drain(fine_tune([NOISY], output, mode="noisy", model="adaptive-cnn-2d-gray", steps=160, resume=True))
    assert (state / "checkpoint.pt").is_file()  # ... keeps the state for the one that can

    records, path = drain(fine_tune([NOISY], output, mode="noisy", steps=160, resume=True))
    assert records[0].step > 0 and records[-1].step == 160 and path == output
    assert not state.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["k.safetensors", "noisy.tif"]
    assert not resumable(output)
