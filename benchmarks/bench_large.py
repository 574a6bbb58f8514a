"""Memory and time of large volumes: the in-memory path, and block by block from Zarr to Zarr.

Each measurement runs in a fresh process, which reports its own peak resident memory. The
volume is the MNI152 T1 template (1 mm, nilearn) mirrored out to the requested size, with
Gaussian noise (sigma 3% of its range), stored as uint16.

    python benchmarks/bench_large.py --zarr-shape 512 1024 1024 --output benchmarks/large-cpu.md
    python benchmarks/bench_large.py --memory-shape 256 512 512 --skip-zarr

Prints a markdown table; ``--output`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MIB = 2**20

IN_MEMORY = """
import json, sys, time
import numpy as np
import napari_adl_denoise as adl

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

volume = np.load(sys.argv[1])
adl.denoise(volume[:16, :16, :16])  # imports, the model and its threads, before the measurement
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) restarts from the current size
before = status("VmRSS:")
start = time.perf_counter()
result = adl.denoise(volume)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "growth_kib": status("VmHWM:") - before, "peak_kib": status("VmHWM:")}))
"""

BLOCKS = """
import json, resource, sys, time
from napari_adl_denoise.cli import main
start = time.perf_counter()
code = main(["denoise", sys.argv[1], sys.argv[2], *sys.argv[3:]])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"code": code, "seconds": seconds, "peak_kib": peak}))
"""


def template() -> np.ndarray:
    from nilearn import datasets

    t1 = np.asarray(datasets.load_mni152_template(resolution=1).dataobj, np.float32)
    return t1 / t1.max()


def mirrored(source: np.ndarray, index: tuple[np.ndarray, ...]) -> np.ndarray:
    """``source`` mirrored out without end: the voxels at ``index`` (one index array per axis)."""
    out = source
    for axis, (i, n) in enumerate(zip(index, source.shape, strict=True)):
        r = i % (2 * n)
        out = np.take(out, np.where(r < n, r, 2 * n - 1 - r), axis=axis)
    return out


def make_volume(shape: tuple[int, ...], seed: int = 0, slab: int = 32):
    """Slabs of the noisy uint16 volume, in order along the first axis."""
    rng = np.random.default_rng(seed)
    t1 = template()
    for z in range(0, shape[0], slab):
        index = (np.arange(z, min(z + slab, shape[0])), np.arange(shape[1]), np.arange(shape[2]))
        clean = mirrored(t1, index)
        noisy = clean * 60000 + rng.normal(0, 0.03 * 60000, clean.shape)
        yield z, np.clip(noisy, 0, 65535).astype(np.uint16)


def run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--memory-shape",
        type=int,
        nargs=3,
        action="append",
        help="in-memory volume (repeatable; default 128 512 512)",
    )
    parser.add_argument("--zarr-shape", type=int, nargs=3, default=(256, 512, 512))
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-zarr", action="store_true")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        for shape in [] if args.skip_memory else [tuple(s) for s in args.memory_shape or [(128, 512, 512)]]:
            volume = np.concatenate([s for _, s in make_volume(shape)])
            np.save(tmp / "volume.npy", volume)
            float32 = volume.size * 4
            del volume
            r = run(IN_MEMORY, str(tmp / "volume.npy"))
            size = f"{'x'.join(map(str, shape))} uint16 ({np.prod(shape) * 2 / MIB:.0f} MiB)"
            rows.append(
                f"| in memory, numpy | {size} "
                f"| {r['seconds']:.0f} | {r['peak_kib'] / 1024:.0f} | {r['growth_kib'] * 1024 / MIB:.0f} "
                f"({r['growth_kib'] * 1024 / float32:.2f}x its float32 size) |"
            )
            print(rows[-1], flush=True)
        if not args.skip_zarr:
            import zarr

            shape = tuple(args.zarr_shape)
            source = zarr.open(str(tmp / "in.zarr"), mode="w", shape=shape, chunks=(64, 256, 256), dtype="u2")
            for z, slab in make_volume(shape):
                source[z : z + len(slab)] = slab
            del source
            r = run(BLOCKS, str(tmp / "in.zarr"), str(tmp / "out.zarr"))
            assert r["code"] == 0
            written = zarr.open(str(tmp / "out.zarr"), mode="r")
            assert written.shape == shape and written.dtype == np.float32
            size = f"{'x'.join(map(str, shape))} uint16 ({np.prod(shape) * 2 / MIB:.0f} MiB)"
            rows.append(
                f"| Zarr to Zarr (`adl-denoise denoise in.zarr out.zarr`) | {size} "
                f"| {r['seconds']:.0f} | {r['peak_kib'] / 1024:.0f} | - |"
            )
            print(rows[-1], flush=True)
    table = "\n".join(
        [
            f"Large volumes, default model (2D over three directions), {time.strftime('%Y-%m-%d')}, "
            f"{os.cpu_count()} CPU cores",
            "",
            "| path | volume | seconds | peak RSS MiB | growth while denoising MiB |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.output:
        args.output.write_text(table + "\n")


if __name__ == "__main__":
    main()
