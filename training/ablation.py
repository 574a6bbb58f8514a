"""Ablations on CPU, one family per run, each arm from the same seed and the same data.

``--family adl``: the ADL losses, L1 only, +ATW texture, +histogram, +adversarial, on a small
2D gray Efficient-Unet (the adversarial arm also spends steps on the discriminator).

``--family adaptive-cnn``: the multi-scale adaptive CNN's parts, in the compact configuration
of ``training/configs/adaptive-cnn-2d-gray.yaml``: the full network (damping layers, lp
penalty, clean-to-clean phase), without the damping layers, without the lp term, and without
the clean-to-clean phase (same noisy-to-clean updates in every arm; MSE loss).

``--family noise-attention``: the paper's Table VI at our budget, in the compact configuration
of ``training/configs/noise-attention-2d-gray.yaml`` (Algorithm 1's Gaussian-or-speckle noise):
the NEN alone (stage I), the two stages without the noise attention block (TWN: the two inputs'
features concatenated and mixed by a 1x1 convolution) and the full method. Stage I trains on its
own objective only (the RN reads its estimate detached), so the NEN-alone arm is the full arm's
first stage (``stages=1``) and needs no run of its own. Scored at Gaussian and speckle 25 and 50.

Every arm trains on ``training/data/2d-gray/train`` and then denoises the held-out
``2d-gray/val`` images blind at sigma = 15, 25 and 50 (Gaussian), beside the noisy input and
non-local means, in one run.

    python training/assemble_data.py && python training/ablation.py --steps 1500
    python training/ablation.py --family adaptive-cnn --steps 600 --lr 1e-3
    python training/ablation.py --family noise-attention --steps 1000 --lr 5e-4
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
GAUSSIAN = [(s, "gaussian", s) for s in SIGMAS]  # labelled by sigma alone
GAUSSIAN_SPECKLE = [(f"{k} {s}", k.lower(), s) for k in ("Gaussian", "speckle") for s in (25, 50)]


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


NOISE_ATTENTION = {"kind": "noise_attention", "features": 16, "growth": 8, "blocks": 1}


def noise_attention_arms(steps: int) -> dict[str, dict]:
    arm = {
        "model": NOISE_ATTENTION,
        "loss": {"l1": 1, "atw": 0, "histogram": 0, "stage": 1, "adversarial": 0},
        "phases": {"denoiser_warmup": steps, "discriminator_warmup": 0, "adversarial": 0},
        "noise": [{"kind": "mixed", "sigma": [0, 75]}],
        "optim": {"betas": [0.9, 0.99]},
    }
    return {
        "NEN alone (stage I)": {**arm, "same_as": "full method", "options": {"stages": 1}},
        "two stages, no attention (TWN)": {**arm, "model": {**NOISE_ATTENTION, "attention": False}},
        "full method": arm,
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
            "validate_every": max(args.steps // 5, 1),
            "checkpoint_every": max(args.steps // 5, 1),
            "output": str(args.out / name),
            **arm,
            "optim": {"lr": args.lr, **arm.get("optim", {})},
        }
    )


def evaluate(
    model,
    method: str,
    images: list[np.ndarray],
    *,
    rgb: bool = False,
    conditions: list[tuple[str | int, str, int]] = GAUSSIAN,
    options: dict | None = None,
) -> dict[str | int, tuple[float, float, float]]:
    """Mean PSNR, SSIM and seconds per image for each (label, noise kind, sigma) condition,
    blind (the noisy input for 'noisy').

    The noise is seeded per condition and image, so every method and model sees the same noisy
    data.
    """
    scores = {}
    for c, (label, kind, sigma) in enumerate(conditions):
        rows = []
        for k, clean in enumerate(images):
            seed = 1000 * sigma + k + (0 if kind == "gaussian" else 100_000 * c)
            noisy = add_noise(clean, kind, sigma=sigma, seed=seed)
            start = time.perf_counter()
            result = noisy if method == "noisy" else denoise(noisy, method, model=model, **(options or {}))
            seconds = time.perf_counter() - start
            rows.append((psnr(clean, result), ssim(clean, result, channel_axis=-1 if rgb else None), seconds))
        scores[label] = tuple(np.mean(rows, axis=0))
    return scores


def val_files(data: Path, kind: str = "2d-gray") -> list[Path]:
    """The held-out validation files of one kind (``2d-gray``, ``2d-rgb`` or ``3d``)."""
    return sorted(p for p in (data / kind / "val").iterdir() if p.suffix in (".tif", ".gz", ".nii"))


def load_val_images(data: Path, kind: str = "2d-gray") -> list[np.ndarray]:
    """The held-out validation images of one kind, as float32."""
    return [read_image(p).data.astype(np.float32) for p in val_files(data, kind)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("adl", "adaptive-cnn", "noise-attention"), default="adl")
    parser.add_argument("--steps", type=int, default=1500, help="denoiser updates per arm")
    parser.add_argument("--filter-base", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--out", type=Path, help="default: runs/ablation-FAMILY")
    parser.add_argument("--resume", action="store_true", help="continue interrupted arms")
    args = parser.parse_args()
    args.out = args.out or Path(f"runs/ablation-{args.family}")

    images = load_val_images(args.data)
    conditions = GAUSSIAN_SPECKLE if args.family == "noise-attention" else GAUSSIAN
    labels = [c[0] for c in conditions]
    titles = [f"sigma {c}" if isinstance(c, int) else c for c in labels]
    results = {
        "noisy input": (evaluate(None, "noisy", images, conditions=conditions), 0.0),
        "NLM": (evaluate(None, "nlm", images, conditions=conditions), 0.0),
    }
    family = {"adl": arms, "adaptive-cnn": adaptive_cnn_arms, "noise-attention": noise_attention_arms}
    named = {label: label.lower().replace(" + ", "-").replace(" ", "-").replace(",", "").replace("(", "")
             .replace(")", "") for label in family[args.family](args.steps)}  # fmt: skip
    trained: dict[str, tuple[Path, float]] = {}
    for label, arm in sorted(family[args.family](args.steps).items(), key=lambda a: "same_as" in a[1]):
        options = arm.pop("options", None)
        if "same_as" in arm:  # evaluated from another arm's run
            done, minutes = trained[arm.pop("same_as")]
        else:
            name = named[label]
            cfg = config(name, arm, args)
            done = cfg.output_dir / f"{name}.safetensors"
            record = None
            if not (args.resume and done.exists() and not (cfg.output_dir / "checkpoint.pt").exists()):
                for record in train(cfg, resume=args.resume):
                    if record.validation:
                        psnr_now = record.validation["psnr"]
                        print(f"{label}: step {record.step} val PSNR {psnr_now:.2f}", flush=True)
            minutes = record.elapsed / 60 if record else float("nan")
            trained[label] = done, minutes
        scores = evaluate(str(done), args.family, images, conditions=conditions, options=options)
        results[label] = (scores, minutes)
    results = {k: results[k] for k in ["noisy input", "NLM", *family[args.family](args.steps)]}

    header = "| arm | train min | " + " | ".join(f"{c} PSNR / SSIM" for c in titles) + " |"
    lines = [
        f"{len(images)} held-out images (2d-gray/val), blind; {args.family}, {args.steps} denoiser "
        f"updates per arm{', filter_base ' + str(args.filter_base) if args.family == 'adl' else ''}, "
        f"patches 64x64, batch 8, lr {args.lr}",
        "",
        header,
        "|" + "---|" * (2 + len(labels)),
    ]
    for label, (scores, minutes) in results.items():
        cells = " | ".join(f"{scores[c][0]:.2f} / {scores[c][1]:.3f}" for c in labels)
        lines.append(f"| {label} | {minutes:.1f} | {cells} |")
    print("\n".join(lines))
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
