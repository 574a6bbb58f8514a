"""The Denoise dock widget: a thin shell over :func:`napari_adl_denoise.iter_denoise`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtWidgets import QSizePolicy

from .._chunked import discard_store, is_lazy, iter_write, scratch_store
from .._device import available_devices
from ..inference import (
    COLOUR_ROUTES,
    NOISE_MODELS,
    colour_route,
    iter_denoise,
    iter_opponent,
    join_alpha,
    resolve_noise_model,
    robust_range,
    split_alpha,
)
from ..methods import (
    ENSEMBLE_PASSES,
    NoModelError,
    as_loaded_model,
    default_model_info,
    get_method,
    list_methods,
    plan_denoise,
    plane_weights,
)
from ._jobs import JobDock, copy_placement
from ._layers import (
    MODEL_FILE,
    SLICES,
    VOLUME,
    default_mode,
    denoise_layouts,
    image_choices,
    keep_fresh,
    layer_array,
    layout_args,
    model_arg,
    model_widgets,
    narrow,
    start_on_active,
)

# A preview in 3D denoises this many planes around the current one: the 3D model's context in depth
PREVIEW_SLAB = 32


DEFAULTS = {"device": "auto", "tile_shape": None, "overlap": 0.25, "noise_model": "blind"}
"""The Denoise dock's starting choices, which Layers > Filter > Denoise with defaults runs with."""


