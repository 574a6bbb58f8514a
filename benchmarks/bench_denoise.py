"""Time and peak memory of ADL denoising: 2D 512x512 and 3D 128^3, by device and tile size.

Each case runs in a fresh process so its peak memory is its own. By default the bundled models
(adl-2d-gray, adl-3d-gray) run; ``--paper`` benchmarks the paper's configurations instead,
untrained (speed does not depend on the weights; filter_base 32, enhancer kernel 7 in 2D and 3
in 3D). The input is a real image (camera) or MRI volume with noise.

    python benchmarks/bench_denoise.py [--paper] [--devices cpu cuda] [--output benchmarks/results.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

CASES = {
    "2D 512x512": {"spatial_dims": 2, "tiles": [512, 256, 128]},
    "3D 128^3": {"spatial_dims": 3, "tiles": [128, 64, 32]},
}

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from napari_adl_denoise import denoise
from napari_adl_denoise.models import EfficientUnet, EfficientUnetConfig

spatial_dims, tile, device, paper = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "paper"
torch.manual_seed(0)
net = EfficientUnet(EfficientUnetConfig(spatial_dims=spatial_dims)).eval() if paper else None
rng = np.random.default_rng(0)
if spatial_dims == 2:
    from skimage import data
    image = data.camera().astype(np.float32)
else:
    from nibabel.testing import data_path
    import nibabel as nib
    from scipy.ndimage import zoom
    mri = np.asanyarray(nib.load(f"{data_path}/anatomical.nii").dataobj).astype(np.float32)
    image = zoom(mri, [128 / s for s in mri.shape], order=1)[:128, :128, :128]
image = image + rng.normal(0, 0.1 * float(np.ptp(image)), image.shape).astype(np.float32)
warm = image[:64, :64] if spatial_dims == 2 else image[:32, :32, :32]
denoise(warm, model=net, device=device)
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
tiles = []
denoise(image, model=net, device=device, tile_shape=tile, progress=lambda r: tiles.append(r.total))
if device.startswith("cuda"):
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
print(json.dumps({"seconds": seconds, "tiles": tiles[-1], "rss_mb": peak_rss / 1024,
                  "rss_growth_mb": max(peak_rss - base, 0) / 1024, "gpu_mb": gpu}))
"""


def run_case(spatial_dims: int, tile: int, device: str, paper: bool) -> dict:
    models = "paper" if paper else "bundled"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(spatial_dims), str(tile), device, models],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from napari_adl_denoise import available_devices

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=None, help="default: every device present")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--paper", action="store_true", help="the paper's configurations, untrained")
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    devices = args.devices or available_devices()

    header = (
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; "
        f"{'paper configurations, untrained' if args.paper else 'bundled adl-2d-gray and adl-3d-gray'}\n\n"
        "| data | device | tile | tiles | time (s) | peak RSS (MB) | RSS growth (MB) | peak GPU (MB) |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    print(header, flush=True)
    lines = [header]
    for case in args.cases:
        spec = CASES[case]
        for device in devices:
            for tile in spec["tiles"]:
                r = run_case(spec["spatial_dims"], tile, device, args.paper)
                if "error" in r:
                    line = f"| {case} | {device} | {tile} | | failed: {r['error']} | | | |"
                else:
                    gpu = f"{r['gpu_mb']:.0f}" if r["gpu_mb"] is not None else "-"
                    line = (
                        f"| {case} | {device} | {tile} | {r['tiles']} | {r['seconds']:.2f} | "
                        f"{r['rss_mb']:.0f} | {r['rss_growth_mb']:.0f} | {gpu} |"
                    )
                print(line, flush=True)
                lines.append(line)
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
