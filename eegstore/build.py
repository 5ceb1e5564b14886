"""Build labelled Zarr stores from recordings, in parallel with Dask.

Design (every step is idempotent, so a killed build re-run with the same
command finishes with the same store as an uninterrupted one):

Phase A, one task per recording (holds one recording)
    read -> preprocess -> validate -> window; the windows (store dtype) go to
    ``<store>/_staging/<recording>/windows.npy`` and the per-window
    coordinates plus status/reason to ``done.json``, written last and
    atomically (it marks the recording finished; skipped recordings get one
    too).  A re-run skips recordings with a ``done.json`` or already in the store.
Plan, on the client
    the committed store (as its consolidated metadata describes it) keeps its
    recordings and windows; the new recordings follow in sorted-id order, so
    window ranges are deterministic.  Recordings whose channels, sfreq or window
    length differ from the store's are skipped with that reason.
Phase B, one task per output chunk
    assembles the chunk's windows from staging (and, for a trailing partial
    chunk of an existing store, its old windows), writes that one chunk and
    returns its CRC32.  No two tasks write the same chunk.
Phase C, on the client
    appends per-window coordinates, the per-recording table and the CRCs, then
    commits: ONE atomic write of the root ``zarr.json`` carrying the attributes
    and the consolidated metadata (the new shapes); finally deletes staging.

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
import math
import os
import re
import sys
import time
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from eegstore.errors import BuildError, ConfigError, RecordingError, StoreError
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
    "BuildReport",
    "build_store",
    "configure_parser",
    "run",
]

STAGING = "_staging"
# The staging folder is deliberately not a zarr node; zarr warns whenever it lists the root.
warnings.filterwarnings("ignore", message=f"Object at {STAGING} is not recognized",
                        category=UserWarning)
#: Chunk length of per-window / per-recording / per-chunk coordinate arrays.
COORD_CHUNK = 65536
#: Target uncompressed bytes of one eeg chunk when chunk_windows is not given.
TARGET_CHUNK_BYTES = 8 * 2**20
#: Compressor names accepted by ``build_store``.
COMPRESSORS = ("zstd", "blosc-zstd", "blosc-lz4", "gzip", "none")
#: Default compressor, chosen by the codec sweep of ``python -m benchmarks run``
#: (``benchmarks/results/results.md``): on windows of synthetic BDF recordings built
#: by ``eegstore build``, zstd level 1 compressed 2.1x with the best cold-cache read
#: (2.1 GB/s) and 1.0 GB/s writes, against blosc-lz4's 1.3x (1.6 GB/s cold reads).
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
#: ``coords`` after phase C wrote coordinates (before the commit), ``commit`` after the
#: commit (before staging is removed).
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


def _atomic_write(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing."""
    if "file" in _protocols(fs):
        tmp = f"{path}.{os.getpid()}.partial"
        with open(tmp, "wb") as fh:
            fh.write(data)
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


def _save_npy(fs: Any, path: str, arr: np.ndarray) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)


