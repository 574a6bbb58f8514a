"""Save screenshots of each dock widget in use into docs/ (real viewer; run under Xvfb):

xvfb-run -a -s "-screen 0 1920x1080x24" python docs/make_screenshots.py
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import napari
from napari.qt.threading import WorkerBase
from qtpy.QtWidgets import QApplication

from napari_adl_denoise import user_models_dir

HERE = Path(__file__).parent
PLUGIN = "napari-adl-denoise"


def wait(condition, timeout: float = 1200) -> None:
    end = time.monotonic() + timeout
    while not condition():
        QApplication.processEvents()
        if time.monotonic() > end:
            raise TimeoutError("the widget's job did not finish")
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()


def shot(viewer, name: str) -> None:
    viewer.window._qt_window.resize(1920, 1080)  # a 1080p screen: the docks must fit it
    wait(lambda: True)
    viewer.screenshot(str(HERE / name), canvas_only=False, flash=False)
    print(f"wrote docs/{name}")


def denoise(viewer) -> None:
    clean, noisy = viewer.open_sample(PLUGIN, "mri-3d")
    clean.visible = False
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Denoise")
    widget.image.value = noisy
    viewer.dims.set_point(0, viewer.dims.range[0].stop / 2)  # a middle slice
    widget.preview_button.native.click()
    wait(lambda: len(viewer.layers) == 3)
    viewer.canvas.grid.enabled = True  # noisy and its preview side by side
    shot(viewer, "denoise.png")


def simulate(viewer) -> None:
    clean, noisy = viewer.open_sample(PLUGIN, "mri-3d")
    viewer.layers.remove(noisy)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Simulate noise")
    widget.image.value = clean
    widget.kind.value = "rician"
    widget.sigma.value = 20
    widget.nu.value = 5
    widget.run_button.native.click()
    wait(lambda: len(viewer.layers) == 2)
    viewer.canvas.grid.enabled = True  # clean and noisy side by side, on an axial slice
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_current_step(2, 12)
    shot(viewer, "simulate-noise.png")


def compare(viewer) -> None:
    from napari_adl_denoise import denoise as run_denoise

    clean, noisy = viewer.open_sample(PLUGIN, "microscopy-2d")
    for method in ("nlm", "tv"):
        viewer.add_image(run_denoise(noisy.data, method), name=f"{noisy.name} [{method}]", visible=False)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Compare")
    widget.reference.value = clean
    widget.noisy.value = noisy
    widget.denoised.value = [viewer.layers[2], viewer.layers[3]]
    widget.update_button.native.click()
    wait(lambda: widget._worker is None and len(widget.rows) == 3)
    shot(viewer, "compare.png")


def fine_tune(viewer) -> None:
    """A noisy-only fine-tune, mid-run: the live curve, progress and time left."""
    folder = user_models_dir()
    made = not folder.exists()
    clean, noisy = viewer.open_sample(PLUGIN, "microscopy-2d")
    clean.visible = False
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    widget.data.value = "noisy"
    widget.images.value = [noisy]
    widget.steps.value = 60
    output = folder / "my-microscope.safetensors"
    widget.output.value = output
    widget.run_button.native.click()
    wait(lambda: len(widget.curve.scores) >= 5 or widget._worker is None)
    shot(viewer, "fine-tune.png")
    widget.cancel_button.native.click()
    wait(lambda: widget._worker is None)
    if made:
        with contextlib.suppress(OSError):  # not empty: it held more than this script made
            folder.rmdir()
            folder.parent.rmdir()


def main(names: list[str]) -> None:
    """Make the screenshots named (denoise, simulate, compare, fine_tune), or all of them."""
    for make in (denoise, simulate, compare, fine_tune):
        if names and make.__name__ not in names:
            continue
        viewer = napari.Viewer(show=True)
        make(viewer)
        viewer.close()
        WorkerBase.await_workers()  # jobs started while the layers were removed


if __name__ == "__main__":
    main(sys.argv[1:])
