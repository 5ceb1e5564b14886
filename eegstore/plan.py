"""Pure, serialisable streaming plans: which windows, in which order, for whom.

A :class:`StreamPlan` is computed from coordinates alone (no signal read) and
answers every scheduling question of :class:`eegstore.torch.WindowStream`; the
torch adapter only executes it.  Everything here is numpy and deterministic.

Definitions
-----------
*Selection*
    The sorted store positions of the selected windows (``where`` resolved from
    coordinates by :func:`select_windows`).
*Global order of an epoch*
    A function of ``(seed, epoch, selection, chunk_windows, buffer_chunks,
    shuffle)`` only -- never of the number of ranks or DataLoader workers:

    1. the chunks holding at least one selected window are permuted with a
       generator seeded by ``(seed, epoch)`` (unless ``shuffle=False``);
    2. consecutive runs of ``buffer_chunks`` chunks of that permutation form
       *buffers*; the selected windows of each buffer are shuffled uniformly
       (seeded by ``(seed, epoch)``);
    3. the buffers are concatenated: this is the *global window sequence*
       (:meth:`StreamPlan.order`).
*Global batches*
    The global window sequence (minus the windows already consumed when an
    epoch is resumed) cut into consecutive batches of ``batch_size``; the last,
    shorter batch is kept unless ``drop_last``.
*Partition*
    Global batches are dealt to ranks in contiguous, near-equal runs (rank
    ``r`` of ``R`` gets batches ``[r*n//R, (r+1)*n//R)``); within a rank,
    batch ``k`` of the run goes to DataLoader worker ``k % W``.  A DataLoader
    takes one batch from each worker in turn, so a training loop receives its
    rank's batches in global order -- same windows, same order -- whatever the
    number of workers (and of reading threads): training with 0, 1 or 4
    workers sees identical batches.  Each worker still reads the chunks of
    every buffer its batches draw from, so with ``W`` workers the read
    amplification is about ``min(W, batches per buffer)`` (plus unselected
    windows sharing chunks with selected ones); :meth:`StreamPlan.read_stats`
    gives the exact figure.  With no workers, reading threads share one cache
    and read every chunk once per buffer.
*Read schedule*
    :func:`eegstore.schedule.schedule_reads` turns a consumer's batches into :class:`ReadPart`
    steps: which chunk to read into which slot of a cache of ``capacity``
    chunks (the same LRU :class:`ChunkCache` the read simulation runs, so
    :meth:`StreamPlan.read_stats` stays exact), and which cache rows each
    batch gathers.  A step names, for every slot it overwrites, the last
    step that must have gathered from that slot first, so an executor may
    read ahead on many threads without ever overwriting a chunk still needed.
*Equal batches for DDP*
    ``equalize="drop"`` drops the last batch of the ranks holding one more
    batch than the others; ``equalize="pad"`` gives the ranks holding one batch
    fewer a copy of their own first batch (or of global batch 0 when they hold
    none).  :attr:`EpochPartition.n_dropped_windows` and
    :attr:`EpochPartition.n_padded_windows` count them.
*Progress*
    Progress is a boolean mask over positions of the global window sequence
    (``consumed``), so it does not depend on ranks or workers: a resumed epoch
    serves exactly the unconsumed windows, in global order, re-cut into batches
    and re-dealt over the new ranks and workers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from eegstore.errors import ConfigError

__all__ = [
    "ChunkCache",
    "EpochPartition",
    "ReadStats",
    "StreamPlan",
    "batch_groups",
    "buffer_capacity",
    "crop_offsets",
    "mask_to_ranges",
    "ranges_to_mask",
    "select_windows",
]

_ORDER_DOMAIN = 0x5EED_0001
_EQUALIZE = (None, "pad", "drop")


# --------------------------------------------------------------------------- helpers
def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"expected a positive integer {name}, got {value!r}")
    return int(value)


def _check_epoch(epoch: Any) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
        raise ConfigError(f"expected a non-negative integer epoch, got {epoch!r}")
    return int(epoch)


def mask_to_ranges(mask: np.ndarray) -> list[list[int]]:
    """Encode a boolean mask as ``[[start, stop], ...]`` runs of True (JSON-friendly)."""
    m = np.asarray(mask, dtype=bool).astype(np.int8)
    d = np.diff(np.concatenate(([0], m, [0])))
    starts = np.flatnonzero(d == 1)
    stops = np.flatnonzero(d == -1)
    return [[int(a), int(b)] for a, b in zip(starts, stops, strict=True)]


def ranges_to_mask(ranges: Sequence[Sequence[int]], size: int) -> np.ndarray:
    """Decode :func:`mask_to_ranges` output into a boolean mask of ``size``."""
    mask = np.zeros(size, dtype=bool)
    for start, stop in ranges:
        if not 0 <= int(start) <= int(stop) <= size:
            raise ConfigError(f"expected ranges within [0, {size}], got [{start}, {stop}]")
        mask[int(start):int(stop)] = True
    return mask


def _even_bounds(n: int, parts: int) -> np.ndarray:
    """Bounds of ``parts`` contiguous near-equal runs of ``n`` items."""
    return (np.arange(parts + 1, dtype=np.int64) * n) // parts


def crop_offsets(index: np.ndarray, n_times: int, crop_samples: int, *, seed: int,
                 epoch: int) -> np.ndarray:
    """Random crop start per window, a pure function of ``(seed, epoch, window index)``.

    Uses a splitmix64 hash, so it is vectorised and independent of the batch,
    worker or rank that delivers the window.

    Parameters
    ----------
    index : numpy.ndarray
        Store positions of the windows.
    n_times, crop_samples : int
        Stored window length and crop length, in samples.
    seed, epoch : int
        Seed of the stream and epoch.

    Returns
    -------
    numpy.ndarray
        int64 offsets in ``[0, n_times - crop_samples]``.
    """
    span = n_times - crop_samples + 1
    with np.errstate(over="ignore"):
        z = (np.asarray(index, dtype=np.uint64)
             + np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
             + np.uint64((epoch * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019)
                         & 0xFFFFFFFFFFFFFFFF))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(span)).astype(np.int64)


def select_windows(coords: Any, where: Any, n_windows: int) -> np.ndarray:
    """Resolve ``where`` into sorted store positions, from coordinates alone.

    Parameters
    ----------
    coords : xarray.Dataset
        The store without its signal (``ds.drop_vars("eeg")``); only per-window
        coordinates are read.
    where : None, mapping, array-like or callable
        ``None`` selects everything; a mapping ``{coord: value or list of
        values}`` keeps windows matching every entry; a boolean mask of length
        ``n_windows`` or an integer array of positions; a callable receiving
        ``coords`` and returning either of those.
    n_windows : int
        Windows in the store.

    Returns
    -------
    numpy.ndarray
        Sorted unique int64 positions.
    """
    if where is None:
        return np.arange(n_windows, dtype=np.int64)
    if callable(where):
        return select_windows(coords, where(coords), n_windows)
    if isinstance(where, Mapping):
        mask = np.ones(n_windows, dtype=bool)
        for name, wanted in where.items():
            if name not in coords.variables:
                raise ConfigError(f"expected a per-window coordinate in where, got {name!r}; "
                                  f"use one of {sorted(map(str, coords.coords))}")
            var = coords[name]
            if var.dims != ("window",):
                raise ConfigError(f"expected where key {name!r} along (window,), got {var.dims}")
            many = isinstance(wanted, list | tuple | set | frozenset | np.ndarray)
            have = np.asarray(var.values)
            if have.dtype.kind in "OST":  # object / bytes / StringDType -> fixed width
                have = have.astype(object).astype("U")
            mask &= np.isin(have, list(wanted) if many else [wanted])
        return np.flatnonzero(mask).astype(np.int64)
    arr = np.asarray(getattr(where, "values", where))
    if arr.dtype == bool:
        if arr.shape != (n_windows,):
            raise ConfigError(f"expected a boolean where mask of shape ({n_windows},), "
                              f"got {arr.shape}")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.dtype.kind in "iu" and arr.ndim == 1:
        if arr.size and (arr.min() < 0 or arr.max() >= n_windows):
            raise ConfigError(f"expected window positions in [0, {n_windows}), got "
                              f"[{arr.min()}, {arr.max()}]")
        return np.unique(arr.astype(np.int64))
    raise ConfigError("expected where as None, a dict of coordinate values, a boolean mask, "
                      f"positions or a callable, got {type(where).__name__} {arr.dtype}")


def buffer_capacity(ram_budget: int, *, num_workers: int, prefetch_factor: int,
                    chunk_nbytes: int, batch_nbytes: int, decode_buffers: int = 1) -> int:
    """Chunks one consumer may cache under ``ram_budget`` bytes.

    Each of ``W = max(1, num_workers)`` consumers holds ``M`` cached chunks,
    ``D = decode_buffers`` chunks being read or decoded (one per reading
    thread), ``prefetch_factor`` batches queued by the DataLoader (or built
    ahead by the reading threads), one being built, one gather temporary and
    one held by the training loop::

        (M + D) * chunk_nbytes + (prefetch_factor + 3) * batch_nbytes <= ram_budget / W

    Parameters
    ----------
    ram_budget : int
        Bytes for every buffer of the stream, all workers and prefetch together.
    num_workers, prefetch_factor : int
        As given to the DataLoader (0 workers means the main process consumes).
    chunk_nbytes, batch_nbytes : int
        Decoded bytes of one (largest) chunk and of one output batch.

    Returns
    -------
    int
        ``M >= 1``.

    Raises
    ------
    ConfigError
        When the budget cannot hold one cached chunk plus the batches.
    """
    workers = max(1, int(num_workers))
    per_worker = int(ram_budget) // workers
    decoding = max(1, int(decode_buffers))
    fixed = decoding * chunk_nbytes + (prefetch_factor + 3) * batch_nbytes
    m = (per_worker - fixed) // chunk_nbytes if per_worker > fixed else 0
    if m < 1:
        need = workers * ((decoding + 1) * chunk_nbytes + (prefetch_factor + 3) * batch_nbytes)
        raise ConfigError(
            f"expected ram_budget >= {need} bytes ({workers} worker(s) x ({decoding + 1} chunks "
            f"of {chunk_nbytes} B + {prefetch_factor + 3} batches of {batch_nbytes} B)), got "
            f"{int(ram_budget)}; raise ram_budget or lower batch_size / num_workers / threads")
    return int(m)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ReadStats:
    """Chunk reads of an executed (or simulated) epoch.

    ``read_amplification`` is decoded bytes read / decoded bytes delivered (it
    equals windows in read chunks / windows delivered, since every window has
    the same size).
    """

    chunks_read: int
    windows_read: int
    windows_delivered: int

    @property
    def read_amplification(self) -> float:
        return self.windows_read / self.windows_delivered if self.windows_delivered else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"chunks_read": self.chunks_read, "windows_read": self.windows_read,
                "windows_delivered": self.windows_delivered,
                "read_amplification": self.read_amplification}


class ChunkCache:
    """LRU cache of decoded chunks shared by the executor and the read simulation.

    Parameters
    ----------
    capacity : int
        Chunks kept.
    load : callable
        ``load(chunk_id, recycled) -> value``; ``recycled`` is the value just
        evicted (or ``None``), so executors can decode into the same buffer.
    chunk_len : callable
        ``chunk_len(chunk_id) -> windows in the chunk`` (for statistics).
    """

    def __init__(self, capacity: int, load: Callable[[int, Any], Any],
                 chunk_len: Callable[[int], int]) -> None:
        self.capacity = _check_positive_int("cache capacity", capacity)
        self._load = load
        self._chunk_len = chunk_len
        self._items: OrderedDict[int, Any] = OrderedDict()
        self.chunks_read = 0
        self.windows_read = 0

    def __contains__(self, chunk: int) -> bool:
        return chunk in self._items

    def victim(self, chunk: int) -> Any:
        """Value :meth:`get` would evict to load ``chunk`` (``None`` when nothing is)."""
        if chunk in self._items or len(self._items) < self.capacity:
            return None
        return next(iter(self._items.values()))

    def get(self, chunk: int) -> Any:
        if chunk in self._items:
            self._items.move_to_end(chunk)
            return self._items[chunk]
        recycled = None
        while len(self._items) >= self.capacity:
            recycled = self._items.popitem(last=False)[1]
        value = self._load(chunk, recycled)
        self.chunks_read += 1
        self.windows_read += self._chunk_len(chunk)
        self._items[chunk] = value
        return value

    def clear(self) -> None:
        self._items.clear()


def batch_groups(batch: np.ndarray, chunk_windows: int,
                 cached: Callable[[int], bool]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Split a batch by chunk: ``[(chunk, positions in batch, offsets in chunk), ...]``.

    Chunks already cached come first, then the others in order of first use in
    the global sequence, so an LRU cache of ``buffer_chunks`` chunks never evicts
    a chunk that a later batch needs.  Vectorised: one group per chunk.
    """
    chunk_of = batch // chunk_windows
    order = np.argsort(chunk_of, kind="stable")
    sorted_chunks = chunk_of[order]
    cut = np.flatnonzero(np.diff(sorted_chunks)) + 1
    groups = []
    for pos in np.split(order, cut):
        c = int(chunk_of[pos[0]])
        groups.append((c, pos, batch[pos] - c * chunk_windows))
    groups.sort(key=lambda g: (not cached(g[0]), int(g[1][0])))
    return groups


