"""Pure-plan invariants: exactly-once delivery, determinism, resume, reads, shuffle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eegstore.errors import ConfigError
from eegstore.plan import (
    StreamPlan,
    buffer_capacity,
    crop_offsets,
    mask_to_ranges,
    ranges_to_mask,
)
from eegstore.schedule import schedule_reads


@st.composite
def plans(draw, equalize=None):
    n = draw(st.integers(1, 300))
    cw = draw(st.integers(1, 40))
    kind = draw(st.sampled_from(["all", "random", "one_chunk", "sparse"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "all":
        sel = np.arange(n)
    elif kind == "random":
        sel = np.flatnonzero(rng.random(n) < draw(st.floats(0.05, 0.95)))
    elif kind == "one_chunk":
        c = draw(st.integers(0, (n - 1) // cw))
        sel = np.arange(c * cw, min(n, (c + 1) * cw))
    else:
        sel = np.unique(rng.integers(0, n, size=max(1, n // 17)))
    if sel.size == 0:
        sel = np.array([n - 1])
    return StreamPlan(n_windows=n, chunk_windows=cw, selected=sel,
                      batch_size=draw(st.integers(1, 20)), shuffle=draw(st.booleans()),
                      seed=draw(st.integers(0, 1000)), buffer_chunks=draw(st.integers(1, 5)),
                      drop_last=draw(st.booleans()), equalize=equalize)


def delivered(part):
    """What a DataLoader hands out per rank (one batch from each worker in turn), rank-major."""
    flat = []
    for r in range(part.world_size):
        queues = [list(part.consumer_batches(r, w)) for w in range(max(1, part.num_workers))]
        while any(queues):
            for q in queues:
                if q:
                    flat.append(q.pop(0))
    return np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)


@settings(max_examples=150, deadline=None)
@given(plan=plans(), world=st.integers(1, 4), workers=st.integers(0, 3),
       epoch=st.integers(0, 5))
def test_exactly_once_over_ranks_and_workers(plan, world, workers, epoch):
    part = plan.partition(epoch, world, workers)
    got = delivered(part)
    assert len(got) == len(np.unique(got))
    expected = plan.order(epoch)
    if plan.drop_last:
        expected = expected[: len(expected) - len(expected) % plan.batch_size]
    assert np.array_equal(np.sort(got), np.sort(expected))
    assert part.n_dropped_windows == plan.n_selected - len(expected)
    # ranks hold contiguous runs of the global batches and the DataLoader takes one batch
    # from each worker in turn: what the loops receive is the global order, whatever the
    # worker count
    assert np.array_equal(got, part.sequence)
    for batch_list in ([part.batch(b) for b in range(part.n_batches)],):
        assert all(len(b) == plan.batch_size for b in batch_list[:-1])


@settings(max_examples=100, deadline=None)
@given(plan=plans(), w1=st.integers(0, 3), w2=st.integers(0, 3), r1=st.integers(1, 4),
       r2=st.integers(1, 4), epoch=st.integers(0, 3))
def test_global_batches_do_not_depend_on_ranks_or_workers(plan, w1, w2, r1, r2, epoch):
    a = plan.partition(epoch, r1, w1)
    b = plan.partition(epoch, r2, w2)
    assert np.array_equal(a.sequence, b.sequence)
    assert np.array_equal(a.bounds, b.bounds)
    again = StreamPlan.from_dict(plan.to_dict())
    assert again == plan
    assert np.array_equal(again.order(epoch), plan.order(epoch))


@settings(max_examples=100, deadline=None)
@given(plan=plans(equalize="pad"), world=st.integers(1, 4), workers=st.integers(0, 3))
def test_equalize_pad_gives_equal_rank_batches(plan, world, workers):
    part = plan.partition(1, world, workers)
    counts = {len(x) for x in part.rank_batches}
    assert len(counts) == 1
    got = delivered(part)
    assert len(got) == len(part.sequence) + part.n_padded_windows
    assert set(got.tolist()) == set(part.sequence.tolist())


@settings(max_examples=100, deadline=None)
@given(plan=plans(equalize="drop"), world=st.integers(1, 4), workers=st.integers(0, 3))
def test_equalize_drop_gives_equal_rank_batches_and_counts_drops(plan, world, workers):
    part = plan.partition(1, world, workers)
    assert len({len(x) for x in part.rank_batches}) == 1
    got = delivered(part)
    assert len(got) == len(np.unique(got))
    assert len(got) + part.n_dropped_windows == plan.n_selected


@settings(max_examples=120, deadline=None)
@given(plan=plans(), r1=st.integers(1, 4), w1=st.integers(0, 3), r2=st.integers(1, 4),
       w2=st.integers(0, 3), data=st.data())
def test_resume_with_other_ranks_and_workers_is_exactly_once(plan, r1, w1, r2, w2, data):
    plan = StreamPlan.from_dict({**plan.to_dict(), "drop_last": False})
    epoch = 2
    first = plan.partition(epoch, r1, w1)
    consumed_windows = []
    for r in range(r1):
        for w in range(max(1, w1)):
            batches = first.consumer_batches(r, w)
            k = data.draw(st.integers(0, len(batches)))
            consumed_windows += batches[:k]
    consumed_idx = (np.concatenate(consumed_windows) if consumed_windows
                    else np.zeros(0, dtype=np.int64))
    mask = np.zeros(plan.n_selected, dtype=bool)
    mask[plan.positions(epoch, consumed_idx)] = True
    mask = ranges_to_mask(mask_to_ranges(mask), plan.n_selected)  # state round trip
    second = plan.partition(epoch, r2, w2, consumed=mask)
    rest = delivered(second)
    union = np.concatenate((consumed_idx, rest))
    assert np.array_equal(np.sort(union), plan.selected)
    # the remaining windows keep their global order
    assert np.array_equal(rest, plan.order(epoch)[~mask])


def test_same_seed_epoch_same_order_and_epochs_differ():
    plan = StreamPlan(n_windows=500, chunk_windows=10, selected=np.arange(500), batch_size=8,
                      buffer_chunks=4, seed=3)
    assert np.array_equal(plan.order(1), plan.order(1))
    assert not np.array_equal(plan.order(1), plan.order(2))
    other = StreamPlan.from_dict({**plan.to_dict(), "seed": 4})
    assert not np.array_equal(plan.order(1), other.order(1))


def test_buffers_hold_whole_chunk_groups():
    plan = StreamPlan(n_windows=400, chunk_windows=10, selected=np.arange(400), batch_size=8,
                      buffer_chunks=4, seed=1)
    order = plan.order(0)
    for start in range(0, 400, 40):
        chunks = np.unique(order[start:start + 40] // 10)
        assert len(chunks) == 4  # each buffer = 4 whole chunks, shuffled inside


def test_unshuffled_order_is_storage_order():
    sel = np.array([1, 5, 9, 30, 31])
    plan = StreamPlan(n_windows=40, chunk_windows=8, selected=sel, batch_size=2, shuffle=False)
    assert np.array_equal(plan.order(7), sel)
    assert plan.shuffle_score(7) == 0.0


def test_shuffle_score_near_one_for_full_buffer():
    n = 4000
    plan = StreamPlan(n_windows=n, chunk_windows=50, selected=np.arange(n), batch_size=8,
                      buffer_chunks=n // 50)
    assert 0.9 < plan.shuffle_score(0) < 1.1
    small = StreamPlan.from_dict({**plan.to_dict(), "buffer_chunks": 1})
    assert small.shuffle_score(0) > 0.5  # chunk permutation alone moves windows far


@settings(max_examples=60, deadline=None)
@given(plan=plans(), world=st.integers(1, 3), workers=st.integers(0, 3))
def test_full_buffer_cache_reads_each_chunk_at_most_once_per_consumer(plan, world, workers):
    stats = plan.read_stats(0, world, workers)
    n_chunks = len(plan.chunks)
    # ranks hold contiguous runs; a rank's workers take its batches in turn, so each worker
    # may read every chunk of the rank's run once
    assert stats.chunks_read <= max(1, workers) * (n_chunks + 2 * world * plan.buffer_chunks)
    if workers <= 1:
        assert stats.chunks_read <= n_chunks + 2 * world * plan.buffer_chunks
    if world == 1 and workers <= 1:
        expected_chunks = len(np.unique(plan.partition(0).sequence // plan.chunk_windows))
        assert stats.chunks_read == expected_chunks
    assert stats.windows_delivered == len(plan.partition(0, world, workers).sequence)


def test_read_amplification_of_whole_store_is_one_and_small_cache_rereads():
    plan = StreamPlan(n_windows=256, chunk_windows=16, selected=np.arange(256), batch_size=32,
                      buffer_chunks=4)
    assert plan.read_amplification(0) == 1.0
    assert plan.read_amplification(0, cache_chunks=1) > 1.5
    sparse = StreamPlan.from_dict({**plan.to_dict(), "selected": [[0, 4], [16, 20]]})
    assert sparse.read_amplification(0) == 4.0  # two chunks of 16 read for 8 windows


def test_crop_offsets_are_pure_and_in_range():
    idx = np.arange(1000)
    a = crop_offsets(idx, 400, 200, seed=1, epoch=2)
    assert a.min() >= 0 and a.max() <= 200
    assert np.array_equal(a[::-1], crop_offsets(idx[::-1], 400, 200, seed=1, epoch=2))
    assert not np.array_equal(a, crop_offsets(idx, 400, 200, seed=1, epoch=3))
    assert len(np.unique(a)) > 150


def test_buffer_capacity_formula_and_error():
    m = buffer_capacity(10_000, num_workers=2, prefetch_factor=2, chunk_nbytes=1000,
                        batch_nbytes=100)
    assert m == (5000 - 1000 - 500) // 1000
    assert 2 * ((m + 1) * 1000 + 5 * 100) <= 10_000
    with pytest.raises(ConfigError, match="expected ram_budget >= "):
        buffer_capacity(2_000, num_workers=2, prefetch_factor=2, chunk_nbytes=1000,
                        batch_nbytes=100)


def test_plan_validation_errors():
    with pytest.raises(ConfigError, match="sorted unique positions"):
        StreamPlan(n_windows=10, chunk_windows=2, selected=np.array([3, 3]), batch_size=2)
    with pytest.raises(ConfigError, match="positive integer batch_size"):
        StreamPlan(n_windows=10, chunk_windows=2, selected=np.arange(3), batch_size=0)
    with pytest.raises(ConfigError, match="equalize"):
        StreamPlan(n_windows=10, chunk_windows=2, selected=np.arange(3), batch_size=2,
                   equalize="even")  # type: ignore[arg-type]
    plan = StreamPlan(n_windows=10, chunk_windows=2, selected=np.arange(3), batch_size=2)
    with pytest.raises(ConfigError, match="consumed mask of shape"):
        plan.partition(0, consumed=np.zeros(4, dtype=bool))
    with pytest.raises(ConfigError, match="outside the selection"):
        plan.positions(0, np.array([7]))
    assert "StreamPlan(n_windows=10" in repr(plan)


@settings(max_examples=120, deadline=None)
@given(plan=plans(), workers=st.integers(0, 2), capacity=st.integers(1, 4),
       epoch=st.integers(0, 3))
def test_read_schedule_never_gathers_from_a_slot_read_over(plan, workers, capacity, epoch):
    """Run each read as early as its ``after`` step allows (the most eager executor):
    every gathered row still holds the window the step asks for."""
    part = plan.partition(epoch, 1, workers)
    batches = part.consumer_batches(0, 0)
    steps = list(schedule_reads(batches, chunk_windows=plan.chunk_windows, capacity=capacity,
                                chunk_len=plan.chunk_len))
    slot_chunk: dict[int, int] = {}
    next_read = 0  # reads are issued in step order
    reads = [(k, load) for k, step in enumerate(steps) for load in step.loads]
    filled = {b: np.zeros(len(batch), dtype=bool) for b, batch in enumerate(batches)}
    for k, step in enumerate(steps):
        while next_read < len(reads) and reads[next_read][1][2] < k:
            _, (chunk, slot, _after) = reads[next_read]
            slot_chunk[slot] = chunk
            next_read += 1
        assert all(load in [r for _, r in reads[:next_read]] for load in step.loads)
        windows = batches[step.batch][step.positions]
        slots, offsets = np.divmod(step.rows, plan.chunk_windows)
        assert all(slot < capacity for slot in slots)
        held = np.array([slot_chunk[int(s)] for s in slots], dtype=np.int64)
        np.testing.assert_array_equal(held * plan.chunk_windows + offsets, windows)
        assert not filled[step.batch][step.positions].any()
        filled[step.batch][step.positions] = True
        assert step.last == (k + 1 == len(steps) or steps[k + 1].batch != step.batch)
    assert all(f.all() for f in filled.values())
    if workers <= 1:  # one consumer: its reads are the plan's simulated reads
        n_reads = sum(len(s.loads) for s in steps)
        assert n_reads == plan.read_stats(epoch, 1, workers, capacity).chunks_read
