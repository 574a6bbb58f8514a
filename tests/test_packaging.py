from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import tarfile
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


def build(kind: str, folder: Path) -> Path:
    """Build the ``wheel`` or ``sdist`` with hatchling (the build backend, a test tool here)."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling is not installed, so the package cannot be built here")
    run = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", kind, "-d", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    (path,) = folder.glob("napari_adl_denoise-*.whl" if kind == "wheel" else "napari_adl_denoise-*.tar.gz")
    return path


@pytest.mark.slow
def test_wheel_carries_the_manifest_entry_points_weights_and_licence(tmp_path):
    wheel = build("wheel", tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        manifest = zf.read("napari_adl_denoise/napari.yaml").decode()
        entry_points = next(zf.read(n).decode() for n in zf.namelist() if n.endswith("entry_points.txt"))
        metadata = next(zf.read(n).decode() for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        licence = next(
            zf.read(n).decode() for n in zf.namelist() if n.endswith(".dist-info/licenses/LICENSE")
        )
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
    assert licence == (ROOT / "LICENSE").read_text() and "BSD 3-Clause" in licence
    assert "License: BSD-3-Clause" in metadata
    assert "Classifier: License :: OSI Approved :: BSD License" in metadata
    # PyPI refuses an upload with both a PEP 639 License-Expression and a licence classifier
    assert "License-Expression" not in metadata
    requires = next(
        line.split(">=")[1] for line in metadata.splitlines() if line.startswith("Requires-Python")
    )
    versions = [line.rsplit(":: ", 1)[1] for line in metadata.splitlines() if "Python :: 3." in line]
    assert versions and versions[0] == requires  # a classifier per version, from the oldest supported


@pytest.mark.slow
def test_sdist_carries_the_licence_docs_and_tests(tmp_path):
    sdist = build("sdist", tmp_path)
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    screenshots = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.png")}
    assert screenshots and screenshots <= names
    assert {"LICENSE", "README.md", "napari.yaml", "docs/make_screenshots.py", "tests/conftest.py"} <= names


def test_readme_images_are_absolute_urls():
    """The napari hub and PyPI show a README without the repository beside it."""
    readme = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert images and all(url.startswith("https://") for url in images), images
    for url in images:
        assert (ROOT / "docs" / url.rsplit("/", 1)[1]).is_file(), url  # and the file is in the repository


# Run with the clean environment's Python: every sample, every dock and the demo, from the wheel.
CLEAN_CHECK = """
import importlib.util, sys, tempfile
from pathlib import Path

assert importlib.util.find_spec("pytest") is None, "the clean environment has pytest"
import napari
from npe2 import PluginManager

import napari_adl_denoise
from napari_adl_denoise import demo

assert "site-packages" in napari_adl_denoise.__file__, napari_adl_denoise.__file__  # the wheel, not src/
PLUGIN = "napari-adl-denoise"
viewer = napari.Viewer(show=True)
manifest = PluginManager.instance().get_manifest(PLUGIN)
for sample in manifest.contributions.sample_data:
    assert len(viewer.open_sample(PLUGIN, sample.key)) == 2, sample.key
for widget in manifest.contributions.widgets:
    viewer.window.add_plugin_dock_widget(PLUGIN, widget.display_name)
viewer.close()
with tempfile.TemporaryDirectory() as folder:
    demo.main(["--output", folder])
    assert len(list(Path(folder).iterdir())) == 6
print("clean environment: ok")
"""


@pytest.mark.slow
@pytest.mark.gui
def test_the_wheel_works_in_a_clean_environment_without_the_test_tools(tmp_path):
    """Install the wheel into a new environment with napari and a Qt binding but none of the
    ``testing`` extra (pytest above all), then open every sample and dock and run the demo.

    Versions are pinned to this environment's (a constraints file), so only the missing test tools
    differ. Takes a few minutes, mostly pip installing from its cache or index."""
    wheel = build("wheel", tmp_path / "dist")
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "\n".join(line for line in frozen if "==" in line and not line.startswith("napari-adl-denoise"))
    )
    qt = next(name for name in ("PyQt6", "PyQt5", "PySide6", "PySide2") if importlib.util.find_spec(name))
    torch = importlib.metadata.version("torch")
    index = ["--extra-index-url", "https://download.pytorch.org/whl/cpu"] if "+cpu" in torch else []
    pip = [str(python), "-m", "pip", "install", "-q", "--retries", "0", "-c", str(constraints), *index]
    run = subprocess.run([*pip, f"torch=={torch}", str(wheel), "napari", qt], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    run = subprocess.run([str(python), "-c", CLEAN_CHECK], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "clean environment: ok" in run.stdout
