"""napari integration, in a real viewer under Xvfb (pytest-xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_plugin_is_registered_and_results_show_in_a_viewer(make_napari_viewer):
    from npe2 import PluginManager

    from napari_adl_denoise import denoise

    viewer = make_napari_viewer(show=True)  # a hidden canvas renders black under Xvfb
    assert PluginManager.instance().get_manifest("napari-adl-denoise").display_name == "ADL Denoise"
    noisy = np.random.default_rng(0).normal(100, 20, (64, 80)).astype(np.float32)
    layer = viewer.add_image(noisy, name="noisy", scale=(0.5, 0.5))
    result = denoise(layer.data, "tv")
    out = viewer.add_image(result, name="noisy [tv]", scale=layer.scale)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert out.data.shape == noisy.shape and shot.ndim == 3 and shot[..., :3].std() > 0
    np.testing.assert_array_equal(layer.data, noisy)


def test_demo_viewer_opens_on_a_useful_view_with_the_docks(make_napari_viewer, monkeypatch, capsys):
    import napari

    from napari_adl_denoise import demo

    viewer = make_napari_viewer(show=True)
    printed_before_the_window = []

    def make_viewer(**kwargs):
        printed_before_the_window.append(capsys.readouterr().out)
        return viewer

    monkeypatch.setattr(napari, "Viewer", make_viewer)
    monkeypatch.setattr(napari, "run", lambda: None)
    demo.main(["--viewer"])
    names = [layer.name for layer in viewer.layers]
    assert len(names) == 10 and "aero (clean)" in names and "mri (noisy)" in names
    assert names[-1] == "profile line"  # the Compare dock's
    assert tuple(viewer.layers["mri (noisy)"].scale) == (2.0, 2.0, 2.0)
    denoised = {name.split(" [")[0]: viewer.layers[name] for name in names if "[" in name}
    assert sorted(denoised) == ["aero", "coffee", "mri"] and denoised["coffee"].rgb
    # progress while denoising, before the window opens: a line per sample
    (before,) = printed_before_the_window
    assert "Denoising the samples" in before and all(f"  {name} " in before for name in denoised)
    # a useful view: a middle slice of the volume, the selected layer shown under its denoised result
    active = viewer.layers.selection.active
    assert active.name == "mri (noisy)" and active.visible
    shown = [layer.name for layer in viewer.layers if layer.visible]
    assert shown == ["mri (noisy)", denoised["mri"].name, "profile line"]
    assert viewer.dims.ndisplay == 2 and viewer.dims.current_step[0] == 16
    # the view fits the volume (the hidden 2D samples are 10x larger; they made it 90 px wide)
    extent = viewer.layers["mri (noisy)"].extent.world
    shown_px = viewer.camera.zoom * (extent[1] - extent[0])[-2:]
    assert shown_px.max() > 0.6 * min(viewer.canvas.size)
    docks = viewer.window.dock_widgets
    assert {"Denoise (napari-adl-denoise)", "Compare (napari-adl-denoise)"} <= set(docks)
    compare = docks["Compare (napari-adl-denoise)"]
    assert compare.reference.value.name == "mri (clean)" and compare.noisy.value is active
    assert docks["Denoise (napari-adl-denoise)"].image.value is active
