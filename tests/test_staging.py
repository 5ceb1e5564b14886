"""Staged recordings: the union of their windows, read back window for window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eegstore.build.staging import (
    STAGED_OFFSETS,
    STAGED_SIGNAL,
    read_windows_into,
    save_signal,
    stage_layout,
)
from eegstore.errors import StoreError
from eegstore.store import get_fs


@settings(max_examples=200, deadline=None)
@given(starts=st.lists(st.integers(0, 300), min_size=1, max_size=25),
       w=st.integers(1, 40))
def test_layout_holds_every_window_and_each_sample_once(starts: list[int], w: int) -> None:
    runs, offsets = stage_layout(np.array(starts), w)
    signal = np.arange(400)
    staged = np.concatenate([signal[a:b] for a, b in runs])
    for s, o in zip(starts, offsets, strict=True):
        assert np.array_equal(staged[o:o + w], signal[s:s + w])
    covered = np.zeros(len(signal), dtype=bool)
    for s in starts:
        covered[s:s + w] = True
    assert len(staged) == int(covered.sum())  # every sample of a window, once
    assert np.all(runs[1:, 0] > runs[:-1, 1])  # runs in order, apart


def test_layout_of_overlapping_and_disjoint_windows() -> None:
    runs, offsets = stage_layout(np.array([0, 2, 4]), 4)  # 4-sample windows, stride 2
    assert runs.tolist() == [[0, 8]] and offsets.tolist() == [0, 2, 4]
    runs, offsets = stage_layout(np.array([50, 10]), 5)  # apart, out of order
    assert runs.tolist() == [[10, 15], [50, 55]] and offsets.tolist() == [5, 0]


@pytest.fixture(params=["local", "memory"])
def staging_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A local staging folder or an in-memory fsspec one."""
    return str(tmp_path) if request.param == "local" else f"memory://{tmp_path.name}"


def _stage(url: str, starts: list[int], w: int = 6) -> tuple[np.ndarray, str, Any]:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 60))
    fs, root = get_fs(url)
    sdir = f"{root}/rec"
    save_signal(fs, sdir, data, np.array(starts), w, np.dtype("float32"))
    return data, sdir, fs


def test_staged_windows_read_back_in_any_range(staging_url: str) -> None:
    starts = [0, 3, 6, 20, 40, 42]
    data, sdir, fs = _stage(staging_url, starts)
    expected = np.stack([data[:, s:s + 6] for s in starts]).astype(np.float32)
    for a in range(len(starts)):
        for b in range(a + 1, len(starts) + 1):
            out = np.empty((b - a, 3, 6), dtype=np.float32)
            read_windows_into(fs, sdir, a, out)
            np.testing.assert_array_equal(out, expected[a:b])
    # 6 windows of 6 samples (36) staged as 12 + 6 + 8 samples
    with fs.open(f"{sdir}/{STAGED_SIGNAL}", "rb") as fh:
        assert np.lib.format.read_array(fh).shape == (3, 26)


def test_damaged_staging_is_a_clear_error(staging_url: str) -> None:
    _, sdir, fs = _stage(staging_url, [0, 10])
    out = np.empty((2, 3, 6), dtype=np.float32)
    with pytest.raises(StoreError,
                       match=r"4 channels .* got float32 \(3, 12\); delete its done\.json"):
        read_windows_into(fs, sdir, 0, np.empty((2, 4, 6), dtype=np.float32))
    signal = f"{sdir}/{STAGED_SIGNAL}"
    fs.pipe(signal, fs.cat(signal)[:-8])
    with pytest.raises(StoreError, match=r"short file; delete its done\.json"):
        read_windows_into(fs, sdir, 0, out)
    fs.rm(f"{sdir}/{STAGED_OFFSETS}")
    with pytest.raises(StoreError, match="expected staged windows"):
        read_windows_into(fs, sdir, 0, out)
