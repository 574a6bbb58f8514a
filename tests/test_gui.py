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


def test_demo_viewer_shows_clean_noisy_and_denoised_layers(make_napari_viewer, monkeypatch):
    import napari

    from napari_adl_denoise import demo

    viewer = make_napari_viewer(show=True)
    monkeypatch.setattr(napari, "Viewer", lambda **kwargs: viewer)
    monkeypatch.setattr(napari, "run", lambda: None)
    demo.main(["--viewer"])
    names = [layer.name for layer in viewer.layers]
    assert len(names) == 9 and "aero (clean)" in names and "mri (noisy)" in names
    assert tuple(viewer.layers["mri (noisy)"].scale) == (2.0, 2.0, 2.0)
    denoised = {name.split(" [")[0]: viewer.layers[name] for name in names if "[" in name}
    assert sorted(denoised) == ["aero", "coffee", "mri"] and denoised["coffee"].rgb
