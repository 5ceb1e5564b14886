"""Placement of recordings' windows: incremental == all at once, every window exactly once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eegstore.errors import ConfigError
from eegstore.placement import ChunkJob, Placer, chunk_windows_for, task_bounds

REF = {"channels": ["E1", "E2"], "window_samples": 4, "sfreq": 100.0}


def _meta(n: int, *, ok: bool = True, channels: list[str] | None = None) -> dict:
    if not ok:
        return {"status": "skipped", "reason": "bad file"}
    return {"status": "ok", "reason": "", "n_windows": n, "sfreq": 100.0,
            "channels": channels or REF["channels"], "window_samples": 4}


def _run(ids: list[str], metas: dict[str, dict], order: list[str], *, n_old: int,
         k: int) -> tuple[Placer, list[ChunkJob]]:
    placer = Placer(ids, n_old=n_old, ref=dict(REF) if n_old else None, chunk_windows=k)
    jobs: list[ChunkJob] = []
    for rid in order:
        placer.offer(rid, metas[rid])
        placer.advance()
        jobs += placer.ready_chunks()
    return placer, jobs


recordings = st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(recs=recordings, k=st.integers(1, 9), n_old=st.integers(0, 20), data=st.data())
def test_incremental_placement_equals_batch_and_covers_every_window_once(recs, k, n_old,
                                                                         data):
    ids = [f"r{i:02d}" for i in range(len(recs))]
    metas = {rid: _meta(n, ok=ok) for rid, (n, ok) in zip(ids, recs, strict=True)}
    order = data.draw(st.permutations(ids))
    inc, inc_jobs = _run(ids, metas, order, n_old=n_old, k=k)
    batch, batch_jobs = _run(ids, metas, sorted(ids), n_old=n_old, k=k)
    assert inc.complete and batch.complete
    assert inc.placed == batch.placed and inc.rows == batch.rows
    assert inc_jobs == batch_jobs  # same chunks with the same contents, whatever the order
    # sorted-id order, contiguous after the committed windows
    pos = n_old
    for rid, first, n in inc.placed:
        assert first == pos and n == metas[rid]["n_windows"]
        pos += n
    assert inc.n_total == pos
    # each chunk once, in order; every new window (and the committed part of a shared
    # chunk) written exactly once, by the chunk that holds it
    chunks = [j.chunk for j in inc_jobs]
    assert chunks == sorted(set(chunks))
    seen: list[tuple[str, int]] = []
    for job in inc_jobs:
        assert job.n_windows == min((job.chunk + 1) * k, pos) - job.chunk * k
        covered = 0
        for source, a, b, dst in job.segments:
            assert dst == covered and b > a
            covered += b - a
            seen += [(source, i) for i in range(a, b)]
        assert covered == job.n_windows
    new = [(rid, i) for rid, _first, n in inc.placed for i in range(n)]
    assert [s for s in seen if s[0]] == new
    if pos > n_old:
        assert sum(1 for s in seen if not s[0]) == n_old - (n_old // k) * k


def test_ready_chunks_wait_for_every_earlier_recording():
    placer = Placer(["a", "b", "c"], chunk_windows=4)
    placer.offer("b", _meta(8))
    placer.offer("c", _meta(3))
    assert placer.advance() == [] and placer.ready_chunks() == []  # "a" not staged yet
    placer.offer("a", _meta(6))
    assert [p[0] for p in placer.advance()] == ["a", "b", "c"]
    jobs = placer.ready_chunks()
    assert [j.chunk for j in jobs] == [0, 1, 2, 3, 4]  # 17 windows: the last chunk partial
    assert jobs[1].segments == (("a", 4, 6, 0), ("b", 0, 2, 2))
    assert jobs[-1].n_windows == 1 and placer.ready_chunks() == []


def test_first_usable_recording_sets_the_reference_and_mismatches_are_skipped():
    placer = Placer(["a", "b", "c", "d"])
    placer.offer("a", _meta(0, ok=False))
    placer.offer("b", _meta(5))
    placer.offer("c", _meta(5, channels=["E1"]))
    placer.offer("d", {**_meta(5), "sfreq": 250.0})
    placer.advance()
    assert [r[1] for r in placer.rows] == ["skipped", "ok", "skipped", "skipped"]
    assert "wrong channels" in placer.rows[2][2] and "wrong sfreq" in placer.rows[3][2]
    assert placer.k == chunk_windows_for(2, 4, "float32")
    assert [p[0] for p in placer.placed] == ["b"]


def test_signature_depends_on_contents_and_context():
    job = ChunkJob(3, (("a", 0, 4, 0),), 4)
    assert job.signature([1]) == ChunkJob(3, (("a", 0, 4, 0),), 4).signature([1])
    assert job.signature([1]) != job.signature([2])
    assert job.signature() != ChunkJob(3, (("b", 0, 4, 0),), 4).signature()


def test_placer_rejects_bad_input():
    with pytest.raises(ConfigError, match="unique recording ids"):
        Placer(["a", "a"])
    with pytest.raises(ConfigError, match="chunk_windows >= 1"):
        Placer(["a"], chunk_windows=0)
    placer = Placer(["a"])
    with pytest.raises(ConfigError, match="not placed yet, got 'x'"):
        placer.offer("x", _meta(1))
    placer.offer("a", _meta(1))
    placer.advance()
    with pytest.raises(ConfigError, match="not placed yet, got 'a'"):
        placer.offer("a", _meta(1))


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 200), per_task=st.integers(1, 20), slots=st.integers(1, 8),
       last=st.booleans())
def test_task_bounds_cover_every_chunk_once_in_tasks_no_larger_than_asked(n, per_task, slots,
                                                                         last):
    bounds = task_bounds(n, per_task, slots=slots, last=last)
    assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
    sizes = [b - a for a, b in bounds]
    assert all(1 <= s <= per_task for s in sizes)
    if not last:  # full tasks but for the last
        assert all(s == per_task for s in sizes[:-1])
    elif n:  # the build's last tasks: near-equal, one round per slot as far as chunks go
        assert max(sizes) - min(sizes) <= 1
        assert len(bounds) % slots == 0 or len(bounds) == n


def test_last_tasks_are_shared_between_the_workers():
    # 20 chunks left at the end of a 2-worker build: 10 + 10, not 16 + 4
    assert task_bounds(20, 16, slots=2, last=True) == [(0, 10), (10, 20)]
    assert task_bounds(20, 16, slots=2) == [(0, 16), (16, 20)]
    assert task_bounds(3, 16, slots=4, last=True) == [(0, 1), (1, 2), (2, 3)]
