"""The eegstore Zarr schema: names, dimensions and a validator.

A store is one Zarr v3 group, readable with plain ``xarray.open_zarr``::

    eeg            (window, channel, time)  float32 | float16, chunks (chunk_windows, all, all)
    channel        (channel,)               channel names (E1 ... E128, Cz)
    time           (time,)                  seconds from the window anchor
    <window coord> (window,)                subject, session, task, run, release, recording,
                                            onset, target + the recipe's own fields
    recordings     (recordings,)            recording ids (the per-recording table)
    recording_*    (recordings,)            path, status ("ok" | "skipped"), reason, n_windows,
                                            first_window, subject, task, run, release
    chunk_crc32    (chunk,)                 CRC32 of each eeg chunk's uncompressed bytes

The per-recording table uses the dimension ``recordings`` (plural) because the
per-window coordinate ``recording`` already carries each window's recording id
and xarray does not allow a non-index variable named like a dimension.
Windows of one recording are contiguous, in the order of ``recordings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eegstore.errors import SchemaError

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

__all__ = [
    "BASE_WINDOW_COORDS",
    "CHALLENGE1_COORDS",
    "CHALLENGE2_COORDS",
    "CHUNK_DIM",
    "RECORDING_DIM",
    "RECORDING_VARS",
    "SCHEMA_VERSION",
    "check_schema",
]

SCHEMA_VERSION = 1
DATA_VAR = "eeg"
WINDOW_DIM, CHANNEL_DIM, TIME_DIM = "window", "channel", "time"
RECORDING_DIM = "recordings"
CHUNK_DIM = "chunk"

#: Per-window coordinates every store has: name -> dtype kind ("U" string, "f" float, "i" int).
BASE_WINDOW_COORDS: dict[str, str] = {
    "subject": "U",
    "session": "U",
    "task": "U",
    "run": "U",
    "release": "U",
    "recording": "U",
    "onset": "f",
    "target": "f",
}
#: Extra per-window coordinates of the challenge1 recipe.
CHALLENGE1_COORDS: dict[str, str] = {
    "rt_from_stimulus": "f",
    "rt_from_trialstart": "f",
    "stimulus_onset": "f",
    "response_onset": "f",
    "correct": "f",  # 1.0 correct, 0.0 incorrect, NaN unknown
    "response_type": "U",
}
#: Extra per-window (subject-level) coordinates of the challenge2 recipe.
CHALLENGE2_COORDS: dict[str, str] = {
    "externalizing": "f",
    "p_factor": "f",
    "attention": "f",
    "internalizing": "f",
    "age": "f",
    "sex": "U",
}
#: Variables of the per-recording table (dimension ``recordings``).
RECORDING_VARS: dict[str, str] = {
    "recording_path": "U",
    "recording_status": "U",
    "recording_reason": "U",
    "recording_n_windows": "i",
    "recording_first_window": "i",
    "recording_subject": "U",
    "recording_task": "U",
    "recording_run": "U",
    "recording_release": "U",
}
REQUIRED_ATTRS = ("sfreq", "recipe", "preprocessing", "source", "versions", "schema_version",
                  "created")


def _kind_ok(dtype: Any, kind: str) -> bool:
    k = str(dtype.kind)
    if kind == "U":
        return k in "UOST"
    if kind == "f":
        return k == "f"
    return k in "iu"


def check_schema(ds: xr.Dataset, extra_coords: Mapping[str, str] | None = None) -> None:
    """Raise :class:`SchemaError` unless ``ds`` follows the eegstore schema.

    Only metadata is inspected: no signal chunk is read.

    Parameters
    ----------
    ds : xarray.Dataset
        A dataset opened from a store (lazy is fine).
    extra_coords : mapping, optional
        Further per-window coordinates to require, name -> dtype kind.
    """
    if DATA_VAR not in ds.data_vars:
        found = sorted(map(str, ds.data_vars))
        raise SchemaError(f"expected a data variable {DATA_VAR!r}, got {found}; "
                          "is this an eegstore store?")
    eeg = ds[DATA_VAR]
    if eeg.dims != (WINDOW_DIM, CHANNEL_DIM, TIME_DIM):
        raise SchemaError(f"expected eeg dims (window, channel, time), got {eeg.dims}")
    if eeg.dtype.kind != "f":
        raise SchemaError(f"expected a float eeg array, got {eeg.dtype}")
    wanted = dict(BASE_WINDOW_COORDS)
    wanted.update(extra_coords or {})
    for name, kind in wanted.items():
        if name not in ds.variables:
            raise SchemaError(f"expected per-window coordinate {name!r}, got none; "
                              "rebuild the store with a current eegstore")
        var = ds[name]
        if var.dims != (WINDOW_DIM,):
            raise SchemaError(f"expected {name!r} along (window,), got {var.dims}")
        if not _kind_ok(var.dtype, kind):
            raise SchemaError(f"expected {name!r} of kind {kind!r}, got dtype {var.dtype}")
    for name in (CHANNEL_DIM, TIME_DIM):
        if name not in ds.coords:
            raise SchemaError(f"expected a {name!r} coordinate, got none")
    for name in RECORDING_VARS:
        if name not in ds.variables or ds[name].dims != (RECORDING_DIM,):
            raise SchemaError(f"expected {name!r} along ({RECORDING_DIM},), got "
                              f"{ds[name].dims if name in ds.variables else 'nothing'}")
    missing = [a for a in REQUIRED_ATTRS if a not in ds.attrs]
    if missing:
        raise SchemaError(f"expected store attrs {list(REQUIRED_ATTRS)}, missing {missing}")
