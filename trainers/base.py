"""The trainer base: fit / evaluate / predict over an eegstore store, callbacks, a registry.

A :class:`Trainer` streams the training split of a store with
:class:`eegstore.torch.WindowStream`, trains a model chosen by name
(:func:`trainers.models.build_model`) wrapped in a
:class:`~trainers.models.ScaledRegressor`, evaluates on subject-disjoint (or
release) hold-out splits with the challenge's NRMSE, and writes a run
directory::

    RUN_DIR/config.json      every setting (TrainConfig.to_dict) + store + trainer
    RUN_DIR/model.json       model name, kwargs, n_chans, n_outputs, n_times, sfreq
    RUN_DIR/checkpoint.pt    model, optimiser, scheduler, stream state, RNG states, history
    RUN_DIR/weights.pt       ScaledRegressor state_dict (best validation epoch)
    RUN_DIR/metrics.json     valid_nrmse, test_nrmse, per-split metrics, history, status
    RUN_DIR/metrics.csv      the per-epoch history

Resume: ``checkpoint.pt`` is written at every epoch end and whenever a run stops
early (a callback's :meth:`Trainer.request_stop`, ``max_minutes``, the memory
guard); ``fit(resume=True)`` continues mid-epoch with no window repeated or lost
(the stream's consumed-window marks).  With ``num_workers=0`` on CPU the resumed
run is bitwise identical to an uninterrupted one (same seed); with DataLoader
workers the stream's delivery order depends on the worker split, so the windows
are the same but batches may come in another order.

Trainers are registered by name (:func:`register_trainer`, :func:`get_trainer`).
Subclasses implement :meth:`Trainer.predict_batch` and may extend
:meth:`Trainer.score` and :meth:`Trainer.train_crop_samples`.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from eegstore._io import atomic_write, json_default
from eegstore.errors import ConfigError, MemoryGuardTriggered, StoreError
from trainers.checkpoint import load_checkpoint, safe_load, save_checkpoint
from trainers.config import RUN_CONTROL_FIELDS, TrainConfig
from trainers.memory import MemoryGuard
from trainers.metrics import regression_metrics
from trainers.models import ScaledRegressor, build_model, resolve_model_name

__all__ = [
    "TRAINERS",
    "Callback",
    "FitResult",
    "StopAfterBatches",
    "Trainer",
    "get_trainer",
    "load_model",
    "register_trainer",
    "trainer_names",
]

#: Registered trainers, name -> class.
TRAINERS: dict[str, type[Trainer]] = {}
#: Modules defining the built-in trainers (imported on first lookup).
_BUILTIN_MODULES = ("trainers.challenge1", "trainers.challenge2")
CHECKPOINT_FORMAT = 1


#: A DataLoader worker that delivers no batch for this long is treated as hung (the
#: DataLoader raises instead of waiting forever; a dead worker is detected at once).
WORKER_TIMEOUT_S = 300.0

def register_trainer(name: str) -> Callable[[type[Trainer]], type[Trainer]]:
    """Class decorator registering a :class:`Trainer` subclass under ``name``.

    Parameters
    ----------
    name : str
        Registry name (``python -m trainers fit --trainer NAME``).

    Returns
    -------
    callable
        The decorator.
    """
    def deco(cls: type[Trainer]) -> type[Trainer]:
        if name in TRAINERS and TRAINERS[name] is not cls:
            raise ConfigError(f"expected a new trainer name, got {name!r} already registered")
        cls.name = name
        TRAINERS[name] = cls
        return cls
    return deco


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def trainer_names() -> list[str]:
    """Names of the registered trainers."""
    _load_builtins()
    return sorted(TRAINERS)


def get_trainer(name: str) -> type[Trainer]:
    """Return the trainer class registered as ``name``.

    Parameters
    ----------
    name : str
        A registered name (``challenge1``, ``challenge2``, ...).

    Returns
    -------
    type
        The :class:`Trainer` subclass.
    """
    _load_builtins()
    if name not in TRAINERS:
        raise ConfigError(f"expected a trainer in {sorted(TRAINERS)}, got {name!r}")
    return TRAINERS[name]


class Callback:
    """Hooks called by :meth:`Trainer.fit`; override any of them.

    A callback stops training with ``trainer.request_stop(reason)``: the trainer
    then saves a checkpoint (resumable with ``fit(resume=True)``), evaluates and
    returns.
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first batch."""

    def on_batch_end(self, trainer: Trainer, epoch: int, batch: int,
                     logs: dict[str, float]) -> None:
        """After every optimiser step; ``batch`` counts from 1 within the epoch."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        """After each epoch's validation."""

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        """After the final evaluation."""


