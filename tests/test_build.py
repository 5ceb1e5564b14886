"""Building stores: start-kit parity, distributed S3 build, resume, skipped recordings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eegstore.build import build_store
from eegstore.errors import BuildError, ConfigError, SourceError
from eegstore.store import open_store, str_values
from eegstore.testing import assert_stores_equal
from eegstore.verify import verify_store

PY = sys.executable
SKIP_ATTRS = {"created", "updated", "versions", "source", "sources"}


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def ccd_tree(synth_mini_ccd) -> Path:
    """A synthetic release with CCD runs of 2 subjects."""
    return Path(synth_mini_ccd)


def _bids_root(tree: Path) -> Path:
    hits = sorted(p.parent for p in tree.rglob("participants.tsv"))
    return hits[0] if hits else tree


@pytest.fixture(scope="module")
def ccd_source(ccd_tree) -> str:
    return str(_bids_root(ccd_tree))


@pytest.fixture(scope="module")
def client():
    """One local cluster (two single-threaded worker processes) shared by this module's builds."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=40) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def built(ccd_source, client, tmp_path_factory):
    """A challenge1 float32 store (microvolts) built with two worker processes (the reference)."""
    store = tmp_path_factory.mktemp("built") / "ccd.zarr"
    report = build_store(ccd_source, store, "challenge1", subjects=2, scheduler=client,
                         chunk_windows=16, dtype="float32", progress=False)
    return store, report


# -------------------------------------------------------------- the build

def test_build_report_and_verify(built):
    store, report = built
    assert report.n_ok == report.n_recordings == 6
    assert report.n_windows > 50
    assert verify_store(store).ok
    ds = open_store(store)
    assert ds.attrs["recipe"]["name"] == "challenge1"
    assert ds.eeg.shape[1:] == (129, 200)
    assert ds.eeg.encoding["chunks"] == (16, 129, 200)
    np.testing.assert_allclose(ds.time.values[[0, -1]], [0.5, 2.49])
    assert not (store / "_staging").exists()


def test_text_coordinates_open_as_str_in_plain_xarray(built):
    import xarray as xr

    store, _ = built
    ds = xr.open_zarr(store)
    for name in ("subject", "recording", "channel", "recordings", "recording_status"):
        assert ds[name].dtype == object, name
        assert ds[name].values.astype(str).dtype.kind == "U", name
    assert set(ds.subject.values.astype(str)) == set(str_values(open_store(store).subject.values))
    assert pd.Series(ds.recording_status.values).str.len().min() == 2  # "ok"


