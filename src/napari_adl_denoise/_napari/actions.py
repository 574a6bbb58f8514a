"""Layers > Filter > Denoise with defaults: denoise the selected image layer with the defaults."""

from __future__ import annotations

from napari.layers import Image, Layer
from napari.utils.notifications import show_warning
from napari.viewer import Viewer

from ..inference import iter_denoise
from ..methods import default_method
from ._jobs import copy_placement, start_job
from ._layers import default_mode, layer_array, layout_args


def denoise_layer(layer: Layer, viewer: Viewer) -> None:
    """Denoise ``layer`` with ADL (bundled model for the data; NLM until one is installed)."""
    if not isinstance(layer, Image):
        show_warning("Denoise: choose an image layer")
        return
    data = layer_array(layer)  # RGBA: iter_denoise denoises the colour and keeps the alpha
    layout = layout_args(layer, default_mode([layer]))
    method = default_method(layout["spatial_dims"], 3 if layer.rgb else 1)

    def add(result) -> None:
        metadata = {"napari_adl_denoise": {"method": method, "source_layer": layer.name}}
        viewer.add_image(result, name=f"{layer.name} [{method}]", metadata=metadata, **copy_placement(layer))

    start_job(lambda: iter_denoise(data, method, **layout), f"Denoise {layer.name} ({method})", add)
