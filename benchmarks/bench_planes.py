"""How a volume's three slicing directions are best combined when a 2D model denoises it (2.5D).

For each volume and Gaussian sigma (0-255 scale of its range) the script denoises the slices
along each axis alone (with the whole volume's intensity range, as ``denoise`` does), then scores
their plain mean, the default weights (:func:`~napari_adl_denoise.methods.plane_weights`:
by the voxels of each slicing plane) and, as a ceiling no blind rule reaches, the non-negative
least-squares weights fitted to the clean volume. The first two volumes are the held-out
validation volumes of ``bench_quality.py``; the others are crops of the MNI152 T1 template
(four of its planes are among the 2D model's training images) cut to the shapes that trouble a
plain mean: few slices, thick slices (three averaged into one), a flat box.

    python benchmarks/bench_planes.py [--model adl-2d-gray-real] [--output benchmarks/planes-cpu.md]
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

import napari_adl_denoise as adl
from napari_adl_denoise.inference import robust_range
from napari_adl_denoise.io import read_image
from napari_adl_denoise.methods import plane_weights
from napari_adl_denoise.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = (15, 25, 50)


def volumes(data: Path) -> dict[str, np.ndarray]:
    def read(path: str) -> np.ndarray:
        return np.asarray(read_image(data / path).data, dtype=np.float32)

    mni = read("3d/train/mni152-t1.nii.gz")
    return {
        "anatomical (held out)": read("3d/val/anatomical.nii.gz"),
        "timelapse-stack (held out)": read("3d/val/timelapse-stack.nii.gz"),
        "MNI152 cube-ish crop": mni[40:104, 40:120, 30:100],
        "MNI152, 10 slices": mni[90:100, 30:190, 20:170],
        "MNI152, slices 3x thicker": mni[30:150, 40:170, 30:160].reshape(40, 3, 130, 130).mean(axis=1),
        "MNI152, flat box": mni[80:104, 50:178, 70:110],
    }


def rows(model: str, data: Path) -> list[str]:
    lines = [
        "| volume | shape | sigma | along axis 0 / 1 / 2 | mean | plane weights (default) "
        "| fitted weights | fitted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    gains = []
    for name, clean in volumes(data).items():
        span = float(np.ptp(clean))
        weights = np.array(plane_weights(clean.shape))
        for sigma in SIGMAS:
            noisy = adl.add_noise(clean, "gaussian", sigma=sigma, seed=1)
            whole = robust_range(noisy)
            outs = [
                np.moveaxis(
                    adl.denoise(np.moveaxis(noisy, a, 0), model=model, spatial_dims=2, intensity_range=whole),
                    0,
                    a,
                ).astype(np.float64)
                for a in range(3)
            ]
            fitted, _ = nnls(np.stack([o.ravel() for o in outs], 1), clean.ravel().astype(np.float64))

            def score(w, outs=outs, clean=clean, span=span):
                return psnr(clean, np.tensordot(w, outs, axes=1), data_range=span)

            mean, default = score(np.full(3, 1 / 3)), score(weights)
            gains.append(default - mean)
            along = " / ".join(f"{psnr(clean, o, data_range=span):.2f}" for o in outs)
            lines.append(
                f"| {name} | {'x'.join(map(str, clean.shape))} | {sigma} | {along} | {mean:.2f} | "
                f"{default:.2f} ({', '.join(f'{w:.2f}' for w in weights)}) | "
                f"{', '.join(f'{w:.2f}' for w in fitted)} | {score(fitted):.2f} |"
            )
            print(lines[-1], flush=True)
    lines.append("")
    lines.append(
        f"Plane weights minus mean: {min(gains):+.2f} to {max(gains):+.2f} dB, "
        f"{np.mean(gains):+.2f} dB on average over {len(gains)} rows."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="adl-2d-gray-real")
    parser.add_argument("--data", type=Path, default=ROOT / "training/data")
    parser.add_argument("--output", type=Path, help="write the report here (Markdown)")
    args = parser.parse_args()
    table = rows(args.model, args.data)
    report = [
        f"# 2.5D: combining a volume's slicing directions ({datetime.date.today()})",
        "",
        f"Model `{args.model}`, blind; Gaussian noise (seed 1); PSNR in dB against the clean volume.",
        "",
        *table,
    ]
    print("\n".join(report[-1:]))
    if args.output:
        args.output.write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
