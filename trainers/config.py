"""Training settings as one small serialisable object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from eegstore.errors import ConfigError

__all__ = ["DEMO_SETTINGS", "LOSSES", "OPTIMIZERS", "RUN_CONTROL_FIELDS", "SCHEDULES", "SPLITS",
           "TrainConfig"]

LOSSES = ("mse", "huber", "l1")
OPTIMIZERS = ("adamw", "adamax")
SCHEDULES = ("cosine", "none")
SPLITS = ("subject", "release")
EVAL_CROPS = ("center", "all")
#: Settings that may change when a run is resumed (they do not change what is learnt).
RUN_CONTROL_FIELDS = ("max_minutes", "max_rss_mb", "min_available_mb", "memory_check_every",
                      "num_workers", "device", "log_indices", "progress")

#: Settings for a few-minute CPU demo on the 20-subject synthetic mini release
#: (``eegstore synth`` with ``rt_amplitude_uv=16, externalizing_strength_uv=6``;
#: challenge2 built from RestingState only).  Measured on 2 shared CPU cores:
#: challenge1 valid/test NRMSE 0.44/0.55 in ~80 s, permuted targets 1.09/1.00;
#: challenge2 valid/test 0.58/0.71 (subject-level test 0.42) in ~115 s.
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "challenge1": {"model": "tinycnn", "epochs": 10, "batch_size": 32, "lr": 1e-3,
                   "valid_fraction": 0.2, "test_fraction": 0.2},
    "challenge2": {"model": "shallowfbcspnet", "epochs": 2, "batch_size": 64, "lr": 1e-3,
                   "valid_fraction": 0.2, "test_fraction": 0.2},
}


@dataclass
class TrainConfig:
    """Every setting of a training run.

    Parameters
    ----------
    model : str
        Model name (``tinycnn`` or a braindecode model, e.g. ``eegnex``).
    model_kwargs : dict
        Extra keyword arguments of the model.
    epochs : int
        Training epochs.
    batch_size : int
        Windows per batch (per rank under DDP).
    lr : float
        Peak learning rate.
    weight_decay : float
        Decoupled weight decay (AdamW) or L2 decay (Adamax).
    optimizer : {"adamw", "adamax"}
        Optimiser.
    schedule : {"cosine", "none"}
        Learning-rate schedule, stepped once per batch over ``epochs`` epochs.
    loss : {"mse", "huber", "l1"}
        Loss on standardised targets.
    huber_delta : float
        Transition point of the Huber loss, in target standard deviations.
    l1, l2 : float
        Elastic-net penalty weights on every weight tensor (not biases or norms).
    grad_clip : float, optional
        Clip the global gradient norm to this value.
    patience : int, optional
        Stop after this many epochs without a better validation NRMSE.
    split : {"subject", "release"}
        Subject-disjoint random split or a split by release.
    valid_fraction, test_fraction : float
        Fractions of subjects held out (``split="subject"``).
    valid_releases, test_releases : list of str
        Releases held out (``split="release"``).
    split_seed : int
        Seed of the subject split.
    permute_targets : bool
        Train on targets permuted across training windows (a control that must score ~1).
    target : str
        Per-window coordinate to regress.
    crop_samples : int, optional
        Random training crop length (challenge2 default: 2 s).
    eval_crops : {"center", "all"}
        Evaluation crops of longer windows: the centre crop, or all crops averaged.
    eval_crop_stride : int, optional
        Stride of ``eval_crops="all"`` in samples (default: half a crop).
    seed : int
        Seed of model initialisation, stream order and crops.
    num_workers : int
        DataLoader worker processes.
    buffer_chunks : int, optional
        Shuffle buffer of the stream, in chunks.
    ram_budget_mb : float, optional
        RAM budget of the stream.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    amp : bool, optional
        Mixed precision (bfloat16 autocast); default on for CUDA.
    max_minutes : float, optional
        Stop (with a checkpoint, then evaluate) after this much training time.
    max_rss_mb, min_available_mb : float, optional
        Memory guard thresholds.
    memory_check_every : int
        Batches between memory checks.
    log_indices : bool
        Record the window indices each rank trained on (``indices_rank{R}.json``).
    progress : bool
        Show tqdm progress bars.
    """

    model: str = "eegnex"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    schedule: str = "cosine"
    loss: str = "mse"
    huber_delta: float = 1.0
    l1: float = 0.0
    l2: float = 0.0
    grad_clip: float | None = None
    patience: int | None = None
    split: str = "subject"
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    valid_releases: list[str] = field(default_factory=list)
    test_releases: list[str] = field(default_factory=list)
    split_seed: int = 0
    permute_targets: bool = False
    target: str = "target"
    crop_samples: int | None = None
    eval_crops: str = "center"
    eval_crop_stride: int | None = None
    seed: int = 0
    num_workers: int = 0
    buffer_chunks: int | None = None
    ram_budget_mb: float | None = None
    device: str = "auto"
    amp: bool | None = None
    max_minutes: float | None = None
    max_rss_mb: float | None = None
    min_available_mb: float | None = 256.0
    memory_check_every: int = 10
    log_indices: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` on an invalid setting."""
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "loss": LOSSES,
                   "split": SPLITS, "eval_crops": EVAL_CROPS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"expected {name} in {allowed}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "memory_check_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"expected {name} >= 1, got {getattr(self, name)}")
        for name in ("lr", "huber_delta"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"expected {name} > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "l1", "l2"):
            if getattr(self, name) < 0:
                raise ConfigError(f"expected {name} >= 0, got {getattr(self, name)}")
        for name in ("valid_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"expected 0 <= {name} < 1, got {getattr(self, name)}")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ConfigError("expected valid_fraction + test_fraction < 1, got "
                              f"{self.valid_fraction + self.test_fraction}")
        if self.split == "release" and not self.valid_releases:
            raise ConfigError("expected at least one validation release with split='release', "
                              "got none; pass --valid-release")
        for name in ("grad_clip", "max_minutes", "crop_samples", "eval_crop_stride", "patience"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"expected {name} > 0 or None, got {value}")
        if self.num_workers < 0:
            raise ConfigError(f"expected num_workers >= 0, got {self.num_workers}")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-compatible dict."""
        d = dataclasses.asdict(self)
        d["valid_releases"] = list(self.valid_releases)
        d["test_releases"] = list(self.test_releases)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build settings from :meth:`to_dict` output, rejecting unknown keys.

        Parameters
        ----------
        data : dict
            Settings.

        Returns
        -------
        TrainConfig
            The settings.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"expected settings among {sorted(names)}, got unknown {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """Return a copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)
