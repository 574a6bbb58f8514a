"""The Denoise dock widget: a thin shell over :func:`napari_adl_denoise.iter_denoise`."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox, FloatSpinBox, Label, SpinBox
from napari.utils.notifications import show_warning

from .._adl import NoModelError, _tile_shape, as_loaded_model, default_model_info, estimate_memory
from .._device import available_devices, resolve_device
from .._tiling import round_up
from ..inference import iter_denoise
from ..methods import get_method, list_methods
from ..weights import model_info
from ._jobs import JobDock, copy_placement
from ._layers import (
    MODEL_FILE,
    SLICES,
    VOLUME,
    image_choices,
    keep_fresh,
    layer_array,
    layout_args,
    model_arg,
    model_widgets,
)


class DenoiseWidget(JobDock):
    """Choose an image, a method and its model, the device and tiles; Run or Cancel."""

    title = "Denoise"

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        self.image = ComboBox(label="Image", choices=lambda _: image_choices(napari_viewer), nullable=False)
        methods = [m for m in list_methods() if get_method(m).available]
        self.method = ComboBox(label="Method", choices=methods, value="adl")
        self.about = Label(label="")
        self.model, self.model_file = model_widgets()
        self.device = ComboBox(label="Device", choices=["auto", *available_devices()], value="auto")
        self.mode = ComboBox(label="Process as", choices=[SLICES, VOLUME], value=VOLUME, visible=False)
        self.tile = SpinBox(label="Tile size (0: auto)", min=0, max=4096, step=8, value=0)
        self.overlap = FloatSpinBox(label="Tile overlap", min=0.0, max=0.75, step=0.05, value=0.25)
        self.memory = Label(label="Memory")
        super().__init__(
            [
                self.image,
                self.method,
                self.about,
                self.model,
                self.model_file,
                self.device,
                self.mode,
                self.tile,
                self.overlap,
                self.memory,
            ]
        )
        for widget in (
            self.image,
            self.method,
            self.model,
            self.model_file,
            self.device,
            self.mode,
            self.tile,
            self.overlap,
        ):
            widget.changed.connect(self._refresh)
        keep_fresh(napari_viewer, self)
        self._refresh()

    # -- state ---------------------------------------------------------------------------------
    def _refresh(self, *_: Any) -> None:
        method = get_method(self.method.value)
        self.about.value = method.description
        for widget in (self.model, self.tile, self.overlap, self.memory, self.device):
            widget.visible = method.learned
        self.model_file.visible = method.learned and self.model.value == MODEL_FILE
        layer = self.image.value
        self.mode.visible = layer is not None and layer.ndim - int(layer.rgb) >= 3
        self.memory.value = self._memory_text() if method.learned else ""

    def _memory_text(self) -> str:
        layer = self.image.value
        model = model_arg(self.model, self.model_file)
        if layer is None or model == "":
            return ""
        sd = layout_args(layer, self.mode.value)["spatial_dims"]
        shape = layer.data.shape[:-1] if layer.rgb else layer.data.shape
        padded = tuple(round_up(s) for s in shape[-sd:])
        try:
            info = default_model_info(sd, 3 if layer.rgb else 1) if model is None else model_info(model)
            device = resolve_device(self.device.value)
            tile = _tile_shape(self.tile.value or None, padded, device, self.overlap.value)
        except ValueError as exc:  # NoModelError is a LookupError: the run reports it
            return str(exc)
        except NoModelError:
            return ""
        if info.config.spatial_dims != sd:
            return f"{info.name} is a {info.config.spatial_dims}D model; the data is denoised in {sd}D"
        gib = estimate_memory(info.config, tile) / 2**30
        tiles = " x ".join(map(str, tile))
        return f"~{gib:.1f} GiB per tile of {tiles} ({info.name}, b = {info.config.filter_base})"

    # -- actions -------------------------------------------------------------------------------
    def run(self) -> None:
        layer = self.image.value
        if layer is None:
            show_warning("Denoise: add or choose an image layer first")
            return
        if self.busy():
            return
        method = self.method.value
        learned = get_method(method).learned
        model = model_arg(self.model, self.model_file) if learned else None
        if model == "":
            show_warning("Denoise: choose a .safetensors model file")
            return
        layout = layout_args(self.image.value, self.mode.value)
        params = {
            "method": method,
            "device": self.device.value,
            "tile_shape": (self.tile.value or None) if learned else None,
            "overlap": self.overlap.value,
            **layout,
        }
        data = layer_array(layer)
        source = layer
        channels = 3 if layer.rgb else 1  # the worker sees arrays and plain values, never layers

        def job():
            kwargs = dict(params)
            card = None
            if learned:
                loaded = as_loaded_model(model, layout["spatial_dims"], channels)
                kwargs["model"], card = loaded, {"name": loaded.name, **loaded.card}
            else:
                kwargs.update(device="auto", tile_shape=None)
            result = yield from iter_denoise(data, **kwargs)
            return result, card

        def add(output) -> None:
            result, card = output
            metadata = {"napari_adl_denoise": {**params, "model": card, "source_layer": source.name}}
            self._viewer.add_image(
                result, name=f"{source.name} [{method}]", metadata=metadata, **copy_placement(source)
            )
            self.status.value = f"added '{source.name} [{method}]'"

        self.start(job, f"Denoise {layer.name} ({method})", add, f"denoising '{layer.name}' with {method}...")
