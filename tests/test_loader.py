"""StreamLoader: the loader tracks progress itself; resume is exactly-once without marks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from eegstore.errors import ConfigError
from eegstore.loader import StreamLoader
from eegstore.testing import make_store
from eegstore.torch import WindowStream

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

N_WINDOWS = 150


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("loader") / "s.zarr", n_windows=N_WINDOWS,
                      n_channels=2, n_times=8, chunk_windows=16, n_subjects=6)


def plain_loop(loader: StreamLoader, stop_after: int | None = None) -> tuple[np.ndarray, dict]:
    """A training loop as users write it: no mark_consumed, state saved after each batch."""
    seen, state = [], loader.state_dict()
    for n, (_, _, index) in enumerate(loader, start=1):
        seen.append(index.numpy())
        state = json.loads(json.dumps(loader.state_dict()))  # as saved in a checkpoint
        if n == stop_after:
            break
    return (np.concatenate(seen) if seen else np.zeros(0, np.int64)), state


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.sampled_from([1, 5, 17]), batch_size=st.integers(4, 8),
       resume_batch_size=st.integers(3, 9), workers=st.integers(0, 2),
       resume_workers=st.integers(0, 2))
def test_plain_loop_stopped_after_k_batches_resumes_every_window_exactly_once(
        store, k, batch_size, resume_batch_size, workers, resume_workers):
    first, state = plain_loop(StreamLoader(WindowStream(store, batch_size, seed=3, buffer_chunks=2),
                                           num_workers=workers), stop_after=k)
    assert len(first) == k * batch_size  # only what the loop received, not what was prefetched
    loader = StreamLoader(WindowStream(store, resume_batch_size, seed=3, buffer_chunks=2),
                          num_workers=resume_workers)
    loader.load_state_dict(state)
    rest, end_state = plain_loop(loader)
    got = np.concatenate([first, rest])
    assert np.array_equal(np.sort(got), np.arange(N_WINDOWS))
    assert end_state["epoch"] == 1 and end_state["consumed"] == []


@pytest.fixture(scope="module")
def trap_store(tmp_path_factory) -> Path:
    """The store size of the issue's report (1,214 windows), with tiny windows."""
    return make_store(tmp_path_factory.mktemp("trap") / "t.zarr", n_windows=1214, n_channels=1,
                      n_times=4, chunk_windows=64, n_subjects=4)


def test_issue_trap_plain_dataloader_repeats_160_windows_and_stream_loader_none(trap_store):
    def five_batches_then_resume(make_loader, state_of):
        stream = WindowStream(trap_store, 32, seed=0)
        loader = make_loader(stream)
        seen = []
        for n, (_, _, index) in enumerate(loader, start=1):
            seen.append(index.numpy())
            if n == 5:
                break
        state = state_of(stream, loader)
        resumed = WindowStream(trap_store, 32, seed=0)
        resumed.load_state_dict(state)
        seen += [i.numpy() for _, _, i in make_loader(resumed)]
        return np.concatenate(seen)

    plain = five_batches_then_resume(
        lambda s: DataLoader(s, batch_size=None, num_workers=2), lambda s, _: s.state_dict())
    assert len(plain) == 1214 + 160  # the trap: the state saw nothing consumed
    tracked = five_batches_then_resume(
        lambda s: StreamLoader(s, num_workers=2), lambda _, loader: loader.state_dict())
    assert len(tracked) == 1214 and np.array_equal(np.sort(tracked), np.arange(1214))


def test_epochs_advance_by_themselves_each_a_new_order_of_every_window(store):
    loader = StreamLoader(WindowStream(store, 10, seed=1, buffer_chunks=2), num_workers=1)
    epochs = []
    for epoch in range(loader.epoch, 2):
        assert loader.epoch == epoch
        epochs.append(np.concatenate([i.numpy() for _, _, i in loader]))
    assert loader.epoch == 2
    for got in epochs:
        assert np.array_equal(np.sort(got), np.arange(N_WINDOWS))
    assert not np.array_equal(epochs[0], epochs[1])


def test_state_saved_at_the_last_batch_resumes_at_the_next_epoch(store):
    loader = StreamLoader(WindowStream(store, 10, seed=1), num_workers=0)
    _, state = plain_loop(loader)
    assert state["epoch"] == 1 and state["consumed"] == []
    resumed = StreamLoader(WindowStream(store, 10, seed=1), num_workers=2)
    resumed.load_state_dict(state)
    reference = StreamLoader(WindowStream(store, 10, seed=1), num_workers=0)
    reference.set_epoch(1)

    def batches(loader):
        return {tuple(i.tolist()) for _, _, i in loader}

    assert batches(resumed) == batches(reference)  # the batches of epoch 1


def test_a_loop_left_early_is_continued_by_the_next_iteration(store):
    loader = StreamLoader(WindowStream(store, 10, seed=2), num_workers=2)
    first, _ = plain_loop(loader, stop_after=3)
    rest, _ = plain_loop(loader)
    assert np.array_equal(np.sort(np.concatenate([first, rest])), np.arange(N_WINDOWS))
    assert loader.epoch == 1


def test_len_is_a_whole_epoch_of_this_rank_also_after_a_resume(store):
    second_rank = StreamLoader(WindowStream(store, 10, rank=1, world_size=2))
    assert len(second_rank) == 8  # 15 global batches: rank 1 holds 8
    loader = StreamLoader(WindowStream(store, 10), num_workers=0)
    plain_loop(loader, stop_after=3)
    assert len(loader) == 15 and len(loader.stream) == 12


def test_a_rank_without_batches_still_moves_to_the_next_epoch(store):
    loader = StreamLoader(WindowStream(store, 100, rank=0, world_size=3))  # 2 global batches
    assert len(loader) == 0 and list(loader) == [] and loader.epoch == 1


def test_batches_are_the_stream_batches_unchanged(store):
    stream = WindowStream(store, 7, seed=4, buffer_chunks=2)
    direct = [b for b in DataLoader(WindowStream(store, 7, seed=4, buffer_chunks=2),
                                    batch_size=None)]
    for (x, y, i), (x0, y0, i0) in zip(StreamLoader(stream), direct, strict=True):
        assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(i, i0)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"persistent_workers": True}, "persistent_workers=False"),
    ({"num_workers": -1}, "num_workers >= 0"),
])
def test_invalid_loader_settings_are_rejected(store, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        StreamLoader(WindowStream(store, 8), **kwargs)


def test_a_loader_needs_a_window_stream(store):
    with pytest.raises(ConfigError, match="expected a WindowStream"):
        StreamLoader(list(range(3)))  # type: ignore[arg-type]


def test_state_of_another_plan_is_rejected(store):
    state = StreamLoader(WindowStream(store, 8, seed=0)).state_dict()
    with pytest.raises(ConfigError, match="same store, selection, seed"):
        StreamLoader(WindowStream(store, 8, seed=1)).load_state_dict(state)
