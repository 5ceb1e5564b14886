"""The end of a build: coordinate tables, checksums, attributes and the commit.

Once every recording is placed, the new windows' coordinates and the new rows of
the recordings table are appended (:func:`write_tables`, while the workers write the
last chunks); then the chunks' CRCs and the attributes, and finally ONE atomic write
of the root ``zarr.json`` carrying the attributes and the consolidated metadata with
the new shapes (:func:`commit_metadata`).  Readers open with the consolidated
metadata, so they see the previous state or the new one, never half-written windows.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import signal
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from eegstore._io import STRING_ATTRS, atomic_write, encode_strings
from eegstore.build.layout import compressor_codecs
from eegstore.build.state import BuildConfig, BuildPlan, CommittedStore
from eegstore.errors import StoreError
from eegstore.recipes import Recipe
from eegstore.schema import BASE_WINDOW_COORDS, RECORDING_VARS, SCHEMA_VERSION
from eegstore.store import get_fs, zarr_kwargs

from .resume import array_of
from .staging import read_json

__all__ = ["COORD_CHUNK", "KILL_ENV", "commit_metadata", "create_eeg", "finish",
           "maybe_kill", "open_root", "write_tables"]

#: Chunk length of per-window / per-recording / per-chunk coordinate arrays.
COORD_CHUNK = 65536

#: Environment variable naming a point where the build kills itself (crash tests):
#: ``stage:K`` after K recordings are staged, ``chunk:K`` after K chunks are written,
#: ``tables`` once every recording is placed and its coordinates and table rows are
#: written (the last chunks may still be in flight), ``coords`` after the build wrote
#: everything but the root metadata, ``commit`` after the commit (before staging is
#: removed).
KILL_ENV = "EEGSTORE_TEST_KILL_AT"

#: Kind of a coordinate: text, integer or float (as in :mod:`eegstore.schema`).
Kind = Literal["U", "i", "f"]


def maybe_kill(point: str) -> None:
    """Kill this process when :data:`KILL_ENV` names ``point`` (crash tests)."""
    if os.environ.get(KILL_ENV) == point:
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def open_root(url: str, storage_options: dict[str, Any] | None) -> Any:
    """Open the store's root group for writing (not through its consolidated metadata)."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_group(**zarr_kwargs(url, storage_options), mode="a", zarr_format=3,
                               use_consolidated=False)


def create_eeg(root: Any, shape_tail: tuple[int, int], chunk_windows: int,
               config: BuildConfig) -> Any:
    """Create the empty ``eeg`` array of the layout ``config`` names (replacing any)."""
    n_channels, n_times = shape_tail
    return root.create_array("eeg", shape=(0, n_channels, n_times),
                             chunks=(chunk_windows, n_channels, n_times), dtype=config.dtype,
                             compressors=compressor_codecs(config.compressor),
                             fill_value=0.0, dimension_names=["window", "channel", "time"],
                             attributes={"units": config.units}, overwrite=True)


def _write_1d(root: Any, name: str, dim: str, values: Any, start: int, kind: Kind,
              attrs: Mapping[str, Any] | None = None) -> None:
    """Create or extend a 1-d array ``name`` so that ``[start:start+len(values)]`` = values.

    Text goes in as UTF-8 bytes with :data:`eegstore._io.STRING_ATTRS` (so that xarray
    opens it as ``str``), or as ``str`` into a text array of a store written before.
    """
    from zarr.core.dtype import VariableLengthBytes

    arr = root[name] if name in root else None
    dtype: Any
    fill: Any
    if kind == "U":
        legacy = arr is not None and arr.dtype.kind == "T"  # zarr's ``string`` data type
        dtype, fill = VariableLengthBytes(), b""
        column = np.asarray([str(v) for v in np.asarray(values).tolist()], dtype=object) \
            if legacy else encode_strings(values)
        attrs = {**STRING_ATTRS, **(attrs or {})}
    elif kind == "i":
        dtype, fill = "int64", 0
        column = np.asarray(values, dtype=np.int64)
    else:
        dtype, fill = "float64", math.nan
        column = np.asarray(values, dtype=np.float64)
    n = start + len(column)
    if arr is not None and arr.shape[0] != n:
        arr.resize((n,))
    if arr is None:
        arr = root.create_array(name, shape=(n,), chunks=(COORD_CHUNK,), dtype=dtype,
                                fill_value=fill, dimension_names=[dim], overwrite=True,
                                attributes=dict(attrs or {}))
    if len(column):
        arr[start:n] = column


