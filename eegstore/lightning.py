"""PyTorch Lightning adapter: a ``LightningDataModule`` over a store (``eegstore[lightning]``).

:class:`StoreDataModule` serves a store's train / valid / test windows as
:class:`~eegstore.torch.WindowStream` batches.  The training loader is a
:class:`~eegstore.loader.StreamLoader`: Lightning saves its state (the stream's
progress) into every checkpoint and restores it on ``Trainer.fit(ckpt_path=...)``,
so a run stopped mid-epoch resumes with exactly the windows it had not trained
on, with any ``num_workers``.  Under DDP each rank streams its own share
(rank and world size come from the trainer)::

    dm = StoreDataModule("store.zarr", batch_size=256, num_workers=4,
                         crop_samples=200, normalize="window")
    trainer = lightning.Trainer(max_epochs=10)
    trainer.fit(model, datamodule=dm, ckpt_path="last")

The batches are ``(x, y, index)`` as the stream yields them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning
import xarray as xr
from torch.utils.data import DataLoader

from eegstore.errors import ConfigError
from eegstore.loader import Batch, StreamLoader
from eegstore.splits import subject_split
from eegstore.torch import WindowStream

__all__ = ["StoreDataModule"]

Part = Literal["train", "valid", "test"]
_PARTS: tuple[Part, ...] = ("train", "valid", "test")


def _check_splits(splits: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(splits) - set(_PARTS))
    if unknown or "train" not in splits:
        raise ConfigError(f"expected splits with keys among {_PARTS} including 'train', got "
                          f"{sorted(splits)}; pass e.g. eegstore.subject_split(store)")
    return dict(splits)


def _is_empty(where: Any) -> bool:
    return hasattr(where, "dtype") and where.dtype == bool and not where.any()


class StoreDataModule(lightning.LightningDataModule):
    """Train / valid / test window streams of one store, resumable mid-epoch.

    Parameters
    ----------
    store : str, Path or xarray.Dataset
        The store.
    batch_size : int
        Windows per training batch.
    splits : mapping, optional
        ``{"train": where, "valid": where, "test": where}`` selections (masks,
        coordinate dicts, positions; see :func:`eegstore.plan.select_windows`);
        ``valid`` and ``test`` may be missing or select nothing.  Default:
        :func:`eegstore.splits.subject_split` of the store with ``split_seed``.
    split_seed : int
        Seed of the default subject split.
    eval_batch_size : int, optional
        Windows per validation / test batch (default ``batch_size``).
    num_workers : int
        DataLoader workers of every loader.
    pin_memory : bool
        Pinned batches (CUDA training).
    seed : int
        Seed of the training order and crops.
    crop_samples : int, optional
        Crop length (random crops in training; seeded, fixed crops in evaluation).
    normalize : {None, "window", "channel"}
        Z-scoring of every window.
    **stream_kwargs
        Passed to every :class:`~eegstore.torch.WindowStream` (``target``,
        ``ram_budget``, ``buffer_chunks``, ``dtype``, ``equalize``, ...).  With
        several ranks ``equalize`` defaults to ``"pad"``, so every rank runs
        the same number of steps.
    """

    def __init__(self, store: str | Path | xr.Dataset, batch_size: int, *,
                 splits: Mapping[str, Any] | None = None, split_seed: int = 0,
                 eval_batch_size: int | None = None, num_workers: int = 0,
                 pin_memory: bool = False, seed: int = 0, crop_samples: int | None = None,
                 normalize: str | None = None, **stream_kwargs: Any) -> None:
        super().__init__()
        self.store = store
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.splits = _check_splits(subject_split(store, seed=split_seed)
                                    if splits is None else splits)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.crop_samples = crop_samples
        self.normalize = normalize
        self.stream_kwargs = stream_kwargs

    def stream(self, part: Part) -> WindowStream:
        """Build the stream of one part for this trainer's rank (a new one on each call)."""
        if part not in _PARTS:
            raise ConfigError(f"expected a part among {_PARTS}, got {part!r}")
        if not self.has_part(part):
            raise ConfigError(f"expected windows in the {part!r} split, got none; pass "
                              f"splits with a non-empty {part!r} selection")
        kwargs = dict(self.stream_kwargs)
        trainer = self.trainer
        if trainer is not None:
            kwargs.setdefault("rank", trainer.global_rank)
            kwargs.setdefault("world_size", trainer.world_size)
            if trainer.world_size > 1:
                kwargs.setdefault("equalize", "pad")
        train = part == "train"
        return WindowStream(self.store, self.batch_size if train else self.eval_batch_size,
                            shuffle=train, seed=self.seed, where=self.splits.get(part),
                            crop_samples=self.crop_samples, normalize=self.normalize,
                            pin_memory=self.pin_memory and not self.num_workers, **kwargs)

    def has_part(self, part: Part) -> bool:
        """Whether the splits select windows for ``part`` (``train`` None means all)."""
        where = self.splits.get(part)
        return not (where is None and part != "train") and not _is_empty(where)

    def _eval_loader(self, part: Part) -> DataLoader[Batch] | list[DataLoader[Batch]]:
        if not self.has_part(part):
            return []  # Lightning skips the loop
        # a plain DataLoader: the stream stays at epoch 0, so crops are the same each time
        return DataLoader(self.stream(part), batch_size=None, num_workers=self.num_workers,
                          pin_memory=self.pin_memory)

    def train_dataloader(self) -> StreamLoader:
        return StreamLoader(self.stream("train"), num_workers=self.num_workers,
                            pin_memory=self.pin_memory)

    def val_dataloader(self) -> DataLoader[Batch] | list[DataLoader[Batch]]:
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader[Batch] | list[DataLoader[Batch]]:
        return self._eval_loader("test")
