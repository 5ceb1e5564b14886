"""PyTorch datasets over an eegstore store: a chunk-aware batch stream and a map-style view.

:class:`WindowStream` executes a :class:`eegstore.plan.StreamPlan`: every
consumer (rank x DataLoader worker) opens the store itself, lazily, after the
fork; reads whole chunks straight into a bounded cache of chunk slots
(:mod:`eegstore.reader`), on a pool of threads ahead of the training loop
(:mod:`eegstore.readahead`, following :mod:`eegstore.schedule`); and gathers
each batch with one copy of cache rows.  Typical use, with the loader that
records progress itself (:class:`eegstore.loader.StreamLoader`)::

    stream = WindowStream("store.zarr", batch_size=256, ram_budget=2 * 2**30)
    loader = StreamLoader(stream)
    for epoch in range(loader.epoch, n_epochs):
        for x, y, index in loader:
            ...  # train on (x, y)
            if time_to_checkpoint:
                torch.save({"model": ..., "loader": loader.state_dict()}, path)

Resuming: build the stream again (any world size, any number of workers, even
another batch size), ``loader.load_state_dict(saved["loader"])`` and run the
same loop: the rest of that epoch is every window not yet handed out, once.
With a plain ``DataLoader(stream, batch_size=None)`` the loop itself marks
what it consumed (``stream.mark_consumed(index)``) and selects epochs
(``stream.set_epoch(e)``, which keeps the progress when ``e`` is the current
epoch and clears it otherwise).  Do not use ``persistent_workers=True``:
workers must receive the epoch and progress with each new iterator.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from eegstore.errors import ConfigError
from eegstore.plan import (
    ChunkCache,
    EpochPartition,
    ReadStats,
    StreamPlan,
    buffer_capacity,
    crop_offsets,
    mask_to_ranges,
    ranges_to_mask,
    select_windows,
)
from eegstore.readahead import check_threads, run_schedule
from eegstore.reader import StoreReader
from eegstore.schedule import ReadPart, schedule_reads

__all__ = ["WindowDataset", "WindowStream", "merge_stream_states"]

DEFAULT_BUFFER_CHUNKS = 16
_NORMALIZE = (None, "window", "channel")
_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_STATE_VERSION = 1
_EPS = 1e-6


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


def _check_dtype(dtype: str | np.dtype[Any] | torch.dtype) -> torch.dtype:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ConfigError(f"expected dtype in {sorted(_DTYPES)}, got {dtype!r}; float16 "
                          "halves host copies and transfers (convert on the GPU)")
    return _DTYPES[name]


def _check_threads(threads: int | None, in_worker: bool) -> int:
    """Return the reading threads: ``None`` is every usable core, or 0 in a DataLoader worker."""
    if threads is None:
        return 0 if in_worker else len(os.sched_getaffinity(0))
    return check_threads(threads)


def _normalize(x: torch.Tensor, mode: str | None) -> torch.Tensor:
    """Z-score ``x`` (float32) per window over (channel, time), or per channel over time."""
    if mode is None:
        return x
    dims = (1, 2) if mode == "window" else (2,)
    std, mean = torch.std_mean(x, dim=dims, correction=0, keepdim=True)
    return x.sub_(mean).div_(std.add_(_EPS))


def _alloc_batch(shape: tuple[int, ...], dtype: torch.dtype, *, shared: bool,
                 pinned: bool) -> torch.Tensor:
    """Allocate an output batch where it will travel with the fewest copies.

    In a DataLoader worker the tensor is created in shared memory, so sending it
    to the main process copies nothing; ``pinned`` (main process with CUDA)
    allocates page-locked memory for asynchronous host-to-device copies.
    """
    if shared:
        out = torch.empty(shape, dtype=dtype)
        out.share_memory_()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        return out
    if pinned and torch.cuda.is_available():
        return torch.empty(shape, dtype=dtype, pin_memory=True)
    # numpy's allocator returns freed batches to the heap for reuse; repeated
    # torch.empty of tens of MB grows RSS batch after batch
    return torch.from_numpy(np.empty(shape, dtype=str(dtype).removeprefix("torch.")))


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


class _Batch:
    """A batch being built: its buffer, window positions and crop offsets."""

    __slots__ = ("index", "offsets", "x")

    def __init__(self, x: torch.Tensor, index: np.ndarray, offsets: np.ndarray | None) -> None:
        self.x = x
        self.index = index
        self.offsets = offsets


class _Assembler:
    """Cache slots of one consumer, and the copies from them into batches.

    The cache is one tensor of ``capacity * chunk_windows`` stored windows; a
    chunk read fills a slot of it, and a batch (or part of one) is one
    ``index_select`` of cache rows, then a crop, normalisation and cast.
    """

    def __init__(self, reader: StoreReader, capacity: int, *, crop: int | None,
                 normalize: str | None, seed: int, epoch: int) -> None:
        self.reader = reader
        cw = reader.chunk_windows
        self.cache = np.empty((capacity * cw, *reader.shape[1:]), dtype=reader.dtype)
        self.cache_t = torch.from_numpy(self.cache)
        n_times = reader.shape[2]
        self.crop = crop if crop is not None and crop < n_times else None
        self.normalize = normalize
        self.seed = seed
        self.epoch = epoch
        self._lock = threading.Lock()
        self._scratch = threading.local()  # per-thread gather buffer, reused across batches
        self.chunks_read = 0
        self.windows_read = 0

    def _select(self, rows: torch.Tensor) -> torch.Tensor:
        """Cache rows ``rows`` copied into this thread's scratch buffer (stored dtype)."""
        buf: torch.Tensor | None = getattr(self._scratch, "buf", None)
        if buf is None or buf.shape[0] < len(rows):
            buf = torch.empty((len(rows), *self.cache_t.shape[1:]), dtype=self.cache_t.dtype)
            self._scratch.buf = buf
        return torch.index_select(self.cache_t, 0, rows, out=buf[:len(rows)])

    def load(self, chunk: int, slot: int) -> None:
        cw = self.reader.chunk_windows
        self.reader.read_chunk(chunk, self.cache[slot * cw:(slot + 1) * cw])
        with self._lock:
            self.chunks_read += 1
            self.windows_read += self.reader.chunk_len(chunk)

    def offsets(self, index: np.ndarray) -> np.ndarray | None:
        if self.crop is None:
            return None
        return crop_offsets(index, self.reader.shape[2], self.crop, seed=self.seed,
                            epoch=self.epoch)

    def gather(self, part: ReadPart, batch: _Batch) -> None:
        out = batch.x
        rows = torch.from_numpy(part.rows)
        whole = len(part.positions) == out.shape[0]
        if whole and self.crop is None and self.normalize is None \
                and out.dtype == self.cache_t.dtype:
            torch.index_select(self.cache_t, 0, rows, out=out)
            return
        sel = self._select(rows)
        if self.crop is not None and batch.offsets is not None:
            starts = torch.from_numpy(batch.offsets[part.positions])
            sel = sel.unfold(2, self.crop, 1)[torch.arange(len(rows)), :, starts]
        if self.normalize is not None:
            sel = _normalize(sel.to(torch.float32), self.normalize)
        if whole:
            out.copy_(sel)
        else:
            out.index_copy_(0, torch.from_numpy(part.positions), sel.to(out.dtype))


