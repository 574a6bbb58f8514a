"""Which 2D model trains best per CPU-hour? Equal wall-clock budgets, then held-out PSNR.

Each candidate (a model size, enhancer kernel, normalisation and output form) trains from the
same seed with L1 + ATW (the ablation's best loss set) for the same number of minutes on
``training/data/2d-gray/train``; its best checkpoint then denoises the held-out
``2d-gray/val`` images blind at sigma = 15, 25 and 50, beside the noisy input and NLM.

    python training/candidates.py --minutes 7
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ablation import SIGMAS, evaluate, load_val_images

from napari_adl_denoise.models import EfficientUnet, EfficientUnetConfig
from napari_adl_denoise.training import TrainingConfig, train

HERE = Path(__file__).parent

CANDIDATES = {
    "b16 k3 none sigmoid": {"filter_base": 16, "enhancer_kernel": 3, "norm": "none"},
    "b16 k3 none residual": {
        "filter_base": 16,
        "enhancer_kernel": 3,
        "norm": "none",
        "output_activation": "residual",
    },
    "b16 k3 batch residual": {
        "filter_base": 16,
        "enhancer_kernel": 3,
        "norm": "batch",
        "output_activation": "residual",
    },
    "b8 k3 none residual": {
        "filter_base": 8,
        "enhancer_kernel": 3,
        "norm": "none",
        "output_activation": "residual",
    },
    "b24 k3 none residual": {
        "filter_base": 24,
        "enhancer_kernel": 3,
        "norm": "none",
        "output_activation": "residual",
    },
}


def config(name: str, model: dict, args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {
            "name": name,
            "model": model,
            "data": {
                "train": [str(args.data / "2d-gray/train/*.tif")],
                "val": [str(args.data / "2d-gray/val/*.tif")],
                "patch_shape": [64, 64],
                "batch_size": 8,
                "val_patches": 32,
            },
            "noise": [{"sigma": [0, 55]}],
            "optim": {"lr": args.lr},
            "loss": {"histogram": 0, "adversarial": 0},
            "phases": {"denoiser_warmup": 10**6, "discriminator_warmup": 0, "adversarial": 0},
            "validate_every": 100,
            "checkpoint_every": 10**6,
            "output": str(args.out / name),
        }
    )


def run(cfg: TrainingConfig, minutes: float) -> tuple[int, float]:
    """Train until ``minutes`` of training time have passed; (steps, seconds)."""
    steps = train(cfg)
    record = None
    for record in steps:
        if record.elapsed > 60 * minutes:
            steps.close()  # keeps the best model by validation PSNR
            break
    return record.step, record.elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=7.0, help="training time per candidate")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--out", type=Path, default=Path("runs/candidates"))
    parser.add_argument("--only", nargs="*", help="candidate labels to run (default: all)")
    args = parser.parse_args()

    images = load_val_images(args.data)
    rows = [
        ("noisy input", "", "", evaluate(None, "noisy", images)),
        ("NLM", "", "", evaluate(None, "nlm", images)),
    ]
    for label, model in CANDIDATES.items():
        if args.only and label not in args.only:
            continue
        name = label.replace(" ", "-")
        cfg = config(name, model, args)
        steps, seconds = run(cfg, args.minutes)
        patches_per_s = steps * cfg.data.batch_size / seconds
        scores = evaluate(str(cfg.output_dir / f"{name}.safetensors"), "adl", images)
        params = sum(p.numel() for p in EfficientUnet(EfficientUnetConfig(**model)).parameters())
        rows.append((label, f"{params / 1e6:.2f}M", f"{patches_per_s:.1f}", scores))
        print(f"{label}: {steps} steps in {seconds / 60:.1f} min", flush=True)

    lines = [
        f"{len(images)} held-out images (2d-gray/val), blind; {args.minutes:g} min of training each on "
        f"this machine, L1 + ATW, patches 64x64, batch 8, lr {args.lr:g}; {time.strftime('%Y-%m-%d')}",
        "",
        "| candidate | parameters | patches/s | "
        + " | ".join(f"sigma {s} PSNR / SSIM" for s in SIGMAS)
        + " | mean PSNR | s per image |",
        "|" + "---|" * (5 + len(SIGMAS)),
    ]
    for label, params, speed, scores in rows:
        cells = " | ".join(f"{scores[s][0]:.2f} / {scores[s][1]:.3f}" for s in SIGMAS)
        mean = sum(scores[s][0] for s in SIGMAS) / len(SIGMAS)
        seconds = sum(scores[s][2] for s in SIGMAS) / len(SIGMAS)
        lines.append(f"| {label} | {params} | {speed} | {cells} | {mean:.2f} | {seconds:.2f} |")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "candidates.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
