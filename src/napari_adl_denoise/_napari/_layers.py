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


def on_close(widget, callback) -> None:
    """Call ``callback()`` once when the dock ``widget`` is closed: deleted, or taken out of its dock
    (napari's close button sets the widget's parent to None without deleting it)."""
    closed = False

    def close(*_) -> None:
        nonlocal closed
        if not closed:
            closed = True
            callback()

    widget.native.destroyed.connect(close)
    widget.native_parent_changed.connect(lambda parent: parent is None and close())


def follow_renames(viewer, widget) -> None:
    """Refresh ``widget``'s layer choices when a layer is renamed, until the widget is closed.

    napari itself refreshes a dock widget's choices when layers are added, removed or reordered
    (and on renames only since its LayerList gained a ``renamed`` event, in late 2025)."""

    def follow(event) -> None:
        event.value.events.name.connect(widget.reset_choices)

    viewer.layers.events.inserted.connect(follow)
    for layer in viewer.layers:
        layer.events.name.connect(widget.reset_choices)

    def stop() -> None:
        viewer.layers.events.inserted.disconnect(follow)
        for layer in viewer.layers:
            layer.events.name.disconnect(widget.reset_choices)

    on_close(widget, stop)
