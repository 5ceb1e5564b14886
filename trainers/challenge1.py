"""Challenge 1 trainer: regress ``rt_from_stimulus`` from 2 s post-stimulus windows.

Challenge1 stores hold one 2 s window (200 samples at 100 Hz) per
contrast-change trial, starting 0.5 s after the stimulus, with the response time
in the per-window coordinate ``rt_from_stimulus`` (also copied to ``target``).
Trials without a response (NaN target) are left out of training and scoring.
"""

from __future__ import annotations

import torch
from torch import nn

from trainers.base import Trainer, register_trainer
from trainers.config import TrainConfig

__all__ = ["Challenge1Trainer"]


@register_trainer("challenge1")
class Challenge1Trainer(Trainer):
    """Window-level response-time regression (whole windows in and out)."""

    @classmethod
    def default_config(cls) -> TrainConfig:
        return TrainConfig(target="target")

    def predict_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x).reshape(-1)
