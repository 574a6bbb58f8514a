"""Helpers shared by the widgets: layer choices, model choice, data layout, closing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FileEdit
from napari.layers import Image
from psygnal import Signal
from qtpy.QtCore import QSignalBlocker
from qtpy.QtWidgets import QComboBox

from ..weights import ModelInfo, list_models

AUTO_MODEL = "bundled model for the data"
MODEL_FILE = "model file..."
SLICES, VOLUME = "2D slices", "3D volume"


class _Models:
    changed = Signal()  # a model was saved among the user's models


MODELS = _Models()


def image_choices(viewer, keep: Callable[[Image], bool] | None = None) -> list[tuple[str, Image]]:
    """(name, layer) for every image layer (or those ``keep`` accepts), for magicgui combo boxes."""
    layers = [layer for layer in viewer.layers if isinstance(layer, Image)]
    return [(layer.name, layer) for layer in layers if keep is None or keep(layer)]


def made_from(layer, kind: str) -> str | None:
    """The name of the layer that ``layer`` was made from by this plugin, if it is a ``kind``
    ("denoised": a result of Denoise or the Layers menu; "noisy": Simulate noise's output or a
    sample's noisy layer). None for a preview (a part of a result) and for any other layer."""
    made = layer.metadata.get("napari_adl_denoise") if isinstance(layer, Image) else None
    if not isinstance(made, dict) or "source_layer" not in made or is_preview(layer):
        return None
    if ("noise" in made) != (kind == "noisy"):
        return None
    return made["source_layer"]


def is_preview(layer) -> bool:
    """Whether ``layer`` is a Denoise preview (one plane of a result)."""
    made = layer.metadata.get("napari_adl_denoise")
    return isinstance(made, dict) and "plane" in made


def active_image(viewer) -> Image | None:
    """napari's selected (active) layer when it is an image: the one just opened, added or
    clicked in the layer list, which a dock starts on."""
    active = viewer.layers.selection.active
    return active if isinstance(active, Image) else None


def start_on_active(viewer, combo) -> None:
    """Set a dock's image ``combo`` to :func:`active_image` (else it keeps its first choice: a
    sample's clean layer, when its noisy one is selected)."""
    active = active_image(viewer)
    if active is not None:
        combo.reset_choices()
        combo.value = next((layer for layer in combo.choices if layer.name == active.name), combo.value)


def layer_array(layer: Image) -> np.ndarray:
    """The full-resolution data of an image layer as a numpy array (read-only use)."""
    data = layer.data[0] if layer.multiscale else layer.data
    return np.asarray(data)


def default_mode(layers: list[Image]) -> str:
    """How a stack is processed unless the user says otherwise: as volumes, except RGB stacks (no
    bundled model is a 3D colour one) and stacks of one plane (1 x 2048 x 2048: the 3D model's
    small tiles took ~15x as long as 2D slices)."""
    if any(layer.rgb for layer in layers):
        return SLICES
    if any(layer.ndim >= 3 and layer.data.shape[-3] == 1 for layer in layers):
        return SLICES
    return VOLUME


def model_label(info: ModelInfo) -> str:
    """How a model is listed: its name, the data it denoises and whether it is yours."""
    return f"{info.name} ({info.data_kind}{'' if info.bundled else ', yours'})"


def model_widgets(
    label: str = "Model",
    kind: Callable[[], str | None] = lambda: None,
    layouts: Callable[[], set[tuple[int, int]] | None] = lambda: None,
) -> tuple[ComboBox, FileEdit]:
    """A model choice (the bundled one for the data, a model's name, or a file) and its file box.

    The names (bundled, then the user's models; of network family ``kind()`` when that is not
    None; taking ``(spatial_dims, in_channels)`` in ``layouts()`` when that is not None) are
    listed with the data they denoise, and read again whenever the dock's choices are reset: when
    layers change, the method changes, or a model is saved among the user's (see
    :func:`keep_fresh`). The choice's value is the bare name, as the API takes it."""

    def names(_) -> list[tuple[str, str]]:
        wanted, fits = kind(), layouts()
        models = [
            (model_label(m), m.name)
            for m in list_models()
            if (wanted is None or m.config.kind == wanted)
            and (fits is None or (m.config.spatial_dims, m.config.in_channels) in fits)
        ]
        return [(AUTO_MODEL, AUTO_MODEL), *models, (MODEL_FILE, MODEL_FILE)]

    choice = _ModelChoice(
        label=label,
        choices=names,
        tooltip="The network: the method's bundled one for the data (2D gray, 2D RGB or 3D), one "
        "of yours (Fine-tune saves them by name), or a .safetensors file. Only models that can "
        "process the chosen data are listed, each with the data it denoises.",
    )
    narrow(choice)
    file = FileEdit(
        label="Model file", filter="*.safetensors", visible=False, tooltip="A .safetensors model file."
    )
    return choice, file


def narrow(choice: ComboBox, characters: int = 16) -> None:
    """Let a choice box be narrower than its longest entry (shown in full when opened), so long
    model names never widen a dock past its scroll area."""
    box = choice.native
    box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.setMinimumContentsLength(characters)


class _ModelChoice(ComboBox):
    """The model list, kept in order (magicgui appends a new choice, a model just saved, at the
    end, below "model file..."), and keeping the chosen model while it is still listed."""

    def reset_choices(self, *_: Any) -> None:
        wanted = list(self._default_choices(self))  # (label, name) pairs, see model_widgets
        box = self.native
        if [(box.itemText(i), box.itemData(i)) for i in range(box.count())] == wanted:
            return
        before = box.currentData()
        names = [name for _, name in wanted]
        with QSignalBlocker(box):
            box.clear()
            for text, name in wanted:
                box.addItem(text, name)
            box.setCurrentIndex(names.index(before) if before in names else 0)
        if box.currentData() != before:
            self.changed.emit(self.value)


def data_layouts(layers: list[Image], mode: str) -> set[tuple[int, int]] | None:
    """The ``(spatial_dims, channels)`` of ``layers`` processed in ``mode``; None when there
    are none or they mix kinds."""
    found = set()
    for layer in layers:
        layout = layout_args(layer, mode)
        found.add((layout["spatial_dims"], 1 if layout["channel_axis"] is None else 3))
    return found if len(found) == 1 else None


def denoise_layouts(layer: Image | None, mode: str) -> set[tuple[int, int]] | None:
    """The ``(spatial_dims, in_channels)`` of the models that can denoise ``layer`` in ``mode``:
    its own, and 2D models for volumes too (they denoise a volume along its three planes)."""
    if layer is None:
        return None
    ((spatial_dims, channels),) = data_layouts([layer], mode)
    return {(2, channels), (spatial_dims, channels)}


def model_arg(choice: ComboBox, file: FileEdit) -> str | None:
    """``model=`` for the API: None (bundled for the data), a name, a path, or "" (no file yet)."""
    if choice.value == AUTO_MODEL:
        return None
    if choice.value == MODEL_FILE:
        path = Path(file.value)
        return str(path) if path.is_file() else ""
    return choice.value


def layout_args(layer: Image | None, mode: str) -> dict[str, Any]:
    """``channel_axis`` and ``spatial_dims`` for a layer processed in ``mode`` (SLICES or VOLUME).

    napari's ``ndim`` leaves out an RGB layer's colour axis: (Z, Y, X, 3) has ndim 3."""
    rgb = bool(layer is not None and layer.rgb)
    ndim = 0 if layer is None else layer.ndim
    spatial_dims = 3 if ndim >= 3 and mode == VOLUME else 2
    return {"channel_axis": -1 if rgb else None, "spatial_dims": spatial_dims}


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


def keep_fresh(viewer, widget) -> None:
    """Refresh ``widget``'s choices when a layer is renamed or a user model is saved, until the
    widget is closed.

    napari itself refreshes a dock widget's choices when layers are added, removed or reordered
    (and on renames only since its LayerList gained a ``renamed`` event, in late 2025)."""

    def follow(event) -> None:
        event.value.events.name.connect(widget.reset_choices)

    viewer.layers.events.inserted.connect(follow)
    for layer in viewer.layers:
        layer.events.name.connect(widget.reset_choices)
    MODELS.changed.connect(widget.reset_choices)

    def stop() -> None:
        MODELS.changed.disconnect(widget.reset_choices)
        viewer.layers.events.inserted.disconnect(follow)
        for layer in viewer.layers:
            layer.events.name.disconnect(widget.reset_choices)

    on_close(widget, stop)
