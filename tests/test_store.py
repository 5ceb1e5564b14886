"""Opening, summarising and verifying stores (no build needed)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from eegstore.errors import SchemaError, StoreError
from eegstore.store import open_store, store_info, str_values
from eegstore.testing import make_store
from eegstore.verify import verify_store


def _with_checksums(path: Path) -> Path:
    """Record real CRC32s in a make_store store (it writes zeros and checksums='none')."""
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    eeg = g["eeg"]
    k, n = eeg.chunks[0], eeg.shape[0]
    crcs = [zlib.crc32(np.ascontiguousarray(eeg[c * k:(c + 1) * k]).tobytes())
            for c in range(-(-n // k))]
    g["chunk_crc32"][:] = np.asarray(crcs, dtype=np.int64)
    attrs = dict(g.attrs)
    attrs["checksums"] = "crc32"
    g.attrs.update(attrs)
    zarr.consolidate_metadata(str(path))
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    return _with_checksums(make_store(tmp_path / "s.zarr", n_windows=30, chunk_windows=8,
                                      n_subjects=3))


def test_open_store_lazy_and_checked(store):
    ds = open_store(store)
    assert ds.eeg.chunks is not None  # dask-backed
    assert ds.sizes["window"] == 30
    assert set(str_values(ds.recordings.values)) == set(str_values(ds.recording.values))


def test_open_store_errors(tmp_path, store):
    with pytest.raises(StoreError, match=r"no zarr\.json"):
        open_store(tmp_path / "nothing.zarr")
    # metadata not consolidated: a build that has not finished
    raw = tmp_path / "raw.zarr"
    zarr.open_group(str(raw), mode="w").create_array("eeg", shape=(1, 1, 1), dtype="f4")
    with pytest.raises(StoreError, match="has not finished"):
        open_store(raw)
    # schema violations
    broken = tmp_path / "broken.zarr"
    # the store's codecs stay behind (its text is UTF-8 bytes, which xarray decodes to str)
    ds = xr.open_zarr(store).drop_vars("target").drop_encoding().load()
    ds.to_zarr(broken, mode="w", consolidated=True, zarr_format=3)
    with pytest.raises(SchemaError, match="'target'"):
        open_store(broken)


def test_store_info_and_cli(store, capsys):
    from eegstore.cli import main

    info = store_info(store)
    assert info["n_windows"] == 30
    assert info["n_recordings"] == info["n_recordings_ok"] == 3
    assert info["chunk_windows"] == 8
    assert info["subjects"] == 3
    assert main(["info", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_windows"] == 30
    assert main(["info", str(store)]) == 0
    assert "recordings   3 (3 ok, 0 skipped)" in capsys.readouterr().out


def test_verify_clean_store(store, capsys):
    from eegstore.cli import main

    report = verify_store(store)
    assert report.ok, str(report)
    assert report.n_chunks == report.n_chunks_checked == 4
    assert main(["verify", str(store)]) == 0


def _chunk_file(store: Path, c: int) -> Path:
    return store / "eeg" / "c" / str(c) / "0" / "0"


def test_verify_reports_corrupt_chunks_by_recording(store, capsys):
    from eegstore.cli import main

    # chunk 1: garbage bytes (cannot be decoded); chunk 3: a valid chunk of other data
    _chunk_file(store, 1).write_bytes(b"\x00garbage" * 10)
    _chunk_file(store, 3).write_bytes(_chunk_file(store, 2).read_bytes())
    report = verify_store(store)
    kinds = {(p.kind, p.chunk) for p in report.problems}
    assert ("unreadable", 1) in kinds
    assert ("checksum", 3) in kinds
    recs = {p.chunk: p.recordings for p in report.problems}
    ds = open_store(store)
    rec_of = str_values(ds.recording.values)
    assert set(recs[1]) == set(rec_of[8:16])
    assert main(["verify", str(store)]) == 1
    assert "chunk 1" in capsys.readouterr().out


def test_verify_reports_table_inconsistency(store):
    g = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    n = g["recording_n_windows"][:]
    n[0] += 1
    g["recording_n_windows"][:] = n
    report = verify_store(store)
    assert not report.ok
    assert {p.kind for p in report.problems} >= {"table"}


@pytest.mark.timeout(120)
def test_labels_and_checks_never_go_through_a_default_dask_client(tiny_store):
    """A distributed Client that happens to be the default (a build's, a notebook's) must
    not receive the store's reads: they would ship every read to the cluster, and hang
    when that cluster is gone."""
    from distributed import Client, LocalCluster

    from eegstore.testing import assert_stores_equal
    from eegstore.torch import WindowDataset
    from eegstore.verify import verify_store

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        ds = open_store(tiny_store)
        assert ds.sizes["window"] > 0
        assert verify_store(tiny_store).ok
        assert_stores_equal(tiny_store, tiny_store)
        x, _y, _index = WindowDataset(ds)[0]
        assert x.shape[0] == ds.sizes["channel"]
        assert not cluster.scheduler.task_prefixes, sorted(cluster.scheduler.task_prefixes)
