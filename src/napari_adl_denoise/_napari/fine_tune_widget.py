"""The Fine-tune dock widget: a thin shell over :func:`napari_adl_denoise.training.fine_tune`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, Select, SpinBox
from napari.utils.notifications import show_info, show_warning

from .._device import available_devices
from ..training import NoiseSpec, fine_tune
from ._jobs import start_job
from ._layers import (
    MODEL_FILE,
    SLICES,
    VOLUME,
    follow_renames,
    image_choices,
    layer_array,
    layout_args,
    model_arg,
    model_widgets,
    on_close,
)

AS_TRAINED = "as the model was trained"
NOISES = [AS_TRAINED, "gaussian", "rician", "rayleigh", "speckle"]
LEARNING_RATES = ["1e-4", "3e-5", "1e-5", "3e-4"]


class FineTuneWidget(Container):
    """Adapt a model to clean images of your own modality; the result is a model file for Denoise."""

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        self._worker = None
        self._closed = False
        self._scores: dict[str, float] = {}
        self.about = Label(
            value="Clean, high-quality images of your modality: noise is simulated on them, and a "
            "fifth of each is held out to choose the best weights."
        )
        self.images = Select(label="Clean images", choices=lambda _: image_choices(napari_viewer))
        self.mode = ComboBox(label="Process as", choices=[SLICES, VOLUME], value=VOLUME)
        self.model, self.model_file = model_widgets("Start from")
        self.noise = ComboBox(label="Noise", choices=NOISES, value=AS_TRAINED)
        self.sigma_max = FloatSpinBox(label="Max sigma (0-255)", min=1, max=255, step=5, value=55)
        self.steps = SpinBox(label="Steps", min=1, max=1_000_000, step=100, value=500)
        self.lr = ComboBox(label="Learning rate", choices=LEARNING_RATES, value="1e-4")
        self.device = ComboBox(label="Device", choices=["auto", *available_devices()], value="auto")
        self.output = FileEdit(label="Save as", mode="w", filter="*.safetensors")
        self.run_button = PushButton(text="Fine-tune")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(label="")
        for label in (self.about, self.status):
            label.native.setWordWrap(True)  # long messages wrap instead of widening the dock
        self.images.native.setMaximumHeight(120)
        super().__init__(
            widgets=[
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
                self.run_button,
                self.cancel_button,
                self.status,
            ]
        )
        for widget in (self.images, self.model, self.noise):
            widget.changed.connect(self._refresh)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        follow_renames(napari_viewer, self)
        on_close(self, self._close)
        self._refresh()

    def _refresh(self, *_: Any) -> None:
        self.mode.visible = any(layer.ndim - int(layer.rgb) >= 3 for layer in self.images.value)
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
        if self._worker is not None:
            show_info("Fine-tune: a job is already running; cancel it first")
            return
        model = model_arg(self.model, self.model_file)
        if model == "":
            show_warning("Fine-tune: choose a .safetensors model file to start from")
            return
        output = Path(self.output.value)
        if output.suffix != ".safetensors":
            show_warning("Fine-tune: choose where to save the model (a .safetensors file)")
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
            if self._closed:
                return
            self.status.value = f"saved {path.name}: {self._summary()}; choose it in Denoise > Model file"
            show_info(f"Fine-tune: saved {path}")

        self.status.value = f"fine-tuning on {len(arrays)} image(s)..."
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self._worker = start_job(
            lambda: fine_tune(arrays, output, **kwargs), "Fine-tune", done, self._finished
        )
        self._worker.yielded.connect(self._progress)

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

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()
            self.status.value = "cancelled: nothing saved"

    def _close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.quit()

    def _finished(self) -> None:
        self._worker = None
        if not self._closed:
            self.run_button.enabled, self.cancel_button.enabled = True, False