# --------------------------------------------------------------------------- stream
class WindowStream(IterableDataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Chunk-aware, exactly-once batch stream of a store's windows.

    Yields whole batches ``(x, y, index)``: ``x`` ``(B, channel, time)`` in
    ``dtype`` and in the store's unit (:attr:`units`; ``time = crop_samples``
    when cropping), ``y`` float32 ``(B,)`` (the ``target`` coordinate),
    ``index`` int64 ``(B,)`` (store positions).  The schedule (order, batches,
    partition over ranks x workers, resume) is the pure :attr:`plan`; see
    :mod:`eegstore.plan` for the exact definitions.  The batches of a
    ``(seed, epoch)`` are the same, in the same order, whatever the number of
    threads or DataLoader workers.

    Threads or workers?  Iterated in the training process (``num_workers=0``),
    the stream reads, decodes and gathers on ``threads`` pool threads ahead of
    the loop (these release the GIL): every core works with no inter-process
    copy, which is the fastest way to feed a model on a CPU-poor machine.
    DataLoader workers (``threads`` then defaults to 0 in each) pay one
    process per worker and each re-reads the chunks its batches share with
    the other workers' batches; prefer them only when the per-batch Python
    work of the training loop itself holds the GIL.

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
    dtype : {"float32", "float16"}
        Dtype of the delivered ``x``.  ``"float16"`` halves host copies and
        host-to-device bytes; convert on the GPU (``x.to(device).float()``).
    threads : int, optional
        Threads reading and gathering ahead of the consumer.  Default: every
        usable core in the training process, 0 in DataLoader workers (0 reads
        in the consumer's own thread).
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
                 verify_checksums: bool = False, dtype: str = "float32",
                 threads: int | None = None) -> None:
        super().__init__()
        self.pin_memory = bool(pin_memory)
        self.dtype = _check_dtype(dtype)
        _check_threads(threads, in_worker=False)
        self.threads = threads
        self._reader = StoreReader(store, target=target, storage_options=storage_options,
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

    @property
    def units(self) -> str:
        """Unit of the delivered signal (the store's ``eeg`` ``units`` attribute)."""
        return self._reader.units

    def _batch_nbytes(self, batch_size: int) -> int:
        item = self.dtype.itemsize
        return batch_size * (self._reader.shape[1] * self.out_times * item + 12)

    def _decode_buffers(self, num_workers: int) -> int:
        """Chunks in flight outside the cache: raw chunks are read into it directly."""
        if self._reader.read_path == "raw":
            return 1
        return max(1, _check_threads(self.threads, in_worker=num_workers > 0))

    def cache_chunks(self, num_workers: int, batch_size: int | None = None) -> int:
        """Chunks each consumer caches with ``num_workers`` DataLoader workers."""
        bs = self.plan.batch_size if batch_size is None else batch_size
        cap = (self.plan.buffer_chunks if hasattr(self, "plan") else DEFAULT_BUFFER_CHUNKS)
        if self.ram_budget is None:
            return cap
        m = buffer_capacity(self.ram_budget, num_workers=num_workers,
                            prefetch_factor=self.prefetch_factor,
                            chunk_nbytes=self._reader.chunk_nbytes,
                            decode_buffers=self._decode_buffers(num_workers),
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
        threads = _check_threads(self.threads, in_worker=info is not None)
        part = self.epoch_partition(num_workers)
        batches = [part.batch(int(b)) for b in part.consumer_batch_ids(self.rank, worker)]
        capacity = self.cache_chunks(num_workers)
        asm = _Assembler(self._reader, capacity, crop=self.crop_samples,
                         normalize=self.normalize, seed=self.plan.seed, epoch=self.epoch)
        shape = (self._reader.shape[1], self.out_times)
        delivered = 0

        def new_batch(b: int) -> _Batch:
            index = batches[b]
            x = _alloc_batch((len(index), *shape), self.dtype, shared=info is not None,
                             pinned=self.pin_memory)
            return _Batch(x, index, asm.offsets(index))

        def finish(b: int, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            nonlocal delivered
            delivered += len(batch.index)
            self._stats = ReadStats(asm.chunks_read, asm.windows_read, delivered)
            return (batch.x, torch.from_numpy(self._reader.target[batch.index]),
                    torch.from_numpy(batch.index.copy()))

        parts = schedule_reads(batches, chunk_windows=self.plan.chunk_windows,
                               capacity=capacity, chunk_len=self.plan.chunk_len)
        yield from run_schedule(parts, load=asm.load, new_batch=new_batch, gather=asm.gather,
                                finish=finish, threads=threads,
                                batches_ahead=self.prefetch_factor if threads else 0)

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
class WindowDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Map-style view of a store's selected windows, for evaluation.

    Item ``i`` is the ``i``-th selected window in storage order:
    ``(x (channel, time) in dtype, y float32 scalar, index int64 scalar)``.
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
    dtype : {"float32", "float16"}
        Dtype of the delivered ``x``.
    """

    def __init__(self, store: str | Path | xr.Dataset, where: Any = None,
                 crop_samples: int | None = None, target: str = "target", *,
                 normalize: str | None = None, cache_chunks: int = 4, seed: int = 0,
                 storage_options: Mapping[str, Any] | None = None,
                 verify_checksums: bool = False, dtype: str = "float32") -> None:
        self._reader = StoreReader(store, target=target, storage_options=storage_options,
                                   verify_checksums=verify_checksums)
        n_windows, _, n_times = self._reader.shape
        self.crop_samples = _check_crop(crop_samples, n_times)
        self.normalize = _check_normalize(normalize)
        self.dtype = _check_dtype(dtype)
        if isinstance(cache_chunks, bool) or not isinstance(cache_chunks, int) \
                or cache_chunks < 1:
            raise ConfigError(f"expected a positive integer cache_chunks, got {cache_chunks!r}")
        self.cache_chunks = cache_chunks
        self.seed = int(seed)
        self.selected = select_windows(self._reader.coords, where, n_windows)
        self._asm: _Assembler | None = None
        self._slots: ChunkCache | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_asm"] = state["_slots"] = None  # each process caches its own chunks
        return state

    def __len__(self) -> int:
        return int(self.selected.size)

    @property
    def units(self) -> str:
        """Unit of the delivered signal (the store's ``eeg`` ``units`` attribute)."""
        return self._reader.units

    @property
    def coords(self) -> xr.Dataset:
        """The store without its signal: coordinates and attributes (main process only)."""
        return self._reader.coords

    @property
    def shape(self) -> tuple[int, int, int]:
        """Stored ``(window, channel, time)`` shape of ``eeg``."""
        return self._reader.shape

    @property
    def chunk_windows(self) -> int:
        """Windows per stored chunk."""
        return self._reader.chunk_windows

    def _cache(self) -> tuple[_Assembler, ChunkCache]:
        """Return this process's chunk slots (made on first use, after any fork)."""
        if self._asm is None or self._slots is None:
            asm = _Assembler(self._reader, self.cache_chunks, crop=self.crop_samples,
                             normalize=self.normalize, seed=self.seed, epoch=0)
            free = list(range(self.cache_chunks - 1, -1, -1))

            def load(chunk: int, recycled: int | None) -> int:
                slot = free.pop() if recycled is None else recycled
                asm.load(chunk, slot)
                return slot

            self._asm = asm
            self._slots = ChunkCache(self.cache_chunks, load, self._reader.chunk_len)
        return self._asm, self._slots

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"expected an item index in [-{n}, {n}), got {i}")
        index = self.selected[int(i)]
        cw = self._reader.chunk_windows
        asm, slots = self._cache()
        row = int(slots.get(int(index // cw))) * cw + int(index % cw)
        idx = np.array([index], dtype=np.int64)
        batch = _Batch(torch.empty((1, self._reader.shape[1],
                                    self.crop_samples or self._reader.shape[2]),
                                   dtype=self.dtype), idx, asm.offsets(idx))
        part = ReadPart(batch=0, last=True, loads=(), positions=np.zeros(1, dtype=np.int64),
                        rows=np.array([row], dtype=np.int64))
        asm.gather(part, batch)
        return (batch.x[0], torch.tensor(self._reader.target[index]),
                torch.tensor(index, dtype=torch.int64))
