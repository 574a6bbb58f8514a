"""Layers > Filter > Denoise with defaults: denoise the selected image layer with the defaults."""

from __future__ import annotations

from napari.layers import Image, Layer
from napari.utils.notifications import show_warning
from napari.viewer import Viewer

from ..inference import iter_denoise, join_alpha, split_alpha
from ..methods import default_method
from ._jobs import copy_placement, start_job
from ._layers import default_mode, layer_array, layout_args


def denoise_layer(layer: Layer, viewer: Viewer) -> None:
    """Denoise ``layer`` with ADL (bundled model for the data; NLM until one is installed)."""
    if not isinstance(layer, Image):
        show_warning("Denoise: choose an image layer")
        return
    data, alpha = split_alpha(layer_array(layer), layer.rgb)  # RGBA: denoise the colour, keep alpha
    layout = layout_args(layer, default_mode([layer]))
    method = default_method(layout["spatial_dims"], 3 if layer.rgb else 1)

    def job():
        return join_alpha((yield from iter_denoise(data, method, **layout)), alpha)

    def add(result) -> None:
        metadata = {"napari_adl_denoise": {"method": method, "source_layer": layer.name}}
        viewer.add_image(result, name=f"{layer.name} [{method}]", metadata=metadata, **copy_placement(layer))

    start_job(job, f"Denoise {layer.name} ({method})", add)
