"""Sample data (File > Open Sample): clean and noisy pairs made locally from offline sources."""

from __future__ import annotations

import numpy as np

from ..noise import add_noise


def _pair(clean: np.ndarray, name: str, noise: dict, metadata: dict | None = None, **kwargs) -> list[tuple]:
    """The clean layer and its noisy copy, whose metadata names the noise and the clean layer as
    Simulate noise's output does (Compare then scores its denoised results against that layer)."""
    noisy = add_noise(clean, seed=0, **noise)
    label = ", ".join(f"{k}={v}" for k, v in noise.items())
    params = {k: v for k, v in noise.items() if k != "kind"}
    made = {"noise": noise["kind"], **params, "seed": 0, "source_layer": f"{name} (clean)"}
    metadata = metadata or {}
    noisy_metadata = {**metadata, "napari_adl_denoise": made}
    return [
        (clean, {"name": f"{name} (clean)", "metadata": metadata, **kwargs}, "image"),
        (noisy, {"name": f"{name} ({label})", "metadata": noisy_metadata, **kwargs}, "image"),
    ]


def microscopy_2d() -> list[tuple]:
    """scikit-image's cell (2D light microscopy) with Gaussian noise sigma 25."""
    from skimage import data

    return _pair(data.cell(), "cell", {"kind": "gaussian", "sigma": 25})


def rgb_2d() -> list[tuple]:
    """scikit-image's immunohistochemistry (2D RGB microscopy) with Gaussian noise sigma 25."""
    from skimage import data

    clean = data.immunohistochemistry()
    return _pair(clean, "immunohistochemistry", {"kind": "gaussian", "sigma": 25, "clip": True}, rgb=True)


def mri_3d() -> list[tuple]:
    """nibabel's anatomical.nii (3D T1 MRI, 2 mm voxels) with Rician noise sigma 15."""
    from ..demo import nibabel_data_file
    from .nifti import read_nifti

    ((data, meta, _),) = read_nifti(str(nibabel_data_file("anatomical.nii")))
    clean = np.asarray(data, dtype=np.float32)
    return _pair(
        clean, "mri", {"kind": "rician", "sigma": 15}, scale=meta["scale"], metadata=meta["metadata"]
    )