def test_window_parity_with_start_kit(built, ccd_source):
    """Same windows, data, targets and membership as the start-kit braindecode pipeline."""
    import mne
    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.preprocessing import Preprocessor, create_windows_from_events, preprocess
    from eegdash.hbn.windows import (
        add_aux_anchors,
        add_extras_columns,
        annotate_trials_with_target,
        keep_only_recordings_with,
    )

    store, _ = built
    ds = open_store(store).load()
    paths = str_values(ds.recording_path.values)
    raws = [RawDataset(mne.io.read_raw_bdf(p, preload=True, verbose="error"),
                       description={"path": p}) for p in paths]
    concat = BaseConcatDataset(raws)
    preprocess(concat, [
        Preprocessor(annotate_trials_with_target, target_field="rt_from_stimulus",
                     epoch_length=2.0, require_stimulus=True, require_response=True,
                     apply_on_array=False),
        Preprocessor(add_aux_anchors, apply_on_array=False)], n_jobs=1)
    concat = keep_only_recordings_with("stimulus_anchor", concat)
    windows = create_windows_from_events(
        concat, mapping={"stimulus_anchor": 0}, trial_start_offset_samples=50,
        trial_stop_offset_samples=250, window_size_samples=200, window_stride_samples=100,
        preload=True)
    windows = add_extras_columns(windows, concat, desc="stimulus_anchor")
    rec_of_window = str_values(ds.recording.values)
    ids = str_values(ds.recordings.values)
    theirs, ours = set(), set()
    n = 0
    for wds in windows.datasets:
        rid = ids[list(paths).index(wds.description["path"])]
        sel = np.flatnonzero(rec_of_window == rid)
        md = wds.metadata
        assert len(sel) == len(md)
        # braindecode's windows in volts, the store's in microvolts (its attrs say so)
        assert ds.eeg.attrs["units"] == "uV"
        x = (np.stack([wds[i][0] for i in range(len(wds))]) * 1e6).astype(np.float32)
        np.testing.assert_allclose(ds.eeg.values[sel], x, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(ds.target.values[sel], md["target"].astype(float))
        np.testing.assert_array_equal(ds.correct.values[sel], md["correct"].astype(float))
        starts = np.round(ds.onset.values[sel] * 100).astype(int)
        np.testing.assert_array_equal(starts, md["i_start_in_trial"].to_numpy())
        theirs |= {(rid, int(s)) for s in md["i_start_in_trial"]}
        ours |= {(rid, int(s)) for s in starts}
        n += len(md)
    assert theirs == ours and n == ds.sizes["window"]


class _CountingStore:
    """Wraps a zarr store and records every key read."""

    @staticmethod
    def wrap(path):
        from zarr.storage import LocalStore, WrapperStore

        class Counting(WrapperStore):
            keys: list[str]

            async def get(self, key, prototype=None, byte_range=None):
                self.keys.append(key)
                return await self._store.get(key, prototype, byte_range)

            async def get_partial_values(self, prototype, key_ranges):
                key_ranges = list(key_ranges)
                self.keys.extend(k for k, _ in key_ranges)
                return await self._store.get_partial_values(prototype, key_ranges)

        s = Counting(LocalStore(str(path), read_only=True))
        s.keys = []
        return s


def test_coordinate_selection_reads_no_signal_chunks(built):
    import dask

    store, _ = built
    # compute in this process (not on the module's cluster) so that every read is counted
    with dask.config.set(scheduler="synchronous"):
        _check_selection_reads(store)


def _check_selection_reads(store):
    import xarray as xr

    counting = _CountingStore.wrap(store)
    ds = xr.open_zarr(counting, consolidated=True)
    subj = str_values(ds.subject.values)[0]
    mask = ((ds.subject == subj) & (ds.task == "contrastChangeDetection")
            & (ds.correct == 1.0)).values
    sub = ds.isel(window=np.flatnonzero(mask))
    assert len(sub.target.values) == mask.sum() > 0
    assert set(str_values(sub.subject.values)) == {subj}
    assert [k for k in counting.keys if k.startswith("subject/c")]
    assert not [k for k in counting.keys if k.startswith("eeg/c")]
    assert sub.eeg[:1].values.shape == (1, 129, 200)  # the guard can fail: this reads a chunk
    assert [k for k in counting.keys if k.startswith("eeg/c")]


def test_incremental_append_equals_full_build(built, ccd_source, client, tmp_path):
    store, _ = built
    inc = tmp_path / "inc.zarr"
    build_store(ccd_source, inc, "challenge1", subjects=1, scheduler=client, chunk_windows=16,
                dtype="float32", progress=False)
    first = open_store(inc)
    n_first = first.sizes["window"]
    k_full = n_first // 16
    chunk_files = {p: p.stat().st_mtime_ns for p in (inc / "eeg" / "c").rglob("*")
                   if p.is_file() and int(p.relative_to(inc / "eeg" / "c").parts[0]) < k_full}
    report = build_store(ccd_source, inc, "challenge1", subjects=2, scheduler=client,
                         dtype="float32", progress=False)
    assert report.n_new_windows == report.n_windows - n_first > 0
    assert_stores_equal(store, inc, ignore_attrs=SKIP_ATTRS)
    # full chunks written by the first build were not rewritten
    assert all(p.stat().st_mtime_ns == t for p, t in chunk_files.items())
    # the reader opened before the append still sees its consistent store
    assert first.sizes["window"] == n_first
    assert np.isfinite(first.eeg[-1].values).all()
    with pytest.raises(ConfigError, match="chunk_windows"):
        build_store(ccd_source, inc, "challenge1", subjects=2, chunk_windows=8,
                    dtype="float32", progress=False)
    with pytest.raises(ConfigError, match="dtype"):
        build_store(ccd_source, inc, "challenge1", subjects=2, dtype="float16", progress=False)
    with pytest.raises(ConfigError, match="units"):
        build_store(ccd_source, inc, "challenge1", subjects=2, dtype="float32", units="V",
                    progress=False)


def _with_legacy_text(store: Path) -> None:
    """Rewrite a store's text arrays with zarr's ``string`` data type, as builds once did."""
    import zarr

    from eegstore._io import decode_strings

    group = zarr.open_group(store, mode="r+", zarr_format=3, use_consolidated=False)
    for name, arr in list(group.arrays()):
        if "_Encoding" not in arr.attrs:
            continue
        values = decode_strings(arr[:]).astype(object)
        attrs = {k: v for k, v in arr.attrs.items() if k != "_Encoding"}
        new = group.create_array(name, shape=arr.shape, chunks=arr.chunks, dtype=str,
                                 fill_value="", dimension_names=[arr.metadata.to_dict()[
                                     "dimension_names"][0]], attributes=attrs, overwrite=True)
        new[:] = values
    zarr.consolidate_metadata(store, zarr_format=3)


def test_stores_with_zarr_string_text_open_and_extend(built, ccd_source, client, tmp_path):
    store, _ = built
    old = tmp_path / "old.zarr"
    build_store(ccd_source, old, "challenge1", subjects=1, scheduler=client, chunk_windows=16,
                dtype="float32", progress=False)
    _with_legacy_text(old)
    assert open_store(old).subject.dtype == object
    build_store(ccd_source, old, "challenge1", subjects=2, scheduler=client, dtype="float32",
                progress=False)
    import zarr

    assert zarr.open_group(old, mode="r")["subject"].dtype.kind == "T"  # extended as it was
    assert_stores_equal(store, old, ignore_attrs=SKIP_ATTRS)
    assert verify_store(old).ok


def test_resume_after_kill_equals_uninterrupted(built, ccd_source, client, tmp_path):
    store, _ = built
    out = tmp_path / "resumed.zarr"
    cmd = [PY, "-m", "eegstore", "build", ccd_source, str(out), "--recipe", "challenge1",
           "--subjects", "2", "--workers", "1", "--chunk-windows", "16", "--dtype", "float32",
           "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.glob("_staging/*/done.json"))) >= 2:
                break
            time.sleep(0.05)
    finally:
        finished = proc.poll() is not None
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not finished, f"the build ended (rc {proc.returncode}) before it was killed"
    n_done = len(list(out.glob("_staging/*/done.json")))
    assert 2 <= n_done < 6, "the build was not interrupted mid-way"
    # the same build again (in-process, on the shared cluster) finishes the store
    report = build_store(ccd_source, out, "challenge1", subjects=2, scheduler=client,
                         chunk_windows=16, dtype="float32", progress=False)
    assert report.n_ok == 6
    assert_stores_equal(store, out, ignore_attrs=SKIP_ATTRS)
    assert verify_store(out).ok


# --------------------------------------------------- distributed build into S3

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_cluster(tmp_path):
    """A loopback moto S3 server, a dask scheduler and two dask workers."""
    port = _free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1",
               FSSPEC_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    bindir = Path(PY).parent
    procs = [subprocess.Popen([str(bindir / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)]
    sched_file = tmp_path / "scheduler.json"
    procs.append(subprocess.Popen(
        [str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(sched_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(2):
            procs.append(subprocess.Popen(
                [str(bindir / "dask"), "worker", address, "--nthreads", "1",
                 "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
        from distributed import Client

        client = Client(address)
        client.wait_for_workers(2, timeout=60)
        import s3fs

        options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing",
                   "secret": "testing"}
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("eegstore-test")
        yield client, options
        client.close()
    finally:
        for p in reversed(procs):
            try:  # nothing to save: kill each process group (nanny + its worker)
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in procs:
            p.wait(timeout=30)


def test_distributed_build_into_s3_equals_local(ccd_source, client, s3_cluster, tmp_path):
    """dask scheduler + two dask workers writing to a loopback S3 == a local build."""
    remote_client, options = s3_cluster
    local = tmp_path / "local.zarr"
    build_store(ccd_source, local, "challenge1", subjects=1, scheduler=client,
                chunk_windows=16, progress=False)
    url = "s3://eegstore-test/ccd.zarr"
    report = build_store(ccd_source, url, "challenge1", subjects=1, scheduler=remote_client,
                         chunk_windows=16, progress=False, storage_options=options)
    assert report.n_ok == 3
    assert_stores_equal(local, open_store(url, storage_options=options), ignore_attrs=None)
    assert verify_store(url, storage_options=options).ok
    import s3fs

    assert not s3fs.S3FileSystem(**options).exists("eegstore-test/ccd.zarr/_staging")


# ------------------------------------------------------------- bad input

def test_skipped_recordings_with_reasons(ccd_source, client, tmp_path):
    from eegstore.synth import write_bdf

    src = tmp_path / "bad"
    shutil.copytree(ccd_source, src, ignore=shutil.ignore_patterns("*run-3*"))
    eeg_dirs = sorted(src.glob("sub-*/eeg"))
    a, b = eeg_dirs[0], eeg_dirs[1]
    # zero-byte recording
    (next(a.glob("*run-1_eeg.bdf"))).write_bytes(b"")
    # garbled events
    ev = next(a.glob("*run-2_events.tsv"))
    df = pd.read_csv(ev, sep="\t", dtype=str)
    df.loc[3, "onset"] = "abc"
    df.to_csv(ev, sep="\t", index=False)
    # wrong sfreq
    f = next(b.glob("*run-2_eeg.bdf"))
    write_bdf(f, np.zeros((129, 250 * 60)), 250.0, [f"E{i}" for i in range(1, 129)] + ["Cz"])
    side = f.with_name(f.name.replace("_eeg.bdf", "_eeg.json"))
    meta = json.loads(side.read_text())
    meta.update(SamplingFrequency=250, RecordingDuration=60.0)
    side.write_text(json.dumps(meta))
    report = build_store(str(src), tmp_path / "s.zarr", "challenge1", scheduler=client,
                         progress=False)
    reasons = report.skipped
    assert report.n_ok == 1, reasons
    by_run = {k.split("sub-")[1][:12] + k[-5:]: v for k, v in reasons.items()}
    assert len(reasons) == 3
    assert any("unreadable" in v for v in reasons.values()), reasons
    assert any("garbled events" in v for v in reasons.values()), reasons
    assert any("wrong sfreq: expected 100 Hz, got 250 Hz" in v for v in reasons.values()), by_run
    ds = open_store(tmp_path / "s.zarr")
    status = str_values(ds.recording_status.values)
    assert sorted(status) == ["ok", "skipped", "skipped", "skipped"]
    assert all(str_values(ds.recording_reason.values)[status == "skipped"])
    assert verify_store(tmp_path / "s.zarr").ok


def test_chunks_left_over_are_written_when_the_last_recording_is_skipped(ccd_source,
                                                                          tmp_path):
    import eegstore.build as build

    # one window per chunk: the ok recording's chunks fill whole phase-B tasks but for a
    # remainder, which must still go out when the (skipped) last recording is placed
    src = tmp_path / "src"
    shutil.copytree(ccd_source, src, ignore=shutil.ignore_patterns("*run-3*"))
    eeg = sorted(src.glob("sub-*/eeg"))[0]
    for d in sorted(src.glob("sub-*"))[1:]:
        shutil.rmtree(d)
    next(eeg.glob("*run-2_eeg.bdf")).write_bytes(b"")  # sorts last, skipped
    # one worker runs the recordings in sorted order: run-1 is placed first
    report = build_store(str(src), tmp_path / "s.zarr", "challenge1", workers=1,
                         chunk_windows=1, progress=False)
    assert report.n_ok == 1 and len(report.skipped) == 1
    assert report.n_windows % build.CHUNKS_PER_TASK != 0  # a remainder was left over
    result = verify_store(tmp_path / "s.zarr")
    assert result.ok, result
    ds = open_store(tmp_path / "s.zarr")
    assert ds.sizes["window"] == report.n_windows
    assert np.abs(ds.eeg.values).sum(axis=(1, 2)).min() > 0  # no chunk left unwritten


def test_nothing_usable_fails(ccd_source, client, tmp_path):
    from eegstore.preprocessing import PickChannels

    with pytest.raises(BuildError, match="expected at least one usable recording"):
        build_store(ccd_source, tmp_path / "none.zarr", "fixed", subjects=1, scheduler=client,
                    progress=False, preprocessing=(PickChannels(("NOPE",)),))
    assert not (tmp_path / "none.zarr" / "_staging").exists()
    assert client.submit(sum, [1, 2]).result() == 3  # the caller's client is left open


def test_own_cluster_is_closed_when_the_build_fails_early(tmp_path):
    import psutil

    # the build starts its LocalCluster while it looks for recordings; finding none, it
    # must not leave the cluster's processes behind
    (tmp_path / "empty").mkdir()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(SourceError, match="expected EEG recordings"):
        build_store(tmp_path / "empty", tmp_path / "s.zarr", "challenge2", workers=1,
                    progress=False)
    left = [p.cmdline() for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    # multiprocessing's resource tracker lives as long as this process, by design
    assert not [c for c in left if "resource_tracker" not in " ".join(c)]
    # ... and the thread that started (and closed) the cluster has finished
    assert not [t.name for t in threading.enumerate() if t.name.startswith("eegstore-dask")]


@pytest.mark.parametrize("args", [
    ["build", "{tmp}", "{tmp}/s.zarr"],  # no --recipe
    ["build", "{tmp}", "{tmp}/s.zarr", "--recipe", "x"],
    ["build", "{tmp}", "{tmp}/s.zarr", "--recipe", "fixed", "--workers", "0"],
    ["build", "{tmp}", "{tmp}/s.zarr", "--recipe", "challenge1", "--stride-s", "1"],
    ["build", "{tmp}", "{tmp}/s.zarr", "--recipe", "fixed", "--units", "mV"],
    ["build", "{tmp}", "{tmp}/s.zarr", "--recipe", "fixed", "--dtype", "float64"],
    ["info", "{tmp}/missing.zarr"],
], ids=["no-recipe", "unknown-recipe", "no-workers", "challenge1-stride", "unknown-units",
        "unknown-dtype", "info-of-nothing"])
def test_cli_misuse_is_one_line_and_exits_2(tmp_path, capsys, args):
    from eegstore.cli import main

    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err


def test_cli_verify_of_a_missing_store_fails_with_exit_1(tmp_path, capsys):
    from eegstore.cli import main

    assert main(["verify", str(tmp_path / "missing.zarr")]) == 1
    assert "structure" in capsys.readouterr().out


def test_challenge2_store_holds_float16_windows_labelled_from_participants(ccd_source, client,
                                                                          tmp_path):
    from eegstore.sources import discover_recordings

    recs = discover_recordings(ccd_source)
    rows = {r.subject: r.participant for r in recs}
    c2 = tmp_path / "c2.zarr"
    report = build_store(ccd_source, c2, "challenge2", recordings=recs[-1:], scheduler=client,
                         dtype="float16", compressor="zstd", progress=False)
    ds = open_store(c2)
    subj = str_values(ds.subject.values)[0]
    assert ds.eeg.dtype == np.float16 and ds.eeg.shape[1:] == (129, 400)
    assert report.n_windows == (recs[-1].n_times - 400) // 200 + 1
    assert np.all(ds.target.values == rows[subj]["externalizing"])
    assert np.all(ds.p_factor.values == rows[subj]["p_factor"])
    assert set(str_values(ds.sex.values)) == {rows[subj]["sex"]}
    assert verify_store(c2).ok


def test_fixed_store_records_its_recipe_and_preprocessing(ccd_source, client, tmp_path):
    from eegstore.preprocessing import BandPass, Resample
    from eegstore.recipes import FixedRecipe
    from eegstore.sources import discover_recordings

    recs = discover_recordings(ccd_source)
    fx = tmp_path / "fixed.zarr"
    recipe = FixedRecipe(window_s=1.0, stride_s=0.5)
    steps = (BandPass(1.0, 20.0), Resample(50.0))
    build_store(ccd_source, fx, recipe, recordings=recs[:1], scheduler=client,
                progress=False, preprocessing=steps)
    ds = open_store(fx)
    assert ds.attrs["sfreq"] == 50.0 and ds.eeg.shape[2] == 50
    assert ds.attrs["preprocessing"] == [s.to_dict() for s in steps]
    assert ds.attrs["recipe"] == recipe.to_dict()
    assert np.isnan(ds.target.values).all()


def test_bad_signals_and_duplicates_are_skipped(ccd_source, monkeypatch):
    """NaN/Inf samples, wrong channel count, duplicates (in-process cluster, memory store)."""
    from eegstore import sources

    recs = sources.discover_recordings(ccd_source)[:5]
    nan_id, inf_id, ch_id, loud_id = recs[0].id, recs[1].id, recs[2].id, recs[4].id
    real = sources.read_raw

    def fake_read_raw(rec, preload=True):
        raw = real(rec, preload=True)
        if rec.id == nan_id:
            raw._data[5, 100:110] = np.nan
        if rec.id == inf_id:
            raw._data[7, 10] = np.inf
        if rec.id == ch_id:
            raw.pick(raw.ch_names[:24])
        if rec.id == loud_id:  # 0.1 V = 1e5 uV: past float16's 65504
            raw._data[3, 50] = 0.1
        return raw

    monkeypatch.setattr(sources, "read_raw", fake_read_raw)
    dup = sources.Recording.from_dict({**recs[3].to_dict(), "path": recs[3].path + ".copy"})
    report = build_store("unused", "memory://bad-signals", "challenge2",
                         recordings=[*recs, dup], workers=1, progress=False)
    reasons = report.skipped
    assert report.n_ok == 1
    assert sum("NaN/Inf samples" in v for v in reasons.values()) == 2, reasons
    assert "overflow: expected amplitudes up to 65504 uV (float16), got 100000 uV" \
        in reasons[loud_id]
    assert any("wrong channel count: expected 129, got 24" in v for v in reasons.values())
    assert any(k.endswith("~dup1") and "duplicate recording" in v for k, v in reasons.items())
    ds = open_store("memory://bad-signals")
    assert ds.sizes["recordings"] == 6


@pytest.mark.parametrize(("dtype", "units", "scale"), [("float16", "uV", 1e6),
                                                       ("float32", "V", 1.0)])
def test_store_values_are_in_the_unit_its_attrs_state(ccd_source, dtype, units, scale):
    import mne
    import xarray as xr

    from eegstore.recipes import FixedRecipe
    from eegstore.sources import discover_recordings

    rec = discover_recordings(ccd_source)[0]
    url = f"memory://units-{units}"
    build_store("unused", url, FixedRecipe(window_s=2.0, stride_s=2.0), recordings=[rec],
                dtype=dtype, units=units, workers=1, progress=False)
    ds = xr.open_zarr(url, chunks=None)  # no dask: the module's cluster cannot see memory://
    assert ds.eeg.attrs["units"] == units and ds.eeg.dtype == np.dtype(dtype)
    volts = mne.io.read_raw(rec.path, preload=True, verbose="error").get_data()
    expected = (volts[:, :200] * scale).astype(dtype)
    np.testing.assert_array_equal(ds.eeg[0].values, expected)
