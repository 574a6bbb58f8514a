"""Training denoisers: losses, data, configuration, weight surgery and the resumable engine."""

from __future__ import annotations

from .config import DataConfig, LossConfig, NoiseSpec, OptimConfig, PhaseConfig, TrainingConfig, load_config
from .engine import TrainProgress, train
from .fine_tune import fine_tune
from .surgery import inflate_weights

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