class DenoiseWidget(JobDock):
    """Choose an image, a method and its model, the device and tiles; Run, Preview or Cancel."""

    title = "Denoise"

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        self.image = ComboBox(
            label="Image",
            choices=lambda _: image_choices(napari_viewer),
            nullable=False,
            tooltip="The image layer to denoise: 2D, RGB(A), a 3D volume or a stack. It is never "
            "modified; the result is a new layer.",
        )
        narrow(self.image, 24)  # a long layer name must not widen the dock
        methods = [m for m in list_methods() if get_method(m).available]
        self.method = ComboBox(
            label="Method",
            choices=methods,
            value="adl",
            tooltip="adl, adaptive-cnn and noise-attention: learned denoisers (blind: no noise level "
            "needed), each with its own models. The others are classical baselines for comparison.",
        )
        self.noise_model = ComboBox(
            label="Noise",
            choices=NOISE_MODELS,
            value=DEFAULTS["noise_model"],
            tooltip="blind: denoise the image as it is (the default gray model learnt Gaussian, Poisson, "
            "Poisson-Gaussian and Rician noise). poisson_gaussian: photon noise (fluorescence, "
            "low-dose X-ray/CT), made Gaussian by the generalised Anscombe transform with the "
            "gain estimated from the image, then inverted without bias. auto: that transform "
            "only when the noise is found to grow with intensity. Simulate noise > Estimate "
            "noise tells which the image has.",
        )
        self.about = Label(label="")
        self.about.native.setWordWrap(True)
        self.noise_map = CheckBox(
            text="Also add the estimated noise",
            value=False,
            visible=False,
            tooltip="A second layer with the noise the method itself estimates (noise-attention: "
            "its first stage), in the image's units, centred on zero; for RGB one layer per "
            "channel. Costs about half a run more.",
        )
        self.mode = ComboBox(
            label="Process as",
            choices=[SLICES, VOLUME],
            value=VOLUME,
            visible=False,
            tooltip="A stack: each 2D slice with a 2D model, or each 3D volume (the last three "
            "axes), with a 3D model or a 2D model along all three axes, averaged, the larger planes "
            "weighing more (the default). "
            "Single-plane and RGB stacks default to 2D slices.",
        )
        self.model, self.model_file = model_widgets(  # the method's models that fit the image
            kind=lambda: get_method(self.method.value).model_kind,
            layouts=lambda: denoise_layouts(self.image.value, self.mode.value),
        )
        self.device = ComboBox(
            label="Device",
            choices=["auto", *available_devices()],
            value=DEFAULTS["device"],
            tooltip="Where the network runs: auto picks a CUDA GPU, then Apple MPS, then the CPU.",
        )
        self.tile = SpinBox(
            label="Tile size (px, 0: auto)",
            min=0,
            max=4096,
            step=8,
            value=DEFAULTS["tile_shape"] or 0,
            tooltip="Edge of the square (cubic in 3D) tiles the image is processed in, in pixels "
            "(a multiple of 8). 0 = auto: the largest tile that fits the device's memory. "
            "Smaller tiles use less memory; the result barely changes.",
        )
        self.overlap = FloatSpinBox(
            label="Tile overlap (fraction)",
            min=0.0,
            max=0.75,
            step=0.05,
            value=DEFAULTS["overlap"],
            tooltip="How much neighbouring tiles overlap, as a fraction of the tile (0.25 = a "
            "quarter). Overlaps are cross-faded, hiding seams; more overlap costs more time.",
        )
        self.ensemble = ComboBox(
            label="Self-ensemble",
            choices=[
                ("auto: 2 passes for 2D gray, else 1", 0),
                *((f"{n} passes" if n > 1 else "1 pass", n) for n in ENSEMBLE_PASSES),
            ],
            value=0,
            tooltip="The network also denoises flipped and rotated copies of the image, turned back "
            "and averaged: slightly cleaner (8 passes: about +0.1 dB over 1), as many times slower. "
            "A volume through a 2D model already averages three slicing directions.",
        )
        self.memory = Label(label="Memory")
        self.memory.native.setWordWrap(True)  # a long model name must not widen the dock:
        # nor its width hint (without this, adaptive-cnn-2d-gray pushed the controls 16 px past
        # the dock's edge, clipped)
        self.memory.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.memory.tooltip = "Estimated device memory per tile for the model that will run (MiB or GiB)."
        self.preview_button = PushButton(
            text="Preview current slice",
            visible=False,
            tooltip="Denoise only the plane on screen (in 3D with 32 planes around it as context) "
            "into one preview layer, replaced by the next preview: seconds instead of minutes.",
        )
        super().__init__(
            [
                self.image,
                self.method,
                self.about,
                self.noise_model,
                self.noise_map,
                self.model,
                self.model_file,
                self.device,
                self.mode,
                self.tile,
                self.overlap,
                self.ensemble,
                self.memory,
                self.preview_button,
            ]
        )
        self.preview_button.changed.connect(self.preview)
        self.image.changed.connect(self._default_mode)
        for widget in (self.method, self.image, self.mode):  # each method lists its own models
            widget.changed.connect(self.model.reset_choices)  # for the image
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
        start_on_active(napari_viewer, self.image)
        self._default_mode(self.image.value)
        self._refresh()

    def job_buttons(self) -> list[PushButton]:
        return [self.run_button, self.preview_button]

    # -- state ---------------------------------------------------------------------------------
    def _default_mode(self, layer) -> None:
        if layer is not None:
            self.mode.value = default_mode([layer])

    def _refresh(self, *_: Any) -> None:
        method = get_method(self.method.value)
        self.about.value = method.description
        for widget in (self.model, self.tile, self.overlap, self.ensemble, self.memory, self.device):
            widget.visible = method.learned
        self.model_file.visible = method.learned and self.model.value == MODEL_FILE
        self.noise_map.visible = method.noise_map is not None
        layer = self.image.value
        stack = layer is not None and layer.ndim >= 3  # napari's ndim leaves out RGB
        self.mode.visible = self.preview_button.visible = stack
        self.memory.value = self._memory_text() if method.learned else ""

    def _memory_text(self) -> str:
        layer = self.image.value
        model = model_arg(self.model, self.model_file)
        if layer is None or model == "":
            return ""
        sd = layout_args(layer, self.mode.value)["spatial_dims"]
        shape = layer.data.shape[:-1] if layer.rgb else layer.data.shape
        try:
            job = plan_denoise(
                shape,
                sd,
                3 if layer.rgb else 1,
                method=self.method.value,
                model=model,
                device=self.device.value,
                tile_shape=self.tile.value or None,
                overlap=self.overlap.value,
            )
        except ValueError as exc:
            return str(exc)
        except NoModelError:  # said before Run: this method has no bundled model for such data
            kind = f"{sd}D {'RGB' if layer.rgb else 'gray'}"
            return f"no bundled {self.method.value} model for {kind} data: choose a model file"
        if layer.rgb and model is None:  # denoise's colour routes (colour_route), measured at Run
            try:
                gray = default_model_info(sd, 1, method=self.method.value).name
            except NoModelError:
                return job.describe()
            return f"{job.describe()}; {gray} where the colour channels share the noise (measured at Run)"
        return job.describe()

    # -- actions -------------------------------------------------------------------------------
    def run(self) -> None:
        """Denoise the whole layer into a new layer."""
        self._denoise(preview=False)

    def preview(self) -> None:
        """Denoise only the plane on screen (with its neighbours as context in 3D), into one
        preview layer per source and method, placed on that plane and replaced on each preview."""
        self._denoise(preview=True)

    def _denoise(self, preview: bool) -> None:
        layer = self.image.value
        if layer is None:
            self.refuse("add or choose an image layer first")
            return
        if self.busy():
            return
        method = self.method.value
        learned = get_method(method).learned
        model = model_arg(self.model, self.model_file) if learned else None
        if model == "":
            self.refuse("choose a .safetensors model file")
            return
        layout = layout_args(self.image.value, self.mode.value)
        params = {
            "method": method,
            "device": self.device.value,
            "tile_shape": (self.tile.value or None) if learned else None,
            "overlap": self.overlap.value,
            "noise_model": self.noise_model.value,
            **layout,
        }
        if learned and self.ensemble.value:
            params["ensemble"] = self.ensemble.value
        planes, keep, whole = [], (), None
        full = layer.data[0] if layer.multiscale else layer.data
        # A dask or zarr layer stays out of memory: denoised block by block into a Zarr store.
        lazy = learned and not preview and is_lazy(full)
        noise_map = get_method(method).noise_map if self.noise_map.value else None
        if lazy and noise_map is not None:
            self.refuse(f"no noise estimate for the lazy (dask or zarr) layer '{layer.name}'")
            return
        if preview:
            data, planes, keep = self._preview_region(layer, layout["spatial_dims"])
            whole = full  # for the Run's intensity range
        else:
            data = full if lazy else layer_array(layer)
        source = layer
        data, alpha = split_alpha(data, layer.rgb)  # RGBA: the colour is denoised, alpha kept
        if whole is not None:
            whole = split_alpha(whole, layer.rgb)[0]
        channels = 3 if layer.rgb else 1  # the worker sees arrays and plain values, never layers

        def job():
            return denoise_job(
                data, params, model=model, channels=channels, alpha=alpha, whole=whole, keep=keep,
                noise_map=noise_map, lazy=lazy,
            )  # fmt: skip

        def add(done: Denoised) -> None:
            result, noise, card, store, route = done
            metadata = done.metadata(params, source.name)
            name = f"{source.name} [{method}{_model_suffix(method, model, card, layout, channels)}]"
            placement = copy_placement(source)
            if preview:
                name, metadata["napari_adl_denoise"]["plane"] = f"{name} preview", planes
                placement["translate"] = _translate_to(source, planes)
                if name in self._viewer.layers:
                    self._viewer.layers.remove(name)
            added = self._viewer.add_image(result, name=name, metadata=metadata, **placement)
            if store is not None:  # the store on disk goes with its layer
                self._forget_with(store)
            if noise is not None:
                self._add_noise_map(noise, added.name, metadata, placement, replace=preview)
            how = f" ({COLOUR_ROUTES[route]})" if route else ""
            self.status.value = f"added '{added.name}'{how}"  # napari renames a clash: 'x [adl] [1]'

        what = f"plane {tuple(planes)} of '{layer.name}'" if preview else f"'{layer.name}'"
        self.start(job, f"Denoise {layer.name} ({method})", add, f"denoising {what} with {method}...")

    def _forget_with(self, store) -> None:
        """Delete a lazy result's Zarr store when its layer (the one whose metadata names it)
        leaves the viewer. Layers reach a plugin through proxies: matched by metadata, not
        identity."""
        layers = self._viewer.layers

        def removed(event) -> None:
            if (event.value.metadata.get("napari_adl_denoise") or {}).get("store") == str(store):
                layers.events.removed.disconnect(removed)
                discard_store(store)

        layers.events.removed.connect(removed)

    def _add_noise_map(
        self, noise: np.ndarray, name: str, metadata: dict, placement: dict, *, replace: bool
    ) -> None:
        """The method's noise estimate as gray layers placed like the result ``name``, centred on
        zero (RGB: one per channel); a preview's replaces the previous preview's."""
        rgb = placement["rgb"]
        names = [f"{name} noise estimate{f' {c}' if rgb else ''}" for c in ("R", "G", "B")[: 1 + 2 * rgb]]
        for old in names:
            if replace and old in self._viewer.layers:
                self._viewer.layers.remove(old)
        spread = 3 * float(noise.std()) or 1.0
        info = {"napari_adl_denoise": {**metadata["napari_adl_denoise"], "content": "noise estimate"}}
        placement = {**placement, "colormap": "gray", "contrast_limits": (-spread, spread)}
        del placement["rgb"]
        if rgb:
            self._viewer.add_image(noise, name=names, metadata=info, channel_axis=-1, **placement)
        else:
            self._viewer.add_image(noise, name=names[0], metadata=info, **placement)

    def _preview_region(self, layer, spatial_dims: int) -> tuple[np.ndarray, list[int], tuple]:
        """The data around the plane on screen: (region, plane index per leading axis, what of
        the region's result to keep). Only that region is read, even from lazy data."""
        lead = layer.ndim - 2  # axes before (Y, X); napari's ndim leaves out RGB channels
        data = layer.data[0] if layer.multiscale else layer.data
        position = layer.world_to_data(self._viewer.dims.point[-layer.ndim :])
        planes = [int(np.clip(round(position[a]), 0, data.shape[a] - 1)) for a in range(lead)]
        index = [slice(p, p + 1) for p in planes]
        keep: tuple = ()
        if spatial_dims == 3:  # a slab around the plane, so the 3D model has context in depth
            depth, k = data.shape[lead - 1], planes[-1]
            start = max(0, min(k - PREVIEW_SLAB // 2, depth - PREVIEW_SLAB))
            index[-1] = slice(start, start + PREVIEW_SLAB)
            keep = (*[slice(None)] * (lead - 1), slice(k - start, k - start + 1))
        return np.asarray(data[tuple(index)]), planes, keep


class Denoised(NamedTuple):
    """What :func:`denoise_job` made: the result (lazy: a dask array over ``store``), the noise
    estimate or None, the model's card (learned methods) and the colour route taken."""

    result: Any
    noise: np.ndarray | None
    card: dict | None
    store: Any
    route: str | None

    def metadata(self, params: dict, source: str) -> dict:
        """The result layer's metadata: the job's parameters, model, route, source and store."""
        info = {**params, "model": self.card, "source_layer": source}
        if self.route is not None:
            info["colour_route"] = self.route
        if self.store is not None:
            info["store"] = str(self.store)  # where the lazy result lives
        return {"napari_adl_denoise": info}


def denoise_job(
    data: Any,
    params: dict,
    *,
    model: Any,
    channels: int,
    alpha: np.ndarray | None = None,
    whole: Any = None,
    keep: tuple = (),
    noise_map: Any = None,
    lazy: bool = False,
):
    """Denoise a layer's ``data`` (its alpha split off) as the Denoise dock does: a generator of
    progress returning :class:`Denoised`. ``params`` are :func:`iter_denoise`'s arguments with the
    method; a learned method loads its model here for the result's card and takes ``denoise``'s
    colour routes. ``whole`` is the whole layer when ``data`` is a preview's region (its intensity
    range, noise model and plane weights are the Run's), ``keep`` what of the region's result to
    keep; ``noise_map`` the method's noise estimate, made after the result; ``lazy`` writes a
    dask or Zarr layer block by block into a scratch Zarr store."""
    method, learned = params["method"], get_method(params["method"]).learned
    spatial_dims = params["spatial_dims"]
    kwargs, card, route = dict(params), None, None
    inputs = data  # what is denoised: one channel of a gray image stored as colour

    def colour(result: np.ndarray) -> np.ndarray:  # a gray result back into the layer's channels
        return np.repeat(result[..., None], 3, axis=-1) if inputs is not data else result

    if learned:
        # the colour routes of denoise (its gray model), with the model loaded here for its card
        if channels == 3 and not lazy:
            route = colour_route(
                data if whole is None or is_lazy(whole) else whole,  # a preview: as its Run
                -1,
                method,
                model,
                spatial_dims,
                params["noise_model"],
                device=params["device"],
            )
        loaded = as_loaded_model(model, spatial_dims, 1 if route else channels, method)
        kwargs["model"], card = loaded, {"name": loaded.name, **loaded.card}
        if route == "gray":
            inputs, kwargs["channel_axis"] = data[..., 0], None
    else:
        kwargs.update(device="auto", tile_shape=None)
    if whole is not None:  # a preview: the whole layer's range, noise and weights, as a Run has
        kwargs["intensity_range"] = robust_range(whole)
        if spatial_dims == 3:  # a 2D model's directions, weighed as for the volume
            kwargs["plane_weights"] = plane_weights(whole.shape[-4:-1] if channels == 3 else whole.shape[-3:])
        kwargs["noise_model"] = resolve_noise_model(
            kwargs["noise_model"], whole, channel_axis=-1 if channels == 3 else None
        )
    if lazy:
        import dask.array

        store = yield from iter_write(data, scratch_store(), **kwargs)
        return Denoised(join_alpha(dask.array.from_zarr(str(store)), alpha), None, card, store, None)
    if route == "opponent":
        result = yield from iter_opponent(inputs, **kwargs)
        return Denoised(join_alpha(result, alpha)[keep], None, card, None, route)
    if noise_map is None:
        result = colour((yield from iter_denoise(inputs, **kwargs)))
        return Denoised(join_alpha(result, alpha)[keep], None, card, None, route)
    # the estimate costs about half a run: two thirds of the bar, then one third
    result = colour((yield from _scaled(iter_denoise(inputs, **kwargs), 0.0, 2 / 3)))
    del kwargs["method"]
    noise = colour((yield from _scaled(noise_map(inputs, **kwargs), 2 / 3, 1 / 3)))
    return Denoised(join_alpha(result, alpha)[keep], noise[keep], card, None, route)


@dataclass(frozen=True)
class _Progress:
    fraction: float


def _scaled(steps, start: float, share: float):
    """Run a job's generator (returning its value), its progress mapped to
    ``start + share * fraction``; closing this closes it (Cancel)."""
    try:
        while True:
            yield _Progress(start + share * next(steps).fraction)
    except StopIteration as stop:
        return stop.value
    finally:
        steps.close()


def _model_suffix(method: str, model: str | None, card: dict | None, layout: dict, channels: int) -> str:
    """' <model>' for a result name, when the model is not the method's bundled one for the data."""
    if card is None or model is None:
        return ""
    try:
        default = default_model_info(layout["spatial_dims"], channels, method=method).name
    except NoModelError:
        default = None
    return "" if card["name"] == default else f" {card['name']}"


def _translate_to(layer, planes: list[int]) -> np.ndarray:
    """The translate that puts a layer placed like ``layer`` at data index ``planes`` (leading axes)."""
    offset = np.zeros(layer.ndim)
    offset[: len(planes)] = planes
    world = np.asarray(layer.data_to_world(offset)) - np.asarray(layer.data_to_world(np.zeros(layer.ndim)))
    return np.asarray(layer.translate) + np.linalg.solve(layer.affine.linear_matrix, world)
