"""Open and summarise eegstore stores (local paths or fsspec URLs).

A store is readable with plain ``xarray.open_zarr``; :func:`open_store` adds
the checks: consolidated metadata must be present (it is written last by a
build, so a store whose build never finished, or that is being appended to,
is seen in its last complete state) and the schema must hold.

CLI: ``eegstore info STORE [--json]``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np

from eegstore._io import decode_strings
from eegstore.errors import StoreError
from eegstore.schema import DATA_VAR, RECORDING_DIM, check_schema

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

__all__ = ["configure_parser", "get_fs", "local_compute", "normalize_url", "open_store", "run",
           "store_info", "str_values", "zarr_kwargs", "zarr_store"]


def _is_url(store: str | Path) -> bool:
    return isinstance(store, str) and "://" in store


def normalize_url(store: str | Path) -> str:
    """Return ``store`` as a string: an absolute path or an fsspec URL."""
    if _is_url(store):
        return str(store).rstrip("/")
    return str(Path(store).expanduser().resolve())


def get_fs(store: str, storage_options: Mapping[str, Any] | None = None
           ) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, root path)`` of ``store``."""
    fs, root = fsspec.core.url_to_fs(store, **dict(storage_options or {}))
    return fs, root.rstrip("/")


def zarr_store(store: str, storage_options: Mapping[str, Any] | None = None,
               read_only: bool = False) -> Any:
    """Return a zarr store object for a local path or an fsspec URL."""
    import zarr.storage

    if _is_url(store):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return zarr.storage.FsspecStore.from_url(
                store, storage_options=dict(storage_options or {}), read_only=read_only)
    return zarr.storage.LocalStore(store, read_only=read_only)


def zarr_kwargs(store: str, storage_options: Mapping[str, Any] | None = None,
                read_only: bool = False) -> dict[str, Any]:
    """Keyword arguments locating ``store`` for ``zarr.open_*`` / ``xarray.open_zarr``."""
    return {"store": zarr_store(store, storage_options, read_only)}


def str_values(values: Any) -> np.ndarray:
    """Return text ``values`` (UTF-8 bytes, object, unicode or StringDType) as unicode.

    See :func:`eegstore._io.decode_strings`.
    """
    return decode_strings(values)


def _has_consolidated(store: str, storage_options: Mapping[str, Any] | None) -> bool:
    fs, root = get_fs(store, storage_options)
    try:
        meta = json.loads(fs.cat_file(f"{root}/zarr.json"))
    except FileNotFoundError:
        if fs.exists(f"{root}/_staging"):
            raise StoreError(f"expected an eegstore store at {store}, got only the staging "
                             "area of a build that has not finished; re-run the same "
                             "`eegstore build` command") from None
        raise StoreError(f"expected an eegstore store at {store}, got no zarr.json; "
                         "build one with `eegstore build`") from None
    except (ValueError, OSError) as exc:
        raise StoreError(f"expected readable store metadata at {store}/zarr.json, got {exc}; "
                         "re-run the build") from None
    if not isinstance(meta, dict):
        raise StoreError(f"expected a JSON object in {store}/zarr.json, got "
                         f"{type(meta).__name__}; this is not an eegstore store")
    return bool(meta.get("consolidated_metadata"))


def local_compute() -> Any:
    """Context in which dask reads run in this process (threads), never on a cluster.

    Reading a store's labels or chunks through a distributed ``Client`` that happens
    to be the default (a build's, a notebook's) would ship every read to the cluster,
    and hang if that cluster is gone.
    """
    import dask

    return dask.config.set(scheduler="threads")


def _load_labels(ds: xr.Dataset) -> xr.Dataset:
    """Load every variable except ``eeg`` into memory, text as plain Python ``str`` objects.

    Labels are small (a few bytes per window) and every selection needs them, so
    they are read once here.  Text opens as ``object`` arrays of ``str`` (UTF-8 bytes
    decoded by xarray, :mod:`eegstore._io`); in stores written with zarr's ``string``
    data type it opens as numpy's ``StringDType``, which is converted to ``object`` so
    that ``where``/``sel``/``astype(str)`` work there too.
    """
    loaded = {}
    for name, var in ds.variables.items():
        if name == DATA_VAR:
            continue
        try:
            with local_compute():
                values = np.asarray(var.values)
        except Exception as exc:  # codecs and stores raise many types
            raise StoreError(f"expected a readable array {name!r} in the store, got "
                             f"{type(exc).__name__}: {exc}; the store is damaged: run "
                             "`eegstore verify` and rebuild it") from exc
        if values.dtype.kind == "T":
            values = values.astype(object)
        loaded[name] = var.copy(data=values)
    return ds.assign(
        {k: v for k, v in loaded.items() if k in ds.data_vars}
    ).assign_coords({k: v for k, v in loaded.items() if k in ds.coords})


