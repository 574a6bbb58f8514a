"""Ablations on CPU, one family per run, each arm from the same seed and the same data.

``--family adl``: the ADL losses, L1 only, +ATW texture, +histogram, +adversarial, on a small
2D gray Efficient-Unet (the adversarial arm also spends steps on the discriminator).

``--family adaptive-cnn``: the multi-scale adaptive CNN's parts, in the compact configuration
of ``training/configs/adaptive-cnn-2d-gray.yaml``: the full network (damping layers, lp
penalty, clean-to-clean phase), without the damping layers, without the lp term, and without
the clean-to-clean phase (same noisy-to-clean updates in every arm; MSE loss).

Every arm trains on ``training/data/2d-gray/train`` and then denoises the held-out
``2d-gray/val`` images blind at sigma = 15, 25 and 50, beside the noisy input and non-local
means, in one run.

    python training/assemble_data.py && python training/ablation.py --steps 1500
    python training/ablation.py --family adaptive-cnn --steps 600 --lr 1e-3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_adl_denoise import add_noise, denoise
from napari_adl_denoise.io import read_image
from napari_adl_denoise.metrics import psnr, ssim
from napari_adl_denoise.training import TrainingConfig, train

HERE = Path(__file__).parent
SIGMAS = (15, 25, 50)


ADAPTIVE_CNN = {
    "kind": "adaptive_cnn",
    "feature_channels": [16, 20, 24, 28, 32],
    "reconstruction_channels": 64,
}
ADAPTIVE_CNN_LOSS = {"l1": 0, "mse": 1, "atw": 0, "histogram": 0, "adversarial": 0, "lp": 1e-6}


def adaptive_cnn_arms(steps: int) -> dict[str, dict]:
    phases = {
        "clean_to_clean": steps // 4,
        "denoiser_warmup": steps,
        "discriminator_warmup": 0,
        "adversarial": 0,
    }
    arm = {"model": ADAPTIVE_CNN, "loss": ADAPTIVE_CNN_LOSS, "phases": phases}
    return {
        "damping + lp + clean-to-clean": arm,
        "no damping layers": {**arm, "model": {**ADAPTIVE_CNN, "damping_layers": 0}},
        "no lp term": {**arm, "loss": {**ADAPTIVE_CNN_LOSS, "lp": 0}},
        "no clean-to-clean phase": {**arm, "phases": {**phases, "clean_to_clean": 0}},
    }


def arms(steps: int) -> dict[str, dict]:
    denoiser_only = {"denoiser_warmup": steps, "discriminator_warmup": 0, "adversarial": 0}
    half = steps // 2
    return {
        "L1": {"loss": {"atw": 0, "histogram": 0, "adversarial": 0}, "phases": denoiser_only},
        "L1 + ATW": {"loss": {"histogram": 0, "adversarial": 0}, "phases": denoiser_only},
        "L1 + ATW + histogram": {"loss": {"adversarial": 0}, "phases": denoiser_only},
        "L1 + ATW + histogram + adversarial": {
            "phases": {
                "denoiser_warmup": half,
                "discriminator_warmup": steps // 10,
                "adversarial": steps - half,
            }
        },
    }


def config(name: str, arm: dict, args: argparse.Namespace) -> TrainingConfig:
    data = args.data
    return TrainingConfig.model_validate(
        {
            "name": name,
            "model": {"filter_base": args.filter_base},
            "description": f"ablation arm {name}",
            "discriminator": {"filter_base": 8},
            "data": {
                "train": [str(data / "2d-gray/train/*.tif")],
                "val": [str(data / "2d-gray/val/*.tif")],
                "patch_shape": [64, 64],
                "batch_size": 8,
                "val_patches": 32,
            },
            "noise": [{"sigma": [0, 55]}],
            "optim": {"lr": args.lr},
            "validate_every": max(args.steps // 5, 1),
            "checkpoint_every": max(args.steps // 5, 1),
            "output": str(args.out / name),
            **arm,
        }
    )


def evaluate(
    model, method: str, images: list[np.ndarray], *, rgb: bool = False
) -> dict[int, tuple[float, float, float]]:
    """Mean PSNR, SSIM and seconds per image at each sigma, blind (the noisy input for 'noisy').

    The noise is seeded per sigma and image, so every method and model sees the same noisy data.
    """
    scores = {}
    for sigma in SIGMAS:
        rows = []
        for k, clean in enumerate(images):
            noisy = add_noise(clean, sigma=sigma, seed=1000 * sigma + k)
            start = time.perf_counter()
            result = noisy if method == "noisy" else denoise(noisy, method, model=model)
            seconds = time.perf_counter() - start
            rows.append((psnr(clean, result), ssim(clean, result, channel_axis=-1 if rgb else None), seconds))
        scores[sigma] = tuple(np.mean(rows, axis=0))
    return scores


def val_files(data: Path, kind: str = "2d-gray") -> list[Path]:
    """The held-out validation files of one kind (``2d-gray``, ``2d-rgb`` or ``3d``)."""
    return sorted(p for p in (data / kind / "val").iterdir() if p.suffix in (".tif", ".gz", ".nii"))


def load_val_images(data: Path, kind: str = "2d-gray") -> list[np.ndarray]:
    """The held-out validation images of one kind, as float32."""
    return [read_image(p).data.astype(np.float32) for p in val_files(data, kind)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("adl", "adaptive-cnn"), default="adl")
    parser.add_argument("--steps", type=int, default=1500, help="denoiser updates per arm")
    parser.add_argument("--filter-base", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--out", type=Path, help="default: runs/ablation-FAMILY")
    parser.add_argument("--resume", action="store_true", help="continue interrupted arms")
    args = parser.parse_args()
    args.out = args.out or Path(f"runs/ablation-{args.family}")

    images = load_val_images(args.data)
    results = {
        "noisy input": (evaluate(None, "noisy", images), 0.0),
        "NLM": (evaluate(None, "nlm", images), 0.0),
    }
    family = arms if args.family == "adl" else adaptive_cnn_arms
    for label, arm in family(args.steps).items():
        name = label.lower().replace(" + ", "-").replace(" ", "-")
        cfg = config(name, arm, args)
        done = cfg.output_dir / f"{name}.safetensors"
        record = None
        if not (args.resume and done.exists() and not (cfg.output_dir / "checkpoint.pt").exists()):
            for record in train(cfg, resume=args.resume):
                if record.validation:
                    print(f"{label}: step {record.step} val PSNR {record.validation['psnr']:.2f}", flush=True)
        minutes = record.elapsed / 60 if record else float("nan")
        results[label] = (evaluate(str(done), args.family, images), minutes)

    header = "| arm | train min | " + " | ".join(f"sigma {s} PSNR / SSIM" for s in SIGMAS) + " |"
    lines = [
        f"{len(images)} held-out images (2d-gray/val), blind; {args.family}, {args.steps} denoiser "
        f"updates per arm{', filter_base ' + str(args.filter_base) if args.family == 'adl' else ''}, "
        f"patches 64x64, batch 8, lr {args.lr}",
        "",
        header,
        "|" + "---|" * (2 + len(SIGMAS)),
    ]
    for label, (scores, minutes) in results.items():
        cells = " | ".join(f"{scores[s][0]:.2f} / {scores[s][1]:.3f}" for s in SIGMAS)
        lines.append(f"| {label} | {minutes:.1f} | {cells} |")
    print("\n".join(lines))
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
