"""Reading and writing images and volumes: TIFF, NIfTI, PNG/JPEG, NPY and Zarr.

NIfTI keeps its affine, header and voxel spacing from input to output. NIfTI stores time (and any
other non-spatial axis) after x, y and z; here, as in napari and :func:`~napari_adl_denoise.denoise`,
such axes come first, so a 4D (x, y, z, t) file reads as (t, x, y, z), a stack of volumes, and is
written back as (x, y, z, t). A Zarr store (a folder; an OME-Zarr's full-resolution array) is
read lazily and written block by block, so it may be larger than memory. Writes are atomic.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_path

__all__ = ["FORMATS", "ImageFile", "read_image", "write_image"]

FORMATS = {
    ".tif": "tiff",
    ".tiff": "tiff",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".npy": "npy",
    ".zarr": "zarr",
}


@dataclass
class ImageFile:
    """Pixel data plus what is needed to write a result back faithfully."""

    data: np.ndarray
    """A numpy array, or for Zarr the store's lazy array."""
    format: str
    spacing: tuple[float, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Format specifics: ``affine`` and ``header`` for NIfTI."""


def image_format(path: str | os.PathLike) -> str:
    """The format name for ``path``'s extension; ValueError if unsupported."""
    name = str(path).lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return FORMATS[ext]
    raise ValueError(f"unsupported file type {Path(path).name!r}; use one of {', '.join(sorted(FORMATS))}")


def read_image(path: str | os.PathLike) -> ImageFile:
    """Read an image or volume.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Unsupported extension or unreadable content (one-line message).
    """
    path = Path(path)
    fmt = image_format(path)
    if not (path.is_dir() if fmt == "zarr" else path.is_file()):
        raise FileNotFoundError(f"no such {'Zarr store' if fmt == 'zarr' else 'file'}: {path}")
    try:
        if fmt == "zarr":
            return ImageFile(_open_zarr(path), fmt)
        if fmt == "nifti":
            import nibabel as nib

            try:
                img = nib.load(str(path))
            except nib.filebasedimages.ImageFileError as exc:
                raise ValueError(str(exc)) from None
            dims = tuple(int(d) for d in img.header["dim"][1 : 1 + int(img.header["dim"][0])])
            if any(d < 0 for d in dims):
                raise ValueError(f"its header gives a negative size, {dims}")
            need = math.prod(dims) * img.get_data_dtype().itemsize
            held = path.stat().st_size
            if path.suffix == ".nii" and need > held:
                raise ValueError(
                    f"its header asks for {_size(need)} of data but the file holds {_size(held)}"
                )
            try:
                data = np.asanyarray(img.dataobj)
            except MemoryError:
                raise ValueError(f"its header asks for {_size(need)}, more memory than is free") from None
            zooms = tuple(float(z) for z in img.header.get_zooms())
            if data.ndim > 3:  # (x, y, z, t, ...) -> (t, ..., x, y, z)
                data = np.moveaxis(data, range(3, data.ndim), range(data.ndim - 3))
                zooms = zooms[3:] + zooms[:3]
            return ImageFile(data, fmt, zooms, {"affine": img.affine, "header": img.header})
        if fmt == "tiff":
            import tifffile

            return ImageFile(tifffile.imread(path), fmt)
        if fmt == "npy":
            return ImageFile(np.load(path, allow_pickle=False), fmt)
        if fmt == "png" and _png_colour16(path):
            return ImageFile(_read_png16(path), fmt)
        import imageio.v3 as iio

        return ImageFile(iio.imread(path), fmt)
    except (OSError, ValueError, EOFError, OverflowError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot read {path} as {fmt}: {first}") from None


def _open_zarr(path: Path):
    """The store's array, or a group's (OME-Zarr's) first array, full resolution: "0"."""
    from ._chunked import need

    zarr = need("zarr")
    node = zarr.open(str(path), mode="r")
    if not hasattr(node, "shape"):
        names = sorted(name for name, _ in node.arrays())
        if not names:
            raise ValueError("the store holds no array")
        node = node["0" if "0" in names else names[0]]
    return node


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} bytes"


def write_image(path: str | os.PathLike, data: np.ndarray, like: ImageFile | None = None) -> Path:
    """Write ``data`` atomically in the format of ``path``'s extension.

    Zarr is written block by block from a lazy (dask) ``data`` too, without holding it.

    TIFF, NIfTI and NPY store the array's dtype (float32 for denoised results). PNG and JPEG
    hold integers only: the result is rounded and clipped to the dtype of ``like`` (uint8 by
    default). A NIfTI result reuses the affine and header of ``like`` when it is NIfTI.
    """
    path = Path(path)
    fmt = image_format(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    if math.prod(data.shape) == 0:
        raise ValueError(f"nothing to write: the image is empty (shape {data.shape})")
    planes = (1, 3) if fmt == "jpeg" else (2, 3, 4)
    if fmt in ("png", "jpeg") and not (data.ndim == 2 or (data.ndim == 3 and data.shape[-1] in planes)):
        kinds = "gray or RGB" if fmt == "jpeg" else "gray, gray + alpha, RGB or RGBA"
        raise ValueError(f"{fmt.upper()} holds 2D {kinds} images, not shape {data.shape}; use .tif")
    if getattr(data, "dtype", None) == np.bool_:  # a mask: 0 and 1, which every format holds
        data = np.asarray(data).astype(np.uint8)
    if fmt == "zarr":
        from ._chunked import need, write_zarr

        da = need("dask.array")

        return write_zarr(data if isinstance(data, da.Array) else da.from_array(np.asarray(data)), path)
    with atomic_path(path) as tmp:
        if fmt == "nifti":
            import nibabel as nib

            affine = like.extra.get("affine") if like is not None else None
            header = like.extra.get("header") if like is not None else None
            if data.ndim > 3:  # (t, ..., x, y, z) -> (x, y, z, t, ...), as NIfTI stores it
                data = np.moveaxis(data, range(data.ndim - 3), range(3, data.ndim))
            if data.dtype == np.float16:  # NIfTI has no half floats
                data = data.astype(np.float32)
            img = nib.Nifti1Image(
                data, affine if affine is not None else np.eye(4), header=header, dtype=data.dtype
            )
            nib.save(img, str(tmp))
        elif fmt == "tiff":
            import tifffile

            rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
            tifffile.imwrite(tmp, data, photometric="rgb" if rgb else "minisblack")
        elif fmt == "npy":
            with open(tmp, "wb") as f:
                np.save(f, data, allow_pickle=False)
        else:
            import imageio.v3 as iio

            dtype = like.data.dtype if like is not None and like.data.dtype.kind in "ui" else np.uint8
            info = np.iinfo(dtype)
            pixels = np.clip(np.rint(data), info.min, info.max).astype(dtype)
            if fmt == "png" and pixels.dtype.itemsize == 2 and pixels.ndim == 3:
                _write_png16(tmp, pixels.astype(np.uint16))  # Pillow writes colour as 8-bit only
            else:
                iio.imwrite(tmp, pixels, extension=path.suffix)
    return path


def _png_colour16(path: Path) -> bool:
    """Whether a PNG holds 16-bit colour (RGB or RGBA), which Pillow reads as 8-bit."""
    with open(path, "rb") as f:
        head = f.read(26)
    return len(head) == 26 and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 6)


def _read_png16(path: Path) -> np.ndarray:
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    return np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(
        height, width, info["planes"]
    )


def _write_png16(path: Path, pixels: np.ndarray) -> None:
    import png

    height, width, planes = pixels.shape
    writer = png.Writer(width, height, bitdepth=16, greyscale=False, alpha=planes == 4)
    with open(path, "wb") as f:
        writer.write(f, pixels.reshape(height, width * planes))
