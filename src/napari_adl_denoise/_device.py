"""Choosing the compute device and its precision."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast", "available_devices", "resolve_device"]


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def available_devices() -> list[str]:
    """Devices present on this machine: ``cpu``, each ``cuda:N``, and ``mps`` if any."""
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append("mps")
    return [*devices, "cpu"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then CPU; other names are checked to exist.

    Raises
    ------
    ValueError
        Unknown device name, or a device this machine does not have.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if resolved.type == "cuda" and (
        not torch.cuda.is_available() or (resolved.index or 0) >= torch.cuda.device_count()
    ):
        raise ValueError(f"device {device!r} is not available; present: {', '.join(available_devices())}")
    if resolved.type == "mps" and not _mps_available():
        raise ValueError(f"device 'mps' is not available; present: {', '.join(available_devices())}")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return resolved


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on GPUs (bf16 where supported, else fp16); full precision on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "mps":
        return torch.autocast("mps", dtype=torch.float16)
    return contextlib.nullcontext()
