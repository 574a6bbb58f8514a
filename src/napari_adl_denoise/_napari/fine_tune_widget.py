"""The Fine-tune dock widget: a thin shell over :func:`napari_adl_denoise.training.fine_tune`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, Label, Select, SpinBox
from napari.utils.notifications import show_info, show_warning

from .._device import available_devices
from ..noise import SIGMA_KINDS
from ..training import NoiseSpec, fine_tune
from ..training.fine_tune import output_path
from ..weights import user_models_dir
from ._jobs import JobDock
from ._layers import (
    MODEL_FILE,
    MODELS,
    SLICES,
    VOLUME,
    default_mode,
    image_choices,
    keep_fresh,
    layer_array,
    layout_args,
    model_arg,
    model_widgets,
)

AS_TRAINED = "as the model was trained"
NOISES = [AS_TRAINED, *SIGMA_KINDS]
LEARNING_RATES = ["1e-4", "3e-5", "1e-5", "3e-4"]


class FineTuneWidget(JobDock):
    """Adapt a model to clean images of your own modality; the result is a model file for Denoise."""

    title = "Fine-tune"
    cancelled = "cancelled: nothing saved"

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        self._scores: dict[str, float] = {}
        self.about = Label(
            value="Clean, high-quality images of your modality: noise is simulated on them, and a "
            "fifth of each is held out to choose the best weights."
        )
        self.images = Select(
            label="Clean images",
            choices=lambda _: image_choices(napari_viewer),
            tooltip="One or more clean (high signal-to-noise) image layers of your modality, all 2D "
            "gray, all RGB or all 3D (Ctrl/Cmd-click to choose several).",
        )
        self.mode = ComboBox(
            label="Process as",
            choices=[SLICES, VOLUME],
            value=VOLUME,
            tooltip="Stacks: train a 2D model on their slices or a 3D model on their volumes.",
        )
        self.model, self.model_file = model_widgets("Start from")
        self.model.tooltip = (
            "The model to adapt: its weights are the starting point, its kind (2D/3D, gray/RGB) is kept."
        )
        self.noise = ComboBox(
            label="Noise",
            choices=NOISES,
            value=AS_TRAINED,
            tooltip="The noise simulated on the clean images: by default the noise the starting "
            "model was trained on; or one kind with sigma drawn from 0 to Max sigma.",
        )
        self.sigma_max = FloatSpinBox(
            label="Max sigma (0-255)",
            min=1,
            max=255,
            step=5,
            value=55,
            tooltip="The strongest noise to train on, on the 0-255 scale of each image's range "
            "(25 = about 10% of the range). Each patch gets a sigma between 0 and this.",
        )
        self.steps = SpinBox(
            label="Steps",
            min=1,
            max=1_000_000,
            step=100,
            value=500,
            tooltip="Training steps (one batch of patches each). 500 steps take minutes on a CPU; "
            "the best weights on the held-out fifth are kept.",
        )
        self.lr = ComboBox(
            label="Learning rate",
            choices=LEARNING_RATES,
            value="1e-4",
            tooltip="The Adam step size (per step). 1e-4 adapts without forgetting; 3e-4 is "
            "faster and riskier, 1e-5 gentler.",
        )
        self.device = ComboBox(
            label="Device",
            choices=["auto", *available_devices()],
            value="auto",
            tooltip="Where training runs: auto picks a CUDA GPU, then Apple MPS, then the CPU.",
        )
        self.output = FileEdit(
            label="Save as",
            mode="w",
            filter="*.safetensors",
            value=_free_name(),
            tooltip="The .safetensors file to write. In your models folder (the default) it is "
            "listed by name in every dock's model list.",
        )
        self.about.native.setWordWrap(True)
        self.images.native.setMaximumHeight(120)
        super().__init__(
            [
                self.about,
                self.images,
                self.mode,
                self.model,
                self.model_file,
                self.noise,
                self.sigma_max,
                self.steps,
                self.lr,
                self.device,
                self.output,
            ],
            run_text="Fine-tune",
        )
        self.images.changed.connect(self._default_mode)
        for widget in (self.images, self.model, self.noise):
            widget.changed.connect(self._refresh)
        keep_fresh(napari_viewer, self)
        self._refresh()

    def _default_mode(self, layers) -> None:
        self.mode.value = default_mode(layers)

    def _refresh(self, *_: Any) -> None:
        self.mode.visible = any(layer.ndim >= 3 for layer in self.images.value)  # napari's ndim omits RGB
        self.model_file.visible = self.model.value == MODEL_FILE
        self.sigma_max.visible = self.noise.value != AS_TRAINED

    def _noise(self) -> list[NoiseSpec] | None:
        if self.noise.value == AS_TRAINED:
            return None
        return [NoiseSpec(kind=self.noise.value, sigma=(0.0, self.sigma_max.value))]

    def run(self) -> None:
        layers = list(self.images.value)
        if not layers:
            show_warning("Fine-tune: choose one or more clean image layers first")
            return
        if self.busy():
            return
        model = model_arg(self.model, self.model_file)
        if model == "":
            show_warning("Fine-tune: choose a .safetensors model file to start from")
            return
        output = Path(self.output.value)
        if output.suffix != ".safetensors":
            show_warning("Fine-tune: choose where to save the model (a .safetensors file)")
            return
        yours = output.parent.resolve() == user_models_dir().resolve()
        target = output.stem if yours else output  # by name: fine_tune makes the folder
        try:
            output_path(target)
        except ValueError as exc:
            show_warning(f"Fine-tune: {exc}")
            return
        layouts = {tuple(layout_args(layer, self.mode.value).items()) for layer in layers}
        if len(layouts) > 1:
            show_warning("Fine-tune: the chosen layers mix gray and RGB or 2D and 3D; choose one kind")
            return
        arrays = [layer_array(layer) for layer in layers]  # the worker sees arrays, never layers
        kwargs = {
            **dict(layouts.pop()),
            "model": model,
            "noise": self._noise(),
            "steps": self.steps.value,
            "lr": float(self.lr.value),
            "device": self.device.value,
        }
        self._scores = {}

        def done(path: Path) -> None:
            if yours:
                MODELS.changed.emit()
            if self._closed:
                return
            where = f"Denoise lists it as {path.stem}" if yours else "choose it in Denoise > Model file"
            self.status.value = f"saved {path.name}: {self._summary()}; {where}"
            if yours:  # the next run does not overwrite this one by default
                self.output.value = _free_name()
            show_info(f"Fine-tune: saved {path}")

        status = f"fine-tuning on {len(arrays)} image(s)..."
        self.start(
            lambda: fine_tune(arrays, target, **kwargs),
            "Fine-tune",
            done,
            status,
            unit="step",
            on_progress=self._progress,
        )

    def _progress(self, record) -> None:
        if self._closed or not record.validation:
            return
        psnr = record.validation["psnr"]
        if record.step == 0:
            self._scores = {"start": psnr, "noisy": record.validation["noisy_psnr"]}
        self._scores["best"] = max(psnr, self._scores.get("best", psnr))
        self.status.value = f"step {record.step}/{record.total}: {self._summary()}"

    def _summary(self) -> str:
        s = self._scores
        start = f" (start {s['start']:.2f}, noisy {s['noisy']:.2f})" if "start" in s else ""
        return f"best validation PSNR {s.get('best', float('nan')):.2f} dB{start}"


def _free_name() -> Path:
    """A file in the user's models folder that no model has yet: my-model, my-model-2, ..."""
    folder = user_models_dir()
    names = (f"my-model-{i}" if i > 1 else "my-model" for i in range(1, 10_000))
    return next(folder / f"{n}.safetensors" for n in names if not (folder / f"{n}.safetensors").exists())
