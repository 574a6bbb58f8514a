"""The Fine-tune dock widget: a thin shell over :func:`napari_adl_denoise.training.fine_tune`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QMessageBox, QSizePolicy

from .._device import available_devices
from ..noise import SIGMA_KINDS
from ..training import NoiseSpec, fine_tune
from ..training.engine import STOP
from ..training.fine_tune import MODES, PRESETS, estimate_seconds, output_path, resumable
from ..weights import delete_model, export_model, list_models, rename_model, user_models_dir
from ._curve import TrainingCurve
from ._jobs import JobDock
from ._layers import (
    MODEL_FILE,
    MODELS,
    SLICES,
    VOLUME,
    data_layouts,
    default_mode,
    image_choices,
    keep_fresh,
    layer_array,
    layout_args,
    made_from,
    model_arg,
    model_label,
    model_widgets,
    narrow,
)

AS_TRAINED = "as the model was trained"
NOISES = [AS_TRAINED, *SIGMA_KINDS]
LEARNING_RATES = ["1e-4", "3e-5", "1e-5", "3e-4"]
FROM_PRESET = "the preset's"
DATA = {
    "clean": "clean: clean images, noise simulated",
    "pairs": "pairs: noisy + clean images",
    "noisy": "noisy: noisy images only",
}
ABOUT = {
    "clean": "Clean, high-quality images of your modality: noise is simulated on them, and a fifth "
    "of each is held out to choose the best weights.",
    "pairs": "Noisy images and their registered clean references (low/high dose, short/long "
    "exposure, single/averaged frames): a fifth of each pair is held out to choose the best weights.",
    "noisy": "Noisy images alone: the model learns from the noise itself (Neighbor2Neighbor). It "
    "removes noise independent from pixel to pixel (Gaussian, Poisson); noise correlated between "
    "pixels stays: stripes, structured or filtered noise, JPEG artefacts.",
}
SCORE_LABELS = {
    "clean": "validation PSNR (dB)\nheld-out clean data",
    "pairs": "validation PSNR (dB)\nheld-out clean data",
    "noisy": "neighbour score (dB)\nno clean data needed",
}
ESTIMATE_DELAY_MS = 400
"""Choices made within this long of each other are estimated once, for the last of them."""


class FineTuneWidget(JobDock):
    """Adapt a model to images of your own modality (clean, paired or noisy only); the result is
    a model for Denoise. Also renames, deletes and exports your models."""

    title = "Fine-tune"
    cancelled = "cancelled: nothing saved"

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        self._scores: dict[str, float] = {}
        self._stopping = False
        self._estimates: dict[tuple, float | str] = {}  # the same choices take as long again
        self._estimating = None  # the estimate worker in flight
        self._estimate_stale = False  # a run started while it timed
        self._estimate_again = False  # choices changed while it ran
        self._mode, self._cap, self._elapsed = "clean", 0.0, 0.0  # of the last run
        self.about = Label(value=ABOUT["clean"])
        self.data = ComboBox(
            label="Data",
            choices=[(DATA[mode], mode) for mode in MODES],
            value="clean",
            tooltip="What you have. clean: clean (high signal-to-noise) images; noise is simulated on "
            "them. pairs: noisy images and their clean references. noisy: noisy images only, learnt "
            "self-supervised (Neighbor2Neighbor); it cannot remove noise correlated between pixels.",
        )
        self.images = Select(
            label="Clean images",
            choices=lambda _: image_choices(
                napari_viewer, lambda layer: self.data.value != "clean" or made_from(layer, "noisy") is None
            ),
            tooltip="One or more image layers of your modality, all 2D gray, all RGB or all 3D "
            "(Ctrl/Cmd-click to choose several). Clean images: layers that Simulate noise or a "
            "sample made noisy are not listed.",
        )
        self.targets = Select(
            label="Clean targets",
            choices=lambda _: image_choices(napari_viewer, lambda layer: made_from(layer, "noisy") is None),
            visible=False,
            tooltip="The clean reference of each noisy image, of the same shape. Images and targets "
            "are paired in layer-list order: the first chosen image (from the top) with the first "
            "chosen target, and so on.",
        )
        self.mode = ComboBox(
            label="Process as",
            choices=[SLICES, VOLUME],
            value=VOLUME,
            tooltip="Stacks: train a 2D model on their slices or a 3D model on their volumes.",
        )
        self.model, self.model_file = model_widgets(
            "Start from", layouts=lambda: data_layouts(self._chosen(self.images), self.mode.value)
        )
        self.model.tooltip = (
            "The model to adapt: its weights are the starting point, its kind (2D/3D, gray/RGB) is "
            "kept. Only models for exactly the chosen data (2D or 3D, gray or RGB) are listed."
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
        gpus = [d for d in available_devices() if d != "cpu"]
        self.preset = ComboBox(
            label="Preset",
            choices=["cpu", "gpu"] if gpus else ["cpu"],
            value="gpu" if gpus else "cpu",
            tooltip="How much it trains, and how long at most (the best weights so far are kept "
            f"then). {_describe('cpu')}. {_describe('gpu')}, on a CUDA or Apple GPU (offered when "
            "there is one).",
        )
        self.steps = SpinBox(
            label="Steps (0: preset's)",
            min=0,
            max=1_000_000,
            step=100,
            value=0,
            tooltip="Training steps (one batch of patches each); 0 = the preset's, with its time cap. "
            "Steps of your own run to their end (Stop and save ends them sooner); the best "
            "weights on the held-out fifth are kept.",
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
            choices=[FROM_PRESET, *available_devices()],
            value=FROM_PRESET,
            tooltip="Where training runs: the preset's (cpu: the CPU; gpu: a CUDA GPU, else Apple "
            "MPS), or a device of your choice.",
        )
        self.output = FileEdit(
            label="Save as",
            mode="w",
            filter="*.safetensors",
            value=_free_name(),
            tooltip="The .safetensors file to write. In your models folder (the default) it is "
            "listed by name in every dock's model list.",
        )
        self.resume = CheckBox(
            text="Resume the interrupted run",
            value=False,
            visible=False,
            tooltip="A run saving to this file was interrupted (napari closed or crashed, the run "
            "failed) and kept its state: tick to continue it from its last validation, with the "
            "same layers and choices; unticked, a run starts afresh and discards that state.",
        )
        self.estimate = Label(label="Estimated time")
        self.estimate.tooltip = (
            "How long the run will train on this machine: two training steps timed on the chosen "
            "model and preset, times the steps, capped by the preset's time limit."
        )
        self.stop_button = PushButton(
            text="Stop and save",
            enabled=False,
            tooltip="Stop at the next step and save the best weights so far (Cancel saves nothing).",
        )
        self.progress = ProgressBar(label="Progress", min=0, max=1, value=0, visible=False)
        self.progress.tooltip = "Training steps done, of the run's steps."
        self.progress.native.setFormat("%v / %m steps")
        self.eta = Label(label="Time", visible=False)
        self.eta.tooltip = "Time left (from the steps' pace so far, or the time cap) and time spent."
        self.curve = TrainingCurve()
        self.curve.canvas.setVisible(False)
        self.curve.canvas.setToolTip(
            "Grey: the training loss of each step. Blue: the validation score on the held-out data, "
            "which picks the weights saved. Red dashes: the starting model's score."
        )
        self.models_header = Label(value="<b>Your models</b>")
        self.models_header.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom)
        self.models_header.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.models_header.native.setMinimumHeight(28)  # a gap above the section
        self.your_model = ComboBox(
            label="Your model",
            choices=lambda _: [(model_label(m), m.name) for m in list_models() if not m.bundled],
            tooltip=f"The models you have saved (in {user_models_dir()}), with the data each denoises.",
        )
        self.new_name = LineEdit(label="New name", tooltip="A plain name, without folder or suffix.")
        self.rename_button = PushButton(text="Rename", tooltip="Give the chosen model of yours the new name.")
        self.export_path = FileEdit(
            label="Export to",
            mode="w",
            filter="*.safetensors",
            tooltip="A .safetensors file anywhere (the suffix is added when missing): it carries the "
            "model's config and card, so it loads anywhere as a model file.",
        )
        self.export_button = PushButton(text="Export", tooltip="Copy the chosen model of yours to that file.")
        self.delete_button = PushButton(
            text="Delete...", tooltip="Delete the chosen model of yours, after asking (bundled models stay)."
        )
        for label in (self.about, self.estimate, self.eta):
            label.native.setWordWrap(True)
            # a long text must not widen the dock through its width hint
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        narrow(self.your_model)
        self.images.native.setMaximumHeight(80)
        self.targets.native.setMaximumHeight(80)
        super().__init__(
            [
                self.about,
                self.data,
                self.images,
                self.targets,
                self.mode,
                self.model,
                self.model_file,
                self.noise,
                self.sigma_max,
                self.preset,
                self.steps,
                self.lr,
                self.device,
                self.output,
                self.resume,
                self.estimate,
            ],
            run_text="Fine-tune",
        )
        # the status names the saved file and scores: it must wrap, not widen the dock
        self.status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.cancel_button.tooltip = "Stop at the next step; nothing is saved (Stop and save keeps the best)."
        self.insert(self.index(self.cancel_button), self.stop_button)
        at = self.index(self.status)
        for widget in (self.progress, self.eta):
            self.insert(at, widget)
            at += 1
        rename = Container(widgets=[self.new_name, self.rename_button], layout="horizontal", labels=False)
        rename.margins = (0, 0, 0, 0)
        rename.label = "Rename to"
        rename.tooltip = self.new_name.tooltip
        self.extend(
            [
                self.models_header,
                self.your_model,
                rename,
                self.export_path,
                self.export_button,
                self.delete_button,
            ]
        )
        # the curve spans the dock, without the label column: a plain Qt widget under the time
        # left, placed last (magicgui inserts by layout index, which it would shift)
        layout = self.body.layout()
        layout.insertWidget(layout.indexOf(self.eta.native.parentWidget()) + 1, self.curve.canvas)
        self._estimate_timer = QTimer()
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(ESTIMATE_DELAY_MS)
        self._estimate_timer.timeout.connect(self._estimate)
        self.stop_button.changed.connect(self.stop)
        self.rename_button.changed.connect(self.rename)
        self.export_button.changed.connect(self.export)
        self.delete_button.changed.connect(self.delete)
        self.images.changed.connect(self._default_mode)
        self.data.changed.connect(self.images.reset_choices)  # clean data lists no known noisy layer
        for widget in (self.images, self.mode):  # only models for the chosen data are listed
            widget.changed.connect(self.model.reset_choices)
        for widget in (self.data, self.images, self.targets, self.mode, self.model, self.noise, self.output):
            widget.changed.connect(self._refresh)
        for widget in (
            self.data,
            self.images,
            self.mode,
            self.model,
            self.model_file,
            self.preset,
            self.steps,
            self.device,
        ):
            widget.changed.connect(self._estimate_later)
        keep_fresh(napari_viewer, self)
        self._refresh()
        self._estimate()

    # -- state ---------------------------------------------------------------------------------
    def _default_mode(self, layers) -> None:
        self.mode.value = default_mode(layers)

    def _chosen(self, select: Select) -> list:
        """The layers chosen in ``select``, in layer-list order (Qt gives them in click order)."""
        layers = [layer for layer in select.value if layer in self._viewer.layers]
        return sorted(layers, key=self._viewer.layers.index)

    def _refresh(self, *_: Any) -> None:
        data = self.data.value
        pairs = data == "pairs"
        layers = self._chosen(self.images) + (self._chosen(self.targets) if pairs else [])
        self.mode.visible = any(layer.ndim >= 3 for layer in layers)  # napari's ndim omits RGB
        self.model_file.visible = self.model.value == MODEL_FILE
        self.about.value = ABOUT[data]
        self.images.label = "Clean images" if data == "clean" else "Noisy images"
        self.targets.visible = pairs
        self.noise.visible = data == "clean"
        self.sigma_max.visible = data == "clean" and self.noise.value != AS_TRAINED
        self.resume.visible = self._resumable()

    def _target(self) -> str | Path:
        """``fine_tune``'s output for the Save as file: by name in your models folder."""
        output = Path(self.output.value)
        yours = output.parent.resolve() == user_models_dir().resolve()
        return output.stem if yours and output.suffix == ".safetensors" else output

    def _resumable(self) -> bool:
        return (
            self._worker is None
            and Path(self.output.value).suffix == ".safetensors"
            and resumable(self._target())
        )

    def _noise(self) -> list[NoiseSpec] | None:
        if self.data.value != "clean" or self.noise.value == AS_TRAINED:
            return None
        return [NoiseSpec(kind=self.noise.value, sigma=(0.0, self.sigma_max.value))]

    # -- the time estimate ---------------------------------------------------------------------
    def _estimate_later(self, *_: Any) -> None:
        if not self._closed:
            self._estimate_timer.start()

    def _estimate_request(self) -> dict[str, Any] | str:
        """``estimate_seconds``'s arguments for the choices made, or why there are none."""
        layers = self._chosen(self.images)
        if not layers:
            return "choose images to estimate"
        layouts = data_layouts(layers, self.mode.value)
        if layouts is None:
            return "the chosen layers mix kinds of data"
        ((spatial_dims, channels),) = layouts
        model = model_arg(self.model, self.model_file)
        if model == "":
            return "choose a model file to estimate"
        return {
            "model": model,
            "spatial_dims": spatial_dims,
            "channels": channels,
            "mode": self.data.value,
            "preset": self.preset.value,
            "steps": self.steps.value or None,
            "device": None if self.device.value == FROM_PRESET else self.device.value,
        }

    def _estimate(self) -> None:
        """Time the chosen run in a worker (never on the GUI thread), one estimate at a time."""
        if self._closed:
            return
        request = self._estimate_request()
        if isinstance(request, str):
            self.estimate.value = request
            return
        key = _key(request)
        if key in self._estimates:
            self.estimate.value = self._estimate_text(request, self._estimates[key])
            return
        if self._worker is not None:  # timing steps beside a run would slow it and time wrong
            self.estimate.value = "estimated when this run ends"
            return
        if self._estimating is not None:
            self._estimate_again = True
            return
        self.estimate.value = "estimating..."
        worker = create_worker(_timed, request, _start_thread=False, _ignore_errors=True)

        def estimated(seconds: float | str) -> None:
            if self._estimate_stale:  # a run started meanwhile and shared the CPU: not kept
                self._estimate_stale = False
                self._estimate_again = True
                return
            if not isinstance(seconds, str):
                self._estimates[key] = seconds
            if not self._closed and _key(self._estimate_request()) == key:  # still the choices made
                self.estimate.value = self._estimate_text(request, seconds)

        def finished() -> None:
            self._estimating = None
            if self._estimate_again:
                self._estimate_again = False
                self._estimate()

        worker.returned.connect(estimated)
        worker.finished.connect(finished)
        self._estimating = worker
        worker.start()

    @staticmethod
    def _estimate_text(request: dict[str, Any], seconds: float | str) -> str:
        if isinstance(seconds, str):
            return f"cannot estimate: {seconds}"
        preset, sd = PRESETS[request["preset"]], request["spatial_dims"]
        steps = request["steps"] or preset.steps[sd]
        cap = math.inf if request["steps"] else 60 * preset.minutes[sd]
        if seconds >= cap - 1:
            return f"about {_duration(cap)}: the time cap stops it before {steps} steps"
        return f"about {_duration(seconds)} for {steps} steps"

    # -- actions -------------------------------------------------------------------------------
    def run(self) -> None:
        """Fine-tune the chosen model on the chosen layers, in the background."""
        data = self.data.value
        layers = self._chosen(self.images)
        if not layers:
            what = "clean" if data == "clean" else "noisy"
            self.refuse(f"choose one or more {what} image layers first")
            return
        targets = self._chosen(self.targets) if data == "pairs" else []
        if data == "pairs" and (problem := _pairs_problem(layers, targets)):
            self.refuse(problem)
            return
        if self.busy():
            return
        model = model_arg(self.model, self.model_file)
        if model == "":
            self.refuse("choose a .safetensors model file to start from")
            return
        output = Path(self.output.value)
        if output.suffix != ".safetensors":
            self.refuse("choose where to save the model (a .safetensors file)")
            return
        target = self._target()  # by name in your models folder: fine_tune makes the folder
        yours = isinstance(target, str)
        try:
            output_path(target)
        except ValueError as exc:
            self.refuse(str(exc))
            return
        layouts = {tuple(layout_args(layer, self.mode.value).items()) for layer in layers + targets}
        if len(layouts) > 1:
            self.refuse("the chosen layers mix gray and RGB or 2D and 3D; choose one kind")
            return
        layout = dict(layouts.pop())
        arrays = [layer_array(layer) for layer in layers]  # the worker sees arrays, never layers
        references = [layer_array(layer) for layer in targets] or None
        preset = PRESETS[self.preset.value]
        spatial_dims = layout["spatial_dims"]
        kwargs = {
            **layout,
            "mode": data,
            "targets": references,
            "model": model,
            "noise": self._noise(),
            "preset": preset.name,
            "steps": self.steps.value or None,
            "lr": float(self.lr.value),
            "device": None if self.device.value == FROM_PRESET else self.device.value,
            "resume": self.resume.value and resumable(target),
        }
        self._scores = {}
        self._stopping = False
        self._mode = data
        self._cap = math.inf if self.steps.value else 60 * preset.minutes[spatial_dims]
        total = self.steps.value or preset.steps[spatial_dims]
        self.curve.reset(SCORE_LABELS[data], total)
        self.progress.max, self.progress.value = total, 0
        self.eta.value = (
            "resuming: loading the interrupted run..."
            if kwargs["resume"]
            else "starting: scoring the starting model..."
        )
        self.progress.visible = self.eta.visible = True
        self.curve.canvas.setVisible(True)
        self.fit_width()

        def done(path: Path) -> None:
            if yours:
                MODELS.changed.emit()
            if self._closed:
                return
            where = f"Denoise lists it as {path.stem}" if yours else "choose it in Denoise > Model file"
            stopped = f"stopped at step {self.progress.value}: " if self._stopping else ""
            s = self._scores
            same = "start" in s and s.get("best", s["start"]) <= s["start"]
            unchanged = (
                ". No step beat the starting model, so these are its weights: try more steps or images"
                if same
                else ""
            )
            self.status.value = f"{stopped}saved {path.name}: {self._summary()}; {where}{unchanged}"
            self.eta.value = f"done in {_duration(self._elapsed)}"
            if yours:  # the next run does not overwrite this one by default
                self.output.value = _free_name()
            show_info(f"Fine-tune: saved {path}")

        self._elapsed = 0.0
        status = f"fine-tuning on {len(arrays)} {'pair' if data == 'pairs' else 'image'}(s)..."
        self._estimate_stale = self._estimating is not None  # its timing would share the CPU
        self.start(
            lambda: fine_tune(arrays, target, **kwargs),
            "Fine-tune",
            done,
            status,
            unit="step",
            on_progress=self._progress,
        )
        self.resume.visible = self.resume.value = False  # a later interrupted run is asked afresh

    def stop(self) -> None:
        """Stop the run at its next step and save the best weights so far."""
        if self._worker is not None and not self._stopping:
            self._stopping = True
            self._worker.send(STOP)
            self.stop_button.enabled = False
            self.status.value = "stopping: saving the best weights so far..."

    def _progress(self, record) -> None:
        if self._closed:
            return
        # from the first record on: a value sent before the generator's first step would fail it
        self.stop_button.enabled = self._worker is not None and not self._stopping
        self.curve.add(record)
        self._elapsed = record.elapsed
        self.progress.max, self.progress.value = record.total, record.step
        if record.step > 0:
            paced = record.elapsed / record.step * (record.total - record.step)
            left = max(min(paced, self._cap - record.elapsed), 0)
            capped = " (the time cap)" if left < paced else ""
            self.eta.value = f"about {_duration(left)} left{capped}; {_duration(record.elapsed)} so far"
        if not record.validation:
            return
        score = record.validation["score"]
        if record.step == 0:
            self._scores = {"start": score, "noisy": record.validation["noisy_score"]}
        self._scores["best"] = max(score, self._scores.get("best", score))
        if not self._stopping:
            self.status.value = f"step {record.step}/{record.total}: {self._summary()}"

    def _summary(self) -> str:
        s = self._scores
        start = f" (start {s['start']:.2f}, noisy {s['noisy']:.2f})" if "start" in s else ""
        what = "neighbour score" if self._mode == "noisy" else "validation PSNR"
        return f"best {what} {s.get('best', float('nan')):.2f} dB{start}"

    def rename(self) -> None:
        """Rename the chosen model of yours to the new name; every dock lists it so."""
        name, new = self.your_model.value, self.new_name.value.strip()
        if name is None:
            show_warning("Rename: you have no models yet (Fine-tune saves them)")
            return
        try:
            rename_model(name, new)
        except ValueError as exc:
            show_warning(f"Rename: {exc}")
            return
        MODELS.changed.emit()
        self.your_model.value = new
        self.new_name.value = ""
        show_info(f"Renamed your model {name} to {new}")

    def delete(self) -> None:
        """Delete the chosen model of yours, after asking."""
        name = self.your_model.value
        if name is None:
            show_warning("Delete: you have no models yet (Fine-tune saves them)")
            return
        answer = QMessageBox.question(
            self.native,
            "Delete model",
            f"Delete your model {name!r}? Its file is removed from {user_models_dir()}.",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            delete_model(name)
        except ValueError as exc:
            show_warning(f"Delete: {exc}")
            return
        MODELS.changed.emit()
        show_info(f"Deleted your model {name}")

    def export(self) -> None:
        """Copy the chosen model of yours to the export file."""
        name, path = self.your_model.value, Path(self.export_path.value)
        if name is None:
            show_warning("Export: you have no models yet (Fine-tune saves them)")
            return
        if path.name in ("", "."):
            show_warning("Export: choose a file to export to")
            return
        if not path.suffix:
            path = path.with_suffix(".safetensors")
        try:
            export_model(name, path)
        except ValueError as exc:
            show_warning(f"Export: {exc}")
            return
        show_info(f"Exported {name} to {path}")

    def _finished(self) -> None:
        super()._finished()
        if not self._closed:
            self.stop_button.enabled = False
            self.resume.visible = self._resumable()  # a failed run keeps its state
            self._estimate_later()  # choices made during the run

    def _close(self) -> None:
        super()._close()
        self._estimate_timer.stop()


def _timed(request: dict[str, Any]) -> float | str:
    """:func:`estimate_seconds` for the estimate worker: seconds, or why it cannot say."""
    try:
        return estimate_seconds(**request)
    except (ValueError, RuntimeError) as exc:  # a RuntimeError would silence the worker
        return str(exc).splitlines()[0]


def _key(request: dict[str, Any] | str) -> tuple:
    return tuple(request.items()) if isinstance(request, dict) else (request,)


def _pairs_problem(images: list, targets: list) -> str:
    """Why the chosen images and targets do not pair (one line), or ""."""
    if not targets:
        return "choose the clean target of each noisy image (Clean targets)"
    if len(targets) != len(images):
        return (
            f"{len(images)} noisy images but {len(targets)} clean targets: choose one target per "
            "image (paired in layer-list order)"
        )
    for image, target in zip(images, targets, strict=True):
        a, b = ("x".join(map(str, _shape(layer))) for layer in (image, target))
        if a != b:
            return f"'{image.name}' ({a}) and its target '{target.name}' ({b}) differ in shape"
    return ""


def _shape(layer) -> tuple[int, ...]:
    return tuple((layer.data[0] if layer.multiscale else layer.data).shape)


def _describe(name: str) -> str:
    preset = PRESETS[name]
    return (
        f"{name}: {preset.steps[2]} steps in 2D ({preset.steps[3]} in 3D), stopped after "
        f"{preset.minutes[2]:g} min ({preset.minutes[3]:g} in 3D)"
    )


def _duration(seconds: float) -> str:
    """'40 s', '2 min 10 s', '1 h 05 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _free_name() -> Path:
    """A file in the user's models folder that no model has yet: my-model, my-model-2, ..."""
    folder = user_models_dir()
    names = (f"my-model-{i}" if i > 1 else "my-model" for i in range(1, 10_000))
    return next(folder / f"{n}.safetensors" for n in names if not (folder / f"{n}.safetensors").exists())
