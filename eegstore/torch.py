"""PyTorch datasets over an eegstore store: a chunk-aware batch stream and a map-style view.

:class:`WindowStream` executes a :class:`eegstore.plan.StreamPlan`: every
consumer (rank x DataLoader worker) opens the store itself, lazily, after the
fork; reads whole chunks straight from the Zarr array into a bounded LRU chunk
cache; and gathers each batch with one vectorised copy per chunk.  Typical use::

    stream = WindowStream("store.zarr", batch_size=256, ram_budget=2 * 2**30)
    loader = DataLoader(stream, batch_size=None, num_workers=4, pin_memory=True)
    for epoch in range(start_epoch, n_epochs):
        stream.set_epoch(epoch)
        for x, y, index in loader:
            ...  # train on (x, y)
            stream.mark_consumed(index)
            if time_to_checkpoint:
                torch.save({"model": ..., "stream": stream.state_dict()}, path)

Resuming: build the stream again (any world size, any number of workers, even
another batch size), ``stream.load_state_dict(saved)``, and run the same loop
from ``saved["epoch"]``: the rest of that epoch is every window not yet marked,
once.  ``set_epoch(e)`` keeps the progress when ``e`` is the current epoch and
clears it otherwise.  Progress lives in the main process (the training loop
marks what it consumed through the ``index`` it received), so prefetched but
unused batches are not lost.  Do not use ``persistent_workers=True``: workers
must receive the epoch and progress with each new iterator.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from eegstore.errors import ConfigError, CorruptChunkError, StoreError
from eegstore.plan import (
    ChunkCache,
    EpochPartition,
    ReadStats,
    StreamPlan,
    batch_groups,
    buffer_capacity,
    crop_offsets,
    mask_to_ranges,
    ranges_to_mask,
    select_windows,
)
from eegstore.store import local_compute

__all__ = ["WindowDataset", "WindowStream", "merge_stream_states"]

DEFAULT_BUFFER_CHUNKS = 16
_NORMALIZE = (None, "window", "channel")
_STATE_VERSION = 1
_EPS = 1e-6


# --------------------------------------------------------------------------- store access
class _StoreReader:
    """Metadata of a store plus lazy, fork-safe whole-chunk reads of ``eeg``."""

    def __init__(self, store: Any, *, target: str,
                 storage_options: Mapping[str, Any] | None,
                 verify_checksums: bool = False) -> None:
        self.storage_options = dict(storage_options) if storage_options else None
        if isinstance(store, xr.Dataset):
            ds = store
            source = ds.encoding.get("source")
            self.source: str | None = str(source) if source else None
        elif isinstance(store, str | os.PathLike):
            self.source = os.fspath(store)
            if "://" not in self.source and not Path(self.source).exists():
                raise StoreError(f"expected an eegstore store at {self.source!r}, got nothing "
                                 "there; build one with `eegstore build`")
            kw: dict[str, Any] = {"chunks": None}
            if self.storage_options:
                kw["storage_options"] = self.storage_options
            try:
                ds = xr.open_zarr(self.source, **kw)
            except Exception as exc:  # zarr/fsspec raise many types
                raise StoreError(f"expected a readable Zarr store at {self.source!r}, got "
                                 f"{type(exc).__name__}: {exc}") from exc
        else:
            raise ConfigError(f"expected store as a path, URL or xarray.Dataset, got "
                              f"{type(store).__name__}")
        if "eeg" not in ds.data_vars or ds["eeg"].dims != ("window", "channel", "time"):
            raise StoreError("expected an 'eeg' variable with dims (window, channel, time); "
                             "is this an eegstore store?")
        if target not in ds.variables or ds[target].dims != ("window",):
            raise ConfigError(f"expected target to name a per-window coordinate, got "
                              f"{target!r}")
        eeg = ds["eeg"]
        self.shape = tuple(int(s) for s in eeg.shape)
        self.dtype = np.dtype(eeg.dtype)
        enc_chunks = eeg.encoding.get("chunks")
        if enc_chunks:
            self.chunk_windows = int(enc_chunks[0])
        elif eeg.chunks:
            self.chunk_windows = int(eeg.chunks[0][0])
        else:
            self.chunk_windows = int(ds.attrs.get("chunk_windows", 64))
        self.coords = ds.drop_vars("eeg")
        self.target = np.asarray(ds[target].values, dtype=np.float32)
        self.crcs: np.ndarray | None = None
        if verify_checksums:
            n_chunks = -(-self.shape[0] // self.chunk_windows)
            crcs = np.asarray(ds["chunk_crc32"].values, dtype=np.int64) \
                if "chunk_crc32" in ds.variables else np.zeros(0, dtype=np.int64)
            if ds.attrs.get("checksums") == "none" or len(crcs) != n_chunks:
                raise ConfigError(f"expected {n_chunks} recorded chunk checksums "
                                  f"(chunk_crc32) for verify_checksums=True, got "
                                  f"{'none' if ds.attrs.get('checksums') == 'none' else len(crcs)}"
                                  "; use a store written by `eegstore build`")
            self.crcs = crcs
        # Without a source (an in-memory or derived Dataset) read through xarray.
        self._dataset = None if self.source else ds
        self._array: Any = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None
        state["coords"] = None  # only needed to build plans in the main process
        return state

    def _open(self) -> Any:
        if self._array is None or self._pid != os.getpid():  # opened lazily, per process
            import zarr

            kw: dict[str, Any] = {"mode": "r"}
            if self.storage_options:
                kw["storage_options"] = self.storage_options
            self._array = zarr.open_group(self.source, **kw)["eeg"]
            self._pid = os.getpid()
        return self._array

    def read_chunk(self, chunk: int, recycled: np.ndarray | None = None) -> np.ndarray:
        """Decode one whole chunk, into ``recycled`` when given (a full-size slot).

        The returned array always has ``chunk_windows`` rows (a short last
        chunk fills only its first rows): reusing fixed-size slots keeps the
        process heap from fragmenting, so RSS stays at the budget.
        """
        start = chunk * self.chunk_windows
        stop = min(start + self.chunk_windows, self.shape[0])
        slot = recycled
        if slot is None:
            slot = np.empty((self.chunk_windows, *self.shape[1:]), dtype=self.dtype)
        try:
            if self._dataset is not None:
                with local_compute():
                    slot[: stop - start] = self._dataset["eeg"][start:stop].values
                return slot
            from zarr.core.buffer.cpu import NDBuffer

            self._open().get_basic_selection((slice(start, stop),),
                                             out=NDBuffer.from_numpy_array(slot[: stop - start]))
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # codecs and stores raise many types
            raise CorruptChunkError(
                f"expected a readable chunk {chunk} of array 'eeg' (windows {start}:{stop}) in "
                f"{self.source or 'the dataset'}, got {type(exc).__name__}: {exc}; run "
                "`eegstore verify` on the store and rebuild it") from exc
        if self.crcs is not None:
            import zlib

            crc = zlib.crc32(np.ascontiguousarray(slot[: stop - start]).data) & 0xFFFFFFFF
            if crc != int(self.crcs[chunk]):
                raise CorruptChunkError(
                    f"expected chunk {chunk} of array 'eeg' (windows {start}:{stop}) in "
                    f"{self.source or 'the dataset'} to have its recorded CRC32 "
                    f"{int(self.crcs[chunk])}, got {crc}; run `eegstore verify` on the store "
                    "and rebuild it")
        return slot

    @property
    def window_nbytes(self) -> int:
        return self.shape[1] * self.shape[2] * self.dtype.itemsize


def _check_crop(crop_samples: int | None, n_times: int) -> int | None:
    if crop_samples is None:
        return None
    if isinstance(crop_samples, bool) or not isinstance(crop_samples, int | np.integer) \
            or not 1 <= crop_samples <= n_times:
        raise ConfigError(f"expected crop_samples in [1, {n_times}] (the stored window "
                          f"length), got {crop_samples!r}")
    return int(crop_samples)


def _check_normalize(normalize: str | None) -> str | None:
    if normalize not in _NORMALIZE:
        raise ConfigError(f"expected normalize in {_NORMALIZE}, got {normalize!r}")
    return normalize


def _gather(out: np.ndarray, chunk: np.ndarray, pos: np.ndarray, local: np.ndarray,
            offsets: np.ndarray | None, crop: int | None) -> None:
    """Copy windows ``local`` of ``chunk`` into ``out[pos]`` (cropping, upcasting)."""
    if crop is None or crop == chunk.shape[2]:
        out[pos] = chunk[local]
    else:
        view = np.lib.stride_tricks.sliding_window_view(chunk, crop, axis=2)
        out[pos] = view[local, :, offsets[pos], :] if offsets is not None else view[local, :, 0]


def _alloc_batch(shape: tuple[int, ...], *, shared: bool, pinned: bool) -> torch.Tensor:
    """Allocate an output batch where it will travel with the fewest copies.

    In a DataLoader worker the tensor is created in shared memory, so sending it
    to the main process copies nothing; ``pinned`` (main process with CUDA)
    allocates page-locked memory for asynchronous host-to-device copies.
    """
    if shared:
        try:
            storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * 4)
            return torch.empty(0, dtype=torch.float32).set_(storage).view(shape)
        except (AttributeError, RuntimeError):  # private API: fall back to a plain tensor
            pass
    if pinned and torch.cuda.is_available():
        return torch.empty(shape, dtype=torch.float32, pin_memory=True)
    # numpy's allocator returns freed batches to the heap for reuse; repeated
    # torch.empty of tens of MB was measured to grow RSS batch after batch
    return torch.from_numpy(np.empty(shape, dtype=np.float32))


def _normalize(x: np.ndarray, mode: str | None) -> None:
    """In-place z-scoring over (channel, time) per window or over time per channel."""
    if mode is None:
        return
    axes = (1, 2) if mode == "window" else (2,)
    mean = x.mean(axis=axes, keepdims=True)
    std = x.std(axis=axes, keepdims=True)
    x -= mean
    x /= std + _EPS


def _default_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        d_rank, d_world = 0, 1
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            d_rank, d_world = dist.get_rank(), dist.get_world_size()
        elif "WORLD_SIZE" in os.environ:
            d_rank = int(os.environ.get("RANK", "0"))
            d_world = int(os.environ["WORLD_SIZE"])
        rank = d_rank if rank is None else rank
        world_size = d_world if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"expected 0 <= rank < world_size, got rank={rank}, "
                          f"world_size={world_size}")
    return int(rank), int(world_size)


# --------------------------------------------------------------------------- stream
class WindowStream(IterableDataset):
    """Chunk-aware, exactly-once batch stream of a store's windows.

    Yields whole batches ``(x, y, index)``: ``x`` float32 ``(B, channel, time)``
    (``time = crop_samples`` when cropping), ``y`` float32 ``(B,)`` (the
    ``target`` coordinate), ``index`` int64 ``(B,)`` (store positions).  Use as
    ``DataLoader(stream, batch_size=None, num_workers=N, pin_memory=True)``.
    The schedule (order, batches, partition over ranks x workers, resume) is the
    pure :attr:`plan`; see :mod:`eegstore.plan` for the exact definitions.

    Parameters
    ----------
    store : str, Path or xarray.Dataset
        Path or URL of a store, or a dataset opened from one.
    batch_size : int
        Windows per batch.
    shuffle : bool
        Permute chunk order per epoch and shuffle within buffers.
    seed : int
        Seed of every permutation and crop.
    where : None, dict, mask, positions or callable
        Window selection resolved from coordinates alone
        (:func:`eegstore.plan.select_windows`).
    target : str
        Per-window coordinate delivered as ``y``.
    crop_samples : int, optional
        Random crop length per window, seeded by ``(seed, epoch, index)``.
    normalize : {None, "window", "channel"}
        Z-score each window over (channel, time), or each channel over time.
    buffer_chunks : int, optional
        Chunks per shuffle buffer; part of the global order.  Default 16, or
        fewer when ``ram_budget`` cannot hold 16 for one consumer.
    ram_budget : int, optional
        Bytes bounding every chunk cache and batch of the stream across all
        workers and prefetch (formula in :func:`eegstore.plan.buffer_capacity`).
        Each worker caches ``min(buffer_chunks, M)`` chunks; when ``M`` is
        smaller than ``buffer_chunks`` chunks are re-read (see
        :meth:`read_amplification`) rather than exceeding the budget.
    drop_last : bool
        Drop the last, shorter global batch.
    rank, world_size : int, optional
        Default to torch.distributed when initialised, else ``RANK`` /
        ``WORLD_SIZE``, else 0 / 1.
    equalize : {None, "pad", "drop"}
        Same number of batches on every rank (DDP); see
        :meth:`epoch_partition` for the counts.
    prefetch_factor : int
        The DataLoader's ``prefetch_factor`` (for the budget formula).
    pin_memory : bool
        With ``num_workers=0`` and CUDA, build batches in pinned memory (with
        workers, use the DataLoader's ``pin_memory=True``; worker batches are
        built directly in shared memory so the transfer copies nothing).
    storage_options : mapping, optional
        fsspec options for remote URLs.
    verify_checksums : bool
        Check each decoded chunk against the CRC32 the build recorded
        (``chunk_crc32``) and raise :class:`~eegstore.errors.CorruptChunkError` on
        a mismatch.  Catches damage the codec cannot see (a deleted chunk file
        reads as fill values); costs one CRC32 pass per chunk read.
    """

    def __init__(self, store: str | Path | xr.Dataset, batch_size: int, *, shuffle: bool = True,
                 seed: int = 0, where: Any = None, target: str = "target",
                 crop_samples: int | None = None, normalize: str | None = None,
                 buffer_chunks: int | None = None, ram_budget: int | None = None,
                 drop_last: bool = False, rank: int | None = None,
                 world_size: int | None = None,
                 equalize: Literal["pad", "drop"] | None = None, prefetch_factor: int = 2,
                 pin_memory: bool = False,
                 storage_options: Mapping[str, Any] | None = None,
                 verify_checksums: bool = False) -> None:
        super().__init__()
        self.pin_memory = bool(pin_memory)
        self._reader = _StoreReader(store, target=target, storage_options=storage_options,
                                    verify_checksums=verify_checksums)
        n_windows, _, n_times = self._reader.shape
        self.crop_samples = _check_crop(crop_samples, n_times)
        self.normalize = _check_normalize(normalize)
        self.rank, self.world_size = _default_rank_world(rank, world_size)
        if prefetch_factor < 1:
            raise ConfigError(f"expected prefetch_factor >= 1, got {prefetch_factor}")
        self.prefetch_factor = int(prefetch_factor)
        self.ram_budget = None if ram_budget is None else int(ram_budget)
        selected = select_windows(self._reader.coords, where, n_windows)
        if selected.size == 0:
            raise ConfigError("expected where to select at least one window, got none; "
                              "check the coordinate values")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"expected a positive integer batch_size, got {batch_size!r}")
        n_sel_chunks = len(np.unique(selected // self._reader.chunk_windows))
        if buffer_chunks is None:
            buffer_chunks = min(DEFAULT_BUFFER_CHUNKS, n_sel_chunks)
            if self.ram_budget is not None:
                buffer_chunks = min(buffer_chunks, self.cache_chunks(0, batch_size))
        elif self.ram_budget is not None:
            self.cache_chunks(0, batch_size)  # fail early when one chunk cannot fit
        self.plan = StreamPlan(n_windows=n_windows, chunk_windows=self._reader.chunk_windows,
                               selected=selected, batch_size=batch_size, shuffle=shuffle,
                               seed=seed, buffer_chunks=buffer_chunks, drop_last=drop_last,
                               equalize=equalize)
        self.epoch = 0
        self._consumed = np.zeros(self.plan.n_selected, dtype=bool)
        self._stats = ReadStats(0, 0, 0)

    # ---- sizes and budget
    @property
    def out_times(self) -> int:
        return self.crop_samples or self._reader.shape[2]

    def _batch_nbytes(self, batch_size: int) -> int:
        return batch_size * (self._reader.shape[1] * self.out_times * 4 + 12)

    def cache_chunks(self, num_workers: int, batch_size: int | None = None) -> int:
        """Chunks each consumer caches with ``num_workers`` DataLoader workers."""
        bs = self.plan.batch_size if batch_size is None else batch_size
        cap = (self.plan.buffer_chunks if hasattr(self, "plan") else DEFAULT_BUFFER_CHUNKS)
        if self.ram_budget is None:
            return cap
        m = buffer_capacity(self.ram_budget, num_workers=num_workers,
                            prefetch_factor=self.prefetch_factor,
                            chunk_nbytes=self._reader.chunk_windows * self._reader.window_nbytes,
                            batch_nbytes=self._batch_nbytes(bs))
        return min(cap, m)

    # ---- epoch and progress
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; progress is kept if ``epoch`` is the current one, else cleared."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"expected a non-negative integer epoch, got {epoch!r}")
        if epoch != self.epoch:
            self._consumed[:] = False
        self.epoch = epoch

    def mark_consumed(self, index: torch.Tensor | np.ndarray) -> None:
        """Record windows the training loop has consumed (pass each batch's ``index``)."""
        idx = index.detach().cpu().numpy() if isinstance(index, torch.Tensor) else index
        self._consumed[self.plan.positions(self.epoch, np.asarray(idx))] = True

    @property
    def n_consumed(self) -> int:
        return int(self._consumed.sum())

    def state_dict(self, *, gather: bool = True) -> dict[str, Any]:
        """Progress in global terms: epoch + consumed positions of the global sequence.

        Under an initialised torch.distributed with several ranks (and
        ``gather=True``) the ranks' marks are all-gathered, so every rank
        returns the same, complete state; this is a collective call, make it on
        every rank.  Without torch.distributed, combine the ranks' states with
        :func:`merge_stream_states`.  The state is JSON-serialisable.
        """
        consumed = self._consumed.copy()
        dist = torch.distributed
        if gather and dist.is_available() and dist.is_initialized() \
                and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, mask_to_ranges(consumed))
            for p in parts:
                consumed |= ranges_to_mask(p, consumed.size)
        return {"version": _STATE_VERSION, "epoch": self.epoch,
                "consumed": mask_to_ranges(consumed), "plan": self.plan.fingerprint()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (ranks, workers, batch size may differ)."""
        if state.get("version") != _STATE_VERSION:
            raise ConfigError(f"expected stream state version {_STATE_VERSION}, got "
                              f"{state.get('version')!r}")
        if dict(state["plan"]) != self.plan.fingerprint():
            raise ConfigError("expected a state saved for the same store, selection, seed, "
                              "shuffle and buffer_chunks, got a different plan; build the "
                              "stream with the saved settings")
        self.epoch = int(state["epoch"])
        self._consumed = ranges_to_mask(state["consumed"], self.plan.n_selected)

    # ---- plan views
    def epoch_partition(self, num_workers: int = 0) -> EpochPartition:
        """Deal the current epoch's remaining batches over ranks and ``num_workers``."""
        return self.plan.partition(self.epoch, self.world_size, num_workers,
                                   self._consumed if self._consumed.any() else None)

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch (independent of workers)."""
        return len(self.epoch_partition().rank_batches[self.rank])

    def read_amplification(self, num_workers: int = 0) -> float:
        """Bytes read / bytes delivered over all ranks for the current epoch (exact simulation)."""
        return self.read_stats(num_workers).read_amplification

    def read_stats(self, num_workers: int = 0) -> ReadStats:
        return self.plan.read_stats(self.epoch, self.world_size, num_workers,
                                    self.cache_chunks(num_workers),
                                    self._consumed if self._consumed.any() else None)

    def shuffle_score(self) -> float:
        """See :meth:`eegstore.plan.StreamPlan.shuffle_score` (0 ordered, ~1 fully shuffled)."""
        return self.plan.shuffle_score(self.epoch)

    @property
    def last_read_stats(self) -> ReadStats:
        """Reads of the last iteration run in this process (``num_workers=0``)."""
        return self._stats

    # ---- execution
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        num_workers, worker = (info.num_workers, info.id) if info is not None else (0, 0)
        part = self.epoch_partition(num_workers)
        cache = ChunkCache(self.cache_chunks(num_workers), self._reader.read_chunk,
                           self.plan.chunk_len)
        delivered = 0
        _, n_channels, n_times = self._reader.shape
        crop = self.crop_samples
        cw = self.plan.chunk_windows
        try:
            for b in part.consumer_batch_ids(self.rank, worker):
                index = part.batch(int(b))
                xt = _alloc_batch((len(index), n_channels, self.out_times),
                                  shared=info is not None, pinned=self.pin_memory)
                x = xt.numpy()
                offsets = (crop_offsets(index, n_times, crop, seed=self.plan.seed,
                                        epoch=self.epoch)
                           if crop is not None and crop < n_times else None)
                for chunk, pos, local in batch_groups(index, cw, cache.__contains__):
                    _gather(x, cache.get(chunk), pos, local, offsets, crop)
                _normalize(x, self.normalize)
                y = self._reader.target[index]
                delivered += len(index)
                self._stats = ReadStats(cache.chunks_read, cache.windows_read, delivered)
                yield xt, torch.from_numpy(y), torch.from_numpy(index.copy())
        finally:
            cache.clear()

    def __repr__(self) -> str:
        return (f"WindowStream({self.plan!r}, epoch={self.epoch}, rank={self.rank}, "
                f"world_size={self.world_size}, crop_samples={self.crop_samples}, "
                f"normalize={self.normalize!r}, ram_budget={self.ram_budget})")


def merge_stream_states(states: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Union of several ranks' :meth:`WindowStream.state_dict` (``gather=False``) outputs."""
    if not states:
        raise ConfigError("expected at least one state, got none")
    first = states[0]
    for s in states[1:]:
        if s["epoch"] != first["epoch"] or s["plan"] != first["plan"]:
            raise ConfigError("expected states of the same epoch and plan, got different ones")
    size = int(sum(b - a for a, b in mask_to_ranges(
        ranges_to_mask(first["plan"]["selected"], int(first["plan"]["n_windows"])))))
    mask = np.zeros(size, dtype=bool)
    for s in states:
        mask |= ranges_to_mask(s["consumed"], size)
    return {**dict(first), "consumed": mask_to_ranges(mask)}


# --------------------------------------------------------------------------- map-style
class WindowDataset(Dataset):
    """Map-style view of a store's selected windows, for evaluation.

    Item ``i`` is the ``i``-th selected window in storage order:
    ``(x float32 (channel, time), y float32 scalar, index int64 scalar)``.
    A small LRU cache of decoded chunks (``cache_chunks``) serves neighbouring
    windows from one read; each process opens the store lazily.

    Parameters
    ----------
    store : str, Path or xarray.Dataset
        Store path, URL or opened dataset.
    where : see :class:`WindowStream`
        Selection.
    crop_samples : int, optional
        Crop length; the crop start is seeded by ``(seed, index)`` so items are
        deterministic.
    target : str
        Coordinate delivered as ``y``.
    normalize : {None, "window", "channel"}
        Z-scoring as in :class:`WindowStream`.
    cache_chunks : int
        Decoded chunks kept.
    seed : int
        Seed of the crops.
    storage_options : mapping, optional
        fsspec options for remote URLs.
    verify_checksums : bool
        Check each decoded chunk against the CRC32 the build recorded
        (``chunk_crc32``) and raise :class:`~eegstore.errors.CorruptChunkError` on
        a mismatch.  Catches damage the codec cannot see (a deleted chunk file
        reads as fill values); costs one CRC32 pass per chunk read.
    """

    def __init__(self, store: str | Path | xr.Dataset, where: Any = None,
                 crop_samples: int | None = None, target: str = "target", *,
                 normalize: str | None = None, cache_chunks: int = 4, seed: int = 0,
                 storage_options: Mapping[str, Any] | None = None,
                 verify_checksums: bool = False) -> None:
        self._reader = _StoreReader(store, target=target, storage_options=storage_options,
                                    verify_checksums=verify_checksums)
        n_windows, _, n_times = self._reader.shape
        self.crop_samples = _check_crop(crop_samples, n_times)
        self.normalize = _check_normalize(normalize)
        if isinstance(cache_chunks, bool) or not isinstance(cache_chunks, int) \
                or cache_chunks < 1:
            raise ConfigError(f"expected a positive integer cache_chunks, got {cache_chunks!r}")
        self.cache_chunks = cache_chunks
        self.seed = int(seed)
        self.selected = select_windows(self._reader.coords, where, n_windows)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def __len__(self) -> int:
        return int(self.selected.size)

    def _chunk(self, chunk: int) -> np.ndarray:
        if chunk in self._cache:
            self._cache.move_to_end(chunk)
            return self._cache[chunk]
        recycled = None
        while len(self._cache) >= self.cache_chunks:
            recycled = self._cache.popitem(last=False)[1]
        arr = self._reader.read_chunk(chunk, recycled)
        self._cache[chunk] = arr
        return arr

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"expected an item index in [-{n}, {n}), got {i}")
        index = self.selected[int(i)]
        cw = self._reader.chunk_windows
        chunk = int(index // cw)
        n_times = self._reader.shape[2]
        out = np.empty((1, self._reader.shape[1], self.crop_samples or n_times), np.float32)
        idx = np.array([index], dtype=np.int64)
        offsets = (crop_offsets(idx, n_times, self.crop_samples, seed=self.seed, epoch=0)
                   if self.crop_samples is not None and self.crop_samples < n_times else None)
        _gather(out, self._chunk(chunk), np.array([0]), idx - chunk * cw, offsets,
                self.crop_samples)
        _normalize(out, self.normalize)
        return (torch.from_numpy(out[0]), torch.tensor(self._reader.target[index]),
                torch.tensor(index, dtype=torch.int64))

