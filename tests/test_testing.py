"""The test helpers themselves: make_store follows the schema, the dask guard works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from eegstore.errors import ConfigError, SchemaError
from eegstore.schema import CHALLENGE2_COORDS, check_schema
from eegstore.testing import make_store, raise_if_dask_computes


def test_make_store_follows_schema(tiny_store: Path) -> None:
    ds = xr.open_zarr(tiny_store)
    check_schema(ds, CHALLENGE2_COORDS)
    assert ds["eeg"].shape == (40, 4, 50)
    assert ds["eeg"].encoding["chunks"] == (8, 4, 50)
    counts = ds["recording_n_windows"].values
    assert counts.sum() == 40
    first = ds["recording_first_window"].values
    np.testing.assert_array_equal(first, np.concatenate([[0], np.cumsum(counts)[:-1]]))


def test_make_store_is_deterministic(tmp_path: Path) -> None:
    a = xr.open_zarr(make_store(tmp_path / "a.zarr", seed=3)).load()
    b = xr.open_zarr(make_store(tmp_path / "b.zarr", seed=3)).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())


@pytest.mark.parametrize(("dtype", "units", "compressor"), [
    ("float16", "uV", "zstd"), ("float32", "V", "lz4"), ("float16", "uV", "blosc-lz4"),
    ("float32", "uV", "none")])
def test_make_store_writes_each_layout_with_the_same_windows(tmp_path: Path, dtype: str,
                                                              units: str, compressor: str
                                                              ) -> None:
    ds = xr.open_zarr(make_store(tmp_path / "s.zarr", dtype=dtype, units=units,
                                 compressor=compressor))
    reference = xr.open_zarr(make_store(tmp_path / "ref.zarr", dtype="float32",
                                        compressor="none"))
    assert ds.eeg.dtype == np.dtype(dtype) and ds.eeg.attrs["units"] == units
    np.testing.assert_array_equal(ds.eeg.values, reference.eeg.values.astype(dtype))
    # text opens as str in plain xarray
    assert ds.subject.values.astype(str).tolist() == reference.subject.values.tolist()


def test_make_store_rejects_an_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected units in"):
        make_store(tmp_path / "bad.zarr", units="mV")


def test_make_store_rejects_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected positive sizes"):
        make_store(tmp_path / "bad.zarr", n_windows=0)


def test_check_schema_names_what_is_missing(tiny_store: Path) -> None:
    ds = xr.open_zarr(tiny_store).drop_vars("subject")
    with pytest.raises(SchemaError, match="'subject'"):
        check_schema(ds)


def test_guard_allows_lazy_selection_and_catches_compute(tiny_store: Path) -> None:
    ds = xr.open_zarr(tiny_store)
    with raise_if_dask_computes():
        sel = ds.isel(window=slice(0, 5))
    with pytest.raises(RuntimeError, match="lazy code path computed"), raise_if_dask_computes():
        sel["eeg"].values  # noqa: B018 - the read is the point


def test_assert_stores_equal_spots_a_changed_window(tmp_path: Path) -> None:
    from eegstore.store import open_store
    from eegstore.testing import assert_stores_equal

    a = make_store(tmp_path / "a.zarr", seed=1)
    b = make_store(tmp_path / "b.zarr", seed=1)
    assert_stores_equal(a, b)
    changed = open_store(b).load()
    changed["eeg"][0, 0, 0] += 1.0
    with pytest.raises(AssertionError, match="eeg"):
        assert_stores_equal(a, changed)
