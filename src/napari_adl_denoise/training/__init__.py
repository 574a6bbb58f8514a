"""Training ADL denoisers: losses, data, configuration and the resumable engine."""

from __future__ import annotations

from .config import DataConfig, LossConfig, NoiseSpec, OptimConfig, PhaseConfig, TrainingConfig, load_config
from .engine import TrainProgress, inflate_weights, train
from .fine_tune import fine_tune

__all__ = [
    "DataConfig",
    "LossConfig",
    "NoiseSpec",
    "OptimConfig",
    "PhaseConfig",
    "TrainProgress",
    "TrainingConfig",
    "fine_tune",
    "inflate_weights",
    "load_config",
    "train",
]
