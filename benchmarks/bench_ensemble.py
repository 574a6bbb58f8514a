"""What a learned model's self-ensemble buys: PSNR and seconds for 1, 2, 4 and 8 passes.

``denoise(..., ensemble=N)`` also runs the network on N - 1 flipped or rotated copies of each
tile and averages the results, turned back. On the held-out images of ``bench_quality.py``
(same noise, same seeds): the 2D gray images under Gaussian noise (sigma 15, 25, 50) and its
real-noise conditions, and the volumes (a 2D model over three slicing directions) under
Gaussian noise. Default model: the bundled default for gray data. Prints a Markdown table and
writes it to ``--output``.

    python benchmarks/bench_ensemble.py --output benchmarks/ensemble-cpu.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from bench_quality import REAL_NOISE, SIGMAS, _images, _masked, conditions

from napari_adl_denoise import add_noise, denoise
from napari_adl_denoise.methods import ENSEMBLE_PASSES
from napari_adl_denoise.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]


def scores(folder: Path, spec: dict, passes: tuple[int, ...], model: str | None) -> dict:
    """condition -> passes -> (mean PSNR, mean seconds) over the folder's images."""
    images = _images(folder)
    table: dict = {}
    for c, (label, kind, params, masked) in enumerate(conditions(spec)):
        rows = {n: [] for n in passes}
        for k, (_, image) in enumerate(images):
            clean = _masked(image, 1) if masked else image
            seed = 100_000 + 1000 * c + k if spec.get("real_noise") else 1000 * params["sigma"] + k
            noisy = add_noise(clean, kind, seed=seed, **params)
            if masked:
                noisy = np.where(clean > 0, noisy, 0).astype(np.float32)
            for n in passes:
                start = time.perf_counter()
                result = denoise(noisy, model=model, spatial_dims=spec["spatial_dims"], ensemble=n)
                rows[n].append((psnr(clean, result), time.perf_counter() - start))
        table[label] = {n: tuple(np.mean(r, axis=0)) for n, r in rows.items()}
        print(label, {n: f"{v[0]:.2f}" for n, v in table[label].items()}, flush=True)
    return table


def markdown(title: str, table: dict, passes: tuple[int, ...]) -> list[str]:
    lines = [
        f"## {title}",
        "",
        "| noise | " + " | ".join(f"{n} pass{'es' if n > 1 else ''}" for n in passes) + " |",
        "|---|" + "---|" * len(passes),
    ]
    for label, row in table.items():
        base = row[passes[0]][0]
        cells = [
            f"{row[n][0]:.2f}" + ("" if n == passes[0] else f" ({row[n][0] - base:+.2f})") for n in passes
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    seconds = [np.mean([row[n][1] for row in table.values()]) for n in passes]
    lines.append("| s per image | " + " | ".join(f"{s:.2f}" for s in seconds) + " |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "training/data")
    parser.add_argument("--model", help="a model name or file (default: the bundled default)")
    parser.add_argument("--output", type=Path, help="write the report here (Markdown)")
    args = parser.parse_args()

    import torch

    report = [
        f"# Self-ensemble: PSNR (dB) by passes ({time.strftime('%Y-%m-%d')})",
        "",
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads). Model: "
        f"{args.model or 'the bundled default'}; in brackets the gain over one pass. Defaults: 2 "
        "passes on 2D gray images, 1 on colour images and volumes.",
        "",
        "`python benchmarks/bench_ensemble.py`",
        "",
    ]
    gray = args.data / "2d-gray/val"
    sets = [
        ("2D gray, Gaussian", gray, {"spatial_dims": 2, "sigmas": SIGMAS}, ENSEMBLE_PASSES),
        ("2D gray, real noise", gray, {"spatial_dims": 2, "real_noise": list(REAL_NOISE)}, ENSEMBLE_PASSES),
        ("3D, 2D model over three directions, Gaussian", args.data / "3d/val",
         {"spatial_dims": 3, "sigmas": SIGMAS}, (1, 2, 8)),
    ]  # fmt: skip
    for title, folder, spec, passes in sets:
        names = ", ".join(name for name, _ in _images(folder))
        report += markdown(f"{title}: {names}", scores(folder, spec, passes, args.model), passes)
    text = "\n".join(report)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
