from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parents[1]
GUI_MODULES = {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy", "superqt"}


def test_compute_layer_imports_no_qt_or_napari():
    code = (
        "import sys, napari_adl_denoise, napari_adl_denoise.cli, napari_adl_denoise.io, "
        "napari_adl_denoise.models, napari_adl_denoise.weights, napari_adl_denoise.demo\n"
        "from napari_adl_denoise.cli import main; main(['methods'])\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {GUI_MODULES!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_samples_and_demo_data_load_without_pytest():
    """nibabel.testing imports pytest, which a user's environment lacks: the MRI sample and the demo
    must find nibabel's data without it (the clean-wheel test below checks the whole package)."""
    code = (
        "import sys\n"
        "sys.modules['pytest'] = None  # import pytest now raises ModuleNotFoundError\n"
        "from napari_adl_denoise import demo\n"
        "from napari_adl_denoise._napari import sample_data\n"
        "(clean, meta, _), _ = sample_data.mri_3d()\n"
        "assert clean.shape == demo.samples()['mri'][0].shape == (33, 41, 25), clean.shape\n"
        "assert meta['scale'] == [2.0, 2.0, 2.0]\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_manifest_is_found_from_the_installed_package():
    manifest = PluginManifest.from_distribution("napari-adl-denoise")
    assert manifest.name == "napari-adl-denoise"
    packaged = ROOT / "src" / "napari_adl_denoise" / "napari.yaml"
    assert packaged.read_text() == (ROOT / "napari.yaml").read_text()


@pytest.mark.slow
def test_wheel_carries_the_manifest_entry_points_and_weights(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("napari_adl_denoise-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        manifest = zf.read("napari_adl_denoise/napari.yaml").decode()
        entry_points = next(zf.read(n).decode() for n in zf.namelist() if n.endswith("entry_points.txt"))
        names = set(zf.namelist())
    weights = ROOT / "src/napari_adl_denoise/weights"
    bundled = [*weights.glob("*.safetensors"), *weights.glob("*.md")]
    assert {f"napari_adl_denoise/weights/{p.name}" for p in bundled} <= names  # weights travel in the wheel
    assert manifest == (ROOT / "napari.yaml").read_text()
    assert "napari-adl-denoise = napari_adl_denoise:napari.yaml" in entry_points
    assert "adl-denoise = napari_adl_denoise.cli:main" in entry_points
    extracted = tmp_path / "napari.yaml"
    extracted.write_text(manifest)
    PluginManifest.from_file(extracted)  # validates
