"""Demo: add noise to real sample data, denoise it, and show or save the result.

``python -m napari_adl_denoise.demo --output DIR`` writes noisy and denoised files and prints a
PSNR/SSIM table; ``--viewer`` opens napari with the plugin and the layers instead. It uses the
bundled ADL model for each kind of data when one is installed, otherwise non-local means.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np

from .inference import denoise
from .io import ImageFile, read_image, write_image
from .methods import default_method
from .metrics import psnr, ssim
from .noise import add_noise
from .weights import list_models


def nibabel_data_file(name: str) -> Path:
    """A file of the test data nibabel installs (``nibabel/tests/data``).

    Found without importing ``nibabel.testing``, which imports pytest: a user's environment has
    no pytest, and the demo and the MRI sample failed there with ModuleNotFoundError.
    """
    spec = importlib.util.find_spec("nibabel")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("nibabel is not installed")
    path = Path(spec.origin).parent / "tests" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"nibabel's test data has no {name} (looked in {path.parent})")
    return path


def samples() -> dict[str, tuple[np.ndarray, dict, ImageFile | None]]:
    """Real clean data that ships with installed packages: ``name -> (array, kwargs, source)``.

    2D gray (PyWavelets' aero), 2D RGB (scikit-image's coffee) and a 3D MRI (nibabel's
    anatomical.nii, 2 mm voxels, whose header and affine the results keep); the bundled models
    never saw any of them in training.
    """
    import pywt
    from skimage import data

    mri = read_image(nibabel_data_file("anatomical.nii"))
    return {
        "aero": (pywt.data.aero(), {}, None),
        "coffee": (data.coffee(), {"channel_axis": -1}, None),
        "mri": (mri.data.astype(np.int16), {}, mri),
    }


def run(seed: int = 0):
    """Yield ``(name, clean, noisy, denoised, method, seconds, kwargs, source)`` per sample."""
    for name, (clean, kwargs, source) in samples().items():
        noisy = add_noise(clean, "gaussian", sigma=25, seed=seed)
        channels = clean.shape[-1] if "channel_axis" in kwargs else 1
        spatial_dims = 3 if name == "mri" else 2
        method = default_method(spatial_dims, channels)
        start = time.perf_counter()
        result = denoise(noisy, method, **kwargs)
        yield name, clean, noisy, result, method, time.perf_counter() - start, kwargs, source


def _scores(clean, test, kwargs) -> tuple[float, float]:
    return psnr(clean, test), ssim(clean, test, **kwargs)


def save(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    print(f"Gaussian noise sigma = 25/255 of each image's range; results in {output}/")
    print(f"{'sample':<10} {'method':<7} {'noisy PSNR/SSIM':>16} {'denoised PSNR/SSIM':>19} {'time':>7}")
    for name, clean, noisy, result, method, seconds, kwargs, source in run():
        noisy_psnr, noisy_ssim = _scores(clean, noisy, kwargs)
        result_psnr, result_ssim = _scores(clean, result, kwargs)
        ext = ".nii.gz" if name == "mri" else ".tif"
        write_image(output / f"{name}-noisy{ext}", noisy, like=source)
        write_image(output / f"{name}-{method}{ext}", result, like=source)
        print(
            f"{name:<10} {method:<7} {noisy_psnr:8.2f} / {noisy_ssim:.3f} "
            f"{result_psnr:10.2f} / {result_ssim:.3f} {seconds:6.1f}s"
        )
    if not list_models():
        print("No bundled ADL model is installed yet, so the demo used non-local means.")


def show() -> None:
    """napari with every sample's clean, noisy and denoised layers, opened on a middle slice of the
    MRI volume (its denoised result over the noisy one, which is selected) with the Denoise and
    Compare docks set up for it."""
    import napari

    print("Denoising the samples (Gaussian noise sigma = 25/255 of each image's range)...", flush=True)
    results = []
    for name, clean, noisy, result, method, seconds, kwargs, source in run():
        print(f"  {name:<7} {'x'.join(map(str, clean.shape)):>11}  {method}  {seconds:5.1f} s", flush=True)
        results.append((name, clean, noisy, result, method, kwargs, source))
    print("Opening napari...", flush=True)
    viewer = napari.Viewer(title="napari-adl-denoise demo")
    layers = {}
    for name, clean, noisy, result, method, kwargs, source in results:
        common = {"rgb": "channel_axis" in kwargs, "scale": source.spacing if source is not None else None}
        layers[name] = (
            viewer.add_image(clean, name=f"{name} (clean)", visible=False, **common),
            viewer.add_image(noisy, name=f"{name} (noisy)", visible=name == "mri", **common),
            viewer.add_image(result, name=f"{name} [{method}]", visible=name == "mri", **common),
        )
    clean, noisy, denoised = layers["mri"]
    viewer.layers.selection.active = noisy
    viewer.dims.set_point(0, clean.data_to_world([clean.data.shape[0] // 2, 0, 0])[0])  # a middle slice
    plugin = "napari-adl-denoise"
    _, denoise_dock = viewer.window.add_plugin_dock_widget(plugin, "Denoise")
    denoise_dock.image.value = noisy
    # Compare in a tab of its own, raised: its plots and table get the dock's whole height
    _, compare_dock = viewer.window.add_plugin_dock_widget(plugin, "Compare", tabify=True)
    compare_dock.reference.value = clean
    compare_dock.noisy.value = noisy
    compare_dock.denoised.value = [denoised]
    # fit the canvas left by the docks to the volume shown, not to the hidden 2D samples
    try:
        viewer.reset_view(layers=[noisy])
    except TypeError:  # napari < 0.6: every layer's extent
        viewer.reset_view()
    napari.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m napari_adl_denoise.demo", description=__doc__.splitlines()[0]
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--output", type=Path, help="write results to this folder (headless)")
    mode.add_argument("--viewer", action="store_true", help="show the results in napari")
    args = parser.parse_args(argv)
    show() if args.viewer else save(args.output)


if __name__ == "__main__":
    main()
