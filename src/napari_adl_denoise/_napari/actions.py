"""Layers > Filter > Denoise with defaults: denoise the selected image layer with the defaults."""

from __future__ import annotations

from napari.layers import Image, Layer
from napari.utils.notifications import show_warning
from napari.viewer import Viewer

from ..inference import split_alpha
from ..methods import default_method
from ._jobs import copy_placement, start_job
from ._layers import default_mode, layer_array, layout_args
from .denoise_widget import DEFAULTS, Denoised, denoise_job


def denoise_layer(layer: Layer, viewer: Viewer) -> None:
    """Denoise ``layer`` with ADL (bundled model for the data; NLM until one is installed), as the
    Denoise dock does with its defaults: the result's metadata names the model and colour route."""
    if not isinstance(layer, Image):
        show_warning("Denoise: choose an image layer")
        return
    layout = layout_args(layer, default_mode([layer]))
    method = default_method(layout["spatial_dims"], 3 if layer.rgb else 1)
    data, alpha = split_alpha(layer_array(layer), layer.rgb)  # RGBA: the colour denoised, alpha kept
    params = {"method": method, **DEFAULTS, **layout}

    def add(done: Denoised) -> None:
        name, metadata = f"{layer.name} [{method}]", done.metadata(params, layer.name)
        viewer.add_image(done.result, name=name, metadata=metadata, **copy_placement(layer))

    channels = 3 if layer.rgb else 1
    start_job(
        lambda: denoise_job(data, params, model=None, channels=channels, alpha=alpha),
        f"Denoise {layer.name} ({method})",
        add,
    )