def _window_coord_kinds(recipe: Recipe) -> dict[str, str]:
    kinds = dict(BASE_WINDOW_COORDS)
    kinds.update(recipe.extra_coords())
    return kinds


def _coord_piece(meta: Mapping[str, Any], recording_id: str, name: str, kind: str,
                 n: int) -> np.ndarray:
    """Coordinate ``name`` of the ``n`` windows of one staged recording (``meta``)."""
    rec = meta["recording"]
    constant = {"subject": rec.get("subject", ""), "session": rec.get("session", "") or "",
                "task": rec.get("task", ""), "run": rec.get("run", "") or "",
                "release": rec.get("release", "") or "", "recording": recording_id}
    if name in constant:
        return np.full(n, constant[name], dtype=object)  # n references to one value
    values = meta["coords"].get(name)
    if values is None:
        return np.full(n, math.nan) if kind == "f" else np.full(n, "", dtype=object)
    if kind == "f":
        return np.asarray(values, dtype=np.float64)
    if kind == "i":
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=object)


def write_tables(plan: BuildPlan, committed: CommittedStore | None,
                 metas: Mapping[str, Mapping[str, Any]], url: str,
                 storage_options: dict[str, Any] | None, recipe: Recipe) -> None:
    """Append the new windows' coordinates and the new recordings' table rows.

    They need the placement only, not the chunks, so the build writes them while
    the workers write the last chunks.  Readers do not see them before the commit.
    """
    root = open_root(url, storage_options)
    # per-window coordinates of the new windows, in placement order: one column at a time,
    # from numpy pieces (a few bytes per window; the client holds every window's)
    for name, kind in _window_coord_kinds(recipe).items():
        pieces = [_coord_piece(metas[rid], rid, name, kind, n) for rid, _first, n in plan.placed]
        column = np.concatenate(pieces) if pieces else np.zeros(0, dtype=object)
        _write_1d(root, name, "window", column, plan.n_old, kind)  # type: ignore[arg-type]
        del pieces, column
    rows_before = len(committed.ids) if committed else 0
    first_of = {rid: first for rid, first, _n in plan.placed}
    table: dict[str, list[Any]] = {name: [] for name in RECORDING_VARS}
    table_ids: list[str] = []
    n_dropped: list[int] = []
    for rid, status, reason in plan.new_rows:
        meta = metas.get(rid, {})
        rec = meta.get("recording", {})
        ok = status == "ok"
        table_ids.append(rid)
        table["recording_path"].append(str(rec.get("path", "")))
        table["recording_status"].append(status)
        table["recording_reason"].append(reason)
        table["recording_n_windows"].append(int(meta.get("n_windows", 0)) if ok else 0)
        table["recording_first_window"].append(first_of.get(rid, -1))
        table["recording_subject"].append(str(rec.get("subject", "")))
        table["recording_task"].append(str(rec.get("task", "")))
        table["recording_run"].append(str(rec.get("run", "") or ""))
        table["recording_release"].append(str(rec.get("release", "") or ""))
        n_dropped.append(int(meta.get("n_dropped", 0)))
    _write_1d(root, "recordings", "recordings", table_ids, rows_before, "U")
    for name, kind in RECORDING_VARS.items():
        _write_1d(root, name, "recordings", np.asarray(table[name], dtype=object), rows_before,
                  kind)  # type: ignore[arg-type]
    _write_1d(root, "recording_n_dropped", "recordings", n_dropped, rows_before, "i")


