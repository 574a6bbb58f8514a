"""NIfTI (.nii, .nii.gz) reader and writer: voxel spacing becomes the layer scale; the affine and
header travel in ``layer.metadata["nifti"]`` and are written back on save. A 4D (x, y, z, t) file
opens as (t, x, y, z): napari slides over time and shows spatial planes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io import ImageFile, read_image, write_image

EXTENSIONS = (".nii", ".nii.gz")


def get_reader(path: str | list[str]):
    """napari reader hook: a reader for NIfTI paths, else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(str(p).lower().endswith(EXTENSIONS) for p in paths):
        return None
    return read_nifti


def read_nifti(path: str | list[str]) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    paths = [path] if isinstance(path, str) else list(path)
    layers = []
    for p in paths:
        image = read_image(p)
        spatial = min(image.data.ndim, 3)  # the last axes (io.read_image puts time first)
        scale = [1.0] * image.data.ndim
        scale[-spatial:] = [float(z) for z in image.spacing[-spatial:]]
        meta = {
            "name": Path(p).name.removesuffix(".gz").removesuffix(".nii"),
            "scale": scale,
            "metadata": {"nifti": {"affine": image.extra["affine"], "header": image.extra["header"]}},
        }
        layers.append((image.data, meta, "image"))
    return layers


def write_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """napari single-layer writer: keeps the affine and header the layer was read with; a layer
    from elsewhere gets an affine from its scale."""
    if not str(path).lower().endswith(EXTENSIONS):
        path = f"{path}.nii.gz"
    if meta.get("rgb"):
        raise ValueError("NIfTI holds gray images and volumes: save an RGB layer as .tif or .png")
    array = np.asarray(data)
    nifti = (meta.get("metadata") or {}).get("nifti") or {}
    affine = nifti.get("affine")
    if affine is None:
        affine = np.eye(4)
        scale = list(meta.get("scale") or [1.0] * array.ndim)[-3:]
        affine[: len(scale), : len(scale)] = np.diag(scale)
    like = ImageFile(array, "nifti", extra={"affine": affine, "header": nifti.get("header")})
    write_image(path, array, like=like)
    return [str(path)]
