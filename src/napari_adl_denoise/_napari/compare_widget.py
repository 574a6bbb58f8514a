"""The Compare dock widget: histograms, a live line profile and a metrics table.

Thin shell over :mod:`napari_adl_denoise.metrics`; plots are matplotlib figures embedded in Qt.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, Select
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image, Shapes
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QFileDialog, QTableWidget, QTableWidgetItem
from scipy.ndimage import map_coordinates

from .. import metrics
from ._jobs import copy_placement, start_job
from ._layers import image_choices, keep_fresh, layer_array, on_close

LINE_LAYER = "profile line"
_HIST_SAMPLES = 1_000_000


@dataclass(frozen=True)
class _Step:
    fraction: float


class CompareWidget(Container):
    """Compare a noisy layer and denoised layers, against a clean reference when there is one."""

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        viewer = napari_viewer
        self.reference = ComboBox(
            label="Reference (clean)", choices=lambda _: image_choices(viewer), nullable=True
        )
        self.noisy = ComboBox(label="Noisy", choices=lambda _: image_choices(viewer))
        self.denoised = Select(label="Denoised", choices=lambda _: image_choices(viewer))
        self.log_counts = CheckBox(text="Histogram: log counts", value=True)
        self.update_button = PushButton(text="Update")
        self.residual_button = PushButton(text="Add residual layers (noisy - denoised)")
        self.data_range = Label(label="Data range")
        self.export_figure_button = PushButton(text="Export figure...")
        self.export_table_button = PushButton(text="Export table...")
        super().__init__(
            widgets=[
                self.reference,
                self.noisy,
                self.denoised,
                self.log_counts,
                self.update_button,
                self.data_range,
                self.residual_button,
                self.export_figure_button,
                self.export_table_button,
            ]
        )
        self.figure = Figure(figsize=(4, 5), layout="constrained")
        self.ax_histogram, self.ax_profile = self.figure.subplots(2, 1)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(360)
        self.table = QTableWidget()
        self.table.setMinimumHeight(120)
        self.native.layout().addWidget(self.canvas)
        self.native.layout().addWidget(self.table)
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self._line_layer: Shapes | None = None
        self._worker = None  # the metrics job in flight; a newer request cancels it
        self._closed = False
        on_close(self, self._close)

        for widget in (self.reference, self.noisy, self.denoised, self.log_counts):
            widget.changed.connect(self.refresh)
        self.update_button.changed.connect(self.refresh)
        self.residual_button.changed.connect(self.add_residuals)
        self.export_figure_button.changed.connect(
            lambda: self._ask_and_export(self.export_figure, "*.png *.svg *.pdf")
        )
        self.export_table_button.changed.connect(lambda: self._ask_and_export(self.export_table, "*.csv"))
        viewer.dims.events.current_step.connect(self.update_profile)
        keep_fresh(viewer, self)

    # -- which layers ------------------------------------------------------------------------------
    def _tests(self) -> list[Image]:
        noisy = self.noisy.value
        return ([noisy] if noisy is not None else []) + [d for d in self.denoised.value if d is not noisy]

    def _all(self) -> list[Image]:
        ref = self.reference.value
        return ([ref] if ref is not None else []) + [t for t in self._tests() if t is not ref]

    def _consistent(self) -> bool:
        layers = self._all()
        shapes = {layer.data.shape for layer in layers}
        if len(shapes) > 1:
            names = ", ".join(f"{layer.name} {layer.data.shape}" for layer in layers)
            show_warning(f"Compare: the layers' shapes differ ({names})")
            return False
        return bool(layers)

    # -- refresh -----------------------------------------------------------------------------------
    def refresh(self, *_) -> None:
        if self._closed or self.noisy.value is None or not self._consistent():
            return
        self.update_histograms()
        self.update_profile()
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
            ax.stairs(counts, edges, label=layer.name)
        ax.set_yscale("log" if self.log_counts.value else "linear")
        ax.set_title("Intensity histograms", fontsize=9)
        ax.legend(fontsize=7)
        self.canvas.draw_idle()

    # -- line profile ------------------------------------------------------------------------------
    def line_layer(self) -> Shapes:
        """The Shapes layer holding the profile line; a horizontal line across the middle if none."""
        existing = next((layer for layer in self._viewer.layers if layer.name == LINE_LAYER), None)
        if isinstance(existing, Shapes) and len(existing.data):
            layer = existing
        else:
            noisy = self.noisy.value
            shape = noisy.data.shape[:-1] if noisy.rgb else noisy.data.shape
            start = np.zeros(len(shape))
            start[-2] = shape[-2] // 2  # the middle row, from the first to the last pixel centre
            stop = start.copy()
            stop[-1] = shape[-1] - 1
            line = np.array([np.asarray(noisy.data_to_world(p))[-2:] for p in (start, stop)])
            layer = self._viewer.add_shapes(
                [line], shape_type="line", name=LINE_LAYER, edge_color="yellow", edge_width=2
            )
            self._viewer.layers.selection.active = self.noisy.value
        if layer is not self._line_layer:
            layer.events.data.connect(self.update_profile)
            self._line_layer = layer
        return layer

    def profile(self, layer: Image) -> tuple[np.ndarray, np.ndarray]:
        """Distance (world units) and intensity along the line, on the slice being displayed."""
        line_layer = self.line_layer()
        line = np.asarray(line_layer.data[-1])[[0, -1]]
        ends = []
        for vertex in line:
            world = np.array(self._viewer.dims.point, dtype=float)
            world[-2:] = np.asarray(line_layer.data_to_world(vertex))[-2:]
            ends.append(np.asarray(layer.world_to_data(world[-layer.ndim :])))
        start, stop = ends
        count = max(int(np.ceil(np.linalg.norm(stop - start))) + 1, 2)
        coords = np.linspace(start, stop, count).T
        data = layer_array(layer).astype(np.float32)
        if layer.rgb:
            values = np.mean(
                [
                    map_coordinates(data[..., c], coords, order=1, mode="nearest")
                    for c in range(data.shape[-1])
                ],
                axis=0,
            )
        else:
            values = map_coordinates(data, coords, order=1, mode="nearest")
        world_length = float(np.linalg.norm(np.diff(line, axis=0)))
        return np.linspace(0, world_length, count), values

    def update_profile(self, *_) -> None:
        if self._closed or self.noisy.value is None or not self._all():
            return
        ax = self.ax_profile
        ax.clear()
        for layer in self._all():
            distance, values = self.profile(layer)
            ax.plot(distance, values, label=layer.name, linewidth=1)
        ax.set_title("Line profile (current slice)", fontsize=9)
        ax.set_xlabel("distance (world units)", fontsize=8)
        ax.legend(fontsize=7)
        self.canvas.draw_idle()

    # -- metrics -----------------------------------------------------------------------------------
    def update_table(self) -> None:
        reference = self.reference.value
        tests = [t for t in self._tests() if t is not reference]
        noisy = self.noisy.value
        if reference is not None:
            ref = layer_array(reference)
            channel_axis = -1 if reference.rgb else None
            pairs = [(t.name, layer_array(t)) for t in tests]
            data_range = float(ref.max()) - float(ref.min())
            self.data_range.value = f"{data_range:g} (the reference's max - min)"

            def job():
                rows = []
                for k, (name, test) in enumerate(pairs):
                    yield _Step(k / len(pairs))
                    scores = metrics.compare(ref, test, channel_axis=channel_axis)
                    rows.append((name, scores))
                return rows

            if self._worker is not None:
                self._worker.quit()
            worker = start_job(job, "Compare: metrics", self._show_metrics, lambda: self._job_done(worker))
            self._worker = worker
        else:
            self.data_range.value = "no reference: residual statistics (noisy - denoised)"
            base = layer_array(noisy).astype(np.float64)
            header = ["layer", "residual mean", "residual std", "residual min", "residual max"]
            rows = []
            for t in tests:
                if t is noisy:
                    continue
                residual = base - layer_array(t)
                rows.append(
                    [
                        t.name,
                        *(
                            f"{v:.4g}"
                            for v in (residual.mean(), residual.std(), residual.min(), residual.max())
                        ),
                    ]
                )
            self._fill(header, rows)

    def _close(self) -> None:
        """Stop following the viewer: the widget was closed."""
        self._closed = True
        self._viewer.dims.events.current_step.disconnect(self.update_profile)
        if self._line_layer is not None:
            self._line_layer.events.data.disconnect(self.update_profile)
        if self._worker is not None:
            self._worker.quit()

    def _job_done(self, worker) -> None:
        if self._worker is worker:
            self._worker = None

    def _show_metrics(self, rows) -> None:
        if self._closed:  # a result that arrived after the widget was closed
            return
        names = ["psnr", "ssim", "mse", "vifp", "delta_e"]
        present = [n for n in names if any(n in scores for _, scores in rows)]
        labels = {"psnr": "PSNR (dB)", "ssim": "SSIM", "mse": "MSE", "vifp": "VIFP", "delta_e": "DeltaE"}
        table = [
            [name, *(f"{scores[n]:.4g}" if n in scores else "" for n in present)] for name, scores in rows
        ]
        self._fill(["layer", *(labels[n] for n in present)], table)

    def _fill(self, header: list[str], rows: list[list[str]]) -> None:
        self.header, self.rows = header, rows
        self.table.clear()
        self.table.setColumnCount(len(header))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels(header)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                self.table.setItem(r, c, QTableWidgetItem(value))
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
        self.figure.savefig(path, dpi=150)
        return Path(path)

    def export_table(self, path: str | Path) -> Path:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.header)
            writer.writerows(self.rows)
        return Path(path)

    def _ask_and_export(self, export, pattern: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self.native, "Export", "", pattern)
        if path:
            export(path)