def versions() -> dict[str, str]:
    """Return the versions of the packages that decide a store's contents."""
    import importlib.metadata as md

    out = {}
    for package in ("eegstore", "numpy", "zarr", "xarray", "dask", "distributed", "mne",
                    "eegdash", "braindecode"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return out


def finish(plan: BuildPlan, committed: CommittedStore | None,
           metas: Mapping[str, Mapping[str, Any]], crcs: Mapping[int, int], url: str,
           storage_options: dict[str, Any] | None, config: BuildConfig, recipe: Recipe,
           source: str, *, tables_written: bool = False) -> None:
    """Write the tables (unless written already), checksums and attributes; commit."""
    if not tables_written:
        write_tables(plan, committed, metas, url, storage_options, recipe)
    root = open_root(url, storage_options)
    coord_kinds = _window_coord_kinds(recipe)
    if committed is None:
        # static coordinates and the eeg array (also when no new windows exist)
        if "eeg" not in root:
            create_eeg(root, plan.shape_tail, plan.chunk_windows, config)
        reference = plan.reference or {}
        _write_1d(root, "channel", "channel", list(reference["channels"]), 0, "U")
        times = recipe.time_offset_s() + np.arange(plan.shape_tail[1]) / float(reference["sfreq"])
        _write_1d(root, "time", "time", times, 0, "f", {"units": "s"})
    # checksums of the chunks written by this build
    k = plan.chunk_windows
    n_chunks = -(-plan.n_total // k)
    first_chunk = plan.n_old // k
    crc_values = np.asarray([crcs[c] for c in range(first_chunk, n_chunks)]
                            if plan.new_windows else [], dtype=np.int64)
    if committed is None or crc_values.size:
        _write_1d(root, "chunk_crc32", "chunk", crc_values, first_chunk, "i")
    # eeg attrs: which variables are per-window coordinates (CF "coordinates")
    eeg = array_of(root, "eeg")
    eeg.update_attributes({"coordinates": " ".join(coord_kinds), "units": config.units})
    now = _dt.datetime.now(_dt.UTC).isoformat()
    attrs = dict(committed.attrs) if committed else {}
    sources = list(attrs.get("sources", []))
    if source not in sources:
        sources.append(source)
    attrs.update({
        "sfreq": float((plan.reference or {})["sfreq"]),
        "recipe": dict(config.recipe),
        "preprocessing": [dict(step) for step in config.preprocessing],
        "source": sources[0] if len(sources) == 1 else ", ".join(sources),
        "sources": sources,
        "versions": versions(),
        "schema_version": SCHEMA_VERSION,
        "created": attrs.get("created", now),
        "updated": now,
        "chunk_windows": int(k),
        "dtype": config.dtype,
        "compressor": config.compressor,
        "checksums": "crc32 of each eeg chunk's uncompressed C-ordered bytes (valid windows)",
        "time_offset_s": float(recipe.time_offset_s()),
    })
    maybe_kill("coords")
    commit_metadata(url, storage_options, attrs, sorted(root.array_keys()))
    maybe_kill("commit")


def commit_metadata(url: str, storage_options: dict[str, Any] | None,
                    attrs: Mapping[str, Any], arrays: Sequence[str]) -> None:
    """Write the root ``zarr.json`` with ``attrs`` and consolidated metadata, atomically.

    This single write is the commit point of a build: readers (and a resumed
    build) see either the previous state or the new one.  zarr's own
    ``update_attributes`` + ``consolidate_metadata`` would take two writes, the
    first of which drops the previous consolidated metadata.
    """
    fs, root = get_fs(url, storage_options)
    members: dict[str, Any] = {}
    for name in arrays:
        meta = read_json(fs, f"{root}/{name}/zarr.json")
        if meta is None:
            raise StoreError(f"expected array metadata {url}/{name}/zarr.json, got none; "
                             "re-run the build")
        members[name] = meta
    document = {"attributes": dict(attrs), "zarr_format": 3, "node_type": "group",
                "consolidated_metadata": {"kind": "inline", "must_understand": False,
                                          "metadata": members}}
    atomic_write(f"{root}/zarr.json", json.dumps(document, allow_nan=True), fs=fs)
