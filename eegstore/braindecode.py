"""braindecode / skorch adapter: a store seen as a braindecode windows dataset.

:class:`StoreWindows` is a map-style dataset with braindecode's conventions:
item ``i`` is ``(X, y, crop_inds)`` (``X`` ``(channel, time)``, ``y`` float32
``(1,)``, ``crop_inds = [i_window_in_trial, i_start_in_trial, i_stop_in_trial]``),
:meth:`~StoreWindows.get_metadata` is a DataFrame of the windows' coordinates
and :attr:`~StoreWindows.description` one row per recording.  braindecode's
``EEGRegressor`` / ``EEGClassifier`` and plain torch loops train on it as on a
``BaseConcatDataset`` of windows::

    train = StoreWindows("store.zarr", where=subject_split("store.zarr")["train"])
    net = EEGRegressor(EEGNeX, module__n_outputs=1, train_split=None,
                       iterator_train__shuffle=False,
                       iterator_train__sampler=train.sampler(seed=0))
    net.fit(train, y=None)

Random access to a chunked store reads a whole chunk per window unless the
order is chunk-aware: :meth:`StoreWindows.sampler` returns a
:class:`ChunkSampler` whose order is the stream's (chunks permuted, windows
shuffled within buffers of ``buffer_chunks`` chunks, a new order every epoch),
and the dataset caches ``buffer_chunks`` chunks, so each chunk is read about
once per epoch (see :meth:`ChunkSampler.read_stats`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from torch.utils.data import Dataset, Sampler

from eegstore.errors import ConfigError
from eegstore.plan import ChunkCache, ReadStats, StreamPlan, crop_offsets
from eegstore.torch import DEFAULT_BUFFER_CHUNKS, WindowDataset

__all__ = ["ChunkSampler", "StoreWindows"]

#: Coordinates describing a recording (one row each in :attr:`StoreWindows.description`).
_RECORDING_COORDS = ("subject", "session", "task", "run", "release", "recording")
_CROP_COLUMNS = ["i_window_in_trial", "i_start_in_trial", "i_stop_in_trial"]


def _window_table(ds: xr.Dataset, selected: np.ndarray, n_times: int) -> pd.DataFrame:
    """Per-window coordinates of ``selected`` plus braindecode's crop columns."""
    columns = {}
    for name, var in ds.coords.items():
        if var.dims == ("window",):
            values = np.asarray(var.values)[selected]
            columns[str(name)] = values.astype(str) if values.dtype == object else values
    table = pd.DataFrame(columns)
    sfreq = float(ds.attrs.get("sfreq", 1.0))
    start = np.rint(np.asarray(ds["onset"].values)[selected] * sfreq).astype(np.int64) \
        if "onset" in ds.variables else np.zeros(len(selected), dtype=np.int64)
    group = table["recording"] if "recording" in table else pd.Series(0, index=table.index)
    table["i_window_in_trial"] = group.groupby(group, sort=False).cumcount().to_numpy()
    table["i_start_in_trial"] = start
    table["i_stop_in_trial"] = start + n_times
    return table


