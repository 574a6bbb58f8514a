"""Fine-tuning a model on the user's own images, in memory."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import drain
from nibabel.testing import data_path
from skimage import data

from napari_adl_denoise import add_noise, denoise, list_models, load_model, metrics, model_info, save_model
from napari_adl_denoise.cli import main
from napari_adl_denoise.io import write_image
from napari_adl_denoise.methods.adl import DEFAULT_MODELS
from napari_adl_denoise.training import NoiseSpec, fine_tune

SPECKLE = [NoiseSpec(kind="speckle", sigma=(20, 40))]


@pytest.fixture
def base(tiny_2d, tmp_path):
    """The tiny camera model, trained on Gaussian noise (as its card says)."""
    card = {"noise": [{"kind": "gaussian", "sigma": [0, 40]}]}
    return save_model(tiny_2d, tmp_path / "base.safetensors", card)


def test_fine_tuning_adapts_the_bundled_model_to_new_noise_and_saves_it_with_its_card(tmp_path):
    clean = data.moon()[:256, :320].astype(np.float32)  # the last fifth of columns is held out
    before = clean.copy()
    output = tmp_path / "moon.safetensors"
    # the Gaussian-trained model, for which speckle is new (the default already knows photon noise)
    records, path = drain(fine_tune([clean], output, model="adl-2d-gray", noise=SPECKLE, steps=40, lr=3e-4))
    assert path == output and (records[0].phase, records[0].step) == ("init", 0)
    scores = {r.step: r.validation["psnr"] for r in records[1:] if r.validation}
    best = max(scores, key=scores.get)
    assert scores[best] > records[0].validation["psnr"] + 0.5
    np.testing.assert_array_equal(clean, before)
    card = model_info(path).card  # the best weights were kept
    assert card["base_model"] == "adl-2d-gray" and card["steps"] == best
    assert card["training_data"] == ["image 1 of shape (256, 256)"]
    assert card["validation_data"] == ["validation image 1 of shape (256, 64)"]
    assert card["noise"][0]["kind"] == "speckle"
    # in use, on the held-out columns with new noise: better than the model it started from
    held_out = clean[:, 256:]
    noisy = add_noise(held_out, "speckle", sigma=30, seed=1)
    tuned, start = (metrics.psnr(held_out, denoise(noisy, model=m)) for m in (path, "adl-2d-gray"))
    assert tuned > start + 0.3


def test_the_starting_models_own_noise_is_the_default(base, tmp_path):
    gen = fine_tune([data.camera()[:100, :120]], tmp_path / "m.safetensors", model=base, steps=2)
    _, path = drain(gen)
    assert model_info(path).card["noise"][0]["sigma"] == [0, 40]


def test_a_run_that_only_gets_worse_keeps_the_starting_weights(base, tmp_path):
    records, path = drain(fine_tune([data.camera()], tmp_path / "m.safetensors", model=base, steps=3, lr=0.1))
    assert all(r.validation["psnr"] < records[0].validation["psnr"] for r in records[1:])
    tuned = load_model(path)
    assert tuned.card["steps"] == 0 and tuned.card["validation"] == records[0].validation
    for name, value in load_model(base).model.state_dict().items():
        stored = value.half().to(value.dtype) if value.is_floating_point() else value  # fp16 on disk
        torch.testing.assert_close(tuned.model.state_dict()[name], stored)


def test_a_diverging_run_says_so(base, tmp_path):
    output = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="training diverged by step 1; lower the learning rate"):
        drain(fine_tune([data.camera()], output, model=base, steps=3, lr=10.0))
    assert not output.exists()


def test_a_single_channel_axis_is_dropped_not_taken_for_space(base, tmp_path):
    image = data.camera()[None, :96, :128]  # (1, Y, X), channel_axis=0
    _, path = drain(fine_tune([image], tmp_path / "m.safetensors", model=base, channel_axis=0, steps=1))
    card = model_info(path).card
    assert card["training_data"] == ["image 1 of shape (96, 102)"]
    assert card["validation_data"] == ["validation image 1 of shape (96, 26)"]


def test_stopping_writes_nothing(base, tmp_path):
    output = tmp_path / "m.safetensors"
    steps = fine_tune([data.camera()], output, model=base, steps=50)
    for _ in range(3):
        next(steps)
    steps.close()
    assert not output.exists() and [p.name for p in tmp_path.iterdir()] == ["base.safetensors"]


def test_a_plain_name_keeps_the_model_among_yours(base, user_models, capsys):
    clean = data.camera()[:96, :128]
    _, path = drain(fine_tune([clean], "cams", model=base, steps=2))
    assert path == user_models / "cams.safetensors"
    assert [(m.name, m.bundled) for m in list_models() if m.name == "cams"] == [("cams", False)]
    noisy = add_noise(clean.astype(np.float32), "gaussian", sigma=20, seed=0)
    np.testing.assert_array_equal(denoise(noisy, model="cams"), denoise(noisy, model=path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "cams" in out and "[yours]" in out and str(user_models) in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"output": "m.pt"}, "output must be a .safetensors file"),
        ({"output": "adl-2d-gray"}, "is a bundled model's name; choose another"),
        ({"images": []}, "images must be a non-empty list"),
        ({"images": [np.zeros((32, 32)), np.zeros((32, 32, 3))]}, "mix kinds of data"),
        ({"images": [np.full((32, 32), np.nan)]}, "NaN"),
        ({"images": [np.zeros((4, 32, 32))], "channel_axis": 0}, "gray or RGB"),
        ({"steps": 0}, "steps and max_minutes must be positive"),
        ({"model": "3d"}, "takes 3D data with 1 channel"),
        ({"validation": [np.zeros((40, 40, 40))]}, "laid out like the training images"),
    ],
)
def test_bad_input_says_what_is_wrong(change, message, base, tiny_3d, tmp_path):
    args = {"images": [data.camera()[:64, :64]], "output": tmp_path / "m.safetensors", "model": base}
    if change.get("model") == "3d":
        change = {"model": save_model(tiny_3d, tmp_path / "3d.safetensors")}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        next(fine_tune(args.pop("images"), args.pop("output"), **args))


def test_cli_fine_tune_writes_the_model_and_bad_output_is_one_line(tmp_path, capsys):
    clean = tmp_path / "clean.tif"
    write_image(clean, data.camera()[:96, :128])
    output = tmp_path / "mine.safetensors"
    args = ["fine-tune", str(output), str(clean), "--steps", "3", "--noise", "speckle", "--sigma-max", "30"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "step       0 init" in out and f"wrote {output}" in out
    assert model_info(output).card["noise"][0]["sigma"] == [0, 30]
    photo = tmp_path / "photo.png"
    write_image(photo, data.astronaut()[:64, :64])
    assert main(["fine-tune", str(output), str(clean), str(photo)]) == 2
    assert "inputs mix colour PNG/JPEG images with other images" in capsys.readouterr().err
    assert main(["fine-tune", str(tmp_path / "m.pt"), str(tmp_path / "absent.tif")]) == 2  # output first
    error = "adl-denoise: error: output must be a .safetensors file or a plain model name, got 'm.pt'"
    assert capsys.readouterr().err.strip() == error


@pytest.mark.parametrize(("spatial_dims", "model"), [(3, "adl-3d-gray"), (2, DEFAULT_MODELS[2, 1])])
def test_a_volume_fine_tunes_the_3d_model_or_the_2d_one_slice_by_slice(spatial_dims, model, tmp_path):
    volume = np.asarray(nib.load(Path(data_path) / "anatomical.nii").dataobj, dtype=np.float32)
    records, path = drain(fine_tune([volume], tmp_path / "m.safetensors", spatial_dims=spatial_dims, steps=2))
    info = model_info(path)
    assert info.card["base_model"] == model and info.config.spatial_dims == spatial_dims
    assert [r.step for r in records] == [0, 1, 2]