class StopAfterBatches(Callback):
    """Request a stop after ``n_batches`` optimiser steps of this fit call.

    Parameters
    ----------
    n_batches : int
        Steps before stopping.
    """

    def __init__(self, n_batches: int) -> None:
        if n_batches < 1:
            raise ConfigError(f"expected n_batches >= 1, got {n_batches}")
        self.n_batches = n_batches
        self.seen = 0

    def __repr__(self) -> str:
        return f"StopAfterBatches({self.n_batches})"

    def on_batch_end(self, trainer: Trainer, epoch: int, batch: int,
                     logs: dict[str, float]) -> None:
        self.seen += 1
        if self.seen >= self.n_batches:
            trainer.request_stop(f"callback: stopped after {self.seen} batches")


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns.

    Attributes
    ----------
    status : str
        ``completed``, ``early_stopped``, ``stopped`` (a callback), ``time_limit``.
    metrics : dict
        The contents of ``metrics.json``.
    run_dir : Path or None
        Where files were written.
    """

    status: str
    metrics: dict[str, Any]
    run_dir: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class _Dist:
    """torch.distributed context (single process when WORLD_SIZE is unset or 1)."""

    def __init__(self, device: str) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and self.world_size > 1:
            device = f"cuda:{local_rank}"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError("expected a CUDA device, got none; use --device cpu")
            torch.cuda.set_device(self.device)
        self.owns_group = False
        if self.world_size > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)
            self.owns_group = True
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.world_size = torch.distributed.get_world_size()
            self.rank = torch.distributed.get_rank()

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def any(self, flag: bool) -> bool:
        """Return True when ``flag`` is true on any rank."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.owns_group:
            torch.distributed.destroy_process_group()


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=json_default, allow_nan=True) + "\n",
                 durable=False)


def _finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def load_model(run_dir: str | Path, map_location: str | torch.device = "cpu") -> ScaledRegressor:
    """Rebuild a run's trained model from ``model.json`` and ``weights.pt``.

    Parameters
    ----------
    run_dir : str or Path
        A run directory written by :meth:`Trainer.fit`.
    map_location : str or torch.device
        Device of the loaded tensors.

    Returns
    -------
    ScaledRegressor
        The model in eval mode.
    """
    run_dir = Path(run_dir)
    spec_path, weights_path = run_dir / "model.json", run_dir / "weights.pt"
    for p in (spec_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"expected {p.name} in run directory {run_dir}, got nothing; "
                                    "run `python -m trainers fit ... --out RUN_DIR` first")
    spec = json.loads(spec_path.read_text())
    net = build_model(spec["name"], n_chans=spec["n_chans"], n_outputs=spec["n_outputs"],
                      n_times=spec["n_times"], sfreq=spec["sfreq"], **spec.get("kwargs", {}))
    model = ScaledRegressor(net)
    state = safe_load(weights_path, map_location)  # torch.load(weights_only=True)
    model.load_state_dict(state)
    return model.eval()


