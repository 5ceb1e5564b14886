"""The staging area of a build: ``<store>/_staging/``, where recordings wait for their chunks.

A staged recording is a folder named by :func:`safe_name` holding

``signal.npy``
    ``(channel, samples)`` in the store dtype and unit: the union of the recording's
    windows (:func:`stage_layout`), so overlapping windows are staged once;
``offsets.npy``
    where each window starts in ``signal.npy``;
``done.json``
    the per-window coordinates and the recording's status, written last and atomically
    (it marks the recording finished; skipped recordings get one too).

Besides them, staging holds ``config.json`` (the options of the build), ``todo.json``
(which recordings it builds) and ``chunks/<chunk>.json`` (one record per written chunk),
which let an interrupted build resume (:mod:`eegstore.build.resume`).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from typing import Any

import numpy as np

from eegstore.errors import StoreError

__all__ = [
    "CHUNK_RECORDS",
    "STAGED_OFFSETS",
    "STAGED_SIGNAL",
    "STAGING",
    "list_dir",
    "read_json",
    "read_windows_into",
    "safe_name",
    "save_signal",
    "stage_layout",
]

STAGING = "_staging"
#: A staged recording: the samples of its windows, and where each window starts in them.
STAGED_SIGNAL = "signal.npy"
STAGED_OFFSETS = "offsets.npy"
#: Folder in staging with one record per written chunk (for resuming).
CHUNK_RECORDS = "chunks"
# The staging folder is deliberately not a zarr node; zarr warns whenever it lists the root.
warnings.filterwarnings("ignore", message=f"Object at {STAGING} is not recognized",
                        category=UserWarning)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(recording_id: str) -> str:
    """Return a staging folder name for ``recording_id`` that cannot escape the staging folder."""
    name = _UNSAFE.sub("_", recording_id)
    if name != recording_id or name in ("", ".", "..") or name.startswith("."):
        digest = hashlib.sha1(recording_id.encode()).hexdigest()[:10]
        name = "x" + name.lstrip(".") + "-" + digest
    return name


def read_json(fs: Any, path: str) -> dict[str, Any] | None:
    """Return the JSON object at ``path``, or ``None`` when it is missing, torn or unreadable."""
    try:
        value = json.loads(fs.cat_file(path))
    except (ValueError, OSError):  # FileNotFoundError among them
        return None
    return value if isinstance(value, dict) else None


def list_dir(fs: Any, path: str) -> list[str]:
    """Return the entries of ``path`` (none where it is missing, as empty object-store prefixes)."""
    try:
        return [str(p) for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []


def stage_layout(starts: np.ndarray, window_samples: int) -> tuple[np.ndarray, np.ndarray]:
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
    width = int(window_samples)
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(starts, kind="stable")
    sorted_starts = starts[order]
    opens_run = np.ones(len(sorted_starts), dtype=bool)
    # sorted: a window overlaps the run of the one before unless it starts past its end
    opens_run[1:] = sorted_starts[1:] > sorted_starts[:-1] + width
    first = np.flatnonzero(opens_run)
    last = np.append(first[1:] - 1, len(sorted_starts) - 1)
    runs = np.stack([sorted_starts[first], sorted_starts[last] + width], axis=1)
    lengths = runs[:, 1] - runs[:, 0]
    run_offset = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    run_of = np.cumsum(opens_run) - 1
    offsets = np.empty(len(sorted_starts), dtype=np.int64)
    offsets[order] = run_offset[run_of] + (sorted_starts - runs[run_of, 0])
    return runs, offsets


def save_signal(fs: Any, folder: str, data: np.ndarray, starts: np.ndarray,
                window_samples: int, dtype: np.dtype[Any], scale: float = 1.0) -> None:
    """Stage the samples of a recording's windows: ``signal.npy`` and ``offsets.npy``.

    ``signal.npy`` is ``(channel, samples)`` in ``dtype`` and holds the union of the
    windows (:func:`stage_layout`) times ``scale``; ``offsets.npy`` holds each window's
    first sample in it.  One channel is scaled, cast and written at a time, into one
    reused row buffer, so staging allocates no array the size of the recording.
    """
    runs, offsets = stage_layout(starts, window_samples)
    n_channels = data.shape[0]
    n_samples = int((runs[:, 1] - runs[:, 0]).sum())
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": (n_channels, n_samples)}
    row = np.empty(n_samples, dtype=dtype)
    fs.makedirs(folder, exist_ok=True)
    with fs.open(f"{folder}/{STAGED_OFFSETS}", "wb") as fh:
        np.lib.format.write_array(fh, offsets, allow_pickle=False)
    with fs.open(f"{folder}/{STAGED_SIGNAL}", "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, header)
        for channel in range(n_channels):
            pos = 0
            for a, b in runs:
                if scale == 1.0:
                    row[pos:pos + b - a] = data[channel, a:b]
                else:
                    np.multiply(data[channel, a:b], scale, out=row[pos:pos + b - a],
                                casting="same_kind")
                pos += b - a
            fh.write(row.data)


def _npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def read_windows_into(fs: Any, folder: str, start: int, out: np.ndarray) -> None:
    """Fill ``out`` with windows ``start:start + len(out)`` of a staged recording.

    Only the staged samples those windows span are read, one channel at a time,
    into a buffer the windows are then copied out of.

    Raises
    ------
    StoreError
        The staged files are missing, short, or do not hold these windows.
    """
    n_windows = len(out)
    n_channels, width = out.shape[1], out.shape[2]
    path = f"{folder}/{STAGED_SIGNAL}"
    try:
        with fs.open(f"{folder}/{STAGED_OFFSETS}", "rb") as fh:
            offsets = np.lib.format.read_array(fh, allow_pickle=False)[start:start + n_windows]
        with fs.open(path, "rb") as fh:
            shape, fortran, dtype = _npy_header(fh)
            if fortran or len(shape) != 2 or shape[0] != n_channels or dtype != out.dtype \
                    or len(offsets) != n_windows or int(offsets.max()) + width > shape[1]:
                raise StoreError(f"expected a C-ordered {out.dtype} staged signal of "
                                 f"{n_channels} channels holding windows {start}:"
                                 f"{start + n_windows} in {path}, got {dtype} {tuple(shape)}; "
                                 "delete its done.json and re-run the build")
            a, b = int(offsets.min()), int(offsets.max()) + width
            buffer = np.empty((n_channels, b - a), dtype=dtype)
            base = fh.tell()
            for channel in range(n_channels):
                fh.seek(base + (channel * int(shape[1]) + a) * dtype.itemsize)
                view = buffer[channel].data.cast("B")
                got = 0
                while got < len(view):
                    n_read = fh.readinto(view[got:])
                    if not n_read:
                        raise StoreError(f"expected a whole staged signal in {path}, got a "
                                         "short file; delete its done.json and re-run the "
                                         "build")
                    got += n_read
    except FileNotFoundError:
        raise StoreError(f"expected staged windows in {folder}, got none; delete its "
                         "done.json and re-run the build") from None
    for i, offset in enumerate(offsets - a):
        out[i] = buffer[:, offset:offset + width]
