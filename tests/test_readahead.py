"""The read-ahead executor: results and errors whatever the threads' timing."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from eegstore.plan import StreamPlan
from eegstore.readahead import run_schedule
from eegstore.schedule import schedule_reads


def _run(plan: StreamPlan, *, threads: int, capacity: int, fail_chunk: int | None,
         seed: int) -> list[np.ndarray]:
    """Execute a plan's schedule with reads and gathers that take random short times."""
    rng = random.Random(seed)
    slots: dict[int, int] = {}
    batches = plan.partition(0).consumer_batches(0, 0)

    def load(chunk: int, slot: int) -> None:
        time.sleep(rng.random() * 1e-3)
        if chunk == fail_chunk:
            raise ValueError(f"chunk {chunk} is damaged")
        slots[slot] = chunk

    def gather(part, out: np.ndarray) -> None:
        time.sleep(rng.random() * 1e-3)
        slot, offset = np.divmod(part.rows, plan.chunk_windows)
        out[part.positions] = [slots[int(s)] * plan.chunk_windows + int(o)
                               for s, o in zip(slot, offset, strict=True)]

    parts = schedule_reads(batches, chunk_windows=plan.chunk_windows, capacity=capacity,
                           chunk_len=plan.chunk_len)
    return list(run_schedule(parts, load=load,
                             new_batch=lambda b: np.full(len(batches[b]), -1, dtype=np.int64),
                             gather=gather, finish=lambda b, out: out, threads=threads,
                             batches_ahead=2))


@pytest.mark.parametrize("threads", [0, 1, 3])
@pytest.mark.parametrize("capacity", [1, 2, 6])
def test_batches_hold_their_windows_whatever_the_timing(threads, capacity):
    plan = StreamPlan(n_windows=90, chunk_windows=8, selected=np.arange(90), batch_size=7,
                      buffer_chunks=3, seed=1)
    for seed in range(5):
        got = _run(plan, threads=threads, capacity=capacity, fail_chunk=None, seed=seed)
        want = plan.partition(0).consumer_batches(0, 0)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("threads", [0, 2])
def test_a_read_error_reaches_the_consumer_and_never_stalls(threads):
    plan = StreamPlan(n_windows=40, chunk_windows=8, selected=np.arange(40), batch_size=4,
                      shuffle=False)
    for seed in range(30):
        with pytest.raises(ValueError, match="chunk 1 is damaged"):
            _run(plan, threads=threads, capacity=2, fail_chunk=1, seed=seed)
