"""Quality and speed of the bundled ADL models beside NLM and BM3D/BM4D, on held-out real data.

For sigma = 15, 25, 50 (Gaussian, 0-255 scale relative to each image's range) on the validation
images of ``training/data`` (never used for training; ``python training/assemble_data.py``
writes them): PSNR and SSIM of the noisy input, non-local means (scikit-image), BM3D (2D) or
BM4D (3D) given the true sigma (``pip install -e ".[baselines]"``; skipped when missing) and
every bundled model (blind), with seconds and peak memory per image. ``--speed`` adds the
timing on 512x512 gray and RGB images and a 128^3 volume. Each method runs in a fresh process so its
peak memory is its own. Prints a Markdown report and writes it to ``--output``.

    python benchmarks/bench_quality.py --speed --output benchmarks/quality-cpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIGMAS = (15, 25, 50)
SETS = {
    "2D gray": {"folder": "2d-gray/val", "spatial_dims": 2, "channels": 1, "classical": "bm3d"},
    "2D RGB": {"folder": "2d-rgb/val", "spatial_dims": 2, "channels": 3, "classical": "bm3d"},
    "3D": {"folder": "3d/val", "spatial_dims": 3, "channels": 1, "classical": "bm4d"},
}


# -- child process: one method on one set ---------------------------------------------------------
def _images(folder: Path) -> list[tuple[str, np.ndarray]]:
    from napari_adl_denoise.io import read_image

    files = sorted(p for p in folder.iterdir() if p.suffix in (".tif", ".gz", ".nii"))
    return [(p.name, read_image(p).data.astype(np.float32)) for p in files]


def _denoise(method: str, model: str | None, noisy: np.ndarray, sigma_abs: float, kw: dict):
    from napari_adl_denoise import denoise
    from napari_adl_denoise.inference import robust_range

    if method == "noisy":
        return noisy
    if method == "adl":
        return denoise(noisy, "adl", model=model, **kw)
    lo, hi = robust_range(noisy)
    options = {"sigma": sigma_abs / (hi - lo)} if method in ("bm3d", "bm4d") else {}  # true sigma
    return denoise(noisy, method, **options, **kw)


def child(spec: dict) -> dict:
    """Scores, seconds and peak memory growth of one method over one set's images and sigmas."""
    from napari_adl_denoise import add_noise
    from napari_adl_denoise.metrics import psnr, ssim

    kw = {"channel_axis": -1} if spec["channels"] == 3 else {}
    kw["spatial_dims"] = spec["spatial_dims"]
    if spec["images"] == "speed":
        images = [(spec["speed_name"], _speed_image(spec["spatial_dims"], spec["channels"]))]
    else:
        images = _images(Path(spec["images"]))
    warm = images[0][1][(slice(0, 32),) * spec["spatial_dims"]]
    _denoise(spec["method"], spec["model"], warm, 1.0, kw)  # load libraries and weights once
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = []
    for k, (_, clean) in enumerate(images):
        for sigma in spec["sigmas"]:
            noisy = add_noise(clean, sigma=sigma, seed=1000 * sigma + k)
            sigma_abs = sigma / 255 * float(clean.max() - clean.min())
            start = time.perf_counter()
            result = _denoise(spec["method"], spec["model"], noisy, sigma_abs, kw)
            seconds = time.perf_counter() - start
            data = {"channel_axis": -1} if spec["channels"] == 3 else {}
            rows.append({"sigma": sigma, "psnr": psnr(clean, result), "ssim": ssim(clean, result, **data),
                         "seconds": seconds})  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rows": rows, "peak_mb": max(peak - base, 0) / 1024, "images": [n for n, _ in images]}


def _speed_image(spatial_dims: int, channels: int) -> np.ndarray:
    """A real 512x512 image (PyWavelets' aero, held out; in colour scikit-image's astronaut) or a
    128^3 crop of the MNI152 T1."""
    if spatial_dims == 2 and channels == 3:
        from skimage import data

        return data.astronaut().astype(np.float32)
    if spatial_dims == 2:
        import pywt

        return pywt.data.aero().astype(np.float32)
    from napari_adl_denoise.io import read_image

    volume = read_image(ROOT / "training/data/3d/train/mni152-t1.nii.gz").data.astype(np.float32)
    starts = [(s - 128) // 2 for s in volume.shape]
    return volume[tuple(slice(a, a + 128) for a in starts)]


# -- parent: run the children, print the tables ------------------------------------------------------
def run_child(spec: dict) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"{spec['method']} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def methods_for(
    info: dict, models: list[tuple[str, str]], skip: set[str]
) -> list[tuple[str, str, str | None]]:
    """(label, method, model) rows for a set: noisy, NLM, BM3D/BM4D when installed, ADL models."""
    from importlib.util import find_spec

    from napari_adl_denoise.weights import load_model

    rows = [("noisy input", "noisy", None), ("NLM", "nlm", None)]
    classical = info["classical"]
    if classical not in skip and find_spec(classical) is not None:
        rows.append((classical.upper(), classical, None))
    for label, path in models:
        config = load_model(path).config
        if (config.spatial_dims, config.in_channels) == (info["spatial_dims"], info["channels"]):
            rows.append((label, "adl", path))
    return [r for r in rows if r[1] not in skip]


