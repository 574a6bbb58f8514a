"""Demo: add noise to real sample data, denoise it, and show or save the result.

``python -m napari_adl_denoise.demo --output DIR`` writes noisy and denoised files and prints a
PSNR/SSIM table; ``--viewer`` opens napari with the plugin and the layers instead. It uses the
bundled ADL model for each kind of data when one is installed, otherwise non-local means.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .inference import denoise
from .weights import list_models

SIGMA = 25 / 255  # the papers' sigma = 25 on the 0-255 scale, relative to the data range


def samples() -> dict[str, tuple[np.ndarray, dict]]:
    """Real images that ship with installed packages: 2D gray, 2D RGB, 3D MRI (clean)."""
    import nibabel as nib
    from nibabel.testing import data_path
    from skimage import data

    mri = nib.load(str(Path(data_path) / "anatomical.nii"))
    return {
        "camera": (data.camera(), {}),
        "astronaut": (data.astronaut(), {"channel_axis": -1}),
        "mri": (np.asanyarray(mri.dataobj).astype(np.int16), {"spacing": mri.header.get_zooms()}),
    }


def _method_for(spatial_dims: int, channels: int) -> str:
    wanted = 3 if channels == 3 else 1
    for m in list_models():
        if (m.config.spatial_dims, m.config.in_channels) == (spatial_dims, wanted):
            return "adl"
    return "nlm"


def run(seed: int = 0):
    """Yield ``(name, clean, noisy, denoised, method, seconds, kwargs)`` for each sample."""
    rng = np.random.default_rng(seed)
    for name, (clean, kwargs) in samples().items():
        kwargs = {k: v for k, v in kwargs.items() if k == "channel_axis"}
        value_range = float(clean.max()) - float(clean.min())
        noisy = (clean + rng.normal(0, SIGMA * value_range, clean.shape)).astype(np.float32)
        channels = clean.shape[-1] if "channel_axis" in kwargs else 1
        spatial_dims = 3 if name == "mri" else 2
        method = _method_for(spatial_dims, channels)
        start = time.perf_counter()
        result = denoise(noisy, method, **kwargs)
        yield name, clean, noisy, result, method, time.perf_counter() - start, kwargs


def _scores(clean, test, kwargs) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    data_range = float(clean.max()) - float(clean.min())
    clean = clean.astype(np.float64)
    return (
        peak_signal_noise_ratio(clean, test, data_range=data_range),
        structural_similarity(clean, test, data_range=data_range, **kwargs),
    )


def save(output: Path) -> None:
    from .io import write_image

    output.mkdir(parents=True, exist_ok=True)
    print(f"Gaussian noise sigma = 25/255 of each image's range; results in {output}/")
    print(f"{'sample':<10} {'method':<7} {'noisy PSNR/SSIM':>16} {'denoised PSNR/SSIM':>19} {'time':>7}")
    for name, clean, noisy, result, method, seconds, kwargs in run():
        noisy_psnr, noisy_ssim = _scores(clean, noisy, kwargs)
        psnr, ssim = _scores(clean, result, kwargs)
        ext = ".nii.gz" if name == "mri" else ".tif"
        write_image(output / f"{name}-noisy{ext}", noisy)
        write_image(output / f"{name}-{method}{ext}", result)
        print(
            f"{name:<10} {method:<7} {noisy_psnr:8.2f} / {noisy_ssim:.3f} "
            f"{psnr:10.2f} / {ssim:.3f} {seconds:6.1f}s"
        )
    if not list_models():
        print("No bundled ADL model is installed yet, so the demo used non-local means.")


def show() -> None:
    import napari

    viewer = napari.Viewer(title="napari-adl-denoise demo")
    for name, clean, noisy, result, method, _, kwargs in run():
        rgb = "channel_axis" in kwargs
        viewer.add_image(clean, name=f"{name} (clean)", rgb=rgb, visible=False)
        viewer.add_image(noisy, name=f"{name} (noisy)", rgb=False if not rgb else None, visible=False)
        viewer.add_image(result, name=f"{name} [{method}]", visible=name == "camera")
    napari.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--output", type=Path, help="write results to this folder (headless)")
    mode.add_argument("--viewer", action="store_true", help="show the results in napari")
    args = parser.parse_args(argv)
    show() if args.viewer else save(args.output)


if __name__ == "__main__":
    main()
