"""Read schedules: which chunk goes into which cache slot, and which rows each batch gathers.

:func:`schedule_reads` turns the batches of one consumer of a
:class:`~eegstore.plan.StreamPlan` into :class:`ReadPart` steps, from the same
LRU :class:`~eegstore.plan.ChunkCache` that :meth:`StreamPlan.read_stats`
simulates, so the reads an executor performs are exactly the simulated ones.
Each step names, for every slot it overwrites, the last step that must have
gathered from that slot first: an executor (:mod:`eegstore.readahead`) may run
reads ahead on many threads and never overwrite a chunk still needed.  Pure
numpy, deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from eegstore.plan import ChunkCache

__all__ = ["ReadPart", "schedule_reads"]


@dataclass(frozen=True, eq=False)
class ReadPart:
    """One step of a read schedule: read some chunks into slots, then gather rows.

    Attributes
    ----------
    batch : int
        Ordinal of the batch (within the consumer's batches) this step fills.
    last : bool
        Whether this step completes its batch.
    loads : tuple of (chunk, slot, after)
        Read ``chunk`` into cache slot ``slot``; ``after`` is the step that last
        gathered from that slot (it must be done before the read), or -1.
    positions : numpy.ndarray
        Positions in the batch this step fills (sorted).
    rows : numpy.ndarray
        Cache row of each of those windows: ``slot * chunk_windows + offset``.
    """

    batch: int
    last: bool
    loads: tuple[tuple[int, int, int], ...]
    positions: np.ndarray
    rows: np.ndarray


def schedule_reads(batches: Iterable[np.ndarray], *, chunk_windows: int, capacity: int,
                   chunk_len: Callable[[int], int]) -> Iterator[ReadPart]:
    """Plan the chunk reads and gathers of a consumer's batches (lazily, in order).

    Chunks are cached exactly as :meth:`StreamPlan.read_stats` simulates (an LRU
    :class:`ChunkCache` of ``capacity`` chunks fed by :func:`batch_groups`).  A
    batch is one step unless it needs more chunks than the cache holds; then it
    is split so that no step reads over a slot it gathers from.

    Parameters
    ----------
    batches : iterable of numpy.ndarray
        Store positions of each batch, in delivery order.
    chunk_windows : int
        Windows per stored chunk.
    capacity : int
        Chunks the cache holds (slots ``0 .. capacity - 1``).
    chunk_len : callable
        Windows in a chunk (for the read statistics of the cache).

    Yields
    ------
    ReadPart
        The steps, in the order they must be gathered.
    """
    slots: list[int] = []

    def load(chunk: int, recycled: Any) -> int:
        if recycled is not None:
            return int(recycled)
        slots.append(len(slots))
        return slots[-1]

    cache = ChunkCache(capacity, load, chunk_len)
    last_use: dict[int, int] = {}  # slot -> step that last gathered from it
    step = 0
    for b, batch in enumerate(batches):
        batch = np.asarray(batch, dtype=np.int64)
        chunk_of = batch // chunk_windows
        chunks, first, inverse = np.unique(chunk_of, return_index=True, return_inverse=True)
        # batch_groups' order: cached chunks first, then by first use in the batch
        order = sorted(range(len(chunks)),
                       key=lambda k: (int(chunks[k]) not in cache, int(first[k])))
        slot_of = np.empty(len(chunks), dtype=np.int64)
        step_of = np.empty(len(chunks), dtype=np.int64)
        loads: dict[int, list[tuple[int, int, int]]] = {step: []}
        first_step = step
        for k in order:
            chunk = int(chunks[k])
            victim = cache.victim(chunk)
            if victim is not None and last_use.get(int(victim)) == step:
                step += 1  # this step gathers from the slot: cut the batch here
                loads[step] = []
            cached = chunk in cache
            slot = int(cache.get(chunk))
            if not cached:
                loads[step].append((chunk, slot, last_use.get(slot, -1)))
            last_use[slot] = step
            slot_of[k], step_of[k] = slot, step
        rows = slot_of[inverse] * chunk_windows + (batch - chunk_of * chunk_windows)
        step_here = step_of[inverse]
        for s in range(first_step, step + 1):
            pos = np.flatnonzero(step_here == s) if step > first_step \
                else np.arange(len(batch), dtype=np.int64)
            yield ReadPart(batch=b, last=s == step, loads=tuple(loads[s]), positions=pos,
                           rows=rows[pos])
        step += 1
