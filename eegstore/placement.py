"""Where a build puts each recording's windows: window ranges and the chunks they fill.

A build appends the new recordings after the store's committed windows in sorted-id
order, so the layout of a store depends only on which recordings it holds, never on
the order in which workers finish them.  :class:`Placer` computes that layout
incrementally: staged recordings are *offered* in any order, and as soon as every
recording sorted before a chunk's last window is known, the chunk is *ready*: its
contents (which staged recording rows go where) are fixed and it can be written while
later recordings are still being read.  Placing everything first and then asking for
the chunks gives the same layout (tested with Hypothesis).

The placer is pure: it reads and writes nothing, and its chunk jobs are plain tuples.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eegstore.errors import ConfigError

__all__ = ["ChunkJob", "Placer", "chunk_windows_for", "task_bounds"]

#: Target uncompressed bytes of one eeg chunk when chunk_windows is not given.
TARGET_CHUNK_BYTES = 8 * 2**20


def chunk_windows_for(n_channels: int, n_times: int, dtype: str) -> int:
    """Windows per chunk so that a chunk holds about :data:`TARGET_CHUNK_BYTES`.

    Parameters
    ----------
    n_channels, n_times : int
        Shape of one window.
    dtype : str
        Storage dtype.

    Returns
    -------
    int
        At least 1.
    """
    per = n_channels * n_times * np.dtype(dtype).itemsize
    return max(1, int(TARGET_CHUNK_BYTES // per))


def task_bounds(n_chunks: int, per_task: int, *, slots: int = 1, last: bool = False
                ) -> list[tuple[int, int]]:
    """Split ``n_chunks`` ready chunks into tasks of at most ``per_task`` chunks.

    Parameters
    ----------
    n_chunks : int
        Chunks to hand out, in order.
    per_task : int
        Most chunks in one task.
    slots : int
        Tasks the cluster runs at once (its worker threads).
    last : bool
        Whether these are the build's last chunks: then they come in a multiple of
        ``slots`` tasks of near-equal size (as far as there are chunks), so that the
        workers finish together instead of one writing a full task while the
        others wait.

    Returns
    -------
    list of (start, stop)
        Consecutive ranges covering ``range(n_chunks)``, none empty.
    """
    per_task = max(1, per_task)
    if not last:  # full tasks, the remainder last
        return [(a, min(a + per_task, n_chunks)) for a in range(0, n_chunks, per_task)]
    if n_chunks <= 0:
        return []
    slots = max(1, slots)
    rounds = -(-n_chunks // (per_task * slots))  # tasks per slot
    n_tasks = min(n_chunks, rounds * slots)
    cuts = [i * n_chunks // n_tasks for i in range(n_tasks + 1)]
    return list(itertools.pairwise(cuts))


#: One source of a chunk: (staging name or "" for the store's own old windows,
#: first row, stop row in that source, first row in the chunk).
Segment = tuple[str, int, int, int]


@dataclass(frozen=True)
class ChunkJob:
    """One output chunk to write.

    Attributes
    ----------
    chunk : int
        Chunk index along ``window``.
    segments : tuple of Segment
        ``(source, src_start, src_stop, dst)``: rows ``src_start:src_stop`` of the
        staged recording ``source`` (``""``: the store's committed windows of this
        chunk) go to rows ``dst:`` of the chunk.
    n_windows : int
        Windows in the chunk (fewer than chunk_windows only for the last chunk).
    """

    chunk: int
    segments: tuple[Segment, ...]
    n_windows: int

    def signature(self, context: Sequence[Any] = ()) -> str:
        """Return a digest of what this chunk holds (plus ``context``), for resume records."""
        doc = json.dumps([self.chunk, [list(s) for s in self.segments], self.n_windows,
                          list(context)])
        return hashlib.sha1(doc.encode()).hexdigest()

    @property
    def sources(self) -> tuple[str, ...]:
        """Staging names this chunk reads (not the store's own windows)."""
        return tuple(s[0] for s in self.segments if s[0])


@dataclass
class Placer:
    """Incremental, order-independent placement of recordings into a window axis.

    Parameters
    ----------
    ids : sequence of str
        Every recording id of this build (placed in sorted order).
    n_old : int
        Windows already committed in the store.
    ref : dict, optional
        ``channels``, ``window_samples``, ``sfreq`` of the store; ``None`` for a new
        store (the first usable recording in sorted order sets them).
    chunk_windows : int, optional
        Windows per chunk (default: from the first usable recording's shape).
    dtype : str
        Storage dtype (for the default chunk size).
    name : callable
        Staging name of a recording id.
    """

    ids: Sequence[str]
    n_old: int = 0
    ref: dict[str, Any] | None = None
    chunk_windows: int | None = None
    dtype: str = "float32"
    name: Callable[[str], str] = str
    rows: list[tuple[str, str, str]] = field(default_factory=list, init=False)
    placed: list[tuple[str, int, int]] = field(default_factory=list, init=False)
    _order: list[str] = field(default_factory=list, init=False, repr=False)
    _offers: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _next: int = field(default=0, init=False, repr=False)
    _pos: int = field(default=0, init=False, repr=False)
    _firsts: list[int] = field(default_factory=list, init=False, repr=False)
    _next_chunk: int = field(default=-1, init=False, repr=False)
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._order = sorted(set(self.ids))
        if len(self._order) != len(self.ids):
            raise ConfigError(f"expected unique recording ids, got {len(self.ids)} ids of "
                              f"which {len(self._order)} differ; deduplicate them first")
        if self.chunk_windows is not None and self.chunk_windows < 1:
            raise ConfigError(f"expected chunk_windows >= 1, got {self.chunk_windows}")
        self._pos = int(self.n_old)
        self._index = {rid: i for i, rid in enumerate(self._order)}

    # ---------------------------------------------------------------- input
    def offer(self, rid: str, meta: dict[str, Any]) -> None:
        """Make recording ``rid``'s staging result (its ``done.json``) known.

        ``meta`` needs ``status`` and ``reason``; usable recordings also ``n_windows``,
        ``sfreq``, ``channels`` and ``window_samples``.
        """
        if self._index.get(rid, -1) < self._next:
            raise ConfigError(f"expected one of this build's recording ids not placed yet, "
                              f"got {rid!r}")
        self._offers[rid] = meta

    def advance(self) -> list[tuple[str, int, int]]:
        """Place every recording whose predecessors are all known; return the new placements."""
        new: list[tuple[str, int, int]] = []
        while self._next < len(self._order) and self._order[self._next] in self._offers:
            rid = self._order[self._next]
            m = self._offers.pop(rid)
            self._next += 1
            reason = self._reject(m)
            if reason:
                self.rows.append((rid, "skipped", reason))
                continue
            self.rows.append((rid, "ok", ""))
            n = int(m["n_windows"])
            self.placed.append((rid, self._pos, n))
            self._firsts.append(self._pos)
            new.append((rid, self._pos, n))
            self._pos += n
        return new

    def _reject(self, m: dict[str, Any]) -> str:
        if m.get("status") != "ok":
            return str(m.get("reason", "")) or "skipped"
        if self.ref is None:
            self.ref = {"channels": list(m["channels"]),
                        "window_samples": int(m["window_samples"]), "sfreq": float(m["sfreq"])}
        ref = self.ref
        if abs(float(m["sfreq"]) - float(ref["sfreq"])) > 1e-6:
            return (f"wrong sfreq: expected {ref['sfreq']:g} Hz like the store, got "
                    f"{m['sfreq']:g} Hz; add a resample step")
        if list(m["channels"]) != list(ref["channels"]):
            return (f"wrong channels: expected the store's {len(ref['channels'])} channels "
                    f"in order, got {len(m['channels'])}")
        if int(m["window_samples"]) != int(ref["window_samples"]):
            return (f"wrong window length: expected {ref['window_samples']}, got "
                    f"{m['window_samples']}")
        return ""

    # --------------------------------------------------------------- output
    @property
    def complete(self) -> bool:
        """Whether every recording is placed."""
        return self._next == len(self._order)

    @property
    def n_total(self) -> int:
        """Windows in the store once the placed recordings are written."""
        return self._pos

    @property
    def shape_tail(self) -> tuple[int, int]:
        """``(n_channels, window_samples)``, or ``(0, 0)`` before any usable recording."""
        if self.ref is None:
            return (0, 0)
        return (len(self.ref["channels"]), int(self.ref["window_samples"]))

    @property
    def k(self) -> int | None:
        """Windows per chunk, once known."""
        if self.chunk_windows is None and self.ref is not None:
            self.chunk_windows = chunk_windows_for(*self.shape_tail, self.dtype)
        return self.chunk_windows

    def ready_chunks(self) -> list[ChunkJob]:
        """Chunks whose contents are now fixed and were not returned before.

        Full chunks are ready once the placed windows cover them; the last (partial)
        chunk once every recording is placed.
        """
        k = self.k
        if k is None or self._pos == self.n_old:
            return []
        if self._next_chunk < 0:
            self._next_chunk = self.n_old // k
        last = (self._pos - 1) // k if self.complete else self._pos // k - 1
        jobs = [self._job(c, k) for c in range(self._next_chunk, last + 1)]
        self._next_chunk = max(self._next_chunk, last + 1)
        return jobs

    def _job(self, c: int, k: int) -> ChunkJob:
        c0, c1 = c * k, min((c + 1) * k, self._pos)
        segs: list[Segment] = []
        if c0 < self.n_old:  # the trailing partial chunk of the committed store
            segs.append(("", 0, self.n_old - c0, 0))
        i = max(0, bisect.bisect_right(self._firsts, c0) - 1)
        while i < len(self.placed) and self.placed[i][1] < c1:
            rid, first, n = self.placed[i]
            a, b = max(first, c0), min(first + n, c1)
            if a < b:
                segs.append((self.name(rid), a - first, b - first, a - c0))
            i += 1
        return ChunkJob(c, tuple(segs), c1 - c0)

    def chunks_of(self, first: int, n: int) -> range:
        """Chunk indices holding windows ``first:first + n`` (empty when ``n`` is 0)."""
        k = self.k
        if k is None or n <= 0:
            return range(0)
        return range(first // k, (first + n - 1) // k + 1)
