"""The Compare dock widget: histograms, a live line profile and a metrics table.

Thin shell over :mod:`napari_adl_denoise.metrics`; plots are matplotlib figures embedded in Qt.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Label, PushButton, Select
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image, Shapes
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QSizePolicy, QTableWidget, QTableWidgetItem

from .. import metrics
from .._files import atomic_path
from ._dock import Dock
from ._jobs import copy_placement, start_job
from ._layers import (
    SLICES,
    VOLUME,
    active_image,
    default_mode,
    image_choices,
    is_preview,
    keep_fresh,
    layer_array,
    layout_args,
    made_from,
    narrow,
    on_close,
)

LINE_LAYER = "profile line"
_HIST_SAMPLES = 1_000_000
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "mse": "MSE", "vifp": "VIFP", "delta_e": "DeltaE"}
LEGEND_CHARS = 30  # a legend entry's characters: wider ones spilled out of the plots in a docked column
VIFP_OMITTED = "n/a"  # its cell's tooltip says why


@dataclass(frozen=True)
class _Step:
    fraction: float


class CompareWidget(Dock):
    """Compare a noisy layer and denoised layers, against a clean reference when there is one."""

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        viewer = napari_viewer
        self.reference = ComboBox(
            label="Reference (clean)",
            choices=lambda _: image_choices(viewer),
            nullable=True,
            tooltip="The clean image the others are scored against (PSNR, SSIM, ...). "
            "Leave empty to see residual statistics (noisy - denoised) instead.",
        )
        self.noisy = ComboBox(
            label="Noisy",
            choices=lambda _: image_choices(viewer),
            tooltip="The noisy input: plotted, scored against the reference, and the base of the residuals.",
        )
        for choice in (self.reference, self.noisy):
            narrow(choice, 24)  # a long layer name must not widen the dock over the canvas
        self.denoised = Select(
            label="Denoised",
            choices=lambda _: image_choices(viewer, _a_result),
            tooltip="One or more results to compare (Ctrl/Cmd-click to choose several). Noisy "
            "layers that Simulate noise or a sample made, and previews, are not listed.",
        )
        self.mode = ComboBox(
            label="Score as",
            choices=[SLICES, VOLUME],
            value=VOLUME,
            visible=False,
            tooltip="For stacks: score each 2D slice or each 3D volume and average SSIM and VIFP "
            "over them, as Denoise processes the stack. PSNR and MSE are over all voxels.",
        )
        self.log_counts = CheckBox(
            text="Histogram: log counts", value=True, tooltip="Counts on a logarithmic axis."
        )
        self.update_button = PushButton(
            text="Update", tooltip="Recompute the histograms, the line profile and the table."
        )
        self.message = Label(label="")
        self.message.native.setWordWrap(True)
        self.residual_button = PushButton(
            text="Add residual layers (noisy - denoised)",
            tooltip="A new layer per denoised layer: what the denoiser removed. Pure noise shows "
            "no structure of the image.",
        )
        self.denoised.native.setMaximumHeight(100)  # the plots need the height more
        self.data_range = Label(label="Data range")
        self.data_range.native.setWordWrap(True)
        self.data_range.tooltip = "The intensity range PSNR and SSIM use: the reference's max - min."
        self.export_figure_button = PushButton(
            text="Export figure...", tooltip="Save the plots as PNG, SVG or PDF (by the file's extension)."
        )
        self.export_table_button = PushButton(
            text="Export table...", tooltip="Save the table as CSV, at full precision."
        )
        super().__init__(
            [
                self.reference,
                self.noisy,
                self.denoised,
                self.mode,
                self.log_counts,
                self.update_button,
                self.message,
                self.data_range,
                self.residual_button,
                self.export_figure_button,
                self.export_table_button,
            ],
            stretch=False,  # the plots take the spare height
        )
        self.figure = Figure(figsize=(4, 4), layout="constrained")
        self.ax_histogram, self.ax_profile = self.figure.subplots(2, 1)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(240)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setToolTip(
            "Top: intensity histograms. Bottom: intensities along the line in the 'profile line' "
            "layer, on the slice on screen (drag its ends to move it)."
        )
        self.table = QTableWidget()
        self.table.setMinimumHeight(110)
        self.table.setToolTip(
            "PSNR (dB, higher is better), SSIM (0-1), MSE (intensity units squared), VIFP (1 = "
            "identical), DeltaE (CIEDE2000, RGB only; lower is better)."
        )
        self.body.layout().addWidget(self.canvas, 2)
        self.body.layout().addWidget(self.table, 1)
        self.header: list[str] = []
        self.rows: list[list[str]] = []  # as shown
        self.values: list[list] = []  # as exported: numbers at full precision, "" when omitted
        self._line_layer: Shapes | None = None
        self._line_for: Image | None = None  # the noisy layer the profile line was drawn for
        self._worker = None  # the metrics job in flight; a newer request cancels it
        self._closed = False
        on_close(self, self._close)

        for widget in (self.reference, self.noisy, self.denoised, self.mode, self.log_counts):
            widget.changed.connect(self.refresh)
        self.noisy.changed.connect(self._default_mode)
        self.update_button.changed.connect(self.refresh)
        self.residual_button.changed.connect(self.add_residuals)
        self.export_figure_button.changed.connect(
            lambda: self._ask_and_export(self.export_figure, "Figures (*.png *.svg *.pdf)")
        )
        self.export_table_button.changed.connect(
            lambda: self._ask_and_export(self.export_table, "CSV (*.csv)")
        )
        viewer.dims.events.current_step.connect(self.update_profile)
        viewer.layers.events.inserted.connect(self._line_on_top)
        keep_fresh(viewer, self)
        if not self._follow_result():  # no result yet: a selected noisy layer with its clean one
            self._pair(active_image(viewer))
        self._default_mode(self.noisy.value)

    # -- which layers ------------------------------------------------------------------------------
    def _tests(self) -> list[Image]:
        noisy = self.noisy.value
        return ([noisy] if noisy is not None else []) + [d for d in self.denoised.value if d is not noisy]

    def _all(self) -> list[Image]:
        ref = self.reference.value
        return ([ref] if ref is not None else []) + [t for t in self._tests() if t is not ref]

    def _consistent(self) -> bool:
        """Whether the chosen layers can be compared; if not, the dock says why (no notification:
        the user may still be choosing)."""
        layers = self._all()
        shapes = {layer.data.shape for layer in layers}
        if len(shapes) > 1:
            names = ", ".join(f"{layer.name} {layer.data.shape}" for layer in layers)
            self.message.value = f"The layers' shapes differ: {names}. Choose layers of one shape."
            return False
        self.message.value = ""
        return bool(layers)

    def _default_mode(self, layer) -> None:
        if layer is not None:
            self.mode.value = default_mode([layer])

    def _processing(self) -> dict:
        noisy = self.noisy.value
        self.mode.visible = noisy is not None and noisy.ndim >= 3  # napari's ndim leaves out RGB
        return layout_args(noisy, self.mode.value)

    # -- refresh -----------------------------------------------------------------------------------
    def refresh(self, *_) -> None:
        if self._closed:
            return
        self._processing()
        if self.noisy.value not in self._viewer.layers or not self._consistent():
            return  # no noisy layer, or one being removed
        self.update_histograms()
        self.update_profile(create=True)
        self.update_table()

    def update_histograms(self) -> None:
        ax = self.ax_histogram
        ax.clear()
        layers = self._all()
        samples = []
        for layer in layers:
            values = layer_array(layer).reshape(-1)
            samples.append(values[:: max(values.size // _HIST_SAMPLES, 1)].astype(np.float64))
        lo = min(float(s.min()) for s in samples)
        hi = max(float(s.max()) for s in samples)
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 129)
        for layer, values in zip(layers, samples, strict=True):
            counts, _ = np.histogram(values, edges)
            ax.stairs(counts, edges, label=_legend(layer.name))
        ax.set_yscale("log" if self.log_counts.value else "linear")
        ax.set_title("Intensity histograms", fontsize=9)
        ax.legend(fontsize=7)
        self.canvas.draw_idle()

    # -- line profile ------------------------------------------------------------------------------
    def line_layer(self, create: bool = True) -> Shapes | None:
        """The Shapes layer holding the profile line.

        A horizontal line across the middle of the noisy layer is drawn when there is none (unless
        not ``create``: then None), and again when the noisy layer changes: a line drawn for other
        layers may miss this one."""
        noisy = self.noisy.value
        existing = next((layer for layer in self._viewer.layers if layer.name == LINE_LAYER), None)
        layer = existing if isinstance(existing, Shapes) else None
        if layer is None and not create:
            return None
        if (
            layer is None
            or not len(layer.data)
            or (self._line_for is not None and self._line_for is not noisy)
        ):
            line = self._middle_line(noisy)
            if layer is None:
                layer = self._viewer.add_shapes(
                    [line], shape_type="line", name=LINE_LAYER, edge_color="yellow", edge_width=2
                )
                self._viewer.layers.selection.active = noisy
            else:
                layer.events.data.disconnect(self.update_profile)  # one redraw, below
                layer.data = [(line, "line")]
        self._line_for = noisy
        if layer is not self._line_layer:
            if self._line_layer is not None:
                self._line_layer.events.data.disconnect(self.update_profile)
            self._line_layer = layer
        layer.events.data.disconnect(self.update_profile)
        layer.events.data.connect(self.update_profile)
        return layer

    def _line_on_top(self, event=None) -> None:
        """Keep the profile line above the layers added after it, which would hide it, and
        follow a denoised result added (once the insertion is done: napari's list is not moved,
        nor the choices reset, within its own event)."""
        QTimer.singleShot(0, self._raise_line)
        if event is not None and made_from(event.value, "denoised") is not None:
            QTimer.singleShot(0, lambda: self._follow_result(event.value))

    def _follow_result(self, result: Image | None = None) -> bool:
        """Compare ``result`` (by default the last denoised layer) with the layer it was denoised
        from as Noisy and, when that one's noise was simulated (Simulate noise, a sample), its
        clean layer as Reference (else none, when Noisy changes). Whether there was one."""
        layers = self._viewer.layers
        if result is None:
            result = next((la for la in reversed(layers) if made_from(la, "denoised") is not None), None)
        if self._closed or result is None or result not in layers:
            return False
        name = made_from(result, "denoised")
        noisy = next((la for la in layers if la.name == name), None)
        if not isinstance(noisy, Image):
            return False
        self._pair(noisy, always=True)
        self.denoised.value = [result]
        return True

    def _pair(self, noisy: Image | None, always: bool = False) -> None:
        """``noisy`` as Noisy and its clean layer (if known) as Reference; unless ``always``, only
        a noisy layer whose clean one is known."""
        layers = self._viewer.layers
        clean = None if noisy is None else made_from(noisy, "noisy")
        reference = next((la for la in layers if la.name == clean and isinstance(la, Image)), None)
        if noisy is None or (reference is None and not always):
            return
        self.reset_choices()  # the layers as they are now
        new = noisy is not self.noisy.value
        self.noisy.value = next((la for la in self.noisy.choices if la.name == noisy.name), noisy)
        if reference is not None or new:  # another image's clean layer would mislead: none then
            self.reference.value = reference

    def _raise_line(self) -> None:
        layers, line = self._viewer.layers, self._line_layer
        if not self._closed and line is not None and line in layers and layers[-1] is not line:
            layers.move(layers.index(line), len(layers))

    @staticmethod
    def _middle_line(layer: Image) -> np.ndarray:
        """The middle row of ``layer``, first to last pixel centre, in world coordinates."""
        shape = layer.data.shape[:-1] if layer.rgb else layer.data.shape
        start = np.zeros(len(shape))
        start[-2] = shape[-2] // 2
        stop = start.copy()
        stop[-1] = shape[-1] - 1
        return np.array([np.asarray(layer.data_to_world(p))[-2:] for p in (start, stop)])

    def profile(self, layer: Image, line_layer: Shapes | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distance (world units) and intensity along the line, on the slice being displayed; only
        where the line lies inside ``layer`` (both empty if it misses it)."""
        line_layer = self.line_layer() if line_layer is None else line_layer
        line = np.asarray(line_layer.data[-1])[[0, -1]]
        ends = []
        for vertex in line:
            world = np.array(self._viewer.dims.point, dtype=float)
            world[-2:] = np.asarray(line_layer.data_to_world(vertex))[-2:]
            end = np.asarray(layer.world_to_data(world[-layer.ndim :]), dtype=float)
            end[:-2] = np.round(end[:-2])  # the plane napari shows
            ends.append(end)
        fraction, values = metrics.line_profile(
            layer_array(layer), ends[0], ends[1], channel_axis=-1 if layer.rgb else None
        )
        world_length = float(np.linalg.norm(np.diff(line, axis=0)))
        return fraction * world_length, values

    def update_profile(self, *_, create: bool = False) -> None:
        """Redraw the profile. Called by napari's events (the slice, the line's data), it does not
        draw a missing line at once but after the events: within them the viewer may be removing
        its layers (clearing, closing), and a line added back then is removed again, forever."""
        if self._closed or self.noisy.value not in self._viewer.layers or not self._all():
            return
        line_layer = self.line_layer(create)
        if line_layer is None:
            QTimer.singleShot(0, self._draw_line)
            return
        ax = self.ax_profile
        ax.clear()
        missed = []
        for layer in self._all():
            distance, values = self.profile(layer, line_layer)
            if values.size:
                ax.plot(distance, values, label=_legend(layer.name), linewidth=1)
            else:
                missed.append(layer.name)
        ax.set_title("Line profile (current slice)", fontsize=9)
        ax.set_xlabel("distance along the line (world units)", fontsize=8)
        if missed:
            ax.text(
                0.5,
                0.5,
                "The profile line misses the image\non this slice: draw it across the image.",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=8,
            )
        if ax.lines:
            ax.legend(fontsize=7)
        self.canvas.draw_idle()

    def _draw_line(self) -> None:
        """The missing profile line, drawn once napari's events are done (if still wanted)."""
        try:
            if not self._closed:
                self.update_profile(create=True)
        except RuntimeError:  # the dock's Qt widgets went with the viewer
            pass

    # -- metrics -----------------------------------------------------------------------------------
    def update_table(self) -> None:
        reference = self.reference.value
        tests = [t for t in self._tests() if t is not reference]
        noisy = self.noisy.value
        if reference is not None:
            ref = layer_array(reference)
            layout = self._processing()
            pairs = [(t.name, layer_array(t)) for t in tests]
            data_range = float(ref.max()) - float(ref.min())
            self.data_range.value = f"{data_range:g} (the reference's max - min)"

            def job():
                rows = []
                for k, (name, test) in enumerate(pairs):
                    yield _Step(k / len(pairs))
                    rows.append((name, metrics.compare(ref, test, **layout)))
                return rows

            if self._worker is not None:
                self._worker.quit()
            worker = start_job(job, "Compare: metrics", self._show_metrics, lambda: self._job_done(worker))
            worker.errored.connect(self._metrics_failed)
            self._worker = worker
        else:
            self.data_range.value = "no reference: residual statistics (noisy - denoised)"
            names = ["mean", "std", "min", "max"]
            base = layer_array(noisy)
            values = [
                [t.name, *(metrics.residual_statistics(base, layer_array(t))[n] for n in names)]
                for t in tests
                if t is not noisy
            ]
            self._fill(["layer", *(f"residual {n}" for n in names)], values)

    def _close(self) -> None:
        """Stop following the viewer: the widget was closed."""
        self._closed = True
        self._viewer.dims.events.current_step.disconnect(self.update_profile)
        self._viewer.layers.events.inserted.disconnect(self._line_on_top)
        if self._line_layer is not None:
            self._line_layer.events.data.disconnect(self.update_profile)
        if self._worker is not None:
            self._worker.quit()

    def _job_done(self, worker) -> None:
        if self._worker is worker:
            self._worker = None

    def _metrics_failed(self, exc: Exception) -> None:
        if not self._closed:
            self.message.value = f"Metrics failed: {exc}"

    def _show_metrics(self, rows) -> None:
        if self._closed:  # a result that arrived after the widget was closed
            return
        present = [n for n in LABELS if n != "delta_e" or any(n in scores for _, scores in rows)]
        values = [[name, *(scores.get(n, "") for n in present)] for name, scores in rows]
        self._fill(["layer", *(LABELS[n] for n in present)], values)

    def _fill(self, header: list[str], values: list[list]) -> None:
        """Show ``values`` (a name, then numbers or "" where a metric was left out) in the table."""
        self.header, self.values = header, values
        vifp = header.index("VIFP") if "VIFP" in header else None
        self.rows = [
            [
                f"{v:.4g}" if isinstance(v, float) else (VIFP_OMITTED if c == vifp and v == "" else str(v))
                for c, v in enumerate(row)
            ]
            for row in values
        ]
        self.table.clear()
        self.table.setColumnCount(len(header))
        self.table.setRowCount(len(self.rows))
        self.table.setHorizontalHeaderLabels(header)
        for r, row in enumerate(self.rows):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                if c == vifp and text == VIFP_OMITTED:
                    item.setToolTip(
                        f"VIFP needs at least {metrics.VIFP_MIN_SIZE} pixels along every spatial axis "
                        "(four scales of filtering and halving)."
                    )
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()

    # -- actions -----------------------------------------------------------------------------------
    def add_residuals(self) -> None:
        noisy = self.noisy.value
        others = [t for t in self._tests() if t is not noisy]
        if noisy is None or not others:
            show_warning("Compare: choose a noisy layer and at least one denoised layer")
            return
        if not self._consistent():
            return
        for layer in others:
            residual = layer_array(noisy).astype(np.float32) - layer_array(layer)
            kwargs = copy_placement(noisy)
            kwargs.pop("contrast_limits")
            kwargs["colormap"] = "gray"
            self._viewer.add_image(residual, name=f"residual {noisy.name} - {layer.name}", **kwargs)

    def export_figure(self, path: str | Path) -> Path:
        """Save the plots; the format follows the extension (PNG when there is none)."""
        path = Path(path)
        if path.suffix.lower() not in FIGURE_SUFFIXES:
            path = path.with_name(path.name + ".png")
        with atomic_path(path) as tmp:
            self.figure.savefig(tmp, dpi=150, format=path.suffix[1:].lower())
        return path

    def export_table(self, path: str | Path) -> Path:
        """Save the table as CSV: numbers at full precision, empty where a metric was left out."""
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path.with_name(path.name + ".csv")
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.header)
            # str(float) is the shortest text that reads back as the same number
            writer.writerows(
                [row[0], *(str(float(v)) if v != "" else "" for v in row[1:])] for row in self.values
            )
        return path

    def _ask_and_export(self, export, pattern: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self.native, "Export", "", pattern)
        if path:
            self.message.value = f"saved {export(path)}"


def _legend(name: str, limit: int = LEGEND_CHARS) -> str:
    """``name`` for a plot's legend: a long one keeps its start and end (the noise and the method
    in a result's name) around an ellipsis, so the legend stays inside the plot."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return f"{name[:head]}\u2026{name[len(name) - (limit - 1 - head) :]}"


def _a_result(layer: Image) -> bool:
    """Whether ``layer`` may be a denoised result: not known to be noisy, nor a preview (a plane)."""
    return made_from(layer, "noisy") is None and not is_preview(layer)
