"""Deep-learning denoising of 2D images and 3D volumes, for napari and headless use.

The compute API never imports Qt or napari::

    import napari_adl_denoise as adl
    result = adl.denoise(image)               # bundled ADL model for the data
    result = adl.denoise(volume, method="nlm")
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import metrics
from ._chunked import iter_compute, iter_write
from ._device import available_devices
from .inference import DenoiseProgress, denoise, iter_denoise
from .methods import NoModelError, Plan, get_method, list_methods, plan_denoise, register_method
from .noise import NOISE_KINDS, NoiseModel, add_noise, estimate_noise, estimate_noise_model
from .weights import (
    LoadedModel,
    ModelFileError,
    delete_model,
    export_model,
    list_models,
    load_model,
    model_info,
    rename_model,
    save_model,
    user_models_dir,
)

__all__ = [
    "NOISE_KINDS",
    "DenoiseProgress",
    "LoadedModel",
    "ModelFileError",
    "NoModelError",
    "NoiseModel",
    "Plan",
    "__version__",
    "add_noise",
    "available_devices",
    "delete_model",
    "denoise",
    "estimate_noise",
    "estimate_noise_model",
    "export_model",
    "get_method",
    "iter_compute",
    "iter_denoise",
    "iter_write",
    "list_methods",
    "list_models",
    "load_model",
    "metrics",
    "model_info",
    "plan_denoise",
    "register_method",
    "rename_model",
    "save_model",
    "user_models_dir",
]
