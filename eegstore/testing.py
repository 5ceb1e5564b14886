"""Test helpers: tiny schema-conformant stores written without a build.

:func:`make_store` writes a store that follows :mod:`eegstore.schema` directly
from seeded random numbers, chunk by chunk (bounded memory), so loaders,
trainers and benchmarks can be exercised at any size without raw recordings.
A linear "planted" signal makes ``target`` learnable.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from scipy.signal import lfilter

from eegstore._io import STRING_ATTRS, encode_strings
from eegstore.build import DEFAULT_COMPRESSOR, DEFAULT_DTYPE, DEFAULT_UNITS, compressor_codecs
from eegstore.build.layout import check_layout
from eegstore.errors import ConfigError
from eegstore.schema import (
    CHALLENGE2_COORDS,
    SCHEMA_VERSION,
)

__all__ = ["assert_stores_equal", "make_store", "raise_if_dask_computes"]


#: ADC steps per unit of the (unit-variance) synthetic signal.
_ADC_STEPS = 4096.0
#: Lag-one autocorrelation of the synthetic background (EEG is dominated by low frequencies).
_AR1 = 0.95


def _block(block_id: tuple[int, ...], *, seed: int, chunk_windows: int, n_windows: int,
           n_channels: int, n_times: int, targets: np.ndarray, planted: float,
           dtype: str) -> np.ndarray:
    i = block_id[0]
    start = i * chunk_windows
    stop = min(start + chunk_windows, n_windows)
    rng = np.random.default_rng([seed, i])
    # 1/f-like background: AR(1) noise along time, scaled back to unit variance
    x = lfilter([np.sqrt(1.0 - _AR1**2)], [1.0, -_AR1],
                rng.standard_normal((stop - start, n_channels, n_times)), axis=-1)
    x = x.astype(np.float32)
    pattern = np.sin(np.linspace(0, 4 * np.pi, n_times, dtype=np.float32))
    x += planted * targets[start:stop, None, None].astype(np.float32) * pattern
    # quantised like an ADC (recorded EEG is integer counts times a gain, e.g. BDF's
    # 24 bits), which is what makes real recordings compressible at all
    x = np.round(x * _ADC_STEPS) / _ADC_STEPS
    block: np.ndarray = x.astype(dtype)
    return block


def make_store(
    store: str | Path,
    *,
    n_windows: int = 64,
    n_channels: int = 4,
    n_times: int = 50,
    chunk_windows: int = 8,
    n_subjects: int = 8,
    sfreq: float = 100.0,
    dtype: str = DEFAULT_DTYPE,
    units: str = DEFAULT_UNITS,
    planted: float = 1.0,
    seed: int = 0,
    releases: tuple[str, ...] = ("R5",),
    compressor: str = DEFAULT_COMPRESSOR,
) -> Path:
    """Write a small schema-conformant store of random windows and return its path.

    The signal is unit-variance AR(1) noise (lag-one autocorrelation 0.95, a
    low-frequency-dominated background like EEG) plus the planted target,
    quantised to 1/4096 like the integer counts of an EEG amplifier.

    Parameters
    ----------
    store : str or Path
        Directory to create (overwritten).
    n_windows, n_channels, n_times : int
        Shape of ``eeg``.
    chunk_windows : int
        Windows per chunk.
    n_subjects : int
        Windows are spread over this many subjects (contiguous blocks, one recording each).
    sfreq : float
        Sampling frequency recorded in the attrs.
    dtype : {"float16", "float32"}
        Storage dtype (default: the build's).
    units : {"uV", "V"}
        ``eeg.attrs["units"]`` (default: the build's).  The numbers are the same in
        either: the synthetic signal has no physical scale.
    planted : float
        Amplitude of ``target * sin`` added to every channel (0 for pure noise).
    seed : int
        Seed of every random number.
    releases : tuple of str
        Subjects are assigned to these releases round-robin.
    compressor : str
        Codec of ``eeg``, as in :func:`eegstore.build.build_store` (default: the build's).

    Returns
    -------
    Path
        The store's path.
    """
    check_layout(dtype, units, compressor)
    if n_windows < 1 or n_subjects < 1 or chunk_windows < 1:
        raise ConfigError(f"expected positive sizes, got n_windows={n_windows}, "
                          f"n_subjects={n_subjects}, chunk_windows={chunk_windows}")
    n_subjects = min(n_subjects, n_windows)
    rng = np.random.default_rng(seed)
    subj_of = np.sort(rng.integers(0, n_subjects, n_windows))
    subj_of[:n_subjects] = np.arange(n_subjects)
    subj_of = np.sort(subj_of)
    subjects = np.array([f"S{int(s):03d}" for s in subj_of], dtype=object)
    subj_target = rng.standard_normal(n_subjects)
    targets = (subj_target[subj_of] + 0.5 * rng.standard_normal(n_windows)).astype(np.float32)
    n_chunks = -(-n_windows // chunk_windows)
    chunks = ((chunk_windows,) * (n_windows // chunk_windows)
              + ((n_windows % chunk_windows,) if n_windows % chunk_windows else ()))
    eeg = da.map_blocks(
        lambda block_id=None: _block(block_id, seed=seed, chunk_windows=chunk_windows,
                                     n_windows=n_windows, n_channels=n_channels,
                                     n_times=n_times, targets=targets, planted=planted,
                                     dtype=dtype),
        chunks=(chunks, (n_channels,), (n_times,)),
        dtype=dtype,
    )
    rec_ids = np.array([f"sub-S{s:03d}_task-test_run-1" for s in range(n_subjects)], dtype=object)
    first = np.searchsorted(subj_of, np.arange(n_subjects)).astype(np.int64)
    counts = np.bincount(subj_of, minlength=n_subjects).astype(np.int64)
    rel = np.array([releases[s % len(releases)] for s in range(n_subjects)], dtype=object)
    win = ("window",)
    coords: dict[str, tuple[tuple[str, ...], np.ndarray]] = {
        "channel": (("channel",), np.array([f"E{i + 1}" for i in range(n_channels)], dtype=object)),
        "time": (("time",), np.arange(n_times) / sfreq),
        "subject": (win, subjects),
        "session": (win, np.full(n_windows, "", dtype=object)),
        "task": (win, np.array(["test"] * n_windows, dtype=object)),
        "run": (win, np.array(["1"] * n_windows, dtype=object)),
        "release": (win, rel[subj_of]),
        "recording": (win, rec_ids[subj_of]),
        "onset": (win, (np.arange(n_windows) - first[subj_of]) * 2.0),
        "target": (win, targets),
        "recordings": (("recordings",), rec_ids),
    }
    for name, kind in CHALLENGE2_COORDS.items():
        if kind == "f":
            coords[name] = (win, subj_target[subj_of].astype(np.float64))
        else:
            coords[name] = (win, np.array(["M"] * n_windows, dtype=object))
    table = {
        "recording_path": rec_ids,
        "recording_status": np.array(["ok"] * n_subjects, dtype=object),
        "recording_reason": np.array([""] * n_subjects, dtype=object),
        "recording_n_windows": counts,
        "recording_first_window": first,
        "recording_subject": np.array([f"S{s:03d}" for s in range(n_subjects)], dtype=object),
        "recording_task": np.array(["test"] * n_subjects, dtype=object),
        "recording_run": np.array(["1"] * n_subjects, dtype=object),
        "recording_release": rel,
    }
    ds = xr.Dataset({"eeg": (("window", "channel", "time"), eeg, {"units": units})},
                    coords=coords)
    for name, values in table.items():
        ds[name] = (("recordings",), values)
    ds["chunk_crc32"] = (("chunk",), np.zeros(n_chunks, dtype=np.int64))
    ds.attrs.update(
        sfreq=float(sfreq),
        recipe={"name": "synthetic-test", "params": {"n_times": n_times}},
        preprocessing=[],
        source="eegstore.testing.make_store",
        versions={},
        schema_version=SCHEMA_VERSION,
        created=_dt.datetime.now(_dt.UTC).isoformat(),
        chunk_windows=int(chunk_windows),
        checksums="none",
    )
    path = Path(store)
    ds.to_zarr(path, mode="w", consolidated=True, zarr_format=3,
               encoding={"eeg": {"chunks": (chunk_windows, n_channels, n_times),
                                 "compressors": compressor_codecs(compressor)}})
    _store_text_as_utf8_bytes(path)
    return path


def _store_text_as_utf8_bytes(path: Path) -> None:
    """Rewrite the text arrays xarray wrote as the build writes them (:mod:`eegstore._io`)."""
    import zarr
    from zarr.core.dtype import VariableLengthBytes

    group = zarr.open_group(path, mode="r+", zarr_format=3, use_consolidated=False)
    for name, arr in list(group.arrays()):
        if arr.dtype.kind != "T":
            continue
        values, attrs = arr[:], dict(arr.attrs)
        new = group.create_array(name, shape=arr.shape, chunks=arr.chunks,
                                 dtype=VariableLengthBytes(), fill_value=b"",
                                 dimension_names=arr.metadata.to_dict()["dimension_names"],  # type: ignore[arg-type]
                                 attributes={**attrs, **STRING_ATTRS}, overwrite=True)
        new[:] = encode_strings(values)
    zarr.consolidate_metadata(path, zarr_format=3)


class _CountingScheduler:
    def __init__(self, max_computes: int) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"expected at most {self.max_computes} dask compute(s), got "
                f"{self.total_computes}; a lazy code path computed"
            )
        from dask.local import get_sync

        return get_sync(dsk, keys, **kwargs)


@contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[_CountingScheduler]:
    """Fail when the code inside computes a dask graph more than ``max_computes`` times.

    Mirrors xarray's test helper: lazy paths (selection by coordinates, plans)
    must not read signal chunks.

    Parameters
    ----------
    max_computes : int
        Number of computes tolerated.

    Yields
    ------
    _CountingScheduler
        The scheduler; ``total_computes`` tells how many computes ran.
    """
    scheduler = _CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


def assert_stores_equal(a: str | Path | xr.Dataset, b: str | Path | xr.Dataset, *,
                        ignore_attrs: Collection[str] | None = ("created", "updated",
                                                                 "versions")) -> None:
    """Raise ``AssertionError`` unless two stores hold the same data.

    Compares the variable names, the sizes, every variable's values (text as
    ``str``) and the attrs except ``ignore_attrs``.

    Parameters
    ----------
    a, b : str, Path or xarray.Dataset
        Stores (opened with :func:`eegstore.store.open_store`) or opened datasets.
    ignore_attrs : collection of str, optional
        Attrs that may differ (timestamps, versions); ``None`` skips the attrs.
    """
    from eegstore.store import local_compute, open_store, str_values

    with local_compute():
        da_ = (a if isinstance(a, xr.Dataset) else open_store(a)).load()
        db = (b if isinstance(b, xr.Dataset) else open_store(b)).load()
    if set(da_.variables) != set(db.variables):
        raise AssertionError(f"expected the same variables, got {sorted(map(str, da_.variables))}"
                             f" and {sorted(map(str, db.variables))}")
    if dict(da_.sizes) != dict(db.sizes):
        raise AssertionError(f"expected the same sizes, got {dict(da_.sizes)} and "
                             f"{dict(db.sizes)}")
    for name in da_.variables:
        x, y = da_[name].values, db[name].values
        if x.dtype.kind in "OUT":
            x, y = str_values(x), str_values(y)
        np.testing.assert_array_equal(x, y, err_msg=str(name))
    if ignore_attrs is not None:
        keep_a = {k: v for k, v in da_.attrs.items() if k not in ignore_attrs}
        keep_b = {k: v for k, v in db.attrs.items() if k not in ignore_attrs}
        if keep_a != keep_b:
            raise AssertionError(f"expected the same attrs, got {keep_a} and {keep_b}")
