"""Running compute generators in napari's thread workers, with a progress bar and a real Cancel."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error


def start_job(
    job: Callable[[], Generator[Any, None, Any]],
    description: str,
    on_result: Callable[[Any], None],
    on_finished: Callable[[], None] | None = None,
) -> GeneratorWorker:
    """Run ``job()`` (a generator of records with a ``fraction``, returning a result) in a worker.

    Progress shows in napari's activity dock; ``on_result`` runs on the main thread with the
    return value; errors become notifications. ``worker.quit()`` stops the generator at its next
    yield (one tile, or a batch of small tiles), and then ``on_result`` is not called.
    """

    def work():
        return (yield from job())

    # errors are shown as notifications below, so the factory must not re-raise them
    worker = create_worker(work, _start_thread=False, _ignore_errors=True)
    bar = progress(total=100, desc=description)

    def advance(record: Any) -> None:
        fraction = getattr(record, "fraction", None)
        if fraction is not None:
            bar.update(round(100 * fraction) - bar.n)

    def failed(exc: Exception) -> None:
        show_error(f"{description} failed: {exc}")

    def done() -> None:
        bar.close()
        if on_finished is not None:
            on_finished()

    worker.yielded.connect(advance)
    worker.returned.connect(on_result)
    worker.errored.connect(failed)
    worker.finished.connect(done)
    worker.start()
    return worker


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