class ChunkSampler(Sampler[int]):
    """Chunk-aware random order of a :class:`StoreWindows`' items, new each epoch.

    The order of epoch ``e`` is :meth:`eegstore.plan.StreamPlan.order` of the
    dataset's selection (chunks permuted with ``(seed, e)``, windows shuffled
    within buffers of ``buffer_chunks`` chunks): a dataset caching
    ``buffer_chunks`` chunks reads each chunk once per epoch with
    ``num_workers=0``.  Each iteration is one epoch; the epoch then advances
    (or set it with :meth:`set_epoch`).

    Parameters
    ----------
    selected : numpy.ndarray
        Sorted store positions of the dataset's items.
    n_windows, chunk_windows : int
        Windows in the store and per chunk.
    seed : int
        Seed of every epoch's order.
    buffer_chunks : int
        Chunks per shuffle buffer.
    """

    def __init__(self, selected: np.ndarray, *, n_windows: int, chunk_windows: int,
                 seed: int = 0, buffer_chunks: int = DEFAULT_BUFFER_CHUNKS) -> None:
        self.plan = StreamPlan(n_windows=n_windows, chunk_windows=chunk_windows,
                               selected=np.asarray(selected, dtype=np.int64), batch_size=1,
                               shuffle=True, seed=seed, buffer_chunks=buffer_chunks)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"expected a non-negative integer epoch, got {epoch!r}")
        self.epoch = epoch

    def items(self, epoch: int) -> np.ndarray:
        """Return the item indices of ``epoch`` in order."""
        return np.searchsorted(self.plan.selected, self.plan.order(epoch))

    def __len__(self) -> int:
        return self.plan.n_selected

    def __iter__(self) -> Iterator[int]:
        order = self.items(self.epoch)
        self.epoch += 1
        return iter(order.tolist())

    def read_stats(self, cache_chunks: int, *, epoch: int | None = None, batch_size: int = 1,
                   num_workers: int = 0) -> ReadStats:
        """Simulate the chunk reads of one epoch through a DataLoader.

        The DataLoader hands batch ``b`` to worker ``b % num_workers``; each
        worker's dataset copy keeps an LRU cache of ``cache_chunks`` chunks (the
        same :class:`~eegstore.plan.ChunkCache` as the dataset's).  With
        several workers each worker reads the chunks of the buffers its batches
        fall in, so the amplification grows towards ``num_workers``.
        """
        order = self.plan.order(self.epoch if epoch is None else epoch)
        chunks = (order // self.plan.chunk_windows).tolist()
        batches = [chunks[i:i + batch_size] for i in range(0, len(chunks), batch_size)]
        n_consumers = max(1, num_workers)
        chunks_read = windows_read = 0
        for worker in range(n_consumers):
            cache = ChunkCache(cache_chunks, lambda chunk, old: None, self.plan.chunk_len)
            for batch in batches[worker::n_consumers]:
                for chunk in batch:
                    cache.get(chunk)
            chunks_read += cache.chunks_read
            windows_read += cache.windows_read
        return ReadStats(chunks_read, windows_read, len(order))


class StoreWindows(Dataset[tuple[Any, ...]]):
    """A store's selected windows as a braindecode-style windows dataset.

    Parameters
    ----------
    store : str, Path or xarray.Dataset
        The store.
    where : see :func:`eegstore.plan.select_windows`
        Selection (e.g. a mask of :func:`eegstore.splits.subject_split`).
    target : str
        Per-window coordinate delivered as ``y``.
    crop_samples : int, optional
        Crop length (the crop start is seeded by ``(seed, window)``, fixed).
    normalize : {None, "window", "channel"}
        Z-scoring of every window.
    return_crop_inds : bool
        Items ``(X, y, crop_inds)`` (braindecode's windows datasets) or ``(X, y)``.
    buffer_chunks : int
        Chunks cached per process, and the buffer size of :meth:`sampler`.
    seed : int
        Seed of the crops.
    storage_options : mapping, optional
        fsspec options for remote URLs.
    **dataset_kwargs
        Passed to :class:`~eegstore.torch.WindowDataset` (``dtype``, ``verify_checksums``).
    """

    def __init__(self, store: str | Path | xr.Dataset, where: Any = None, *,
                 target: str = "target", crop_samples: int | None = None,
                 normalize: str | None = None, return_crop_inds: bool = True,
                 buffer_chunks: int = DEFAULT_BUFFER_CHUNKS, seed: int = 0,
                 storage_options: Mapping[str, Any] | None = None,
                 **dataset_kwargs: Any) -> None:
        self.windows = WindowDataset(store, where, crop_samples, target, normalize=normalize,
                                     cache_chunks=buffer_chunks, seed=seed,
                                     storage_options=storage_options, **dataset_kwargs)
        ds = self.windows.coords  # the store WindowDataset opened, without its signal
        self.n_windows, _, self.n_times = self.windows.shape
        self.chunk_windows = self.windows.chunk_windows
        self.sfreq = float(ds.attrs.get("sfreq", 1.0))
        self.buffer_chunks = buffer_chunks
        self.return_crop_inds = bool(return_crop_inds)
        self._metadata = _window_table(ds, self.windows.selected, self.n_times)
        out_times = self.windows.crop_samples or self.n_times
        offsets = (crop_offsets(self.windows.selected, self.n_times, out_times, seed=seed,
                                epoch=0)
                   if out_times < self.n_times else np.zeros(len(self), dtype=np.int64))
        starts = self._metadata["i_start_in_trial"].to_numpy() + offsets
        self._crop_inds = np.stack([self._metadata["i_window_in_trial"].to_numpy(), starts,
                                    starts + out_times], axis=1).astype(np.int64)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        x, y, _ = self.windows[i]
        target = y.reshape(1)
        if self.return_crop_inds:
            return x, target, self._crop_inds[int(i)].tolist()
        return x, target

    def get_metadata(self) -> pd.DataFrame:
        """One row per item: the window's coordinates and braindecode's crop columns."""
        return self._metadata.copy()

    @property
    def description(self) -> pd.DataFrame:
        """One row per recording: its subject, session, task, run, release."""
        present = [c for c in _RECORDING_COORDS if c in self._metadata]
        return self._metadata[present].drop_duplicates().reset_index(drop=True)

    def sampler(self, seed: int = 0) -> ChunkSampler:
        """Return a chunk-aware random order of this dataset's items (see :class:`ChunkSampler`)."""
        return ChunkSampler(self.windows.selected, n_windows=self.n_windows,
                            chunk_windows=self.chunk_windows, seed=seed,
                            buffer_chunks=self.buffer_chunks)

    def __repr__(self) -> str:
        return (f"StoreWindows({len(self)} windows of {self.n_times} samples at "
                f"{self.sfreq:g} Hz, {len(self.description)} recordings)")