# --------------------------------------------------------------------------- partition
@dataclass(frozen=True, eq=False)
class EpochPartition:
    """Global batches of one epoch dealt over ``world_size`` ranks x workers.

    Attributes
    ----------
    sequence : numpy.ndarray
        Window positions still to deliver, in global order.
    bounds : numpy.ndarray
        Global batch ``b`` is ``sequence[bounds[b]:bounds[b + 1]]``.
    rank_batches : list of numpy.ndarray
        Global batch ids of each rank, in order (padding repeats an id).
    n_dropped_windows, n_padded_windows : int
        Windows removed by ``drop_last`` / ``equalize="drop"`` and repeated by
        ``equalize="pad"``.
    """

    epoch: int
    world_size: int
    num_workers: int
    sequence: np.ndarray
    bounds: np.ndarray
    rank_batches: list[np.ndarray]
    n_dropped_windows: int
    n_padded_windows: int

    @property
    def n_batches(self) -> int:
        return len(self.bounds) - 1

    def batch(self, b: int) -> np.ndarray:
        return self.sequence[self.bounds[b]:self.bounds[b + 1]]

    def consumer_batch_ids(self, rank: int, worker: int) -> np.ndarray:
        ids = self.rank_batches[rank]
        w = max(1, self.num_workers)
        if not 0 <= worker < w:
            raise ConfigError(f"expected worker in [0, {w}), got {worker}")
        return ids[worker::w]

    def consumer_batches(self, rank: int, worker: int) -> list[np.ndarray]:
        """Window positions of each batch consumer ``(rank, worker)`` yields, in order."""
        return [self.batch(int(b)) for b in self.consumer_batch_ids(rank, worker)]

    def __repr__(self) -> str:
        return (f"EpochPartition(epoch={self.epoch}, world_size={self.world_size}, "
                f"num_workers={self.num_workers}, n_batches={self.n_batches}, "
                f"windows={len(self.sequence)}, dropped={self.n_dropped_windows}, "
                f"padded={self.n_padded_windows})")


