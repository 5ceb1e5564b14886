"""Subject- and release-disjoint splits from coordinates alone."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from eegstore.errors import ConfigError
from eegstore.splits import release_split, subject_split
from eegstore.testing import make_store


@pytest.fixture(scope="module")
def split_store(tmp_path_factory):
    p = make_store(tmp_path_factory.mktemp("splits") / "s.zarr", n_windows=120, n_subjects=20,
                   chunk_windows=16, releases=("R1", "R2", "R3", "R4", "R5"))
    # no signal is needed: remove every eeg chunk to prove splits read coordinates only
    for f in (p / "eeg" / "c").rglob("*"):
        if f.is_file():
            f.unlink()
    return p


@settings(max_examples=25, deadline=None)
@given(valid=st.floats(0, 0.4), test=st.floats(0, 0.4), seed=st.integers(0, 100))
def test_subject_split_is_disjoint_and_complete(split_store, valid, test, seed):
    ds = xr.open_zarr(split_store)
    masks = subject_split(ds, valid=valid, test=test, seed=seed)
    assert set(masks) == {"train", "valid", "test"}
    total = masks["train"].astype(int) + masks["valid"] + masks["test"]
    assert np.all(total == 1)
    subject = ds["subject"].values.astype(object).astype("U")
    groups = [set(subject[m]) for m in masks.values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    if test > 0:
        assert masks["test"].any()
    again = subject_split(split_store, valid=valid, test=test, seed=seed)
    assert all(np.array_equal(masks[k], again[k]) for k in masks)


def test_subject_split_errors(split_store):
    with pytest.raises(ConfigError, match="valid \\+ test < 1"):
        subject_split(split_store, valid=0.5, test=0.5)
    with pytest.raises(ConfigError, match="fraction in"):
        subject_split(split_store, valid=-0.1)


def test_release_split(split_store):
    ds = xr.open_zarr(split_store)
    masks = release_split(ds)
    release = ds["release"].values.astype(object).astype("U")
    assert set(release[masks["train"]]) == {"R1", "R2", "R3", "R4"}
    assert set(release[masks["valid"]]) == {"R5"}
    assert not masks["test"].any()
    custom = release_split(split_store, train=("R1",), valid="R2", test=("R3",))
    assert set(release[custom["valid"]]) == {"R2"}
    with pytest.raises(ConfigError, match="each release in one part"):
        release_split(ds, train=("R1", "R5"), valid=("R5",))
