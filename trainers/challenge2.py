"""Challenge 2 trainer: regress ``externalizing`` from 4 s resting-state windows.

Training sees a random 2 s crop of every 4 s window (``crop_samples`` of the
stream, default ``2 * sfreq``), which is also the input length of the exported
model.  Evaluation is deterministic: the centre crop of each window, or the
average over all crops at a fixed stride (``eval_crops="all"``).  Besides the
window-level metrics, :meth:`Challenge2Trainer.score` reports a subject-level
score: the mean prediction of each subject against the subject's target.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eegstore.errors import ConfigError
from trainers.base import Trainer, register_trainer
from trainers.config import TrainConfig
from trainers.metrics import regression_metrics, subject_means

__all__ = ["Challenge2Trainer", "crop_starts"]


def crop_starts(n_times: int, crop_samples: int, mode: str, stride: int | None = None
                ) -> list[int]:
    """Start samples of the evaluation crops of an ``n_times`` window.

    Parameters
    ----------
    n_times : int
        Window length in samples.
    crop_samples : int
        Crop length in samples.
    mode : {"center", "all"}
        The centre crop only, or every crop at ``stride``.
    stride : int, optional
        Stride of ``mode="all"`` (default: half a crop); the last crop always ends
        at the window's end.

    Returns
    -------
    list of int
        Crop start samples.
    """
    if crop_samples > n_times:
        raise ConfigError(f"expected crop_samples <= window length {n_times}, got {crop_samples}")
    if mode == "center":
        return [(n_times - crop_samples) // 2]
    step = stride or max(1, crop_samples // 2)
    starts = list(range(0, n_times - crop_samples + 1, step))
    if starts[-1] != n_times - crop_samples:
        starts.append(n_times - crop_samples)
    return starts


@register_trainer("challenge2")
class Challenge2Trainer(Trainer):
    """Externalizing-factor regression on random 2 s crops of 4 s windows."""

    @classmethod
    def default_config(cls) -> TrainConfig:
        return TrainConfig(target="target", eval_crops="center")

    def train_crop_samples(self) -> int | None:
        crop = self.config.crop_samples
        if crop is None:
            crop = round(2.0 * self.sfreq)
        if crop > self.n_times:
            raise ConfigError(f"expected crop_samples <= the store's {self.n_times}-sample "
                              f"windows, got {crop}; pass a smaller --crop-samples")
        return crop

    def predict_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        crop = self.model_n_times()
        starts = crop_starts(x.shape[-1], crop, self.config.eval_crops,
                             self.config.eval_crop_stride)
        preds = [model(x[..., s:s + crop]).reshape(-1) for s in starts]
        return torch.stack(preds).mean(0)

    def score(self, pred: dict[str, np.ndarray]) -> dict[str, float]:
        out = regression_metrics(pred["y_true"], pred["y_pred"])
        _, (y_true_s, y_pred_s) = subject_means(pred["subject"], pred["y_true"], pred["y_pred"])
        if y_true_s.size >= 2:
            sub = regression_metrics(y_true_s, y_pred_s)
            out.update({f"subject_{k}": v for k, v in sub.items()})
        return out