# --------------------------------------------------------------------------- plan
@dataclass(frozen=True, eq=False)
class StreamPlan:
    """Deterministic, serialisable schedule of a window stream (see module docs).

    Parameters
    ----------
    n_windows : int
        Windows in the store.
    chunk_windows : int
        Windows per stored chunk (the last chunk may be shorter).
    selected : numpy.ndarray
        Sorted unique store positions to deliver.
    batch_size : int
        Windows per global batch.
    shuffle : bool
        Permute chunks and shuffle within buffers (else storage order).
    seed : int
        Seed of every permutation.
    buffer_chunks : int
        Chunks per shuffle buffer (also the cache size needing no re-read).
    drop_last : bool
        Drop the last, shorter global batch.
    equalize : {None, "pad", "drop"}
        Give every rank the same number of batches.
    """

    n_windows: int
    chunk_windows: int
    selected: np.ndarray = field(repr=False)
    batch_size: int
    shuffle: bool = True
    seed: int = 0
    buffer_chunks: int = 16
    drop_last: bool = False
    equalize: Literal["pad", "drop"] | None = None

    def __post_init__(self) -> None:
        _check_positive_int("n_windows", self.n_windows)
        _check_positive_int("chunk_windows", self.chunk_windows)
        _check_positive_int("batch_size", self.batch_size)
        _check_positive_int("buffer_chunks", self.buffer_chunks)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) \
                or self.seed < 0:
            raise ConfigError(f"expected a non-negative integer seed, got {self.seed!r}")
        if self.equalize not in _EQUALIZE:
            raise ConfigError(f"expected equalize in {_EQUALIZE}, got {self.equalize!r}")
        sel = np.asarray(self.selected, dtype=np.int64)
        if sel.ndim != 1 or (sel.size and (sel[0] < 0 or sel[-1] >= self.n_windows
                                           or np.any(np.diff(sel) <= 0))):
            raise ConfigError(f"expected sorted unique positions in [0, {self.n_windows}), "
                              "got something else; build plans with select_windows")
        object.__setattr__(self, "selected", sel)
        object.__setattr__(self, "_memo", {})

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_memo"] = {}  # cached orders are recomputed where needed
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # ---- basic facts
    @property
    def n_selected(self) -> int:
        return int(self.selected.size)

    @property
    def chunks(self) -> np.ndarray:
        """Ids of the chunks holding at least one selected window (sorted)."""
        return np.unique(self.selected // self.chunk_windows)

    def chunk_len(self, chunk: int) -> int:
        start = chunk * self.chunk_windows
        return max(0, min(self.chunk_windows, self.n_windows - start))

    # ---- order
    def order_ranks(self, epoch: int) -> np.ndarray:
        """Global order as indices into :attr:`selected` (``order = selected[ranks]``)."""
        epoch = _check_epoch(epoch)
        memo: dict[tuple[str, int], np.ndarray] = self.__dict__["_memo"]
        if ("ranks", epoch) not in memo:
            memo.clear()  # keep one epoch
            ranks = self._compute_order_ranks(epoch)
            ranks.flags.writeable = False
            memo["ranks", epoch] = ranks
        return memo["ranks", epoch]

    def _compute_order_ranks(self, epoch: int) -> np.ndarray:
        n = self.n_selected
        if not self.shuffle or n == 0:
            return np.arange(n, dtype=np.int64)
        chunk_of = self.selected // self.chunk_windows
        chunk_ids, chunk_rank = np.unique(chunk_of, return_inverse=True)
        rng = np.random.default_rng([_ORDER_DOMAIN, int(self.seed), epoch])
        perm = rng.permutation(len(chunk_ids))
        slot = np.empty_like(perm)
        slot[perm] = np.arange(len(perm))  # position of each chunk in the permuted order
        buffer_of = slot[chunk_rank] // self.buffer_chunks
        keys = rng.random(n)
        return np.lexsort((keys, buffer_of)).astype(np.int64)

    def order(self, epoch: int) -> np.ndarray:
        """Return the global window sequence of ``epoch`` (store positions)."""
        order: np.ndarray = self.selected[self.order_ranks(epoch)]
        return order

    def positions(self, epoch: int, index: np.ndarray) -> np.ndarray:
        """Positions in the global sequence of ``epoch`` of the windows ``index``."""
        index = np.asarray(index, dtype=np.int64).ravel()
        r = np.searchsorted(self.selected, index)
        ok = (r < self.n_selected) & (self.selected[np.minimum(r, self.n_selected - 1)] == index)
        if not np.all(ok):
            raise ConfigError(f"expected indices of selected windows, got {index[~ok][:5]} "
                              "outside the selection")
        memo: dict[tuple[str, int], np.ndarray] = self.__dict__["_memo"]
        ranks = self.order_ranks(epoch)
        if ("inverse", epoch) not in memo:
            inverse = np.empty(self.n_selected, dtype=np.int64)
            inverse[ranks] = np.arange(self.n_selected)
            inverse.flags.writeable = False
            memo["inverse", epoch] = inverse
        return memo["inverse", epoch][r]

    # ---- partition
    def partition(self, epoch: int, world_size: int = 1, num_workers: int = 0,
                  consumed: np.ndarray | None = None) -> EpochPartition:
        """Deal the global batches of ``epoch`` over ranks and workers.

        Parameters
        ----------
        epoch : int
            Epoch number.
        world_size : int
            Ranks.
        num_workers : int
            DataLoader workers per rank (0: the rank's main process).
        consumed : numpy.ndarray, optional
            Boolean mask over the global sequence of windows already consumed.
        """
        world_size = _check_positive_int("world_size", world_size)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int | np.integer) \
                or num_workers < 0:
            raise ConfigError(f"expected num_workers >= 0, got {num_workers!r}")
        seq = self.order(epoch)
        if consumed is not None:
            consumed = np.asarray(consumed, dtype=bool)
            if consumed.shape != seq.shape:
                raise ConfigError(f"expected a consumed mask of shape {seq.shape}, got "
                                  f"{consumed.shape}; was the state saved for another plan?")
            seq = seq[~consumed]
        n = len(seq)
        n_full, rest = divmod(n, self.batch_size)
        dropped = 0
        if self.drop_last and rest:
            seq = seq[: n - rest]
            dropped += rest
            rest = 0
        bounds = np.concatenate((np.arange(n_full + 1, dtype=np.int64) * self.batch_size,
                                 [len(seq)] if rest else [])).astype(np.int64)
        n_b = len(bounds) - 1
        rb = _even_bounds(n_b, world_size)
        rank_batches = [np.arange(rb[r], rb[r + 1], dtype=np.int64) for r in range(world_size)]
        padded = 0
        counts = [len(x) for x in rank_batches]
        if self.equalize == "drop" and min(counts) != max(counts):
            low = min(counts)
            for r in range(world_size):
                for b in rank_batches[r][low:]:
                    dropped += int(bounds[b + 1] - bounds[b])
                rank_batches[r] = rank_batches[r][:low]
        elif self.equalize == "pad" and min(counts) != max(counts) and n_b:
            high = max(counts)
            for r in range(world_size):
                if len(rank_batches[r]) < high:
                    src = rank_batches[r][0] if len(rank_batches[r]) else 0
                    extra = np.full(high - len(rank_batches[r]), src, dtype=np.int64)
                    padded += int(bounds[src + 1] - bounds[src]) * len(extra)
                    rank_batches[r] = np.concatenate((rank_batches[r], extra))
        return EpochPartition(epoch=int(epoch), world_size=world_size,
                              num_workers=int(num_workers), sequence=seq, bounds=bounds,
                              rank_batches=rank_batches, n_dropped_windows=dropped,
                              n_padded_windows=padded)

    # ---- quality figures
    def read_stats(self, epoch: int = 0, world_size: int = 1, num_workers: int = 0,
                   cache_chunks: int | None = None,
                   consumed: np.ndarray | None = None) -> ReadStats:
        """Simulate the executor's chunk cache over every consumer of ``epoch``.

        The executor (:class:`eegstore.torch.WindowStream`) runs the same
        :class:`ChunkCache` and :func:`batch_groups`, so this is exact, not an
        estimate.  ``cache_chunks`` defaults to ``buffer_chunks``.
        """
        part = self.partition(epoch, world_size, num_workers, consumed)
        cap = self.buffer_chunks if cache_chunks is None else cache_chunks
        chunks_read = windows_read = delivered = 0
        for rank in range(world_size):
            for worker in range(max(1, num_workers)):
                cache = ChunkCache(cap, lambda c, old: None, self.chunk_len)
                for batch in part.consumer_batches(rank, worker):
                    for chunk, _, _ in batch_groups(batch, self.chunk_windows,
                                                    cache.__contains__):
                        cache.get(chunk)
                    delivered += len(batch)
                chunks_read += cache.chunks_read
                windows_read += cache.windows_read
        return ReadStats(chunks_read, windows_read, delivered)

    def read_amplification(self, epoch: int = 0, world_size: int = 1, num_workers: int = 0,
                           cache_chunks: int | None = None) -> float:
        """Return decoded bytes read / delivered for an epoch (see :meth:`read_stats`)."""
        return self.read_stats(epoch, world_size, num_workers, cache_chunks).read_amplification

    def shuffle_score(self, epoch: int = 0) -> float:
        """Normalised mean absolute rank displacement of the global order.

        ``mean_i |position_i - storage_rank_i| / ((N**2 - 1) / (3 N))``: the
        denominator is that mean for a uniformly random permutation, so the
        score is 0 for storage order and about 1 for a full shuffle (values
        slightly above 1 are possible).  0 when fewer than 2 windows.
        """
        n = self.n_selected
        if n < 2:
            return 0.0
        ranks = self.order_ranks(epoch)
        disp = np.abs(np.arange(n) - ranks).mean()
        return float(disp / ((n * n - 1) / (3 * n)))

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        sel_mask = np.zeros(self.n_windows, dtype=bool)
        sel_mask[self.selected] = True
        return {"n_windows": self.n_windows, "chunk_windows": self.chunk_windows,
                "selected": mask_to_ranges(sel_mask), "batch_size": self.batch_size,
                "shuffle": self.shuffle, "seed": self.seed, "buffer_chunks": self.buffer_chunks,
                "drop_last": self.drop_last, "equalize": self.equalize}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamPlan:
        d = dict(data)
        d["selected"] = np.flatnonzero(ranges_to_mask(d["selected"], int(d["n_windows"])))
        return cls(**d)

    def fingerprint(self) -> dict[str, Any]:
        """Return what a progress mask depends on (all but batching and equalize)."""
        d = self.to_dict()
        d.pop("batch_size")
        d.pop("equalize")
        d.pop("drop_last")
        return d

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamPlan):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.n_windows, self.chunk_windows, self.n_selected, self.batch_size,
                     self.seed))

    def __repr__(self) -> str:
        return (f"StreamPlan(n_windows={self.n_windows}, selected={self.n_selected}, "
                f"chunk_windows={self.chunk_windows}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, buffer_chunks={self.buffer_chunks}, "
                f"drop_last={self.drop_last}, equalize={self.equalize!r})")

