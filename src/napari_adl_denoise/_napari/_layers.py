"""Helpers shared by the widgets: layer choices, notifications."""

from __future__ import annotations

import numpy as np
from napari.layers import Image


def image_choices(viewer) -> list[tuple[str, Image]]:
    """(name, layer) for every image layer, for magicgui combo boxes."""
    return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, Image)]


def layer_array(layer: Image) -> np.ndarray:
    """The full-resolution data of an image layer as a numpy array (read-only use)."""
    data = layer.data[0] if layer.multiscale else layer.data
    return np.asarray(data)


def watch_layers(viewer, widget) -> None:
    """Refresh ``widget``'s layer choices whenever layers are added, removed or renamed."""
    viewer.layers.events.inserted.connect(widget.reset_choices)
    viewer.layers.events.removed.connect(widget.reset_choices)
    viewer.layers.events.moved.connect(widget.reset_choices)
    viewer.layers.events.inserted.connect(lambda event: event.value.events.name.connect(widget.reset_choices))
