"""The two kinds of task a build runs on its Dask workers.

:func:`stage_recording`, one per recording (holds one recording)
    read -> preprocess -> validate -> window; the samples the windows cover go to the
    recording's staging folder in the store's dtype and unit, its coordinates and
    status to ``done.json`` (:mod:`eegstore.build.staging`).
:func:`write_chunks`, one per group of output chunks
    assembles each chunk from staging (and, for a trailing partial chunk of an existing
    store, its committed windows), writes it, and records its CRC32 for resuming.
"""

from __future__ import annotations

import json
import warnings
import zlib
from typing import Any

import numpy as np

from eegstore._io import atomic_write, json_default
from eegstore.build.layout import dtype_max, unit_scale
from eegstore.build.state import BuildConfig
from eegstore.errors import RecordingError
from eegstore.placement import ChunkJob
from eegstore.preprocessing import apply_steps, steps_from_dicts
from eegstore.recipes import recipe_from_dict
from eegstore.sources import Recording
from eegstore.store import get_fs, zarr_kwargs

from .staging import CHUNK_RECORDS, STAGING, read_json, read_windows_into, safe_name, save_signal

__all__ = ["stage_recording", "write_chunks"]


def _reader_error(exc: Exception) -> str:
    return str(exc) if isinstance(exc, RecordingError) else f"{type(exc).__name__}: {exc}"


def stage_recording(rec: Recording, *, config: BuildConfig, store: str,
                    storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """Window one recording into staging and return its ``done.json``.

    A recording staged before (its ``done.json`` exists) is not read again.  Any
    failure to read, preprocess, validate or window it skips it with a reason.
    """
    from eegstore import sources

    fs, root = get_fs(store, storage_options)
    folder = f"{root}/{STAGING}/{safe_name(rec.id)}"
    done = read_json(fs, f"{folder}/done.json")
    if done is not None:
        return done
    recipe = recipe_from_dict(dict(config.recipe))
    steps = steps_from_dicts([dict(step) for step in config.preprocessing])
    meta: dict[str, Any] = {"id": rec.id, "recording": rec.to_dict(), "status": "skipped",
                            "reason": "", "n_windows": 0, "n_dropped": 0}
    try:
        recipe.precheck(rec)
        # not preloaded: without preprocessing, get_data() reads the file straight into
        # one array (a preloaded raw is read into mne's buffer and copied out of it)
        try:
            raw = sources.read_raw(rec, preload=False)
        except MemoryError:
            raise
        except Exception as exc:  # any reader failure skips the recording
            raise RecordingError(f"unreadable recording: {_reader_error(exc)}") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = apply_steps(raw, steps)
        try:
            data = raw.get_data()
        except MemoryError:
            raise
        except Exception as exc:  # a file that is shorter or garbled past its header
            raise RecordingError(f"unreadable recording: {_reader_error(exc)}") from None
        sfreq = float(raw.info["sfreq"])
        ch_names = [str(c) for c in raw.ch_names]
        del raw
        _check_signal(data, config)
        events = None
        if recipe.needs_events():
            try:
                events = sources.read_events(rec)
            except Exception as exc:  # any events failure skips the recording
                missing = rec.events_path is None or isinstance(exc, FileNotFoundError)
                raise RecordingError(f"{'missing' if missing else 'garbled'} events: "
                                     f"{_reader_error(exc)}") from None
        windows = recipe.make_windows(data.shape[1], sfreq, data.shape[0], rec, events)
        if len(windows) == 0:
            raise RecordingError(f"no windows: expected at least one, got none "
                                 f"({windows.n_dropped} past the recording's end)")
        width = windows.window_samples
        save_signal(fs, folder, data, np.asarray(windows.starts), width,
                    np.dtype(config.dtype), unit_scale(config.units))
        del data
        meta.update(status="ok", n_windows=len(windows), n_dropped=int(windows.n_dropped),
                    sfreq=sfreq, channels=ch_names, window_samples=int(width),
                    dtype=config.dtype, coords=dict(windows.coords))
    except RecordingError as exc:
        meta["reason"] = str(exc)
    fs.makedirs(folder, exist_ok=True)
    # not fsynced: neither are the staged windows it vouches for (a machine crash can
    # lose both; a killed worker or client loses neither), and a flush per recording
    # left the worker waiting on the disk
    encoded = json.dumps(meta, default=json_default)
    atomic_write(f"{folder}/done.json", encoded, fs=fs, durable=False)
    return json.loads(encoded)  # type: ignore[no-any-return]


def _check_signal(data: np.ndarray, config: BuildConfig) -> None:
    """Raise :class:`RecordingError` unless ``data`` (volts) is finite and fits the store."""
    if data.size == 0:
        raise RecordingError(f"no samples: expected a signal, got shape {data.shape}")
    # min/max: two passes without temporaries; NaN and +-Inf both show up in them
    lo, hi = float(np.min(data)), float(np.max(data))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int((~np.isfinite(data)).any(axis=0).sum())
        raise RecordingError(f"NaN/Inf samples: expected finite signals, got {bad} "
                             "non-finite time points")
    peak = max(-lo, hi) * unit_scale(config.units)
    limit = dtype_max(config.dtype)
    if peak > limit:
        raise RecordingError(f"overflow: expected amplitudes up to {limit:g} {config.units} "
                             f"({config.dtype}), got {peak:g} {config.units}; use --dtype "
                             "float32")


def write_chunks(jobs: list[ChunkJob], signatures: list[str], *, store: str,
                 storage_options: dict[str, Any] | None, chunk_windows: int,
                 shape_tail: tuple[int, int], dtype: str) -> list[tuple[int, int]]:
    """Assemble and write output chunks, one at a time; return ``(chunk, CRC32)`` of each.

    After each chunk, a record ``_staging/chunks/<chunk>.json`` (its CRC and the
    signature of its contents) lets a resumed build skip it.  One chunk buffer is
    reused for every full chunk of the task.
    """
    import zarr

    fs, root = get_fs(store, storage_options)
    # chunks hold signal and are all zeros (the fill value) next to never: zarr's default
    # test of each chunk for that (to skip writing it) costs a full pass over the chunk
    arr = zarr.open_array(**zarr_kwargs(store, storage_options), path="eeg",
                          mode="r+").with_config({"write_empty_chunks": True})
    if not jobs:
        return []
    buffer = np.empty((max(job.n_windows for job in jobs), *shape_tail), dtype=dtype)
    out = []
    for job, signature in zip(jobs, signatures, strict=True):
        block = buffer[:job.n_windows]
        start = job.chunk * chunk_windows
        for source, src_start, src_stop, dst in job.segments:
            rows = block[dst:dst + src_stop - src_start]
            if source == "":  # the committed windows of a trailing partial chunk
                rows[...] = arr[start + dst:start + dst + len(rows)]
            else:
                read_windows_into(fs, f"{root}/{STAGING}/{source}", src_start, rows)
        arr[start:start + job.n_windows] = block
        crc = zlib.crc32(block.data) & 0xFFFFFFFF  # C-contiguous: no copy
        record = json.dumps({"chunk": job.chunk, "crc32": crc, "signature": signature})
        atomic_write(f"{root}/{STAGING}/{CHUNK_RECORDS}/{job.chunk}.json", record, fs=fs,
                     durable=False)  # as the chunk it describes (see done.json)
        out.append((job.chunk, crc))
    return out
