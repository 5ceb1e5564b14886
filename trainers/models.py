"""Models by name: braindecode models and a small built-in CNN.

Every braindecode model taking ``n_chans, n_outputs, n_times, sfreq`` is
available by (case-insensitive) name, plus :class:`TinyCNN`, a small
convolutional network fast enough for CPU tests.

:class:`ScaledRegressor` wraps any network with the input scale and target
mean/standard deviation learnt from the training split, as buffers, so that the
saved ``state_dict`` maps raw store signals to targets in their own units.

``TinyCNN`` and ``ScaledRegressor`` depend on nothing but ``torch``: their source is
embedded verbatim in exported submissions (see :mod:`trainers.submission`).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import torch
from torch import nn

from eegstore.errors import ConfigError

__all__ = ["MODEL_ALIASES", "ScaledRegressor", "TinyCNN", "build_model", "resolve_model_name"]

#: Extra lower-case names -> braindecode class names.
MODEL_ALIASES: dict[str, str] = {"eegnetv4": "EEGNet"}


class TinyCNN(nn.Module):
    """Small temporal-spatial CNN for ``(batch, n_chans, n_times)`` regression.

    A 1x1 spatial mixing convolution, two temporal convolution blocks and an
    adaptive average pool to eight time bins, then a linear read-out.  The adaptive
    pool makes it accept any input length; ``n_times`` is recorded for symmetry
    with braindecode models.

    Parameters
    ----------
    n_chans : int
        Input channels.
    n_outputs : int
        Outputs per window.
    n_times : int
        Samples per window the model is trained on.
    sfreq : float
        Sampling frequency in Hz (sets the temporal kernel to ~70 ms).
    n_filters : int
        Feature maps of every layer.
    drop_prob : float
        Dropout before the read-out.
    """

    def __init__(self, n_chans: int, n_outputs: int = 1, n_times: int = 200,
                 sfreq: float = 100.0, n_filters: int = 16, drop_prob: float = 0.25) -> None:
        super().__init__()
        self.n_chans, self.n_outputs, self.n_times, self.sfreq = n_chans, n_outputs, n_times, sfreq
        kernel = max(3, round(0.07 * sfreq) | 1)
        self.spatial = nn.Conv1d(n_chans, n_filters, kernel_size=1)
        self.block1 = nn.Sequential(
            nn.Conv1d(n_filters, n_filters, kernel, padding=kernel // 2),
            nn.BatchNorm1d(n_filters), nn.ELU(), nn.AvgPool1d(2, ceil_mode=True))
        self.block2 = nn.Sequential(
            nn.Conv1d(n_filters, n_filters, kernel, padding=kernel // 2),
            nn.BatchNorm1d(n_filters), nn.ELU(), nn.AdaptiveAvgPool1d(8))
        self.drop = nn.Dropout(drop_prob)
        self.head = nn.Linear(n_filters * 8, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.block1(self.spatial(x)))
        return self.head(self.drop(h.flatten(1)))


class ScaledRegressor(nn.Module):
    """``net(x / x_scale) * y_std + y_mean``, with the three scalars as buffers.

    Parameters
    ----------
    net : nn.Module
        Network trained on scaled inputs and standardised targets.
    x_scale, y_mean, y_std : float
        Input scale and target moments of the training split.
    """

    def __init__(self, net: nn.Module, x_scale: float = 1.0, y_mean: float = 0.0,
                 y_std: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("x_scale", torch.tensor(float(x_scale)))
        self.register_buffer("y_mean", torch.tensor(float(y_mean)))
        self.register_buffer("y_std", torch.tensor(float(y_std)))

    x_scale: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor

    def standardised(self, x: torch.Tensor) -> torch.Tensor:
        """Return the network output in standardised target units (what the loss sees)."""
        return self.net(x / self.x_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.standardised(x) * self.y_std + self.y_mean


def _braindecode_models() -> Any:
    """Import ``braindecode.models`` without its import-time deprecation chatter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return importlib.import_module("braindecode.models")


def resolve_model_name(name: str) -> str:
    """Return the canonical name of a model: ``"tinycnn"`` or a braindecode class name.

    Parameters
    ----------
    name : str
        Case-insensitive model name (``eegnex``, ``EEGNeX``, ``eegnetv4``, ``tinycnn`` ...).

    Returns
    -------
    str
        ``"tinycnn"`` or the braindecode class name.
    """
    key = name.strip().lower()
    if key == "tinycnn":
        return "tinycnn"
    key = MODEL_ALIASES.get(key, key).lower()
    models = _braindecode_models()
    for attr in dir(models):
        obj = getattr(models, attr)
        if attr.lower() == key and isinstance(obj, type) and issubclass(obj, nn.Module):
            return attr
    raise ConfigError(f"expected a model name (tinycnn or a braindecode model such as eegnex, "
                      f"eegnetv4, shallowfbcspnet), got {name!r}")


def build_model(name: str, *, n_chans: int, n_outputs: int, n_times: int, sfreq: float,
                **kwargs: Any) -> nn.Module:
    """Instantiate a model by name.

    Parameters
    ----------
    name : str
        ``tinycnn`` or the (case-insensitive) name of a braindecode model.
    n_chans, n_outputs, n_times : int
        Input channels, outputs and input samples.
    sfreq : float
        Sampling frequency in Hz.
    **kwargs
        Further keyword arguments of the model.

    Returns
    -------
    nn.Module
        The untrained network.
    """
    canonical = resolve_model_name(name)
    if canonical == "tinycnn":
        return TinyCNN(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=sfreq,
                       **kwargs)
    cls = getattr(_braindecode_models(), canonical)
    try:
        return cls(n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=sfreq, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"expected keyword arguments accepted by {canonical}, got "
                          f"{sorted(kwargs)}: {exc}") from exc
