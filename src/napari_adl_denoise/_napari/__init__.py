"""The napari layer: dock widgets, reader/writer, sample data. Thin shells over the compute API."""

from __future__ import annotations

from typing import Any

PLUGIN = "napari-adl-denoise"
NIFTI_PATTERNS = ("*.nii", "*.nii.gz")


def activate(context: Any = None) -> None:
    """Make our reader napari's choice for NIfTI files; npe2 calls this when the plugin is first used.

    napari's own reader also claims ``*.nii`` and ``*.nii.gz`` (through imageio, which cannot read
    them without ITK), so with two readers and no preference napari asks the user to choose on
    every File > Open and ``viewer.open(path, plugin=None)`` raises. The preference is napari's
    ``plugins.extension2reader`` setting (Preferences > Plugins); a choice the user made is kept.
    """
    from napari.settings import get_settings

    plugins = get_settings().plugins
    missing = {pattern: PLUGIN for pattern in NIFTI_PATTERNS if pattern not in plugins.extension2reader}
    if missing:
        plugins.extension2reader = {**plugins.extension2reader, **missing}