def open_store(store: str | Path, *, storage_options: Mapping[str, Any] | None = None,
               check: bool = True) -> xr.Dataset:
    """Open a store lazily (dask-backed), checking its schema.

    Only ``eeg`` stays lazy; the labels (per-window coordinates, the
    per-recording table, chunk checksums) are loaded, text as ``str`` objects.

    Parameters
    ----------
    store : str or Path
        Local path or fsspec URL (``s3://...``, ``memory://...``).
    storage_options : mapping, optional
        fsspec options for URLs (credentials come from the standard fsspec /
        boto configuration otherwise).
    check : bool
        Validate with :func:`eegstore.schema.check_schema`.

    Returns
    -------
    xarray.Dataset
        ``eeg(window, channel, time)`` plus coordinates; nothing signal is read.

    Raises
    ------
    StoreError
        Missing store, no consolidated metadata (build unfinished), or schema violation.
    """
    url = normalize_url(store)
    if not _has_consolidated(url, storage_options):
        raise StoreError(f"expected consolidated metadata in {url}, got none: its build has "
                         "not finished; re-run the same `eegstore build` command")
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(**zarr_kwargs(url, storage_options, read_only=True), consolidated=True,
                          zarr_format=3)
    if check:
        extra: dict[str, str] = {}
        try:
            from eegstore.recipes import recipe_from_dict
            extra = recipe_from_dict(ds.attrs.get("recipe", {})).extra_coords()
        except ValueError:
            extra = {}
        check_schema(ds, extra)
    return _load_labels(ds)


def store_info(store: str | Path, *, storage_options: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
    """Summary of a store as a JSON-serialisable dict (reads only metadata and coordinates)."""
    ds = open_store(store, storage_options=storage_options)
    eeg = ds["eeg"]
    status = str_values(ds["recording_status"].values)
    reasons = str_values(ds["recording_reason"].values)
    ids = str_values(ds[RECORDING_DIM].values)
    enc = eeg.encoding
    itemsize = np.dtype(eeg.dtype).itemsize
    info: dict[str, Any] = {
        "store": normalize_url(store),
        "n_windows": int(eeg.shape[0]),
        "n_channels": int(eeg.shape[1]),
        "n_times": int(eeg.shape[2]),
        "dtype": str(eeg.dtype),
        "chunk_windows": int(enc.get("chunks", eeg.shape)[0]) if eeg.shape[0] else 0,
        "compressors": [repr(c) for c in enc.get("compressors", ()) or ()],
        "uncompressed_bytes": int(np.prod(eeg.shape)) * itemsize,
        "n_recordings": len(ids),
        "n_recordings_ok": int((status == "ok").sum()),
        "n_recordings_skipped": int((status == "skipped").sum()),
        "skipped": {str(i): str(r) for i, r, s in zip(ids, reasons, status, strict=True)
                    if s != "ok"},
        "subjects": len(np.unique(str_values(ds["subject"].values))),
        "tasks": sorted(set(str_values(ds["task"].values).tolist())),
        "releases": sorted(set(str_values(ds["release"].values).tolist())),
    }
    for key in ("sfreq", "recipe", "preprocessing", "source", "versions", "schema_version",
                "created", "updated", "compressor"):
        if key in ds.attrs:
            info[key] = ds.attrs[key]
    return info


def _format_info(info: Mapping[str, Any]) -> str:
    lines = [f"store        {info['store']}",
             f"eeg          ({info['n_windows']}, {info['n_channels']}, {info['n_times']}) "
             f"{info['dtype']}, chunks of {info['chunk_windows']} windows, "
             f"{info['uncompressed_bytes'] / 2**20:.1f} MiB uncompressed",
             f"sfreq        {info.get('sfreq')} Hz",
             f"recipe       {info.get('recipe')}",
             f"preprocess   {info.get('preprocessing')}",
             f"recordings   {info['n_recordings']} ({info['n_recordings_ok']} ok, "
             f"{info['n_recordings_skipped']} skipped)",
             f"subjects     {info['subjects']}; tasks {', '.join(info['tasks'])}; "
             f"releases {', '.join(info['releases'])}",
             f"created      {info.get('created')}"]
    for rid, reason in list(info["skipped"].items())[:20]:
        lines.append(f"  skipped {rid}: {reason}")
    if len(info["skipped"]) > 20:
        lines.append(f"  ... and {len(info['skipped']) - 20} more skipped")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``eegstore info`` arguments."""
    parser.add_argument("store", help="store path or fsspec URL")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``eegstore info``."""
    info = store_info(args.store)
    print(json.dumps(info, indent=2, default=str) if args.json else _format_info(info))
    return 0
