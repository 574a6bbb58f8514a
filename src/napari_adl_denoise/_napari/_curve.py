"""A small live plot of a fine-tune: training loss per step and validation score per validation."""

from __future__ import annotations

import math

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter
from qtpy.QtWidgets import QSizePolicy

CURVE_HEIGHT = 210
"""Pixels: the curve and the controls above it fit a laptop's screen in a docked column."""
LOSS_COLOUR, SCORE_COLOUR, START_COLOUR = "#8c8c8c", "#1f77b4", "#d62728"


class TrainingCurve:
    """The training loss (left axis) and the validation score (right axis, dB) of a run's
    records, with the starting model's score as a dashed line.

    ``canvas`` is the Qt widget to place; :meth:`reset` starts a run, :meth:`add` takes each
    :class:`~napari_adl_denoise.training.engine.TrainProgress` record.
    """

    def __init__(self) -> None:
        self.figure = Figure(figsize=(4, CURVE_HEIGHT / 100), dpi=100, layout="constrained")
        self.ax_loss = self.figure.add_subplot()
        self.ax_score = self.ax_loss.twinx()
        (self.loss_line,) = self.ax_loss.plot([], [], color=LOSS_COLOUR, lw=0.8, label="training loss")
        (self.score_line,) = self.ax_score.plot(
            [], [], "o-", color=SCORE_COLOUR, ms=3, lw=1.2, label="validation"
        )
        self.start_line = self.ax_score.axhline(
            math.nan, color=START_COLOUR, ls="--", lw=1, label="starting model"
        )
        self.ax_loss.set_xlabel("step", fontsize=8)
        self.ax_loss.set_ylabel("training loss", fontsize=8, color=LOSS_COLOUR)
        for ax in (self.ax_loss, self.ax_score):
            ax.tick_params(labelsize=7)
            ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
            ax.yaxis.set_major_formatter(_plain())
        self.figure.legend(
            handles=[self.loss_line, self.score_line, self.start_line],
            loc="outside upper center",
            ncols=3,
            fontsize=7,
            frameon=False,
        )
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setFixedHeight(CURVE_HEIGHT)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.canvas.setMinimumWidth(200)
        self.reset("validation score (dB)", 1)

    def reset(self, score_label: str, total: int) -> None:
        """Start a run of ``total`` steps whose validation score ``score_label`` describes."""
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.score_steps: list[int] = []
        self.scores: list[float] = []
        self.ax_score.set_ylabel(score_label, fontsize=8, color=SCORE_COLOUR)
        self.ax_loss.set_xlim(0, max(total, 1))
        self.start_line.set_ydata([math.nan, math.nan])
        self._update()

    def add(self, record) -> None:
        """Plot one progress record: its training loss (from step 1) and validation score, if any."""
        loss = record.losses.get("denoiser")
        if record.step > 0 and loss is not None and math.isfinite(loss):
            self.steps.append(record.step)
            self.losses.append(loss)
        if record.validation:
            score = record.validation["score"]
            self.score_steps.append(record.step)
            self.scores.append(score)
            if record.step == 0:
                self.start_line.set_ydata([score, score])
        self._update()

    def _update(self) -> None:
        self.loss_line.set_data(self.steps, self.losses)
        self.score_line.set_data(self.score_steps, self.scores)
        for ax, values in ((self.ax_loss, self.losses), (self.ax_score, self.scores)):
            if values:
                ax.relim()
                ax.autoscale_view(scalex=False)
            else:
                ax.set_ylim(0, 1, auto=True)  # autoscaled again once there is data
        self.canvas.draw_idle()


def _plain() -> ScalarFormatter:
    """Tick labels with the digits they need, without an offset or a power of ten above the axis
    (small, apart from its axis, and easy to miss)."""
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_powerlimits((-5, 6))
    return formatter