class Trainer(ABC):
    """Base class of trainers: fit / evaluate / predict on one store.

    Parameters
    ----------
    store : str or Path
        The store to train (and by default evaluate) on.
    config : TrainConfig, optional
        Settings (defaults: ``TrainConfig()`` adjusted by :meth:`default_config`).
    run_dir : str or Path, optional
        Where to write checkpoints, weights and metrics (nothing is written when None).
    callbacks : iterable of Callback
        Hooks called during :meth:`fit`.
    splits : dict, optional
        Fixed boolean window masks ``train``, ``valid``, ``test`` (e.g. a cross-validation
        fold) used instead of the split settings of ``config``.
    """

    name: ClassVar[str] = ""

    def __init__(self, store: str | Path, config: TrainConfig | None = None, *,
                 run_dir: str | Path | None = None, callbacks: Iterable[Callback] = (),
                 splits: dict[str, np.ndarray] | None = None) -> None:
        self.store = str(store)
        self._given_splits = splits
        self.config = config if config is not None else self.default_config()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks)
        self.model: ScaledRegressor | None = None
        self._stop_reason: str | None = None
        self._ds: xr.Dataset | None = None
        self._masks: dict[str, np.ndarray] | None = None
        #: model state at the end of the last fit (before restoring the best epoch)
        self.final_state: dict[str, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(store={self.store!r}, model={self.config.model!r}, "
                f"epochs={self.config.epochs}, run_dir={self.run_dir})")

    # ------------------------------------------------------------------ hooks
    @classmethod
    def default_config(cls) -> TrainConfig:
        """Return the settings used when none are given."""
        return TrainConfig()

    def train_crop_samples(self) -> int | None:
        """Length of the random training crops (None: whole windows)."""
        return self.config.crop_samples

    @abstractmethod
    def predict_batch(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Predict one batch of full store windows.

        Parameters
        ----------
        model : nn.Module
            The model in eval mode (outputs in target units).
        x : Tensor
            ``(B, channel, time)`` windows as stored.

        Returns
        -------
        Tensor
            ``(B,)`` predictions.
        """

    def score(self, pred: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics of a :meth:`predict` result (window level; subclasses add more).

        Parameters
        ----------
        pred : dict
            Output of :meth:`predict`.

        Returns
        -------
        dict
            Metric name -> value.
        """
        return regression_metrics(pred["y_true"], pred["y_pred"])

    # ------------------------------------------------------------------ store access
    @property
    def ds(self) -> xr.Dataset:
        """The store, opened lazily with xarray."""
        if self._ds is None:
            try:
                self._ds = xr.open_zarr(self.store, chunks=None)
            except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
                raise StoreError(f"expected an eegstore store at {self.store}, got an error "
                                 f"opening it: {exc}") from exc
            if "eeg" not in self._ds.data_vars:
                raise StoreError(f"expected an 'eeg' variable in {self.store}, got "
                                 f"{sorted(self._ds.data_vars)}; is this an eegstore store?")
            if self.config.target not in self._ds.variables:
                raise StoreError(f"expected a per-window coordinate {self.config.target!r} in "
                                 f"{self.store}, got none; pass --target or rebuild the store")
        return self._ds

    @property
    def sfreq(self) -> float:
        return float(self.ds.attrs.get("sfreq", 100.0))

    @property
    def n_chans(self) -> int:
        return int(self.ds.sizes["channel"])

    @property
    def n_times(self) -> int:
        return int(self.ds.sizes["time"])

    def model_n_times(self) -> int:
        """Return the samples per model input (the training crop, else the window)."""
        crop = self.train_crop_samples()
        return int(crop) if crop is not None else self.n_times

    def targets(self) -> np.ndarray:
        """Return the regressed coordinate of every window, float64."""
        return np.asarray(self.ds[self.config.target].values, dtype=np.float64)

    def _str_coord(self, name: str) -> np.ndarray:
        # via object: numpy StringDType arrays (zarr v3 strings) do not cast to "<U" directly
        return np.asarray(self.ds[name].values).astype(object).astype(str)

    def subjects(self) -> np.ndarray:
        """Return the subject of every window."""
        return self._str_coord("subject")

    def releases(self) -> np.ndarray:
        """Return the release of every window."""
        return self._str_coord("release")

    def splits(self) -> dict[str, np.ndarray]:
        """Boolean window masks ``train``, ``valid``, ``test`` (windows with a finite target).

        Returns
        -------
        dict
            Split name -> boolean mask over the store's windows.
        """
        if self._masks is None:
            splits_mod = importlib.import_module("eegstore.splits")
            cfg = self.config
            # Only the coordinates the splitters read, as plain str arrays.
            coords = xr.Dataset(coords={"subject": ("window", self.subjects()),
                                        "release": ("window", self.releases())})
            if self._given_splits is not None:
                masks = self._given_splits
            elif cfg.split == "subject":
                masks = splits_mod.subject_split(coords, valid=cfg.valid_fraction,
                                                 test=cfg.test_fraction, seed=cfg.split_seed)
            else:
                held = set(cfg.valid_releases) | set(cfg.test_releases)
                present = set(self.releases().tolist())
                masks = splits_mod.release_split(coords, train=sorted(present - held),
                                                 valid=list(cfg.valid_releases),
                                                 test=list(cfg.test_releases))
            finite = np.isfinite(self.targets())
            self._masks = {k: np.asarray(masks[k], dtype=bool) & finite
                           for k in ("train", "valid", "test") if k in masks}
            if not self._masks["train"].any():
                raise ConfigError(f"expected training windows with a finite "
                                  f"{cfg.target!r}, got none in {self.store}")
        return self._masks

    def split_mask(self, split: str | np.ndarray | None) -> np.ndarray:
        """Boolean window mask of a split name (``train``/``valid``/``test``/``all``) or mask."""
        n = int(self.ds.sizes["window"])
        if split is None or (isinstance(split, str) and split == "all"):
            return np.isfinite(self.targets())
        if isinstance(split, str):
            masks = self.splits()
            if split not in masks:
                raise ConfigError(f"expected a split in {sorted(masks)} or 'all', got {split!r}")
            return masks[split]
        mask = np.asarray(split, dtype=bool)
        if mask.shape != (n,):
            raise ConfigError(f"expected a boolean mask of {n} windows, got shape {mask.shape}")
        return mask

    # ------------------------------------------------------------------ model
    def model_spec(self) -> dict[str, Any]:
        """Return what :func:`load_model` needs to rebuild the network."""
        return {"format": 1, "name": resolve_model_name(self.config.model),
                "kwargs": dict(self.config.model_kwargs), "n_chans": self.n_chans,
                "n_outputs": 1, "n_times": self.model_n_times(), "sfreq": self.sfreq,
                "trainer": self.name, "target": self.config.target,
                "input_units": str(self.ds["eeg"].attrs.get("units", "V"))}

    def _input_scale(self, train_mask: np.ndarray) -> float:
        """Return the standard deviation of a few training chunks (reads at most 4)."""
        pos = np.flatnonzero(train_mask)
        chunk = int(self.ds.attrs.get("chunk_windows") or self.ds["eeg"].encoding.get(
            "chunks", (64,))[0] or 64)
        chunk_ids = np.unique(pos // chunk)
        pick = chunk_ids[np.linspace(0, chunk_ids.size - 1, min(4, chunk_ids.size)).astype(int)]
        sel = pos[np.isin(pos // chunk, pick)][:256]
        x = np.asarray(self.ds["eeg"].isel(window=np.sort(sel)).values, dtype=np.float64)
        scale = float(np.std(x))
        return scale if math.isfinite(scale) and scale > 0 else 1.0

    def _make_model(self, train_mask: np.ndarray, y_train: np.ndarray) -> ScaledRegressor:
        spec = self.model_spec()
        net = build_model(spec["name"], n_chans=spec["n_chans"], n_outputs=1,
                          n_times=spec["n_times"], sfreq=spec["sfreq"], **spec["kwargs"])
        y_std = float(np.std(y_train))
        return ScaledRegressor(net, x_scale=self._input_scale(train_mask),
                               y_mean=float(np.mean(y_train)),
                               y_std=y_std if y_std > 0 else 1.0)

    def request_stop(self, reason: str) -> None:
        """Ask :meth:`fit` to stop after the current batch (checkpoint, evaluate, return)."""
        self._stop_reason = reason

    # ------------------------------------------------------------------ prediction
    def _eval_model(self) -> nn.Module:
        if self.model is None:
            if self.run_dir is not None and (self.run_dir / "weights.pt").is_file():
                self.model = load_model(self.run_dir)
            else:
                raise ConfigError("expected a trained model, got none; call fit() first or give "
                                  "a run_dir holding weights.pt")
        return self.model

    def predict(self, split: str | np.ndarray | None = "test", *,
                batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Predict every window of a split.

        Parameters
        ----------
        split : {"train", "valid", "test", "all"} or boolean mask
            Windows to predict (``"all"``/None: every window with a finite target).
        batch_size : int, optional
            Windows per forward pass (default: the training batch size).

        Returns
        -------
        dict
            ``index`` (store positions), ``y_pred``, ``y_true``, ``subject`` arrays.
        """
        mask = self.split_mask(split)
        model = self._eval_model()
        device = next(model.parameters()).device
        index_list: list[np.ndarray] = []
        pred_list: list[np.ndarray] = []
        if mask.any():
            torch_mod = importlib.import_module("eegstore.torch")
            dataset = torch_mod.WindowDataset(self.store, where=mask)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=batch_size or self.config.batch_size, shuffle=False,
                num_workers=0, generator=torch.Generator().manual_seed(0))
            was_training = model.training
            model.eval()
            with torch.inference_mode():
                for x, _y, index in loader:
                    x = torch.as_tensor(x).to(device).float()
                    pred_list.append(self.predict_batch(model, x).float().cpu().numpy())
                    index_list.append(np.asarray(index, dtype=np.int64))
            model.train(was_training)
        index = np.concatenate(index_list) if index_list else np.zeros(0, np.int64)
        y_pred = np.concatenate(pred_list).astype(np.float64) if pred_list else np.zeros(0)
        return {"index": index, "y_pred": y_pred, "y_true": self.targets()[index],
                "subject": self.subjects()[index]}

    def evaluate(self, split: str | np.ndarray | None = "test") -> dict[str, float]:
        """Score the model on a split with :meth:`score`.

        Parameters
        ----------
        split : {"train", "valid", "test", "all"} or boolean mask
            Windows to score.

        Returns
        -------
        dict
            Metric name -> value (``nrmse``, ``rmse``, ``mae``, ``pearson_r``, ``n``, ...).
        """
        return self.score(self.predict(split))

    # ------------------------------------------------------------------ training
    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.loss == "mse":
            return F.mse_loss(pred, target)
        if cfg.loss == "huber":
            return F.huber_loss(pred, target, delta=cfg.huber_delta)
        return F.l1_loss(pred, target)

    def _penalty(self, model: nn.Module) -> torch.Tensor | None:
        cfg = self.config
        if cfg.l1 == 0 and cfg.l2 == 0:
            return None
        total: torch.Tensor | None = None
        for p in model.parameters():
            if p.ndim < 2:
                continue
            term = cfg.l1 * p.abs().sum() + cfg.l2 * p.pow(2).sum()
            total = term if total is None else total + term
        return total

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.Adamax(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _scheduler(self, optimizer: torch.optim.Optimizer,
                   total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        if self.config.schedule == "none":
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))

    def _stream(self, train_mask: np.ndarray, dist: _Dist) -> Any:
        torch_mod = importlib.import_module("eegstore.torch")
        cfg = self.config
        ram = None if cfg.ram_budget_mb is None else int(cfg.ram_budget_mb * 1024 * 1024)
        cuda = dist.device.type == "cuda"
        # a float16 store's values travel to the GPU as they are (half the bytes) and become
        # float32 there, exactly; batches built in this process are pinned for async copies
        deliver = "float16" if cuda and str(self.ds["eeg"].dtype) == "float16" else "float32"
        return torch_mod.WindowStream(
            self.store, cfg.batch_size, shuffle=True, seed=cfg.seed, where=train_mask,
            target=cfg.target, crop_samples=self.train_crop_samples(),
            buffer_chunks=cfg.buffer_chunks, ram_budget=ram, drop_last=False,
            rank=dist.rank, world_size=dist.world_size, dtype=deliver,
            pin_memory=cuda and cfg.num_workers == 0, **self._stream_extra_kwargs(dist))

    def _stream_extra_kwargs(self, dist: _Dist) -> dict[str, Any]:
        # DDP needs the same number of batches on every rank; "drop" keeps exactly-once
        # delivery (at most one batch per rank dropped per epoch, never a duplicate).
        return {"equalize": "drop"} if dist.active else {}

    def _batches_per_epoch(self, stream: Any, n_train: int, dist: _Dist) -> int:
        try:
            return len(stream)
        except TypeError:
            return math.ceil(math.ceil(n_train / dist.world_size) / self.config.batch_size)

    def _check_resume_config(self, saved: dict[str, Any]) -> None:
        now = self.config.to_dict()
        diff = sorted(k for k in now if k not in RUN_CONTROL_FIELDS and saved.get(k) != now[k])
        if diff:
            raise ConfigError(f"expected the settings of the checkpointed run to resume it, got "
                              f"changes to {diff}; drop them or start a new run directory")

    def fit(self, *, resume: bool = False) -> FitResult:
        """Train, validate every epoch, evaluate, and write the run directory.

        Parameters
        ----------
        resume : bool
            Continue from ``run_dir/checkpoint.pt`` (mid-epoch if it was saved mid-epoch).

        Returns
        -------
        FitResult
            Status, metrics (as in ``metrics.json``) and history.

        Raises
        ------
        MemoryGuardTriggered
            After saving a checkpoint, when the memory guard stopped the run.
        """
        cfg = self.config
        dist = _Dist(cfg.device)
        try:
            return self._fit(dist, resume)
        finally:
            dist.close()

    def _fit(self, dist: _Dist, resume: bool) -> FitResult:
        cfg = self.config
        device = dist.device
        is_main = dist.rank == 0
        run_dir = self.run_dir
        if resume and run_dir is None:
            raise ConfigError("expected a run directory to resume from, got none; pass --out")
        ckpt: dict[str, Any] | None = None
        if resume:
            assert run_dir is not None
            ckpt = load_checkpoint(run_dir / "checkpoint.pt")
            self._check_resume_config(dict(ckpt["config"]))
        elif run_dir is not None and (run_dir / "checkpoint.pt").exists() and is_main:
            raise ConfigError(f"expected an empty run directory, got a checkpoint in {run_dir}; "
                              "pass --resume to continue it or choose another --out")
        if run_dir is not None and is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_json(run_dir / "config.json", {**cfg.to_dict(), "store": self.store,
                                                  "trainer": self.name})
            _write_json(run_dir / "model.json", self.model_spec())

        torch.manual_seed(cfg.seed)
        masks = self.splits()
        train_mask = masks["train"]
        y_all = self.targets()
        y_train_source = y_all.copy()
        if cfg.permute_targets:
            pos = np.flatnonzero(train_mask)
            rng = np.random.default_rng([cfg.seed, 7919])
            y_train_source[pos] = y_all[rng.permutation(pos)]
        model = self._make_model(train_mask, y_train_source[train_mask]).to(device)
        self.model = model
        amp = cfg.amp if cfg.amp is not None else device.type == "cuda"
        train_model: nn.Module = model
        if dist.active:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = self._optimizer(model)
        stream = self._stream(train_mask, dist)
        n_batches = self._batches_per_epoch(stream, int(train_mask.sum()), dist)
        scheduler = self._scheduler(optimizer, n_batches * cfg.epochs)
        targets_t = torch.as_tensor(y_train_source, dtype=torch.float32)
        y_mean, y_std = float(model.y_mean.item()), float(model.y_std.item())

        history: list[dict[str, Any]] = []
        start_epoch, start_batch, step = 0, 0, 0
        best: dict[str, Any] = {"nrmse": math.inf, "epoch": -1, "state": None}
        bad_epochs = 0
        stream_state: Any = None
        rng_state: torch.Tensor | None = None
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            history = list(ckpt["history"])
            start_epoch, start_batch, step = (int(ckpt["epoch"]), int(ckpt["batch"]),
                                              int(ckpt["step"]))
            best = dict(ckpt["best"])
            bad_epochs = int(ckpt["bad_epochs"])
            stream_state = ckpt["stream"] if start_batch > 0 else None
            rng_state = ckpt["rng"]["torch"]
            if ckpt.get("complete"):
                start_epoch = cfg.epochs

        guard = MemoryGuard(cfg.max_rss_mb, cfg.min_available_mb, cfg.memory_check_every)
        t0 = time.monotonic()
        self._stop_reason = None
        status = "completed"
        seen_indices: dict[int, list[int]] = {}
        epoch, batch = start_epoch, start_batch

        def checkpoint(epoch_: int, batch_: int, stream_state_: Any, complete: bool) -> None:
            if run_dir is None or not is_main:
                return
            save_checkpoint(run_dir / "checkpoint.pt", {
                "format": CHECKPOINT_FORMAT, "trainer": self.name, "config": cfg.to_dict(),
                "model_spec": self.model_spec(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "stream": stream_state_, "epoch": epoch_, "batch": batch_, "step": step,
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": (torch.cuda.get_rng_state_all()
                                 if torch.cuda.is_available() else [])},
                "history": history, "best": best, "bad_epochs": bad_epochs,
                "complete": complete})

        for cb in self.callbacks:
            cb.on_fit_start(self)
        for epoch in range(start_epoch, cfg.epochs):
            stream.set_epoch(epoch)
            batch = start_batch if epoch == start_epoch else 0
            if batch > 0 and stream_state is not None:
                self._load_stream_state(stream, stream_state, dist)
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            loader = torch.utils.data.DataLoader(
                stream, batch_size=None, num_workers=cfg.num_workers,
                pin_memory=device.type == "cuda", generator=generator,
                persistent_workers=False,
                timeout=WORKER_TIMEOUT_S if cfg.num_workers else 0)
            iterator = iter(loader)
            if rng_state is not None and epoch == start_epoch:
                torch.set_rng_state(rng_state)
                if ckpt is not None and ckpt["rng"]["cuda"] and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(list(ckpt["rng"]["cuda"]))
            train_model.train()
            loss_sum, loss_n = 0.0, 0
            bar = tqdm(total=n_batches, initial=batch, desc=f"{self.name} epoch {epoch + 1}/"
                       f"{cfg.epochs}", disable=not (cfg.progress and is_main), leave=False,
                       dynamic_ncols=True)
            stopped = False
            try:
                for x, _y, index in iterator:
                    index_np = np.asarray(index, dtype=np.int64)
                    if cfg.log_indices:
                        seen_indices.setdefault(epoch, []).extend(index_np.tolist())
                    # float16 batches travel as float16 and become float32 on the device
                    x = torch.as_tensor(x).to(device, non_blocking=True).float()
                    stream.mark_consumed(index_np)
                    y = targets_t[torch.as_tensor(index_np)].to(device)
                    y_scaled = (y - y_mean) / y_std
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                                        enabled=amp):
                        out = train_model(x).reshape(-1).float()
                        loss = self._loss((out - y_mean) / y_std, y_scaled)
                    penalty = self._penalty(model)
                    total = loss + penalty if penalty is not None else loss
                    total.backward()
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    batch += 1
                    step += 1
                    loss_value = float(loss.detach())
                    loss_sum += loss_value * len(index_np)
                    loss_n += len(index_np)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.3f}")
                    logs = {"loss": loss_value, "lr": optimizer.param_groups[0]["lr"]}
                    for cb in self.callbacks:
                        cb.on_batch_end(self, epoch, batch, logs)
                    if cfg.max_minutes is not None and \
                            time.monotonic() - t0 > cfg.max_minutes * 60:
                        self._stop_reason = self._stop_reason or "time_limit"
                    guard_exc: MemoryGuardTriggered | None = None
                    try:
                        guard.step()
                    except MemoryGuardTriggered as exc:
                        guard_exc = exc
                    if dist.any(guard_exc is not None):
                        checkpoint(epoch, batch, self._stream_state(stream, batch, dist), False)
                        self._write_indices(seen_indices, dist)
                        raise guard_exc or MemoryGuardTriggered(
                            "memory guard triggered on another rank; checkpoint saved, "
                            "rerun with --resume")
                    if dist.any(self._stop_reason is not None):
                        stopped = True
                        break
            finally:
                bar.close()
            if stopped:
                status = ("time_limit" if self._stop_reason == "time_limit" else "stopped")
                checkpoint(epoch, batch, self._stream_state(stream, batch, dist), False)
                del iterator
                break
            del iterator
            scheduler_lr = optimizer.param_groups[0]["lr"]
            entry: dict[str, Any] = {"epoch": epoch + 1, "step": step,
                                     "train_loss": loss_sum / max(loss_n, 1), "lr": scheduler_lr,
                                     "seconds": round(time.monotonic() - t0, 3)}
            if masks.get("valid") is not None and masks["valid"].any():
                valid = self.evaluate("valid")
                entry.update({f"valid_{k}": v for k, v in valid.items() if k != "n"})
                if valid["nrmse"] < best["nrmse"]:
                    best = {"nrmse": valid["nrmse"], "epoch": epoch + 1,
                            "state": {k: v.detach().cpu().clone()
                                      for k, v in model.state_dict().items()}}
                    bad_epochs = 0
                else:
                    bad_epochs += 1
            history.append(entry)
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, entry)
            early = cfg.patience is not None and bad_epochs >= cfg.patience
            last = epoch + 1 >= cfg.epochs
            checkpoint(epoch + 1, 0, None, early or last)
            if early:
                status = "early_stopped"
                break

        final_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if best.get("state") is not None:
            model.load_state_dict(best["state"])
        result_metrics: dict[str, Any] = {}
        if is_main:
            result_metrics = self._final_metrics(status, history, best, masks)
            if run_dir is not None:
                torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()},
                           run_dir / "weights.pt")
                _write_json(run_dir / "metrics.json", result_metrics)
                self._write_csv(run_dir / "metrics.csv", history)
        self._write_indices(seen_indices, dist)
        self.final_state = final_state
        dist.barrier()
        result = FitResult(status=status, metrics=result_metrics, run_dir=run_dir,
                           history=history)
        for cb in self.callbacks:
            cb.on_fit_end(self, result)
        return result

    def _final_metrics(self, status: str, history: list[dict[str, Any]], best: dict[str, Any],
                       masks: dict[str, np.ndarray]) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {"trainer": self.name, "model": resolve_model_name(cfg.model),
                               "status": status, "stop_reason": self._stop_reason,
                               "permute_targets": cfg.permute_targets,
                               "best_epoch": best.get("epoch", -1),
                               "n_windows": {k: int(v.sum()) for k, v in masks.items()},
                               "n_subjects": {k: int(np.unique(self.subjects()[v]).size)
                                              for k, v in masks.items()}}
        for split in ("valid", "test"):
            if split in masks and masks[split].any():
                m = self.evaluate(split)
                out[f"{split}_nrmse"] = _finite_or_none(m["nrmse"])
                out[split] = {k: _finite_or_none(v) for k, v in m.items()}
            else:
                out[f"{split}_nrmse"] = None
        out["history"] = history
        out["settings"] = cfg.to_dict()
        return out

    @staticmethod
    def _write_csv(path: Path, history: Sequence[dict[str, Any]]) -> None:
        keys: list[str] = []
        for row in history:
            keys.extend(k for k in row if k not in keys)
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)

    def _write_indices(self, seen: dict[int, list[int]], dist: _Dist) -> None:
        if not self.config.log_indices or self.run_dir is None:
            return
        path = self.run_dir / f"indices_rank{dist.rank}.json"
        old: dict[str, list[int]] = json.loads(path.read_text()) if path.exists() else {}
        for epoch, idx in seen.items():
            old.setdefault(str(epoch), []).extend(idx)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(path, old)
        seen.clear()

    # stream state adapters (the stream owns the format)
    def _stream_state(self, stream: Any, batches_done: int, dist: _Dist) -> Any:
        return stream.state_dict()

    def _load_stream_state(self, stream: Any, state: Any, dist: _Dist) -> None:
        stream.load_state_dict(state)

    def _with_resume_overrides(self, saved: dict[str, Any]) -> TrainConfig:
        keep = {k: getattr(self.config, k) for k in RUN_CONTROL_FIELDS}
        return TrainConfig.from_dict({**saved, **keep})
