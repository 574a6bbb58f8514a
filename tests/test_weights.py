from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import napari_adl_denoise as adl
from napari_adl_denoise import ModelFileError, denoise, list_models, load_model, save_model
from napari_adl_denoise.io import read_image
from napari_adl_denoise.methods.adl import DEFAULT_MODELS
from napari_adl_denoise.models import EfficientUnetConfig


@pytest.fixture
def bundled(monkeypatch, tmp_path):
    """An empty bundled-models folder to fill."""
    monkeypatch.setattr(adl.weights, "bundled_dir", lambda: tmp_path)
    return tmp_path


def test_round_trip_rebuilds_an_identical_model(tiny_2d, tmp_path):
    path = save_model(
        tiny_2d, tmp_path / "m.safetensors", {"description": "test", "training_data": ["camera"]}
    )
    loaded = load_model(path)
    assert loaded.config == tiny_2d.config
    assert loaded.card["training_data"] == ["camera"] and loaded.card["package_version"] == adl.__version__
    assert not loaded.model.training
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), tiny_2d(x))
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    np.testing.assert_array_equal(denoise(image, model=path), denoise(image, model=tiny_2d))


def test_fp16_storage_halves_the_file_and_loads_as_float32(tiny_2d, tmp_path):
    full = save_model(tiny_2d, tmp_path / "full.safetensors")
    half = save_model(tiny_2d, tmp_path / "half.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert loaded.card["storage_dtype"] == "float16"


def test_metadata_has_config_and_card(tiny_2d, tmp_path):
    path = save_model(tiny_2d, tmp_path / "m.safetensors", {"noise": "gaussian"})
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "napari-adl-denoise/1"
    assert json.loads(metadata["config"])["filter_base"] == 4
    assert json.loads(metadata["card"])["noise"] == "gaussian"
    info = adl.model_info(path)  # metadata only, no weights loaded
    assert (info.name, info.config, info.card["noise"]) == ("m", tiny_2d.config, "gaussian")


def test_a_pickle_file_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(ModelFileError, match="not a valid safetensors"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage", ["truncate", "garbage", "foreign", "config", "shape", "nan", "int32", "card"]
)
def test_damaged_or_mismatched_files_give_one_line_errors(damage, tiny_2d, tmp_path):
    path = save_model(tiny_2d, tmp_path / "m.safetensors")
    tensors = {k: v.clone() for k, v in tiny_2d.state_dict().items()}
    metadata = {"format": "napari-adl-denoise/1", "config": tiny_2d.config.model_dump_json(), "card": "{}"}
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    elif damage == "foreign":
        save_file(tensors, str(path))  # a safetensors file without our metadata
    elif damage == "config":
        save_file(tensors, str(path), {**metadata, "config": '{"spatial_dims": 5}'})
    elif damage == "shape":
        wider = EfficientUnetConfig(filter_base=8).model_dump_json()
        save_file(tensors, str(path), {**metadata, "config": wider})
    elif damage == "nan":
        key = next(k for k, v in tensors.items() if v.is_floating_point())
        tensors[key][...] = float("nan")
        save_file(tensors, str(path), metadata)
    elif damage == "int32":
        save_file({k: v.to(torch.int32) for k, v in tensors.items()}, str(path), metadata)
    elif damage == "card":
        save_file(tensors, str(path), {**metadata, "card": "[1, 2]"})
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_tiny_file_asking_for_a_huge_network_is_refused_before_anything_is_built(
    user_models, monkeypatch, capsys
):
    """Its config is checked against its tensors' shapes from the header, on a network built on
    the meta device; listing it or loading it allocates nothing."""
    import napari_adl_denoise.weights as weights

    huge = EfficientUnetConfig(spatial_dims=3, in_channels=3, filter_base=256, enhancer_kernel=15)
    user_models.mkdir(parents=True)
    path = user_models / "huge.safetensors"
    metadata = {"format": "napari-adl-denoise/1", "config": huge.model_dump_json(), "card": "{}"}
    save_file({"head.weight": torch.zeros(4)}, str(path), metadata)
    assert path.stat().st_size < 5_000

    from napari_adl_denoise.cli import main

    real_build = weights.build_model

    def meta_only(config):
        assert torch.empty(0).device.type == "meta", "a network was built before its file was checked"
        return real_build(config)

    monkeypatch.setattr(weights, "build_model", meta_only)
    with pytest.raises(ModelFileError, match="does not match its config"):
        load_model(path)
    assert "huge" not in {m.name for m in list_models()}
    assert main(["models"]) == 0 and "huge" not in capsys.readouterr().out


def test_missing_file_and_unknown_name(bundled, tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "absent.safetensors")
    for read in (load_model, adl.model_info):
        with pytest.raises(ModelFileError, match="unknown model 'adl-9d'; models: none installed"):
            read("adl-9d")


def test_save_is_atomic(tiny_2d, tmp_path, monkeypatch):
    path = save_model(tiny_2d, tmp_path / "m.safetensors")
    good = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(adl.weights, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(tiny_2d, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_bundled_models_are_listed_and_chosen_by_data_kind(bundled, tiny_2d, tiny_3d):
    assert list_models() == []
    save_model(tiny_2d, bundled / "adl-2d-gray.safetensors", {"description": "2D gray"})
    save_model(tiny_3d, bundled / "adl-3d-gray.safetensors", {"description": "3D gray"})
    infos = list_models()
    assert [m.name for m in infos] == ["adl-2d-gray", "adl-3d-gray"]
    assert infos[0].description == "2D gray" and infos[1].config.spatial_dims == 3
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    volume = np.random.default_rng(0).random((17, 20, 24)).astype(np.float32)
    np.testing.assert_array_equal(denoise(image), denoise(image, model=tiny_2d))
    # without DEFAULT_MODELS' choice installed: any bundled network of the data's dimensions
    np.testing.assert_array_equal(denoise(volume), denoise(volume, model="adl-3d-gray"))
    # with it: volumes get that 2D model over three slicing directions
    save_model(tiny_2d, bundled / f"{DEFAULT_MODELS[3, 1]}.safetensors")
    np.testing.assert_array_equal(denoise(volume), denoise(volume, model=tiny_2d))
    with pytest.raises(adl.NoModelError, match="2D RGB"):
        denoise(np.zeros((16, 16, 3)) + np.arange(3), channel_axis=-1)


def test_your_models_are_listed_after_the_bundled_and_loaded_by_name(bundled, user_models, tiny_2d, tiny_3d):
    save_model(tiny_2d, bundled / "adl-2d-gray.safetensors", {"description": "2D gray"})
    assert [m.name for m in list_models()] == ["adl-2d-gray"]  # the folder does not exist yet
    user_models.mkdir()
    save_model(tiny_3d, user_models / "my-mri.safetensors", {"description": "mine", "default": True})
    save_model(tiny_3d, user_models / "adl-2d-gray.safetensors")  # shadowed by the bundled name
    (user_models / "broken.safetensors").write_bytes(b"not a model")
    infos = list_models()
    assert [(m.name, m.bundled) for m in infos] == [("adl-2d-gray", True), ("my-mri", False)]
    assert [m.name for m in list_models(user=False)] == ["adl-2d-gray"]
    assert (
        load_model("my-mri").config.spatial_dims == 3 and load_model("adl-2d-gray").config.spatial_dims == 2
    )
    with pytest.raises(ModelFileError, match="models: adl-2d-gray, my-mri$"):
        load_model("yours")
    with pytest.raises(adl.NoModelError, match="3D grayscale"):  # yours never become a default
        denoise(np.random.default_rng(0).random((17, 20, 24)).astype(np.float32))


@pytest.mark.parametrize("name", ["", "a/b", "m.safetensors", ".hidden", "adl-2d-gray"])
def test_a_user_model_name_is_plain_and_not_bundled(name, bundled, tiny_2d):
    save_model(tiny_2d, bundled / "adl-2d-gray.safetensors")
    with pytest.raises(ValueError, match="plain name|bundled model's name"):
        adl.weights.user_model_path(name)


def test_the_user_models_folder_defaults_to_the_user_data_folder(monkeypatch):
    monkeypatch.delenv("NAPARI_ADL_DENOISE_MODELS")
    folder = adl.user_models_dir()
    assert folder.name == "models" and "napari-adl-denoise" in folder.parts


BUNDLED = [m.name for m in list_models(user=False)]
CARD_FIELDS = {"training_images", "noise", "steps", "wall_time_s", "hardware", "parameters"}
CARD_FIELDS |= {"validation_per_sigma"}


@pytest.mark.parametrize("name", BUNDLED)
def test_each_bundled_model_has_its_card_and_fits_in_a_wheel(name):
    info = next(m for m in list_models(user=False) if m.name == name)
    assert set(info.card) >= CARD_FIELDS
    assert info.card["storage_dtype"] in ("float16", "float32")
    assert info.path.with_suffix(".md").is_file()
    assert sum(m.path.stat().st_size for m in list_models(user=False)) < 60 * 2**20


def _held_out(kind: str) -> np.ndarray:
    """Real data the bundled model of this kind never saw in training."""
    import pywt
    from nibabel.testing import data_path
    from skimage import data

    if "2d-gray" in kind:
        return pywt.data.aero().astype(np.float32)
    if "2d-rgb" in kind:
        return data.coffee().astype(np.float32)
    return read_image(f"{data_path}/anatomical.nii").data.astype(np.float32)


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_each_bundled_model_denoises_held_out_data_and_the_defaults_need_no_argument(name):
    from napari_adl_denoise import add_noise
    from napari_adl_denoise.metrics import psnr

    method = adl.methods.method_for_kind(adl.model_info(name).config.kind, name)
    clean = _held_out(name)
    noisy = add_noise(clean, sigma=25, seed=0)
    result = denoise(noisy, method.name, model=name)
    gain = 5 if name == "idgan-2d-rgb" else 6  # IDGAN trades PSNR for detail: measured +6.0 dB
    assert psnr(clean, result) > psnr(clean, noisy) + gain
    kind = (3 if clean.ndim == 3 and clean.shape[-1] != 3 else 2, 3 if clean.shape[-1] == 3 else 1)
    if method.default_models.get(kind) == name:  # no model, no axes: the method's bundled one for this data
        np.testing.assert_array_equal(denoise(noisy, method.name), result)


@pytest.mark.parametrize("method", [m for m in adl.list_methods() if adl.get_method(m).learned])
def test_every_default_model_is_bundled(method):
    chosen = adl.get_method(method)
    assert chosen.default_models and set(chosen.default_models.values()) <= set(BUNDLED)  # no silent fallback
    assert all(
        adl.model_info(name).config.kind == chosen.model_kind for name in chosen.default_models.values()
    )
