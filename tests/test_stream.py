"""Executed streaming: real DataLoaders, transforms, resume, budget, selections."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader

from eegstore.errors import ConfigError, StoreError
from eegstore.plan import crop_offsets
from eegstore.testing import make_store
from eegstore.torch import WindowDataset, WindowStream, merge_stream_states

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

N_WINDOWS, CHUNK, N_CH, N_T = 203, 16, 3, 40


@pytest.fixture(scope="module")
def stream_store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("stream") / "s.zarr", n_windows=N_WINDOWS,
                      n_channels=N_CH, n_times=N_T, chunk_windows=CHUNK, n_subjects=9,
                      releases=("R1", "R2", "R5"))


@pytest.fixture(scope="module")
def stream_truth(stream_store):
    ds = xr.open_zarr(stream_store)
    return ds["eeg"].values, ds["target"].values.astype(np.float32), ds


def run(loader, stream=None, stop_after=None):
    idx, n = [], 0
    for _, _, i in loader:
        idx.append(i.numpy())
        if stream is not None:
            stream.mark_consumed(i)
        n += 1
        if stop_after is not None and n >= stop_after:
            break
    return np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)


def test_two_worker_loader_delivers_store_values_exactly_once(stream_store, stream_truth):
    eeg, target, _ = stream_truth
    stream = WindowStream(stream_store, 10, buffer_chunks=3)
    seen = []
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    for x, y, i in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.float32 and i.dtype == torch.int64
        assert x.shape == (len(i), N_CH, N_T) and y.shape == (len(i),)
        np.testing.assert_array_equal(x.numpy(), eeg[i.numpy()])
        np.testing.assert_array_equal(y.numpy(), target[i.numpy()])
        seen.append(i.numpy())
    got = np.concatenate(seen)
    assert np.array_equal(np.sort(got), np.arange(N_WINDOWS))
    assert len(stream) == -(-N_WINDOWS // 10)


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 1), (3, 3), (4, 2)])
def test_ranks_times_workers_exactly_once_with_selection(stream_store, world, workers):
    where = {"subject": ["S001", "S003", "S004", "S008"]}
    got = []
    for rank in range(world):
        s = WindowStream(stream_store, 7, where=where, rank=rank, world_size=world, seed=5,
                         buffer_chunks=2)
        got.append(run(DataLoader(s, batch_size=None, num_workers=workers)))
    allw = np.concatenate(got)
    assert np.array_equal(np.sort(allw), s.plan.selected)
    assert len(allw) == len(np.unique(allw))


@pytest.fixture(scope="module")
def global_batches(stream_store):
    s0 = WindowStream(stream_store, 9, seed=2, buffer_chunks=2, threads=0)
    s0.set_epoch(3)
    batches = [(x.numpy().copy(), i.numpy().copy()) for x, _, i in s0]
    assert np.array_equal(np.concatenate([i for _, i in batches]), s0.plan.order(3))
    return batches


@pytest.mark.parametrize(("workers", "threads"),
                         [(0, 1), (0, 3), (1, 0), (2, 0), (2, 2)])
def test_batches_arrive_in_global_order_whatever_workers_and_threads(
        stream_store, global_batches, workers, threads):
    s = WindowStream(stream_store, 9, seed=2, buffer_chunks=2, threads=threads)
    s.set_epoch(3)
    got = [(x.numpy(), i.numpy()) for x, _, i in
           DataLoader(s, batch_size=None, num_workers=workers)]
    assert len(got) == len(global_batches)
    for (x, i), (want_x, want_i) in zip(got, global_batches, strict=True):
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_array_equal(x, want_x)


def test_resume_with_other_workers_world_size_and_batch_size(stream_store):
    where = np.arange(N_WINDOWS) % 5 != 0
    first = WindowStream(stream_store, 8, where=where, seed=1)
    first.set_epoch(4)
    part1 = run(DataLoader(first, batch_size=None, num_workers=2), first, stop_after=7)
    state = first.state_dict()
    assert state["epoch"] == 4 and first.n_consumed == len(part1)
    rest = []
    for rank in range(2):
        s = WindowStream(stream_store, 5, where=where, seed=1, rank=rank, world_size=2)
        s.load_state_dict(state)
        s.set_epoch(4)  # same epoch: progress kept
        rest.append(run(DataLoader(s, batch_size=None, num_workers=1 + rank), s))
    union = np.concatenate([part1, *rest])
    assert np.array_equal(np.sort(union), np.flatnonzero(where))
    merged = merge_stream_states([s.state_dict()])
    assert merged["consumed"] != state["consumed"]
    s.set_epoch(5)
    assert s.n_consumed == 0


def test_state_rejects_another_plan(stream_store):
    state = WindowStream(stream_store, 8, seed=1).state_dict()
    with pytest.raises(ConfigError, match="same store, selection, seed"):
        WindowStream(stream_store, 8, seed=2).load_state_dict(state)


def test_crop_and_normalize(stream_store, stream_truth):
    eeg, _, _ = stream_truth
    s = WindowStream(stream_store, 16, crop_samples=25, seed=4)
    s.set_epoch(2)
    for x, _, i in s:
        off = crop_offsets(i.numpy(), N_T, 25, seed=4, epoch=2)
        want = np.stack([eeg[w, :, o:o + 25] for w, o in zip(i.numpy(), off, strict=True)])
        np.testing.assert_array_equal(x.numpy(), want)
    xw, _, _ = next(iter(WindowStream(stream_store, 16, normalize="window")))
    np.testing.assert_allclose(xw.numpy().mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(xw.numpy().std(axis=(1, 2)), 1, atol=1e-4)
    xc, _, _ = next(iter(WindowStream(stream_store, 16, normalize="channel")))
    np.testing.assert_allclose(xc.numpy().mean(axis=2), 0, atol=1e-5)
    np.testing.assert_allclose(xc.numpy().std(axis=2), 1, atol=1e-4)
    with pytest.raises(ConfigError, match="crop_samples in"):
        WindowStream(stream_store, 4, crop_samples=N_T + 1)
    with pytest.raises(ConfigError, match="normalize in"):
        WindowStream(stream_store, 4, normalize="global")


@pytest.mark.parametrize(("dtype", "compressor", "read_path"),
                         [("float16", "none", "raw"), ("float32", "none", "raw"),
                          ("float16", "zstd", "decode"), ("float32", "blosc-lz4", "decode"),
                          ("float32", "gzip", "zarr")])
@pytest.mark.parametrize("threads", [0, 2])
def test_every_read_path_delivers_the_stored_values(tmp_path, dtype, compressor, read_path,
                                                    threads):
    p = make_store(tmp_path / "s.zarr", n_windows=45, chunk_windows=8, dtype=dtype,
                   compressor=compressor)
    eeg = xr.open_zarr(p)["eeg"].values
    s = WindowStream(p, 7, buffer_chunks=2, threads=threads)
    got = []
    for x, _, i in s:
        np.testing.assert_array_equal(x.numpy(), eeg[i.numpy()].astype(np.float32))
        got.append(i.numpy())
    assert s._reader.read_path == read_path
    assert np.array_equal(np.sort(np.concatenate(got)), np.arange(45))
    assert s.last_read_stats == s.read_stats()


@pytest.mark.parametrize("store_dtype", ["float16", "float32"])
def test_float16_delivery_rounds_the_stored_values(tmp_path, store_dtype):
    p = make_store(tmp_path / "s.zarr", n_windows=30, chunk_windows=8, dtype=store_dtype)
    eeg = xr.open_zarr(p)["eeg"].values
    for x, y, i in WindowStream(p, 7, dtype="float16", crop_samples=20, seed=1):
        assert x.dtype == torch.float16 and y.dtype == torch.float32
        off = crop_offsets(i.numpy(), eeg.shape[2], 20, seed=1, epoch=0)
        want = np.stack([eeg[w, :, o:o + 20] for w, o in zip(i.numpy(), off, strict=True)])
        np.testing.assert_array_equal(x.numpy(), want.astype(np.float16))
    x, _, _ = next(iter(WindowDataset(p, dtype="float16")))
    assert x.dtype == torch.float16
    with pytest.raises(ConfigError, match="expected dtype in"):
        WindowStream(p, 4, dtype="float64")
    with pytest.raises(ConfigError, match="expected threads"):
        WindowStream(p, 4, threads=-1)


def test_batches_needing_more_chunks_than_the_cache_are_read_in_parts(stream_store,
                                                                      stream_truth):
    eeg, _, _ = stream_truth
    s = WindowStream(stream_store, 40, buffer_chunks=4, threads=2)
    s.cache_chunks = lambda num_workers, batch_size=None: 2  # type: ignore[method-assign]
    got = []
    for x, _, i in s:
        np.testing.assert_array_equal(x.numpy(), eeg[i.numpy()])
        got.append(i.numpy())
    assert np.array_equal(np.sort(np.concatenate(got)), np.arange(N_WINDOWS))
    assert s.last_read_stats == s.plan.read_stats(0, cache_chunks=2)


def test_raw_chunk_file_of_wrong_size_raises_and_missing_one_reads_fill(tmp_path):
    from eegstore.errors import CorruptChunkError

    p = make_store(tmp_path / "s.zarr", n_windows=24, chunk_windows=8, dtype="float16",
                   compressor="none")
    s = WindowStream(p, 8, shuffle=False)
    key = Path(p, "eeg", s._reader._open().metadata.encode_chunk_key((1, 0, 0)))
    key.write_bytes(key.read_bytes()[:-2])
    with pytest.raises(CorruptChunkError, match=r"chunk 1 of array .eeg.*another size than"):
        list(s)
    key.unlink()
    xs = [x for x, _, _ in WindowStream(p, 8, shuffle=False)]
    assert np.isnan(xs[1].numpy()).all() or (xs[1].numpy() == 0).all()


def test_float16_store_is_upcast(tmp_path):
    p = make_store(tmp_path / "f16.zarr", n_windows=30, chunk_windows=8, dtype="float16")
    eeg = xr.open_zarr(p)["eeg"].values
    assert eeg.dtype == np.float16
    for x, _, i in WindowStream(p, 7):
        assert x.dtype == torch.float32
        np.testing.assert_array_equal(x.numpy(), eeg[i.numpy()].astype(np.float32))


def test_ram_budget_error_and_adherence(stream_store, stream_truth):
    eeg, _, _ = stream_truth
    chunk_nbytes = CHUNK * N_CH * N_T * eeg.dtype.itemsize  # stored chunks
    batch_nbytes = 8 * (N_CH * N_T * 4 + 12)  # delivered float32 batches
    with pytest.raises(ConfigError, match="expected ram_budget >= "):
        WindowStream(stream_store, 8, ram_budget=chunk_nbytes)
    budget = 2 * chunk_nbytes + 5 * batch_nbytes  # one cached chunk for one consumer
    s = WindowStream(stream_store, 8, ram_budget=budget)
    assert s.plan.buffer_chunks == 1 and s.cache_chunks(0) == 1
    with pytest.raises(ConfigError, match="2 worker"):
        s.cache_chunks(2)
    loose = WindowStream(stream_store, 8, ram_budget=2 * (6 * chunk_nbytes + 5 * batch_nbytes),
                         buffer_chunks=8)
    assert loose.cache_chunks(2) == 5  # fewer than the 8 buffer chunks: re-reads, not RAM
    assert loose.read_amplification(2) > 1.0
    got = []
    for x, _, i in loose:
        np.testing.assert_array_equal(x.numpy(), eeg[i.numpy()])
        got.append(i.numpy())
    assert np.array_equal(np.sort(np.concatenate(got)), np.arange(N_WINDOWS))
    # the executor's reads are exactly the plan's simulation
    assert loose.last_read_stats == loose.read_stats(0)


def _chunk_file(store: Path, chunk: int) -> Path:
    return store / "eeg" / "c" / str(chunk) / "0" / "0"


def test_where_reads_only_selected_chunks_and_coords_only(tmp_path, stream_store,
                                                          stream_truth):
    eeg, _, ds = stream_truth
    store = tmp_path / "corrupt.zarr"
    shutil.copytree(stream_store, store)
    subject = ds["subject"].values
    keep = {"subject": "S002"}
    sel = np.flatnonzero(subject == "S002")
    needed = set((sel // CHUNK).tolist())
    for c in range(-(-N_WINDOWS // CHUNK)):
        if c not in needed:
            _chunk_file(store, c).write_bytes(b"not zstd")
    for where in (keep, subject == "S002", lambda c: c["subject"] == "S002", sel):
        s = WindowStream(store, 5, where=where)
        got = []
        for x, _, i in DataLoader(s, batch_size=None, num_workers=0):
            np.testing.assert_array_equal(x.numpy(), eeg[i.numpy()])
            got.append(i.numpy())
        assert np.array_equal(np.sort(np.concatenate(got)), sel)
        assert s.last_read_stats.chunks_read == len(needed)
    with pytest.raises(Exception):  # noqa: B017 - the corrupt chunk really is unreadable
        list(WindowStream(store, 5, where={"subject": "S000"}))
    with pytest.raises(ConfigError, match="at least one window"):
        WindowStream(store, 5, where={"subject": "nobody"})
    with pytest.raises(ConfigError, match="per-window coordinate in where"):
        WindowStream(store, 5, where={"colour": "red"})
    with pytest.raises(ConfigError, match="boolean where mask of shape"):
        WindowStream(store, 5, where=np.ones(3, dtype=bool))


def test_dataset_inputs_and_rank_defaults(stream_store, stream_truth, monkeypatch):
    eeg, _, _ = stream_truth
    opened = xr.open_zarr(stream_store)
    loaded = opened.load()
    loaded.encoding = {}
    for ds in (opened, loaded):
        x, _, i = next(iter(WindowStream(ds, 6)))
        np.testing.assert_array_equal(x.numpy(), eeg[i.numpy()])
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    s = WindowStream(stream_store, 6)
    assert (s.rank, s.world_size) == (1, 3)
    with pytest.raises(ConfigError, match="0 <= rank < world_size"):
        WindowStream(stream_store, 6, rank=3, world_size=3)
    with pytest.raises(StoreError, match="expected an eegstore store"):
        WindowStream(stream_store.parent / "missing.zarr", 6)


def test_equalize_pad_and_drop_on_ranks(stream_store):
    lens = {}
    for mode in ("pad", "drop"):
        counts = [len(WindowStream(stream_store, 10, rank=r, world_size=4, equalize=mode))
                  for r in range(4)]
        assert len(set(counts)) == 1
        lens[mode] = counts[0]
        part = WindowStream(stream_store, 10, rank=0, world_size=4,
                            equalize=mode).epoch_partition()
        if mode == "pad":
            assert part.n_padded_windows == 3 * 10 and part.n_dropped_windows == 0
        else:
            assert part.n_dropped_windows == 3 and part.n_padded_windows == 0
    assert lens == {"pad": 6, "drop": 5}


def test_window_dataset_map_style(stream_store, stream_truth):
    eeg, target, _ = stream_truth
    d = WindowDataset(stream_store, where={"release": "R2"}, cache_chunks=2)
    assert len(d) > 0
    for k in (0, len(d) - 1, -1, 3):
        x, y, i = d[k]
        assert x.shape == (N_CH, N_T) and i.dtype == torch.int64
        np.testing.assert_array_equal(x.numpy(), eeg[int(i)])
        assert float(y) == target[int(i)]
    with pytest.raises(IndexError):
        d[len(d)]
    idx = [int(i) for _, _, i in DataLoader(d, batch_size=None, num_workers=2)]
    assert idx == d.selected.tolist()  # deterministic storage order
    c = WindowDataset(stream_store, crop_samples=10)
    assert c[5][0].shape == (N_CH, 10)
    assert torch.equal(c[5][0], c[5][0])
    off = crop_offsets(np.array([5]), N_T, 10, seed=0, epoch=0)[0]
    np.testing.assert_array_equal(c[5][0].numpy(), eeg[5, :, off:off + 10])


@pytest.fixture(scope="module")
def built_store(synth_mini_ccd, tmp_path_factory) -> Path:
    """A challenge1 store built by ``eegstore build`` from synthetic recordings of 2 subjects."""
    pytest.importorskip("eegstore.sources", reason="the recording sources are not available")
    from eegstore.build import build_store

    tree = Path(synth_mini_ccd)
    roots = sorted(p.parent for p in tree.rglob("participants.tsv"))
    store = tmp_path_factory.mktemp("stream_built") / "ccd.zarr"
    build_store(str(roots[0] if roots else tree), store, "challenge1", subjects=2, workers=1,
                chunk_windows=16, progress=False)
    return store


def test_two_worker_loader_on_a_built_store_matches_eeg_and_target(built_store):
    ds = xr.open_zarr(built_store)
    eeg = ds["eeg"].values.astype(np.float32)
    target = ds["target"].values.astype(np.float32)
    stream = WindowStream(built_store, 8, seed=3)
    stream.set_epoch(1)
    seen = []
    for x, y, i in DataLoader(stream, batch_size=None, num_workers=2):
        np.testing.assert_array_equal(x.numpy(), eeg[i.numpy()])
        np.testing.assert_array_equal(y.numpy(), target[i.numpy()])
        seen.append(i.numpy())
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(eeg.shape[0]))
