"""Running compute generators in napari's thread workers, with a progress bar and a real Cancel."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import Label, PushButton, Widget
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QSizePolicy

from ._dock import Dock
from ._layers import on_close


class JobError(Exception):
    """A job's RuntimeError (torch's, such as running out of memory), under another name:
    superqt's workers take a RuntimeError for a deleted Qt object and drop it, without an error
    or a finished signal, which would leave the dock busy for good."""


def start_job(
    job: Callable[[], Generator[Any, None, Any]],
    description: str,
    on_result: Callable[[Any], None],
    on_finished: Callable[[], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    unit: str = "%",
    start: bool = True,
) -> GeneratorWorker:
    """Run ``job()`` (a generator of records with a ``fraction``, returning a result) in a worker.

    Progress shows in napari's activity dock, in percent, or in steps with ``unit="step"`` (for
    records with ``step`` and ``total``); ``on_result`` runs on the main thread with the return
    value; errors become notifications and go to ``on_error``. Every handler is connected before
    the worker starts, so none misses a job that ends at once. ``worker.quit()`` stops the
    generator at its next yield (one tile, or a batch of small tiles), and then ``on_result`` is
    not called. With ``start=False`` the caller starts it, after keeping a reference to it.
    """

    running: list[Generator] = []

    def work():
        steps = job()
        running.append(steps)
        try:
            return (yield from steps)
        except RuntimeError as exc:  # superqt would take it for a deleted Qt object and drop it
            raise JobError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc

    # errors are shown as notifications below, so the factory must not re-raise them
    worker = create_worker(work, _start_thread=False, _ignore_errors=True)
    bar = progress(total=100, desc=description, unit=unit)

    def advance(record: Any) -> None:
        if unit == "step" and getattr(record, "total", None):
            bar.total = record.total
            bar.update(record.step - bar.n)
            return
        fraction = getattr(record, "fraction", None)
        if fraction is not None:
            bar.update(round(100 * fraction) - bar.n)

    def failed(exc: Exception) -> None:
        show_error(f"{description} failed: {exc}")
        if on_error is not None:
            on_error(exc)

    def done() -> None:
        bar.close()
        for steps in running:  # a cancelled job cleans up now, not whenever it is collected
            steps.close()
        if on_finished is not None:
            on_finished()

    worker.yielded.connect(advance)
    worker.returned.connect(on_result)
    worker.errored.connect(failed)
    worker.finished.connect(done)
    if start:
        worker.start()
    return worker


class JobDock(Dock):
    """A dock that runs one job at a time: its ``widgets``, then Run, Cancel and a status line.

    Subclasses implement ``run()`` and call :meth:`start`. Cancel, or closing the dock or the
    viewer, stops the job at its next yield.
    """

    title = "Job"
    cancelled = "cancelled"

    def __init__(self, widgets: list[Widget], run_text: str = "Run") -> None:
        self._worker: GeneratorWorker | None = None
        self._closed = False
        self.run_button = PushButton(text=run_text, tooltip=f"{run_text}: runs in the background.")
        self.cancel_button = PushButton(
            text="Cancel", enabled=False, tooltip="Stop the job at its next step; nothing is added or saved."
        )
        self.status = Label(label="")
        self.status.native.setWordWrap(True)  # long messages wrap instead of widening the dock
        # ...at the dock's width: a wrapping label's own preferred width is about 120 px
        self.status.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        super().__init__([*widgets, self.run_button, self.cancel_button, self.status])
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        on_close(self, self._close)

    def run(self) -> None:
        raise NotImplementedError

    def refuse(self, problem: str) -> None:
        """Say why the job does not start: a notification, and the status line, which would
        still show the last job's outcome."""
        show_warning(f"{self.title}: {problem}")
        self.status.value = problem

    def busy(self) -> bool:
        """Whether a job is running (and says so)."""
        if self._worker is not None:
            show_info(f"{self.title}: a job is already running; cancel it first")
        return self._worker is not None

    def job_buttons(self) -> list[PushButton]:
        """The buttons that start a job: disabled while one runs."""
        return [self.run_button]

    def start(
        self,
        job: Callable[[], Generator[Any, None, Any]],
        description: str,
        on_result: Callable,
        status: str,
        unit: str = "%",
        on_progress: Callable[[Any], None] | None = None,
    ) -> GeneratorWorker:
        """Run ``job`` as :func:`start_job` does; ``on_progress`` gets every record it yields."""
        self.status.value = status
        for button in self.job_buttons():
            button.enabled = False
        self.cancel_button.enabled = True
        worker = start_job(job, description, on_result, self._finished, self._failed, unit, start=False)
        if on_progress is not None:
            worker.yielded.connect(on_progress)
        self._worker = worker  # before it starts: a job may end (and clear it) at once
        worker.start()
        return worker

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()
            self.status.value = self.cancelled

    def _close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.quit()

    def _failed(self, exc: Exception) -> None:
        if not self._closed:
            self.status.value = f"failed: {exc}"

    def _finished(self) -> None:
        self._worker = None
        if not self._closed:  # closing the viewer deletes a closed dock's buttons
            for button in self.job_buttons():
                button.enabled = True
            self.cancel_button.enabled = False


def copy_placement(layer) -> dict[str, Any]:
    """Keyword arguments that place a new image layer exactly like ``layer`` and look alike."""
    kwargs = {
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine,
        "blending": layer.blending,
        "rgb": layer.rgb,
        "contrast_limits": layer.contrast_limits,
    }
    if not layer.rgb:
        kwargs["colormap"] = layer.colormap
    return kwargs