def _read_npy_rows(fs: Any, path: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` (first axis) of a C-ordered .npy file, reading only those bytes."""
    with fs.open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if fortran:
            raise StoreError(f"expected a C-ordered staging array {path}, got Fortran order")
        offset = fh.tell()
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        fh.seek(offset + start * row)
        buf = fh.read((stop - start) * row)
    if len(buf) != (stop - start) * row:
        raise StoreError(f"expected {stop - start} rows in staging array {path}, got a short "
                         "file; delete its done.json and re-run the build")
    return np.frombuffer(buf, dtype=dtype).reshape((stop - start, *shape[1:]))


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

def _stage_recording(rec: Any, config: dict[str, Any], store: str,
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
        data = raw.get_data()
        if not np.all(np.isfinite(data)):
            bad = int((~np.isfinite(data)).any(axis=0).sum())
            raise RecordingError(f"NaN/Inf samples: expected finite signals, got {bad} "
                                 "non-finite time points")
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
        arr = np.empty((len(win), data.shape[0], w), dtype=config["dtype"])
        for i, s in enumerate(win.starts):
            arr[i] = data[:, s:s + w]
        if not np.all(np.isfinite(arr)):
            raise RecordingError(f"overflow: signals do not fit {config['dtype']}; "
                                 "use --dtype float32")
        del data, raw
        _save_npy(fs, f"{sdir}/windows.npy", arr)
        meta.update(status="ok", n_windows=len(win), n_dropped=int(win.n_dropped), sfreq=sfreq,
                    channels=ch_names,
                    window_samples=int(w), dtype=config["dtype"],
                    coords={k: _jsonable(v) for k, v in win.coords.items()})
    except RecordingError as exc:
        meta["reason"] = str(exc)
    fs.makedirs(sdir, exist_ok=True)
    _atomic_write(fs, f"{sdir}/done.json", json.dumps(meta).encode())
    return meta


# ------------------------------------------------------------------- phase B

def _write_chunk(store: str, storage_options: dict[str, Any] | None, chunk: int,
                 chunk_windows: int, segments: list[tuple[str, int, int, int]],
                 n_in_chunk: int, shape_tail: tuple[int, int], dtype: str) -> tuple[int, int]:
    """Phase B task: assemble and write output chunk ``chunk``; return (chunk, crc32)."""
    import zarr

    fs, root = get_fs(store, storage_options)
    arr = zarr.open_array(**zarr_kwargs(store, storage_options), path="eeg", mode="r+")
    block = np.empty((n_in_chunk, *shape_tail), dtype=dtype)
    for source, src_start, src_stop, dst in segments:
        if source == "":
            rows = np.asarray(arr[chunk * chunk_windows + dst:
                                  chunk * chunk_windows + dst + src_stop - src_start])
        else:
            rows = _read_npy_rows(fs, f"{root}/{STAGING}/{source}/windows.npy",
                                  src_start, src_stop)
        block[dst:dst + src_stop - src_start] = rows
    start = chunk * chunk_windows
    arr[start:start + n_in_chunk] = block
    return chunk, zlib.crc32(np.ascontiguousarray(block).tobytes()) & 0xFFFFFFFF


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


def _chunk_windows_for(n_channels: int, n_times: int, dtype: str) -> int:
    per = n_channels * n_times * np.dtype(dtype).itemsize
    return max(1, int(TARGET_CHUNK_BYTES // per))


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


def _get_client(workers: int, scheduler: Any, store: str) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if isinstance(scheduler, Client):
            return scheduler, None
        return Client(scheduler), None
    processes = not store.startswith("memory://")  # memory:// lives in one process
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                           dashboard_address=":0", silence_logs=40)
    return Client(cluster), cluster


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
    report = BuildReport(store=url)
    client = cluster = None
    metas: dict[str, dict[str, Any]] = {}
    try:
        if todo:
            client, cluster = _get_client(int(workers), scheduler, url)
            report.dashboard = client.dashboard_link
            if progress and report.dashboard:
                print(f"dask dashboard: {report.dashboard}", file=sys.stderr)
            metas = _run_phase_a(client, todo, config, url, so, progress)
        plan = _plan(committed, todo, metas, dup_reasons, rcp, chunk_windows, dtype)
        if plan["n_ok_total"] == 0:
            fs.rm(f"{root}/{STAGING}", recursive=True)
            reasons = sorted({m.get("reason", "") for m in metas.values()})[:5]
            raise BuildError(f"expected at least one usable recording, got none of "
                             f"{len(recs)}; reasons: {'; '.join(reasons)}")
        if plan["new_windows"]:
            if client is None:
                client, cluster = _get_client(int(workers), scheduler, url)
            crcs = _run_phase_b(client, plan, url, so, dtype, compressor, committed, progress)
        else:
            crcs = {}
        if committed is None or plan["new_rows"]:
            _phase_c(plan, committed, metas, crcs, url, so, config, rcp, source)
        fs.rm(f"{root}/{STAGING}", recursive=True)
    finally:
        from distributed import Client

        if client is not None and not isinstance(scheduler, Client):
            client.close()  # ours (a LocalCluster's, or one we connected to an address)
        if cluster is not None:
            cluster.close()
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


def _run_phase_a(client: Any, todo: list[Any], config: dict[str, Any], url: str,
                 so: dict[str, Any] | None, progress: bool) -> dict[str, dict[str, Any]]:
    from distributed import as_completed
    from tqdm.auto import tqdm

    metas: dict[str, dict[str, Any]] = {}
    futures = [client.submit(_stage_recording, rec, config, url, so, pure=False,
                             key=f"stage-{_safe_name(rec.id)}-{time.time_ns()}")
               for rec in todo]
    bar = tqdm(total=len(futures), desc="recordings", unit="rec", disable=not progress)
    try:
        for fut in as_completed(futures):
            meta = fut.result()
            metas[meta["id"]] = meta
            fut.release()
            bar.update(1)
            _maybe_kill(f"stage:{len(metas)}")
    finally:
        bar.close()
    return metas


def _plan(committed: dict[str, Any] | None, todo: list[Any], metas: dict[str, dict[str, Any]],
          dup_reasons: dict[str, str], rcp: Recipe, chunk_windows: int | None,
          dtype: str) -> dict[str, Any]:
    """Deterministic placement of the new recordings' windows."""
    n_old = committed["n_windows"] if committed else 0
    ref: dict[str, Any] | None = None
    if committed:
        ref = {"channels": committed["channels"], "window_samples": committed["shape_tail"][1],
               "sfreq": float(committed["attrs"]["sfreq"])}
    new_ids = sorted(set(metas) | set(dup_reasons))
    rows: list[tuple[str, str, str]] = []
    placed: list[tuple[str, int, int]] = []  # (id, first_window, n_windows)
    pos = n_old
    for rid in new_ids:
        if rid in dup_reasons:
            rows.append((rid, "skipped", dup_reasons[rid]))
            continue
        m = metas[rid]
        if m["status"] != "ok":
            rows.append((rid, "skipped", m["reason"]))
            continue
        if ref is None:
            ref = {"channels": m["channels"], "window_samples": m["window_samples"],
                   "sfreq": m["sfreq"]}
        reason = ""
        if abs(m["sfreq"] - ref["sfreq"]) > 1e-6:
            reason = (f"wrong sfreq: expected {ref['sfreq']:g} Hz like the store, got "
                      f"{m['sfreq']:g} Hz; add a resample step")
        elif m["channels"] != ref["channels"]:
            reason = (f"wrong channels: expected the store's {len(ref['channels'])} channels "
                      f"in order, got {len(m['channels'])}")
        elif m["window_samples"] != ref["window_samples"]:
            reason = (f"wrong window length: expected {ref['window_samples']}, got "
                      f"{m['window_samples']}")
        if reason:
            rows.append((rid, "skipped", reason))
            continue
        rows.append((rid, "ok", ""))
        placed.append((rid, pos, int(m["n_windows"])))
        pos += int(m["n_windows"])
    n_old_ok = int(committed["n_ok"]) if committed else 0
    shape_tail = ((len(ref["channels"]), int(ref["window_samples"])) if ref else (0, 0))
    if committed:
        k = committed["chunk_windows"]
    else:
        k = chunk_windows or (_chunk_windows_for(*shape_tail, dtype) if ref else 1)
    return {
        "n_old": n_old, "n_total": pos, "new_windows": pos - n_old, "placed": placed,
        "new_rows": rows, "ref": ref, "shape_tail": shape_tail, "chunk_windows": int(k),
        "n_ok_total": n_old_ok + len(placed),
        "n_recordings_total": (len(committed["ids"]) if committed else 0) + len(rows),
        "n_windows_total": pos,
        "time_offset_s": rcp.time_offset_s(),
    }


def _chunk_segments(plan: dict[str, Any]) -> list[tuple[int, list[tuple[str, int, int, int]],
                                                       int]]:
    """For every output chunk touched by the new windows: (chunk, segments, n_in_chunk)."""
    k = plan["chunk_windows"]
    n_old, n_total = plan["n_old"], plan["n_total"]
    out = []
    first_chunk = n_old // k
    last_chunk = (n_total - 1) // k
    spans = [(_safe_name(rid), first, n) for rid, first, n in plan["placed"]]
    j = 0
    for c in range(first_chunk, last_chunk + 1):
        c0, c1 = c * k, min((c + 1) * k, n_total)
        segs: list[tuple[str, int, int, int]] = []
        if c0 < n_old:  # trailing partial chunk of the existing store
            segs.append(("", 0, n_old - c0, 0))
        while j < len(spans) and spans[j][1] + spans[j][2] <= c0:
            j += 1
        i = j
        while i < len(spans) and spans[i][1] < c1:
            name, first, n = spans[i]
            a, b = max(first, c0), min(first + n, c1)
            segs.append((name, a - first, b - first, a - c0))
            i += 1
        out.append((c, segs, c1 - c0))
    return out


def _run_phase_b(client: Any, plan: dict[str, Any], url: str, so: dict[str, Any] | None,
                 dtype: str, compressor: str, committed: dict[str, Any] | None,
                 progress: bool) -> dict[int, int]:
    import zarr
    from distributed import as_completed
    from tqdm.auto import tqdm

    k = plan["chunk_windows"]
    c_, t_ = plan["shape_tail"]
    shape = (plan["n_total"], c_, t_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if committed is None:
            root = zarr.open_group(**zarr_kwargs(url, so), mode="a", zarr_format=3,
                                   use_consolidated=False)
            arr: Any = _array(root, "eeg") if "eeg" in root else None
            if arr is not None and (arr.chunks[0] != k or tuple(arr.shape[1:]) != (c_, t_)):
                arr = None
            if arr is None:
                root.create_array("eeg", shape=shape, chunks=(k, c_, t_), dtype=dtype,
                                  compressors=compressor_codecs(compressor), fill_value=0.0,
                                  dimension_names=["window", "channel", "time"],
                                  overwrite=True)
            else:
                arr.resize(shape)
        else:
            arr = zarr.open_array(**zarr_kwargs(url, so), path="eeg", mode="r+")
            arr.resize(shape)
    jobs = _chunk_segments(plan)
    futures = [client.submit(_write_chunk, url, so, c, k, segs, n, (c_, t_), dtype,
                             pure=False, key=f"chunk-{c}-{time.time_ns()}")
               for c, segs, n in jobs]
    crcs: dict[int, int] = {}
    bar = tqdm(total=len(futures), desc="chunks", unit="chunk", disable=not progress)
    try:
        for fut in as_completed(futures):
            c, crc = fut.result()
            crcs[c] = crc
            fut.release()
            bar.update(1)
            _maybe_kill(f"chunk:{len(crcs)}")
    finally:
        bar.close()
    return crcs


def _write_1d(root: Any, name: str, dim: str, values: np.ndarray, start: int,
              kind: str, attrs: dict[str, Any] | None = None) -> None:
    """Create or extend a 1-d array ``name`` so that ``[start:start+len(values)]`` = values."""
    n = start + len(values)
    if kind == "U":
        dtype: Any = str
        fill: Any = ""
        values = np.asarray([str(v) for v in values], dtype=object).astype(str) \
            if len(values) else np.zeros(0, dtype=str)
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


def _phase_c(plan: dict[str, Any], committed: dict[str, Any] | None,
             metas: dict[str, dict[str, Any]], crcs: dict[int, int], url: str,
             so: dict[str, Any] | None, config: dict[str, Any], rcp: Recipe,
             source: Any) -> None:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = zarr.open_group(**zarr_kwargs(url, so), mode="a", zarr_format=3,
                                   use_consolidated=False)
    n_old = plan["n_old"]
    c_, t_ = plan["shape_tail"]
    ref = plan["ref"]
    coord_kinds = dict(BASE_WINDOW_COORDS)
    coord_kinds.update(rcp.extra_coords())
    # per-window coordinates of the new windows, in placement order
    cols: dict[str, list[Any]] = {name: [] for name in coord_kinds}
    for rid, _first, n in plan["placed"]:
        m = metas[rid]
        r = m["recording"]
        const = {"subject": r.get("subject", ""), "session": r.get("session", "") or "",
                 "task": r.get("task", ""), "run": r.get("run", "") or "",
                 "release": r.get("release", "") or "", "recording": rid}
        for name in coord_kinds:
            if name in const:
                cols[name].extend([const[name]] * n)
            else:
                vals = m["coords"].get(name)
                if vals is None:
                    vals = [math.nan] * n if coord_kinds[name] == "f" else [""] * n
                cols[name].extend(vals)
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
    for name, kind in coord_kinds.items():
        _write_1d(root, name, "window", np.asarray(cols[name], dtype=object), n_old, kind)
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
    report = build_store(args.source, args.store, recipe, tasks=args.tasks,
                         subjects=subjects, workers=args.workers, scheduler=args.scheduler,
                         chunk_windows=args.chunk_windows, dtype=args.dtype,
                         compressor=args.compressor, preprocessing=_steps_from_args(args),
                         progress=not args.no_progress)
    print(report)
    for rid, reason in list(report.skipped.items())[:20]:
        print(f"  skipped {rid}: {reason}")
    return 0
