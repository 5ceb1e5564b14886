"""What a build finds before it starts: the committed store and an interrupted build.

Readers and a resumed build see a store through its consolidated metadata, which
changes only at the commit (:mod:`eegstore.build.commit`).  An interrupted build leaves
its staging area behind; a re-run with the same options resumes from it: recordings
with a ``done.json`` are not staged again, and chunks with a record are not written
again when the re-run builds the same recordings.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from eegstore._io import atomic_write, decode_strings
from eegstore.build.state import BuildConfig, CommittedStore
from eegstore.errors import ConfigError, StoreError
from eegstore.store import get_fs, zarr_kwargs

from .staging import CHUNK_RECORDS, STAGED_SIGNAL, STAGING, list_dir, read_json

__all__ = ["array_of", "check_compatible", "check_staged_config", "read_committed",
           "resume_records"]


def array_of(group: Any, name: str) -> Any:
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


def read_committed(store: str, storage_options: dict[str, Any] | None
                   ) -> CommittedStore | None:
    """Describe the store as its consolidated metadata does (``None`` for a new store)."""
    import zarr

    fs, root = get_fs(store, storage_options)
    meta = read_json(fs, f"{root}/zarr.json")
    if meta is None or not meta.get("consolidated_metadata"):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_consolidated(**zarr_kwargs(store, storage_options, True), mode="r",
                                       zarr_format=3)
    eeg = array_of(group, "eeg")
    recordings = array_of(group, "recordings")
    n_recordings = recordings.shape[0]
    status = decode_strings(array_of(group, "recording_status")[:n_recordings])
    ids = decode_strings(recordings[:n_recordings]) if n_recordings else np.zeros(0, str)
    return CommittedStore(
        n_windows=int(eeg.shape[0]),
        shape_tail=(int(eeg.shape[1]), int(eeg.shape[2])),
        chunk_windows=int(eeg.chunks[0]),
        dtype=str(eeg.dtype),
        units=str(eeg.attrs.get("units", "V")),
        ids=tuple(ids.tolist()),
        n_chunks=int(array_of(group, "chunk_crc32").shape[0]),
        channels=tuple(decode_strings(array_of(group, "channel")[:]).tolist()),
        n_ok=int(np.count_nonzero(status == "ok")),
        attrs=dict(group.attrs),
    )


def check_compatible(committed: CommittedStore, config: BuildConfig,
                     chunk_windows: int | None) -> None:
    """Raise :class:`ConfigError` unless the build can extend ``committed`` with ``config``."""
    options = config.to_dict()
    for key in ("recipe", "preprocessing"):
        stored = committed.attrs.get(key)
        if json.dumps(stored, sort_keys=True) != json.dumps(options[key], sort_keys=True):
            raise ConfigError(f"expected the store's {key} {stored}, got {options[key]}; "
                              "build into a new store")
    for key, stored_value in (("dtype", committed.dtype), ("units", committed.units)):
        if stored_value != options[key]:
            raise ConfigError(f"expected the store's {key} {stored_value}, got "
                              f"{options[key]}; pass --{key} {stored_value} or build into "
                              "a new store")
    if chunk_windows is not None and chunk_windows != committed.chunk_windows:
        raise ConfigError(f"expected the store's chunk_windows {committed.chunk_windows}, "
                          f"got {chunk_windows}; omit --chunk-windows or use a new store")


def check_staged_config(fs: Any, root: str, url: str, config: BuildConfig) -> None:
    """Record the build's options in staging, or check them against an interrupted build's."""
    path = f"{root}/{STAGING}/config.json"
    staged = read_json(fs, path)
    options = json.loads(json.dumps(config.to_dict()))
    if staged is None:
        atomic_write(path, json.dumps(options), fs=fs)
    elif staged != options:
        raise ConfigError(f"expected the options of the interrupted build in {url} "
                          f"({staged}), got {options}; re-run it with the same options "
                          f"or delete {url}/{STAGING}")


def resume_records(fs: Any, root: str, ids: Sequence[str], n_old: int
                   ) -> dict[int, dict[str, Any]]:
    """Chunk records of an interrupted build of the same recordings (else none).

    The staging folder remembers which recordings the build had (``todo.json``).
    When a re-run has another set, chunk records no longer describe the chunks
    it will write, and recordings whose staged windows were already consumed
    (deleted after their chunks were written) must be staged again.
    """
    staging = f"{root}/{STAGING}"
    records_dir = f"{staging}/{CHUNK_RECORDS}"
    signature = hashlib.sha1(json.dumps([int(n_old), sorted(ids)]).encode()).hexdigest()
    previous = read_json(fs, f"{staging}/todo.json")
    if previous is not None and previous.get("signature") != signature:
        if fs.exists(records_dir):
            fs.rm(records_dir, recursive=True)
        for entry in list_dir(fs, staging):
            folder = entry.rstrip("/")
            done = read_json(fs, f"{folder}/done.json") if fs.isdir(folder) else None
            if done is not None and done.get("status") == "ok" \
                    and not fs.exists(f"{folder}/{STAGED_SIGNAL}"):
                fs.rm(f"{folder}/done.json")
    if previous is None or previous.get("signature") != signature:
        atomic_write(f"{staging}/todo.json", json.dumps({"signature": signature}), fs=fs)
    fs.makedirs(records_dir, exist_ok=True)
    records: dict[int, dict[str, Any]] = {}
    for path in list_dir(fs, records_dir):
        record = read_json(fs, path) if path.endswith(".json") else None
        if record is not None and "chunk" in record and "crc32" in record:
            records[int(record["chunk"])] = record
    return records