def quality_table(name: str, results: dict, sigmas: list[int]) -> list[str]:
    lines = [
        "| method | " + " | ".join(f"sigma {s} PSNR / SSIM" for s in sigmas) + " | s per image | peak MB |",
        "|" + "---|" * (3 + len(sigmas)),
    ]
    for label, res in results.items():
        cells = []
        for s in sigmas:
            rows = [r for r in res["rows"] if r["sigma"] == s]
            cells.append(
                f"{np.mean([r['psnr'] for r in rows]):.2f} / {np.mean([r['ssim'] for r in rows]):.3f}"
            )
        seconds = np.mean([r["seconds"] for r in res["rows"]])
        cost = f"{seconds:.2f} | {res['peak_mb']:.0f}" if label != "noisy input" else "- | -"
        lines.append(f"| {label} | {' | '.join(cells)} | {cost} |")
    return lines


def comparison(results: dict, classical: str, sigmas: list[int]) -> list[str]:
    """ADL minus BM3D/BM4D in PSNR per sigma, and the speed ratio."""
    base = results.get(classical.upper())
    lines = []
    for label, res in results.items():
        if base is None or label in ("noisy input", "NLM", classical.upper()):
            continue
        gains = []
        for s in sigmas:
            mine = np.mean([r["psnr"] for r in res["rows"] if r["sigma"] == s])
            theirs = np.mean([r["psnr"] for r in base["rows"] if r["sigma"] == s])
            gains.append(f"{mine - theirs:+.2f} dB at sigma {s}")
        speed = np.mean([r["seconds"] for r in base["rows"]]) / np.mean([r["seconds"] for r in res["rows"]])
        lines.append(f"- {label} vs {classical.upper()}: {', '.join(gains)}; {speed:.1f}x the speed")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=ROOT / "training/data")
    parser.add_argument("--sets", nargs="*", default=list(SETS), choices=list(SETS))
    parser.add_argument("--sigmas", nargs="*", type=int, default=list(SIGMAS))
    parser.add_argument("--model", action="append", default=[], help="also evaluate this model file")
    parser.add_argument("--skip", nargs="*", default=[], help="methods to leave out, e.g. bm4d")
    parser.add_argument(
        "--speed", action="store_true", help="add timings on 512x512 (gray and RGB) and 128^3"
    )
    parser.add_argument("--output", type=Path, help="write the report here (Markdown)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    import torch

    from napari_adl_denoise.weights import list_models

    models = [(m.name, str(m.path)) for m in list_models(user=False)] + [
        (Path(p).stem, p) for p in args.model
    ]
    report = [
        f"# Denoising quality on held-out data ({time.strftime('%Y-%m-%d')})",
        "",
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads). Gaussian noise on the 0-255 scale "
        "relative to each image's range; BM3D/BM4D are given the true sigma, NLM estimates it, ADL "
        "models are blind. Peak MB: growth of the process's peak resident memory while denoising.",
        "",
        f"`{shlex.join(['python', 'benchmarks/bench_quality.py', *sys.argv[1:]])}`",
    ]
    for name in args.sets:
        info = SETS[name]
        folder = args.data / info["folder"]
        if not folder.is_dir():
            print(f"skipping {name}: no {folder} (run training/assemble_data.py)", file=sys.stderr)
            continue
        results = {}
        for label, method, model in methods_for(info, models, set(args.skip)):
            spec = {**info, "images": str(folder), "method": method, "model": model, "sigmas": args.sigmas}
            results[label] = run_child(spec)
            print(f"{name}: {label} done", file=sys.stderr, flush=True)
        images = ", ".join(next(iter(results.values()))["images"])
        report += ["", f"## {name}: {images}", "", *quality_table(name, results, args.sigmas), ""]
        report += comparison(results, info["classical"], args.sigmas)
    if args.speed:
        report += [
            "",
            "## Speed: one image, sigma 25",
            "",
            "| data | method | seconds | peak MB |",
            "|---|---|---|---|",
        ]
        for name, speed_name in (
            ("2D gray", "aero 512x512"),
            ("2D RGB", "astronaut 512x512 RGB"),
            ("3D", "MNI152 T1 128^3 crop"),
        ):
            if name not in args.sets:
                continue
            info = SETS[name]
            for label, method, model in methods_for(info, models, set(args.skip) | {"noisy"}):
                spec = {**info, "images": "speed", "speed_name": speed_name, "method": method,
                        "model": model, "sigmas": [25]}  # fmt: skip
                res = run_child(spec)
                report.append(
                    f"| {speed_name} | {label} | {res['rows'][0]['seconds']:.2f} | {res['peak_mb']:.0f} |"
                )
                print(f"speed {name}: {label} done", file=sys.stderr, flush=True)
    text = "\n".join(report) + "\n"
    print(text)
    if args.output:
        tmp = args.output.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.output)


if __name__ == "__main__":
    main()
