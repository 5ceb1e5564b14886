"""Build labelled Zarr stores from recordings, in parallel with Dask.

Design (every step is idempotent, so a killed build re-run with the same
command finishes with the same store as an uninterrupted one):

Phase A, one task per recording (holds one recording)
    read -> preprocess -> validate -> window; the samples the windows cover (store
    dtype, overlapping windows staged once) go to ``<store>/_staging/<recording>/``
    (``signal.npy``, and ``offsets.npy``: where each window starts in it) and the per-window
    coordinates plus status/reason to ``done.json``, written last and
    atomically (it marks the recording finished; skipped recordings get one
    too).  A re-run skips recordings with a ``done.json`` or already in the store.
Placement, on the client (:class:`eegstore.placement.Placer`)
    the committed store keeps its recordings and windows; the new recordings
    follow in sorted-id order, so window ranges are deterministic whatever order
    the workers finish in.  Recordings whose channels, sfreq or window length
    differ from the store's are skipped with that reason.
Phase B, one task per ``CHUNKS_PER_TASK`` output chunks, pipelined with phase A
    a chunk is ready once every recording sorted before its last window is
    staged; a task goes out as soon as enough ready chunks fill it (at a higher
    priority than the remaining phase-A tasks; the rest go once every
    recording is placed, split evenly between the workers); for each of its
    chunks it
    assembles the chunk from staging (and, for a trailing partial chunk of an
    existing store, its old windows), writes it, and records its CRC32 in
    ``_staging/chunks/<chunk>.json``.  No two tasks write the same chunk.  Once
    all chunks of a recording are written its staged windows are deleted, so
    staging holds a few recordings at a time.  A re-run of the same recordings
    skips recorded chunks; a re-run with another set discards the records and
    stages the consumed recordings again.
Phase C, on the client
    appends per-window coordinates and the per-recording table (as soon as every
    recording is placed, while the workers write the last chunks), then the
    CRCs, then commits: ONE atomic write of the root ``zarr.json`` carrying the
    attributes and the consolidated metadata (the new shapes); finally deletes
    staging.

The build's own LocalCluster starts in a background thread while the client
discovers recordings and inspects the store, and closes in the background
while phase C commits: neither needs the cluster.  Its workers are forked from a
forkserver that imports what they need while the client starts up
(:mod:`eegstore._forkserver`).

Readers open with consolidated metadata, which changes only at the commit, so
they never see half-written windows; a resumed build reads the committed state
the same way.  Chunk and metadata writes are atomic (zarr's LocalStore writes a
temporary file and renames it; an object-store PUT is atomic).  Builds of
``memory://`` stores run on an in-process cluster (threads).  Appending (another subject, another
release) never rewrites full chunks of an existing store; a trailing partial
chunk is rewritten once with its old windows unchanged plus new ones (its CRC
changes accordingly).

CLI: ``eegstore build SOURCE STORE --recipe {challenge1,challenge2,fixed} ...``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from eegstore import _forkserver
from eegstore._forkserver import MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES
from eegstore.errors import BuildError, ConfigError, RecordingError, StoreError
from eegstore.placement import TARGET_CHUNK_BYTES, ChunkJob, Placer, task_bounds
from eegstore.preprocessing import (
    BandPass,
    PickChannels,
    Preprocessor,
    Rereference,
    Resample,
    apply_steps,
    steps_from_dicts,
    steps_to_dicts,
)
from eegstore.recipes import RECIPES, Recipe, get_recipe, recipe_from_dict
from eegstore.schema import BASE_WINDOW_COORDS, RECORDING_VARS, SCHEMA_VERSION
from eegstore.store import get_fs, normalize_url, zarr_kwargs

__all__ = [
    "COMPRESSORS",
    "DEFAULT_COMPRESSOR",
    "TARGET_CHUNK_BYTES",
    "BuildReport",
    "build_store",
    "configure_parser",
    "run",
]

STAGING = "_staging"
#: A staged recording: the samples of its windows, and where each window starts in them.
STAGED_SIGNAL = "signal.npy"
STAGED_OFFSETS = "offsets.npy"
#: Folder in staging with one record per written chunk (for resuming).
CHUNK_RECORDS = "chunks"
#: Chunks written by one phase-B task.  Ready chunks wait until they fill a task (the
#: rest go once every recording is placed): fewer, longer tasks cost the client and the
#: Dask scheduler less CPU, which on a 2-core machine the workers need.  The price is
#: staged windows kept on disk for up to this many chunks longer.
CHUNKS_PER_TASK = 16
# The staging folder is deliberately not a zarr node; zarr warns whenever it lists the root.
warnings.filterwarnings("ignore", message=f"Object at {STAGING} is not recognized",
                        category=UserWarning)
#: Chunk length of per-window / per-recording / per-chunk coordinate arrays.
COORD_CHUNK = 65536
#: Compressor names accepted by ``build_store``.
COMPRESSORS = ("zstd", "blosc-zstd", "blosc-lz4", "gzip", "none")
#: Default compressor, chosen by the codec sweep of ``python -m benchmarks run``
#: (``benchmarks/results/results.md``): on windows of synthetic BDF recordings built
#: by ``eegstore build``, zstd level 1 reaches the ratio of zstd level 3 (about 2x)
#: with faster writes, and blosc-lz4 compresses far less.
#: ``float16`` (``--dtype``) roughly doubles the saving again.
DEFAULT_COMPRESSOR = "zstd"
DTYPES = ("float32", "float16")


def compressor_codecs(name: str) -> list[Any]:
    """Zarr v3 codecs of a compressor name in :data:`COMPRESSORS`.

    Parameters
    ----------
    name : str
        One of :data:`COMPRESSORS`.

    Returns
    -------
    list
        The codec objects (empty for ``"none"``).
    """
    import zarr.codecs as zc

    if name == "zstd":
        return [zc.ZstdCodec(level=1)]
    if name == "blosc-zstd":
        return [zc.BloscCodec(cname="zstd", clevel=5, shuffle=zc.BloscShuffle.shuffle)]
    if name == "blosc-lz4":
        return [zc.BloscCodec(cname="lz4", clevel=5, shuffle=zc.BloscShuffle.shuffle)]
    if name == "gzip":
        return [zc.GzipCodec(level=5)]
    if name == "none":
        return []
    raise ConfigError(f"expected a compressor in {list(COMPRESSORS)}, got {name!r}")


@dataclass
class BuildReport:
    """What a build did.

    Attributes
    ----------
    store : str
        The store URL.
    n_recordings, n_ok, n_skipped : int
        Recordings in the store's table after the build, usable, skipped.
    n_windows, n_new_windows : int
        Windows in the store, windows added by this build.
    n_dropped : int
        Windows dropped by this build because they ran past a recording's end.
    skipped : dict
        Recording id -> reason, for recordings skipped by this build.
    chunk_windows : int
        Windows per chunk.
    elapsed_s : float
        Wall time.
    dashboard : str or None
        The Dask dashboard link.
    """

    store: str
    n_recordings: int = 0
    n_ok: int = 0
    n_skipped: int = 0
    n_windows: int = 0
    n_new_windows: int = 0
    n_dropped: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    chunk_windows: int = 0
    elapsed_s: float = 0.0
    dashboard: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.store}: {self.n_windows} windows ({self.n_new_windows} new) from "
                f"{self.n_ok} recordings, {self.n_skipped} skipped, {self.n_dropped} windows "
                f"past a recording's end dropped, in {self.elapsed_s:.1f} s")


# --------------------------------------------------------------------- helpers

#: Environment variable naming a point where the build kills itself (crash tests):
#: ``stage:K`` after K recordings are staged, ``chunk:K`` after K chunks are written,
#: ``tables`` once every recording is placed and its coordinates and table rows are
#: written (the last chunks may still be in flight), ``coords`` after phase C wrote
#: everything but the root metadata, ``commit`` after the commit (before staging is
#: removed).
KILL_ENV = "EEGSTORE_TEST_KILL_AT"


def _maybe_kill(point: str) -> None:
    if os.environ.get(KILL_ENV) == point:
        import signal

        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _safe_name(rec_id: str) -> str:
    """Return a staging directory name for ``rec_id`` that cannot escape the staging folder."""
    name = _SAFE.sub("_", rec_id)
    if name != rec_id or name in ("", ".", "..") or name.startswith("."):
        name = "x" + name.lstrip(".") + "-" + hashlib.sha1(rec_id.encode()).hexdigest()[:10]
    return name


def _atomic_write(fs: Any, path: str, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing.

    On a local disk the file is written aside and renamed into place, which is
    atomic for every other process, also when the writer is killed.  ``durable``
    adds an ``fsync`` before the rename so that the file also survives a crash of
    the machine; staging records go without it (see the call sites).
    """
    if "file" in _protocols(fs):
        tmp = f"{path}.{os.getpid()}.partial"
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:  # object stores: a single PUT is atomic
        fs.pipe_file(path, data)


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _read_json(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return None  # torn or unreadable: treat as not written


def _stage_layout(starts: np.ndarray, window_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Where windows sit in a recording's staged signal: the union of the windows.

    Overlapping (or touching) windows share their samples, so a recording is staged
    once however much its windows overlap, and disjoint windows are staged back to
    back without the samples between them.

    Parameters
    ----------
    starts : ndarray of int
        First sample of each window in the recording, in any order.
    window_samples : int
        Samples per window.

    Returns
    -------
    runs : ndarray of int64, shape (n_runs, 2)
        ``[start, stop)`` sample ranges of the recording, in order, that are staged.
    offsets : ndarray of int64, shape (n_windows,)
        First sample of each window in the staged signal (the runs laid end to end).
    """
    w = int(window_samples)
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(starts, kind="stable")
    s = starts[order]
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > s[:-1] + w  # sorted: a window overlaps the run of the one before
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(s) - 1)
    runs = np.stack([s[first], s[last] + w], axis=1)
    lengths = runs[:, 1] - runs[:, 0]
    run_offset = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    run_of = np.cumsum(new) - 1
    offsets = np.empty(len(s), dtype=np.int64)
    offsets[order] = run_offset[run_of] + (s - runs[run_of, 0])
    return runs, offsets


def _save_signal(fs: Any, sdir: str, data: np.ndarray, starts: np.ndarray, w: int,
                 dtype: np.dtype[Any]) -> None:
    """Stage the samples of a recording's windows: ``signal.npy`` and ``offsets.npy``.

    ``signal.npy`` is ``(channel, samples)`` in the store dtype and holds the union of the
    windows (:func:`_stage_layout`); ``offsets.npy`` holds each window's first sample in
    it.  Overlapping windows (challenge2's 4 s windows at a 2 s stride) are staged once,
    which halves what a build writes to and reads back from staging.  One channel is
    cast and written at a time, so staging allocates no array the size of the recording.
    """
    runs, offsets = _stage_layout(starts, w)
    c = data.shape[0]
    n = int((runs[:, 1] - runs[:, 0]).sum())
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": (c, n)}
    row = np.empty(n, dtype=dtype)
    fs.makedirs(sdir, exist_ok=True)
    with fs.open(f"{sdir}/{STAGED_OFFSETS}", "wb") as fh:
        np.lib.format.write_array(fh, offsets, allow_pickle=False)
    with fs.open(f"{sdir}/{STAGED_SIGNAL}", "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, header)
        for ch in range(c):
            pos = 0
            for a, b in runs:
                row[pos:pos + b - a] = data[ch, a:b]
                pos += b - a
            fh.write(row.data)


def _npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)  # type: ignore[no-any-return]
    return np.lib.format.read_array_header_2_0(fh)  # type: ignore[no-any-return]


def _read_windows_into(fs: Any, sdir: str, start: int, out: np.ndarray) -> None:
    """Fill ``out`` with windows ``start:start + len(out)`` of a staged recording.

    Only the staged samples those windows span are read, one channel at a time,
    into a buffer the windows are then copied out of.
    """
    n_win = len(out)
    c, w = out.shape[1], out.shape[2]
    path = f"{sdir}/{STAGED_SIGNAL}"
    try:
        with fs.open(f"{sdir}/{STAGED_OFFSETS}", "rb") as fh:
            offsets = np.lib.format.read_array(fh, allow_pickle=False)[start:start + n_win]
        with fs.open(path, "rb") as fh:
            shape, fortran, dtype = _npy_header(fh)
            if fortran or len(shape) != 2 or shape[0] != c or dtype != out.dtype \
                    or len(offsets) != n_win or int(offsets.max()) + w > shape[1]:
                raise StoreError(f"expected a C-ordered {out.dtype} staged signal of {c} "
                                 f"channels holding windows {start}:{start + n_win} in {path}, "
                                 f"got {dtype} {tuple(shape)}; delete its done.json and re-run "
                                 "the build")
            a, b = int(offsets.min()), int(offsets.max()) + w
            buf = np.empty((c, b - a), dtype=dtype)
            base = fh.tell()
            for ch in range(c):
                fh.seek(base + (ch * int(shape[1]) + a) * dtype.itemsize)
                view = buf[ch].data.cast("B")
                got = 0
                while got < len(view):
                    k = fh.readinto(view[got:])
                    if not k:
                        raise StoreError(f"expected a whole staged signal in {path}, got a "
                                         "short file; delete its done.json and re-run the "
                                         "build")
                    got += k
    except FileNotFoundError:
        raise StoreError(f"expected staged windows in {sdir}, got none; delete its done.json "
                         "and re-run the build") from None
    for i, o in enumerate(offsets - a):
        out[i] = buf[:, o:o + w]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("eegstore", "numpy", "zarr", "xarray", "dask", "distributed", "mne",
                "eegdash", "braindecode"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, float | np.floating):
        return float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


# ------------------------------------------------------------------- phase A

def _stage_recording(rec: Any, *, config: dict[str, Any], store: str,
                     storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """Phase A task: window one recording into staging and return its ``done.json``."""
    from eegstore import sources

    fs, root = get_fs(store, storage_options)
    sdir = f"{root}/{STAGING}/{_safe_name(rec.id)}"
    done = _read_json(fs, f"{sdir}/done.json")
    if done is not None:
        return done
    recipe = recipe_from_dict(config["recipe"])
    steps = steps_from_dicts(config["preprocessing"])
    meta: dict[str, Any] = {"id": rec.id, "recording": _jsonable(rec.to_dict()),
                            "status": "skipped", "reason": "", "n_windows": 0, "n_dropped": 0}
    try:
        recipe.precheck(rec)
        try:
            raw = sources.read_raw(rec, preload=True)
        except MemoryError:
            raise
        except Exception as exc:  # any reader failure skips the recording
            msg = str(exc) if isinstance(exc, RecordingError) else f"{type(exc).__name__}: {exc}"
            raise RecordingError(f"unreadable recording: {msg}") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = apply_steps(raw, steps)
        sfreq = float(raw.info["sfreq"])
        ch_names = [str(c) for c in raw.ch_names]
        # the loaded array itself (get_data() would copy the whole recording)
        data = raw._data if isinstance(getattr(raw, "_data", None), np.ndarray) \
            else raw.get_data()
        if data.size == 0:
            raise RecordingError(f"no samples: expected a signal, got shape {data.shape}")
        # min/max: two passes without temporaries; NaN and +-Inf both show up in them
        lo, hi = float(np.min(data)), float(np.max(data))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            bad = int((~np.isfinite(data)).any(axis=0).sum())
            raise RecordingError(f"NaN/Inf samples: expected finite signals, got {bad} "
                                 "non-finite time points")
        if max(-lo, hi) > float(np.finfo(config["dtype"]).max):
            raise RecordingError(f"overflow: signals do not fit {config['dtype']}; "
                                 "use --dtype float32")
        events = None
        if recipe.needs_events():
            try:
                events = sources.read_events(rec)
            except Exception as exc:  # any events failure skips the recording
                msg = str(exc) if isinstance(exc, RecordingError) else \
                    f"{type(exc).__name__}: {exc}"
                missing = rec.events_path is None or isinstance(exc, FileNotFoundError)
                raise RecordingError(f"{'missing' if missing else 'garbled'} events: "
                                     f"{msg}") from None
        win = recipe.make_windows(data.shape[1], sfreq, data.shape[0], rec, events)
        if len(win) == 0:
            raise RecordingError(f"no windows: expected at least one, got none "
                                 f"({win.n_dropped} past the recording's end)")
        w = win.window_samples
        _save_signal(fs, sdir, data, np.asarray(win.starts), w, np.dtype(config["dtype"]))
        del data, raw
        meta.update(status="ok", n_windows=len(win), n_dropped=int(win.n_dropped), sfreq=sfreq,
                    channels=ch_names,
                    window_samples=int(w), dtype=config["dtype"],
                    coords={k: _jsonable(v) for k, v in win.coords.items()})
    except RecordingError as exc:
        meta["reason"] = str(exc)
    fs.makedirs(sdir, exist_ok=True)
    # not fsynced: neither are the staged windows it vouches for (a machine crash can
    # lose both; a killed worker or client loses neither), and a flush per recording
    # left the worker waiting on the disk
    _atomic_write(fs, f"{sdir}/done.json", json.dumps(meta).encode(), durable=False)
    return meta


# ------------------------------------------------------------------- phase B

def _write_chunks(jobs: list[ChunkJob], signatures: list[str], *, store: str,
                  storage_options: dict[str, Any] | None, chunk_windows: int,
                  shape_tail: tuple[int, int], dtype: str) -> list[tuple[int, int]]:
    """Phase B task: assemble and write output chunks, one at a time; return their CRC32s.

    After each chunk, a record ``_staging/chunks/<chunk>.json`` (its CRC and the
    signature of its contents) lets a resumed build skip it.
    """
    import zarr

    fs, root = get_fs(store, storage_options)
    # chunks hold signal and are all zeros (the fill value) next to never: zarr's default
    # test of each chunk for that (to skip writing it) costs a full pass over the chunk
    arr = zarr.open_array(**zarr_kwargs(store, storage_options), path="eeg",
                          mode="r+").with_config({"write_empty_chunks": True})
    out = []
    for job, signature in zip(jobs, signatures, strict=True):
        block = np.empty((job.n_windows, *shape_tail), dtype=dtype)
        start = job.chunk * chunk_windows
        for source, src_start, src_stop, dst in job.segments:
            rows = block[dst:dst + src_stop - src_start]
            if source == "":  # the committed windows of a trailing partial chunk
                rows[...] = arr[start + dst:start + dst + len(rows)]
            else:
                _read_windows_into(fs, f"{root}/{STAGING}/{source}", src_start, rows)
        arr[start:start + job.n_windows] = block
        crc = zlib.crc32(block.data) & 0xFFFFFFFF  # C-contiguous: no copy
        _atomic_write(fs, f"{root}/{STAGING}/{CHUNK_RECORDS}/{job.chunk}.json",
                      json.dumps({"chunk": job.chunk, "crc32": crc,
                                  "signature": signature}).encode(),
                      durable=False)  # as the chunk it describes (see done.json)
        out.append((job.chunk, crc))
    return out


# ---------------------------------------------------------------- the build

def _array(group: Any, name: str) -> Any:
    """``group[name]`` as a zarr array (StoreError when missing or not an array)."""
    import zarr

    try:
        arr = group[name]
    except KeyError:
        raise StoreError(f"expected an array {name!r} in the store, got none; the store is "
                         "damaged or not an eegstore store") from None
    if not isinstance(arr, zarr.Array):
        raise StoreError(f"expected {name!r} to be an array, got a group")
    return arr


def _committed(store: str, storage_options: dict[str, Any] | None) -> dict[str, Any] | None:
    """Describe the store as its consolidated metadata does (None for a new store)."""
    import zarr

    fs, root = get_fs(store, storage_options)
    meta = _read_json(fs, f"{root}/zarr.json")
    if meta is None or not meta.get("consolidated_metadata"):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = zarr.open_consolidated(**zarr_kwargs(store, storage_options, True), mode="r",
                                   zarr_format=3)
    eeg = _array(g, "eeg")
    recs = _array(g, "recordings")
    n_rec = recs.shape[0]
    status = [str(x) for x in np.asarray(_array(g, "recording_status")[:n_rec]).tolist()]
    attrs = dict(g.attrs)
    return {
        "n_windows": int(eeg.shape[0]),
        "shape_tail": (int(eeg.shape[1]), int(eeg.shape[2])),
        "chunk_windows": int(eeg.chunks[0]),
        "dtype": str(eeg.dtype),
        "ids": [str(x) for x in np.asarray(recs[:n_rec]).tolist()] if n_rec else [],
        "n_chunks": int(_array(g, "chunk_crc32").shape[0]),
        "channels": [str(x) for x in np.asarray(_array(g, "channel")[:]).tolist()],
        "n_ok": sum(1 for x in status if x == "ok"),
        "attrs": attrs,
    }


def _check_compatible(committed: dict[str, Any], config: dict[str, Any],
                      chunk_windows: int | None) -> None:
    attrs = committed["attrs"]
    for key in ("recipe", "preprocessing"):
        if json.dumps(attrs.get(key), sort_keys=True) != json.dumps(config[key],
                                                                  sort_keys=True):
            raise ConfigError(f"expected the store's {key} {attrs.get(key)}, got "
                              f"{config[key]}; build into a new store")
    if committed["dtype"] != config["dtype"]:
        raise ConfigError(f"expected the store's dtype {committed['dtype']}, got "
                          f"{config['dtype']}; build into a new store")
    if chunk_windows is not None and chunk_windows != committed["chunk_windows"]:
        raise ConfigError(f"expected the store's chunk_windows {committed['chunk_windows']}, "
                          f"got {chunk_windows}; omit --chunk-windows or use a new store")


#: Dask settings of the build's own LocalCluster.  Each build task runs for a fraction of
#: a second to seconds, so the statistical profiler (100 stack samples a second in every
#: worker), the 20 ms event-loop tick and the fast memory/system monitors cost CPU that
#: the workers need on a machine with as many cores as workers.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}

#: glibc malloc settings of the build's own worker processes when they are spawned
#: (added to Dask's ``distributed.nanny.pre-spawn-environ``; forked ones get them from
#: :mod:`eegstore._forkserver`).  Dask sets ``MALLOC_TRIM_THRESHOLD_`` to 64 KiB, which
#: also freezes glibc's mmap threshold at 128 KiB: every recording-sized array (and
#: every chunk buffer) is then a fresh mmap whose pages the kernel faults in and zeroes
#: one by one, for every recording.  In the build suite of ``python -m benchmarks run``
#: these settings cut a build's CPU time by about a quarter and raised its peak memory
#: by about 60 MB per worker.
WORKER_MALLOC_ENV: dict[str, int] = {
    "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD_BYTES,
    "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD_BYTES,
}


def _get_client(workers: int, scheduler: Any, store: str, *, forkserver: bool = False
                ) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if isinstance(scheduler, Client):
            return scheduler, None
        return Client(scheduler), None
    import dask

    processes = not store.startswith("memory://")  # memory:// lives in one process
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}),
               **WORKER_MALLOC_ENV}
    method: dict[str, Any] = {}
    if processes and forkserver:
        import distributed.utils as du

        # Dask would otherwise import numpy, pandas and lz4 here (two seconds) only to
        # name them as preloads of a forkserver that is running already
        if getattr(du, "_forkserver_preload_set", None) is False:
            du._forkserver_preload_set = True
        method = {"distributed.worker.multiprocessing-method": "forkserver"}
    with dask.config.set({**LOCAL_CLUSTER_CONFIG, **method,
                          "distributed.nanny.pre-spawn-environ": environ}):
        # only critical logs: a worker whose heartbeat races the scheduler's shutdown logs
        # a harmless CommClosedError traceback at ERROR level after a successful build,
        # while a failing task reaches the client (and the build's error message) anyway
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                               dashboard_address=":0", silence_logs=logging.CRITICAL)
    return Client(cluster), cluster


class _DaskSession:
    """The build's Dask client, started and closed in a background thread.

    Starting a LocalCluster (forking workers from :mod:`eegstore._forkserver`, whose
    imports start at once) takes about a second, as does closing it; both overlap
    with the client's own work (discovering recordings and inspecting the store
    before, the commit after), which does not need the cluster.  A client or
    cluster that was never needed is closed unused.
    """

    def __init__(self, workers: int, scheduler: Any, store: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        # a caller's Client is not ours to close; a caller cannot hold one unless
        # distributed is imported already (importing it is left to the background thread)
        dist = sys.modules.get("distributed")
        self._owns_client = dist is None or not isinstance(scheduler, dist.Client)
        own = scheduler is None and not store.startswith("memory://")
        forkserver = own and _forkserver.start()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eegstore-dask")
        self._started = self._pool.submit(_get_client, workers, scheduler, store,
                                          forkserver=forkserver)
        self._closing: Any = None

    def client(self) -> Any:
        """Return the client once the cluster is up (raise what starting it raised)."""
        return self._started.result()[0]

    def _close(self) -> None:
        try:
            client, cluster = self._started.result()
        except Exception:  # never started: nothing to close
            return
        if self._owns_client:  # ours (a LocalCluster's, or one we connected to an address)
            client.close()
        if cluster is not None:
            cluster.close()

    def close(self, *, wait: bool = False) -> None:
        """Close the client and cluster (once), in the background unless ``wait``."""
        if self._closing is None:
            self._closing = self._pool.submit(self._close)
        if wait:
            self._pool.shutdown(wait=True)
            self._closing.result()


def _dedupe(recordings: Sequence[Any]) -> tuple[list[Any], dict[str, str]]:
    seen: dict[str, Any] = {}
    dup_reasons: dict[str, str] = {}
    for rec in sorted(recordings, key=lambda r: (r.id, str(r.path))):
        if rec.id in seen:
            k = 1
            while f"{rec.id}~dup{k}" in dup_reasons:
                k += 1
            dup_reasons[f"{rec.id}~dup{k}"] = (f"duplicate recording: {rec.path} has the same "
                                               f"id as {seen[rec.id].path}")
        else:
            seen[rec.id] = rec
    return list(seen.values()), dup_reasons


def build_store(
    source: Any,
    store: str | os.PathLike[str],
    recipe: str | Recipe = "challenge1",
    *,
    tasks: Sequence[str] | None = None,
    subjects: Any = None,
    workers: int = 2,
    scheduler: Any = None,
    chunk_windows: int | None = None,
    dtype: str = "float32",
    compressor: str = DEFAULT_COMPRESSOR,
    preprocessing: Sequence[Preprocessor] = (),
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    recordings: Sequence[Any] | None = None,
) -> BuildReport:
    """Build (or extend, or resume) a labelled Zarr store from recordings.

    Parameters
    ----------
    source : str or Path
        Local BIDS directory or ``eegdash:RN[-mini]``.
    store : str or Path
        Output: local path or fsspec URL (``s3://bucket/x.zarr``, ``memory://x``).
    recipe : str or Recipe
        ``"challenge1"``, ``"challenge2"``, ``"fixed"`` or a recipe object.
    tasks : sequence of str, optional
        Tasks to include (default: the recipe's, all for challenge2/fixed).
    subjects : optional
        Passed to :func:`eegstore.sources.discover_recordings` (limit of subjects).
    workers : int
        Worker processes of the LocalCluster (ignored with ``scheduler``).
    scheduler : str or distributed.Client, optional
        Address of (or client to) an existing Dask cluster.
    chunk_windows : int, optional
        Windows per chunk (default: ~8 MiB uncompressed chunks).
    dtype : {"float32", "float16"}
        Storage dtype of ``eeg`` (volts).
    compressor : str
        One of :data:`COMPRESSORS`.
    preprocessing : sequence of Preprocessor
        Steps applied to every recording, in order.
    progress : bool
        Show tqdm progress bars and print the dashboard link.
    storage_options : mapping, optional
        fsspec options of the store URL.
    recordings : sequence of Recording, optional
        Use these instead of discovering them from ``source``.

    Returns
    -------
    BuildReport

    Raises
    ------
    ConfigError
        Bad options, or options incompatible with an existing store.
    BuildError
        No usable recording at all.
    """
    t0 = time.perf_counter()
    rcp = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(rcp, Recipe):
        raise ConfigError(f"expected a recipe name in {sorted(RECIPES)} or a Recipe, got "
                          f"{type(recipe).__name__}")
    if dtype not in DTYPES:
        raise ConfigError(f"expected dtype in {list(DTYPES)}, got {dtype!r}")
    compressor_codecs(compressor)
    if chunk_windows is not None and (not isinstance(chunk_windows, int) or chunk_windows < 1):
        raise ConfigError(f"expected a positive chunk_windows, got {chunk_windows!r}")
    if int(workers) < 1:
        raise ConfigError(f"expected workers >= 1, got {workers}")
    url = normalize_url(os.fspath(store))
    so = dict(storage_options or {}) or None
    config = {"recipe": rcp.to_dict(), "preprocessing": steps_to_dicts(preprocessing),
              "dtype": dtype, "compressor": compressor}

    # the Dask cluster starts in the background while the inputs are inspected
    dask = _DaskSession(int(workers), scheduler, url)
    try:
        report = BuildReport(store=url)
        plan, metas = _build(dask, report, source, url, so, config, rcp, recordings, tasks,
                             subjects, chunk_windows, progress)
    finally:
        dask.close(wait=True)
    report.n_recordings = plan["n_recordings_total"]
    report.n_ok = plan["n_ok_total"]
    report.n_skipped = report.n_recordings - report.n_ok
    report.n_windows = plan["n_windows_total"]
    report.n_new_windows = plan["new_windows"]
    report.n_dropped = sum(int(m.get("n_dropped", 0)) for m in metas.values())
    report.skipped = {rid: reason for rid, status, reason in plan["new_rows"]
                      if status != "ok"}
    report.chunk_windows = plan["chunk_windows"]
    report.elapsed_s = time.perf_counter() - t0
    return report


def _build(dask: _DaskSession, report: BuildReport, source: Any, url: str,
           so: dict[str, Any] | None, config: dict[str, Any], rcp: Recipe,
           recordings: Sequence[Any] | None, tasks: Sequence[str] | None, subjects: Any,
           chunk_windows: int | None, progress: bool
           ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Run :func:`build_store` after its checks: discover, stage and write, commit."""
    if recordings is None:
        recordings = _discover(source, tasks or rcp.default_tasks, subjects)
    recs, dup_reasons = _dedupe(recordings)
    if not recs:
        raise BuildError(f"expected recordings in {source}, got none"
                         + (f" for tasks {list(tasks)}" if tasks else ""))

    fs, root = get_fs(url, so)
    committed = _committed(url, so)
    if committed is not None:
        _check_compatible(committed, config, chunk_windows)
    fs.makedirs(f"{root}/{STAGING}", exist_ok=True)
    cfg_path = f"{root}/{STAGING}/config.json"
    staged_cfg = _read_json(fs, cfg_path)
    if staged_cfg is not None and staged_cfg != json.loads(json.dumps(config)):
        raise ConfigError(f"expected the options of the interrupted build in {url} "
                          f"({staged_cfg}), got {config}; re-run it with the same options "
                          f"or delete {url}/{STAGING}")
    if staged_cfg is None:
        _atomic_write(fs, cfg_path, json.dumps(config).encode())

    done_ids = set(committed["ids"]) if committed else set()
    todo = [r for r in recs if r.id not in done_ids]
    dup_reasons = {k: v for k, v in dup_reasons.items() if k not in done_ids}
    client = None
    if todo:
        client = dask.client()
        report.dashboard = client.dashboard_link
        if progress and report.dashboard:
            print(f"dask dashboard: {report.dashboard}", file=sys.stderr)
    tables_written = False

    def write_tables(metas: dict[str, dict[str, Any]], placer: Placer) -> None:
        nonlocal tables_written
        plan = _plan_of(placer, committed)
        if _phase_c_due(plan, committed):
            _write_tables(plan, committed, metas, url, so, rcp)
            tables_written = True
            _maybe_kill("tables")

    metas, placer, crcs = _run_pipeline(client, todo, dup_reasons, committed, config, url,
                                        so, chunk_windows, progress, on_placed=write_tables)
    dask.close()  # in the background, while the client commits
    plan = _plan_of(placer, committed)
    if plan["n_ok_total"] == 0:
        fs.rm(f"{root}/{STAGING}", recursive=True)
        reasons = sorted({m.get("reason", "") for m in metas.values()})[:5]
        raise BuildError(f"expected at least one usable recording, got none of "
                         f"{len(recs)}; reasons: {'; '.join(reasons)}")
    if _phase_c_due(plan, committed):
        _phase_c(plan, committed, metas, crcs, url, so, config, rcp, source,
                 tables_written=tables_written)
    fs.rm(f"{root}/{STAGING}", recursive=True)
    return plan, metas


def _discover(source: Any, tasks: Sequence[str] | None, subjects: Any) -> list[Any]:
    """List the recordings of ``source``; ``subjects``: labels, or N for the first N sorted."""
    from eegstore.sources import discover_recordings

    if isinstance(subjects, int) and not isinstance(subjects, bool):
        if subjects < 1:
            raise ConfigError(f"expected subjects >= 1, got {subjects}")
        recs = discover_recordings(source, tasks=tasks)
        keep = set(sorted({r.subject for r in recs})[:subjects])
        return [r for r in recs if r.subject in keep]
    return list(discover_recordings(source, tasks=tasks, subjects=subjects))


def _compact(meta: dict[str, Any]) -> dict[str, Any]:
    """Return a staged recording's metadata with its per-window coordinates as numpy arrays."""
    coords = meta.get("coords")
    if coords:
        meta = {**meta, "coords": {k: np.asarray(v) for k, v in coords.items()}}
    return meta


def _ls(fs: Any, path: str) -> list[str]:
    """Entries of ``path`` (none when it does not exist, as for empty object-store prefixes)."""
    try:
        return [str(p) for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []


def _resume_records(fs: Any, root: str, ids: Sequence[str], n_old: int
                    ) -> dict[int, dict[str, Any]]:
    """Chunk records of an interrupted build of the same recordings (else none).

    The staging folder remembers which recordings the build had (``todo.json``).
    When a re-run has another set, chunk records no longer describe the chunks
    it will write, and recordings whose staged windows were already consumed
    (deleted after their chunks were written) must be staged again.
    """
    sdir = f"{root}/{STAGING}"
    rdir = f"{sdir}/{CHUNK_RECORDS}"
    signature = hashlib.sha1(json.dumps([int(n_old), sorted(ids)]).encode()).hexdigest()
    prev = _read_json(fs, f"{sdir}/todo.json")
    if prev is not None and prev.get("signature") != signature:
        if fs.exists(rdir):
            fs.rm(rdir, recursive=True)
        for d in _ls(fs, sdir):
            d = d.rstrip("/")
            done = _read_json(fs, f"{d}/done.json") if fs.isdir(d) else None
            if done is not None and done.get("status") == "ok" \
                    and not fs.exists(f"{d}/{STAGED_SIGNAL}"):
                fs.rm(f"{d}/done.json")
    if prev is None or prev.get("signature") != signature:
        _atomic_write(fs, f"{sdir}/todo.json", json.dumps({"signature": signature}).encode())
    fs.makedirs(rdir, exist_ok=True)
    records: dict[int, dict[str, Any]] = {}
    for path in _ls(fs, rdir):
        rec = _read_json(fs, path) if path.endswith(".json") else None
        if rec is not None and "chunk" in rec and "crc32" in rec:
            records[int(rec["chunk"])] = rec
    return records


def _open_eeg(url: str, so: dict[str, Any] | None, placer: Placer, committed: Any,
              config: dict[str, Any]) -> tuple[Any, bool]:
    """Open (or create) the ``eeg`` array to write into; also say if it is new."""
    import zarr

    k = int(placer.k or 1)
    c_, t_ = placer.shape_tail
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if committed is not None:
            return zarr.open_array(**zarr_kwargs(url, so), path="eeg", mode="r+"), False
        root = zarr.open_group(**zarr_kwargs(url, so), mode="a", zarr_format=3,
                               use_consolidated=False)
        arr: Any = _array(root, "eeg") if "eeg" in root else None
        if arr is not None and arr.chunks[0] == k and tuple(arr.shape[1:]) == (c_, t_) \
                and str(arr.dtype) == config["dtype"]:
            return arr, False  # an interrupted build's array: its chunks are reused
        arr = root.create_array("eeg", shape=(0, c_, t_), chunks=(k, c_, t_),
                                dtype=config["dtype"],
                                compressors=compressor_codecs(config["compressor"]),
                                fill_value=0.0, dimension_names=["window", "channel", "time"],
                                overwrite=True)
        return arr, True


def _run_pipeline(client: Any, todo: list[Any], dup_reasons: dict[str, str],
                  committed: dict[str, Any] | None, config: dict[str, Any], url: str,
                  so: dict[str, Any] | None, chunk_windows: int | None, progress: bool,
                  on_placed: Callable[[dict[str, dict[str, Any]], Placer], None] | None = None,
                  ) -> tuple[dict[str, dict[str, Any]], Placer, dict[int, int]]:
    """Phases A and B, pipelined: stage recordings, write each chunk once it is placed.

    Recordings are submitted in sorted-id order; as soon as the recordings sorted
    before a chunk's last window are staged, the chunk is fixed (:class:`Placer`)
    and written at a higher priority than the remaining staging tasks.  A staged
    recording's windows are deleted once all its chunks are written, so staging
    holds few recordings at a time and rarely reaches the disk.  ``on_placed``
    runs on the client once every recording is staged and placed, while the
    workers write the last chunks.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    fs, root = get_fs(url, so)
    n_old = int(committed["n_windows"]) if committed else 0
    ref = None
    if committed:
        ref = {"channels": committed["channels"], "window_samples": committed["shape_tail"][1],
               "sfreq": float(committed["attrs"]["sfreq"])}
        chunk_windows = int(committed["chunk_windows"])
    ids = [r.id for r in todo] + list(dup_reasons)
    placer = Placer(ids, n_old=n_old, ref=ref, chunk_windows=chunk_windows,
                    dtype=config["dtype"], name=_safe_name)
    records = _resume_records(fs, root, ids, n_old)
    for rid, reason in dup_reasons.items():
        placer.offer(rid, {"status": "skipped", "reason": reason})
    metas: dict[str, dict[str, Any]] = {}
    crcs: dict[int, int] = {}
    remaining: dict[str, int] = {}  # staging name -> chunks of it not written yet
    jobs: dict[str, list[ChunkJob]] = {}  # future key -> the chunks it writes
    waiting: list[tuple[ChunkJob, str]] = []  # chunks to write, not submitted yet
    arr: Any = None  # the eeg array, opened when the first chunk is ready
    written = 0  # chunks written by this run's tasks (kill points count them)
    slots = 1  # tasks the cluster runs at once
    ac = as_completed(loop=client.loop, with_results=True) if client is not None \
        else None
    rec_bar = tqdm(total=len(todo), desc="recordings", unit="rec", disable=not progress)
    chunk_bar = tqdm(total=0, desc="chunks", unit="chunk", disable=not progress)

    def chunk_done(job: ChunkJob, crc: int) -> None:
        crcs[job.chunk] = crc
        chunk_bar.update(1)
        for name in set(job.sources):
            remaining[name] -= 1
            if remaining[name] == 0:  # every window of it is in the store now
                for staged in (STAGED_SIGNAL, STAGED_OFFSETS):
                    try:
                        fs.rm(f"{root}/{STAGING}/{name}/{staged}")
                    except FileNotFoundError:
                        pass

    def schedule() -> None:
        nonlocal arr
        for rid, first, n in placer.advance():
            remaining[_safe_name(rid)] = len(placer.chunks_of(first, n))
        ready = placer.ready_chunks()
        k = int(placer.k or 1)
        if ready:
            if arr is None:
                arr, fresh = _open_eeg(url, so, placer, committed, config)
                if fresh:
                    records.clear()
            end = ready[-1].chunk * k + ready[-1].n_windows
            if arr.shape[0] < end:
                arr.resize((end, *placer.shape_tail))
            context = [n_old, k, list(placer.shape_tail), config["dtype"],
                       config["compressor"]]
            chunk_bar.total = (chunk_bar.total or 0) + len(ready)
            chunk_bar.refresh()
            for job in ready:
                signature = job.signature(context)
                rec = records.get(job.chunk)
                if rec is not None and rec.get("signature") == signature:
                    chunk_done(job, int(rec["crc32"]))  # written before the interruption
                else:
                    waiting.append((job, signature))
        # whole groups only (the rest once every recording is placed): fewer, longer tasks
        g = CHUNKS_PER_TASK
        n_send = len(waiting) if placer.complete else len(waiting) - len(waiting) % g
        if not n_send:
            return
        send, waiting[:n_send] = waiting[:n_send], []
        bounds = task_bounds(n_send, g, slots=slots, last=placer.complete)
        groups = [[j for j, _ in send[a:b]] for a, b in bounds]
        signatures = [[sig for _, sig in send[a:b]] for a, b in bounds]
        # one graph update for the batch, ahead of the staging tasks
        futs = client.map(_write_chunks, groups, signatures,
                          store=url, storage_options=so, chunk_windows=k,
                          shape_tail=placer.shape_tail, dtype=config["dtype"], pure=False,
                          priority=10, key=[f"chunks-{grp[0].chunk}-{time.time_ns()}"
                                            for grp in groups])
        for fut, grp in zip(futs, groups, strict=True):
            jobs[fut.key] = grp
        if ac is not None:
            ac.update(futs)

    try:
        if ac is None:  # nothing to stage (only duplicates of committed recordings)
            schedule()
            return metas, placer, crcs
        slots = max(1, sum(client.nthreads().values()))
        # sorted by id, so placement advances as they finish; one graph update
        ac.update(client.map(_stage_recording, todo, config=config, store=url,
                             storage_options=so, pure=False,
                             key=[f"stage-{_safe_name(r.id)}-{time.time_ns()}" for r in todo]))
        schedule()
        for fut, result in ac:  # results gathered on the client's event loop
            if fut.status != "finished":
                fut.result()  # raises the task's error
            fut.release()
            group = jobs.pop(fut.key, None)
            if group is not None:
                for job, (_c, crc) in zip(group, result, strict=True):
                    chunk_done(job, int(crc))
                    written += 1
                    _maybe_kill(f"chunk:{written}")
                continue
            meta = _compact(result)
            metas[meta["id"]] = meta
            placer.offer(meta["id"], meta)
            rec_bar.update(1)
            _maybe_kill(f"stage:{len(metas)}")
            schedule()
            if placer.complete and on_placed is not None:
                on_placed(metas, placer)
                on_placed = None  # once
        if arr is not None and arr.shape[0] != placer.n_total:
            arr.resize((placer.n_total, *placer.shape_tail))
    finally:
        rec_bar.close()
        chunk_bar.close()
    return metas, placer, crcs


def _plan_of(placer: Placer, committed: dict[str, Any] | None) -> dict[str, Any]:
    """Describe the finished placement as phase C and the report need it."""
    n_old = placer.n_old
    return {
        "n_old": n_old, "n_total": placer.n_total, "new_windows": placer.n_total - n_old,
        "placed": list(placer.placed), "new_rows": list(placer.rows), "ref": placer.ref,
        "shape_tail": placer.shape_tail, "chunk_windows": int(placer.k or 1),
        "n_ok_total": (int(committed["n_ok"]) if committed else 0) + len(placer.placed),
        "n_recordings_total": (len(committed["ids"]) if committed else 0) + len(placer.rows),
        "n_windows_total": placer.n_total,
    }


def _phase_c_due(plan: dict[str, Any], committed: dict[str, Any] | None) -> bool:
    """Whether phase C writes anything: usable windows, and a new store or new table rows."""
    return bool(plan["n_ok_total"]) and (committed is None or bool(plan["new_rows"]))


def _write_1d(root: Any, name: str, dim: str, values: np.ndarray, start: int,
              kind: str, attrs: dict[str, Any] | None = None) -> None:
    """Create or extend a 1-d array ``name`` so that ``[start:start+len(values)]`` = values."""
    n = start + len(values)
    if kind == "U":
        dtype: Any = str
        fill: Any = ""
        # an object array of str, as zarr's variable-length strings take it: 8 bytes per
        # value (references; equal values often share one str), where a fixed-width
        # numpy string array holds 4 bytes per character of the longest value
        values = np.asarray([str(v) for v in values], dtype=object) if len(values) \
            else np.zeros(0, dtype=str)
    elif kind == "i":
        dtype, fill = "int64", 0
        values = np.asarray(values, dtype=np.int64)
    else:
        dtype, fill = "float64", math.nan
        values = np.asarray(values, dtype=np.float64)
    arr = root[name] if name in root else None
    if arr is not None and arr.shape[0] != n:
        arr.resize((n,))
    if arr is None:
        arr = root.create_array(name, shape=(n,), chunks=(COORD_CHUNK,), dtype=dtype,
                                fill_value=fill, dimension_names=[dim], overwrite=True,
                                attributes=attrs or {})
    if len(values):
        arr[start:n] = values


def _open_root(url: str, so: dict[str, Any] | None) -> Any:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_group(**zarr_kwargs(url, so), mode="a", zarr_format=3,
                               use_consolidated=False)


def _window_coord_kinds(rcp: Recipe) -> dict[str, str]:
    kinds = dict(BASE_WINDOW_COORDS)
    kinds.update(rcp.extra_coords())
    return kinds


def _coord_piece(meta: dict[str, Any], rid: str, name: str, kind: str, n: int) -> np.ndarray:
    """Coordinate ``name`` of the ``n`` windows of one staged recording (``meta``)."""
    r = meta["recording"]
    const = {"subject": r.get("subject", ""), "session": r.get("session", "") or "",
             "task": r.get("task", ""), "run": r.get("run", "") or "",
             "release": r.get("release", "") or "", "recording": rid}
    if name in const:
        return np.full(n, const[name], dtype=object)  # n references to one value
    vals = meta["coords"].get(name)
    if vals is None:
        return np.full(n, math.nan) if kind == "f" else np.full(n, "", dtype=object)
    if kind == "f":
        return np.asarray(vals, dtype=np.float64)
    if kind == "i":
        return np.asarray(vals, dtype=np.int64)
    return np.asarray(vals, dtype=object)


def _write_tables(plan: dict[str, Any], committed: dict[str, Any] | None,
                  metas: dict[str, dict[str, Any]], url: str, so: dict[str, Any] | None,
                  rcp: Recipe) -> None:
    """Phase C, first part: the new windows' coordinates and recordings' table rows.

    They need the placement only, not the chunks, so the build writes them while
    the workers write the last chunks.  Readers do not see them before the commit.
    """
    root = _open_root(url, so)
    n_old = plan["n_old"]
    coord_kinds = _window_coord_kinds(rcp)
    # per-window coordinates of the new windows, in placement order: one column at a time,
    # from numpy pieces (a few bytes per window; the client holds every window's)
    placed = plan["placed"]
    for name, kind in coord_kinds.items():
        pieces = [_coord_piece(metas[rid], rid, name, kind, n) for rid, _first, n in placed]
        column = np.concatenate(pieces) if pieces else np.zeros(0, dtype=object)
        _write_1d(root, name, "window", column, n_old, kind)
        del pieces, column
    # per-recording table
    r_old = len(committed["ids"]) if committed else 0
    first_of = {rid: first for rid, first, _n in plan["placed"]}
    table: dict[str, list[Any]] = {name: [] for name in RECORDING_VARS}
    table_ids: list[str] = []
    n_dropped: list[int] = []
    for rid, status, reason in plan["new_rows"]:
        m = metas.get(rid, {})
        r = m.get("recording", {})
        ok = status == "ok"
        table_ids.append(rid)
        table["recording_path"].append(str(r.get("path", "")))
        table["recording_status"].append(status)
        table["recording_reason"].append(reason)
        table["recording_n_windows"].append(int(m.get("n_windows", 0)) if ok else 0)
        table["recording_first_window"].append(first_of.get(rid, -1))
        table["recording_subject"].append(str(r.get("subject", "")))
        table["recording_task"].append(str(r.get("task", "")))
        table["recording_run"].append(str(r.get("run", "") or ""))
        table["recording_release"].append(str(r.get("release", "") or ""))
        n_dropped.append(int(m.get("n_dropped", 0)))
    _write_1d(root, "recordings", "recordings", np.asarray(table_ids, dtype=object), r_old, "U")
    for name, kind in RECORDING_VARS.items():
        _write_1d(root, name, "recordings", np.asarray(table[name], dtype=object), r_old, kind)
    _write_1d(root, "recording_n_dropped", "recordings", np.asarray(n_dropped), r_old, "i")


def _phase_c(plan: dict[str, Any], committed: dict[str, Any] | None,
             metas: dict[str, dict[str, Any]], crcs: dict[int, int], url: str,
             so: dict[str, Any] | None, config: dict[str, Any], rcp: Recipe,
             source: Any, *, tables_written: bool = False) -> None:
    """Phase C: coordinates and tables (unless written already), checksums, attrs, commit."""
    if not tables_written:
        _write_tables(plan, committed, metas, url, so, rcp)
    root = _open_root(url, so)
    n_old = plan["n_old"]
    c_, t_ = plan["shape_tail"]
    ref = plan["ref"]
    coord_kinds = _window_coord_kinds(rcp)
    if committed is None:
        # static coordinates and the eeg array (also when no new windows exist)
        if "eeg" not in root:
            root.create_array("eeg", shape=(0, c_, t_), chunks=(plan["chunk_windows"], c_, t_),
                              dtype=config["dtype"],
                              compressors=compressor_codecs(config["compressor"]),
                              fill_value=0.0, dimension_names=["window", "channel", "time"])
        _write_1d(root, "channel", "channel", np.asarray(ref["channels"]), 0, "U")
        times = rcp.time_offset_s() + np.arange(t_) / float(ref["sfreq"])
        _write_1d(root, "time", "time", times, 0, "f", {"units": "s"})
    # checksums of the chunks written by phase B
    k = plan["chunk_windows"]
    n_chunks = -(-plan["n_total"] // k)
    c_first = n_old // k
    crc_vals = np.asarray([crcs[c] for c in range(c_first, n_chunks)] if plan["new_windows"]
                          else [], dtype=np.int64)
    if committed is None or crc_vals.size:
        _write_1d(root, "chunk_crc32", "chunk", crc_vals, c_first, "i")
    # eeg attrs: which variables are per-window coordinates (CF "coordinates")
    eeg = root["eeg"]
    window_coords = list(coord_kinds)
    eeg.update_attributes({"coordinates": " ".join(window_coords), "units": "V"})
    now = _dt.datetime.now(_dt.UTC).isoformat()
    attrs = dict(committed["attrs"]) if committed else {}
    sources_list = list(attrs.get("sources", []))
    if str(source) not in sources_list:
        sources_list.append(str(source))
    attrs.update({
        "sfreq": float(ref["sfreq"]),
        "recipe": config["recipe"],
        "preprocessing": config["preprocessing"],
        "source": sources_list[0] if len(sources_list) == 1 else ", ".join(sources_list),
        "sources": sources_list,
        "versions": _versions(),
        "schema_version": SCHEMA_VERSION,
        "created": attrs.get("created", now),
        "updated": now,
        "chunk_windows": int(k),
        "dtype": config["dtype"],
        "compressor": config["compressor"],
        "checksums": "crc32 of each eeg chunk's uncompressed C-ordered bytes (valid windows)",
        "time_offset_s": float(rcp.time_offset_s()),
    })
    _maybe_kill("coords")
    _commit(url, so, attrs, sorted(root.array_keys()))
    _maybe_kill("commit")


def _commit(url: str, so: dict[str, Any] | None, attrs: dict[str, Any],
            arrays: Sequence[str]) -> None:
    """Write the root ``zarr.json`` with ``attrs`` and consolidated metadata, atomically.

    This single write is the commit point of a build: readers (and a resumed
    build) see either the previous state or the new one.  zarr's own
    ``update_attributes`` + ``consolidate_metadata`` would take two writes, the
    first of which drops the previous consolidated metadata.
    """
    fs, root = get_fs(url, so)
    members: dict[str, Any] = {}
    for name in arrays:
        meta = _read_json(fs, f"{root}/{name}/zarr.json")
        if meta is None:
            raise StoreError(f"expected array metadata {url}/{name}/zarr.json, got none; "
                             "re-run the build")
        members[name] = meta
    doc = {"attributes": attrs, "zarr_format": 3, "node_type": "group",
           "consolidated_metadata": {"kind": "inline", "must_understand": False,
                                     "metadata": members}}
    _atomic_write(fs, f"{root}/zarr.json", json.dumps(doc, allow_nan=True).encode())


# ------------------------------------------------------------------------ CLI

def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``eegstore build`` arguments."""
    parser.add_argument("source", help="local BIDS directory or eegdash:RN[-mini]")
    parser.add_argument("store", help="output store: path or fsspec URL (s3://..., memory://...)")
    parser.add_argument("--recipe", required=True, choices=sorted(RECIPES))
    parser.add_argument("--tasks", nargs="+", default=None, help="tasks to include")
    parser.add_argument("--subjects", nargs="+", default=None, metavar="N|LABEL",
                        help="use only the first N subjects (one number), or these subject "
                        "labels (without 'sub-')")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes")
    parser.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    parser.add_argument("--chunk-windows", type=int, default=None, help="windows per chunk")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--compressor", choices=COMPRESSORS, default=DEFAULT_COMPRESSOR)
    parser.add_argument("--window-s", type=float, default=None, help="window length (s)")
    parser.add_argument("--stride-s", type=float, default=None, help="window stride (s)")
    g = parser.add_argument_group("preprocessing (applied in this order)")
    g.add_argument("--pick", nargs="+", default=None, metavar="CH", help="keep these channels")
    g.add_argument("--reref", default=None, help="re-reference: 'average' or a channel name")
    g.add_argument("--l-freq", type=float, default=None, help="band-pass low edge (Hz)")
    g.add_argument("--h-freq", type=float, default=None, help="band-pass high edge (Hz)")
    g.add_argument("--resample", type=float, default=None, help="resample to this rate (Hz)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _steps_from_args(args: argparse.Namespace) -> list[Preprocessor]:
    steps: list[Preprocessor] = []
    if args.pick:
        steps.append(PickChannels(tuple(args.pick)))
    if args.reref:
        steps.append(Rereference(args.reref))
    if args.l_freq is not None or args.h_freq is not None:
        steps.append(BandPass(args.l_freq, args.h_freq))
    if args.resample is not None:
        steps.append(Resample(args.resample))
    return steps


def _parse_subjects(values: Sequence[str] | None) -> int | list[str] | None:
    """``--subjects``: one number N (the first N subjects) or subject labels."""
    if values is None:
        return None
    if len(values) == 1 and values[0].lstrip("-").isdigit():
        n = int(values[0])
        if n < 1:
            raise ConfigError(f"expected --subjects >= 1, got {n}")
        return n
    return [v.removeprefix("sub-") for v in values]


def run(args: argparse.Namespace) -> int:
    """Run ``eegstore build``."""
    params: dict[str, Any] = {}
    if args.window_s is not None or args.stride_s is not None:
        if args.recipe == "challenge1":
            if args.stride_s is not None:
                raise ConfigError("expected no --stride-s with --recipe challenge1 "
                                  "(one window per trial), got one")
            params["window_s"] = args.window_s
        else:
            if args.window_s is not None:
                params["window_s"] = args.window_s
            if args.stride_s is not None:
                params["stride_s"] = args.stride_s
    subjects = _parse_subjects(args.subjects)
    recipe = get_recipe(args.recipe, **params)
    try:
        report = build_store(args.source, args.store, recipe, tasks=args.tasks,
                             subjects=subjects, workers=args.workers,
                             scheduler=args.scheduler, chunk_windows=args.chunk_windows,
                             dtype=args.dtype, compressor=args.compressor,
                             preprocessing=_steps_from_args(args),
                             progress=not args.no_progress)
    finally:
        _forkserver.stop()  # a library caller's next build reuses it; a command's does not
    print(report)
    for rid, reason in list(report.skipped.items())[:20]:
        print(f"  skipped {rid}: {reason}")
    return 0
