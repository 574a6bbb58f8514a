"""Denoising methods: the registry, the classical filters and one module per learned family.

Importing this package registers every method. A learned family is one module that calls
:func:`register_learned`; the API, the CLI and the docks list it without further change.
"""

from __future__ import annotations

from . import adaptive_cnn, adl, classical, idresnet, noise_attention  # noqa: F401 (each registers its methods)
from ._learned import (
    ENSEMBLE_PASSES,
    NoModelError,
    Plan,
    as_loaded_model,
    default_method,
    default_model_info,
    plan_denoise,
    plane_weights,
    register_learned,
)
from ._registry import Method, MethodContext, get_method, list_methods, method_for_kind, register_method

__all__ = [
    "ENSEMBLE_PASSES",
    "Method",
    "MethodContext",
    "NoModelError",
    "Plan",
    "as_loaded_model",
    "default_method",
    "default_model_info",
    "get_method",
    "list_methods",
    "method_for_kind",
    "plan_denoise",
    "plane_weights",
    "register_learned",
    "register_method",
]
