"""Training speed: patches per second of ADL training steps for candidate model sizes.

Times real engine steps (data sampling, noise, losses, backward, Adam) in the denoiser warm-up
(denoiser only) and adversarial (discriminator + denoiser) phases, and whether channels_last
memory format speeds up a 2D denoiser step on this machine.

    python benchmarks/bench_training.py [--steps 6] [--output benchmarks/training-cpu.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import tifffile
import torch
from skimage import data

from napari_adl_denoise.models import EfficientUnet, EfficientUnetConfig
from napari_adl_denoise.training import TrainingConfig, train

CANDIDATES = [
    # (label, model, patch, batch)
    ("2D b=32 k7 (paper)", {"spatial_dims": 2, "filter_base": 32, "enhancer_kernel": 7}, [64, 64], 8),
    ("2D b=16 k7", {"spatial_dims": 2, "filter_base": 16, "enhancer_kernel": 7}, [64, 64], 8),
    ("2D b=16 k3", {"spatial_dims": 2, "filter_base": 16, "enhancer_kernel": 3}, [64, 64], 8),
    ("2D b=8 k7", {"spatial_dims": 2, "filter_base": 8, "enhancer_kernel": 7}, [64, 64], 8),
    ("3D b=16 k3", {"spatial_dims": 3, "filter_base": 16, "enhancer_kernel": 3}, [32, 32, 32], 2),
    ("3D b=8 k3", {"spatial_dims": 3, "filter_base": 8, "enhancer_kernel": 3}, [32, 32, 32], 2),
]


def steps_per_second(
    model: dict, patch: list[int], batch: int, steps: int, folder: Path
) -> tuple[float, float]:
    sd = model["spatial_dims"]
    config = TrainingConfig.model_validate(
        {
            "name": "bench",
            "model": model,
            "discriminator": {"spatial_dims": sd, "filter_base": 16},
            "data": {
                "train": [str(folder / f"train{sd}.tif")],
                "val": [str(folder / f"val{sd}.tif")],
                "patch_shape": patch,
                "batch_size": batch,
                "val_patches": 1,
            },
            "phases": {"denoiser_warmup": steps + 1, "discriminator_warmup": 0, "adversarial": steps + 1},
            "validate_every": 10**6,
            "checkpoint_every": 10**6,
            "output": str(folder / f"run-{time.monotonic_ns()}"),
        }
    )
    stamps = {"denoiser": [], "adversarial": []}
    for record in train(config, device="cpu"):
        stamps[record.phase].append(record.elapsed)
    # first step of each phase is warm-up; elapsed is cumulative training time
    rates = []
    for phase in ("denoiser", "adversarial"):
        times = stamps[phase]
        rates.append(batch * (len(times) - 1) / (times[-1] - times[0]))
    return rates[0], rates[1]


def channels_last_gain(steps: int) -> tuple[float, float]:
    net = EfficientUnet(EfficientUnetConfig(filter_base=16))
    x = torch.rand(8, 1, 64, 64)
    results = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        model = net.to(memory_format=fmt)
        inp = x.contiguous(memory_format=fmt)
        opt = torch.optim.Adam(model.parameters())
        for i in range(steps + 1):
            if i == 1:
                start = time.perf_counter()
            loss = model(inp, multiscale=True)[0].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        results.append(8 * steps / (time.perf_counter() - start))
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    lines = [
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "",
        "| candidate | parameters | patch x batch | patches/s (denoiser phase) | patches/s (adversarial) |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tifffile.imwrite(folder / "train2.tif", data.camera())
        tifffile.imwrite(folder / "val2.tif", data.moon())
        volume = data.camera()[:64, :128, None].repeat(64, axis=2)
        tifffile.imwrite(folder / "train3.tif", volume)
        tifffile.imwrite(folder / "val3.tif", volume[::-1])
        for label, model, patch, batch in CANDIDATES:
            params = sum(p.numel() for p in EfficientUnet(EfficientUnetConfig(**model)).parameters())
            g, adv = steps_per_second(model, patch, batch, args.steps, folder)
            shape = "x".join(map(str, patch))
            line = f"| {label} | {params / 1e6:.2f}M | {shape} x {batch} | {g:.1f} | {adv:.1f} |"
            print(line, flush=True)
            lines.append(line)
    plain, last = channels_last_gain(args.steps)
    change = f"{last / plain - 1:+.0%}"
    line = f"\nchannels_last, 2D b=16 denoiser step: {plain:.1f} -> {last:.1f} patches/s ({change})"
    print(line)
    lines.append(line)
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
