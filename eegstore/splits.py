"""Train/valid/test splits of a store's windows, from coordinates alone.

Both functions return ``{"train": mask, "valid": mask, "test": mask}`` of
boolean numpy arrays over the ``window`` dimension, ready to pass as
``where=`` to :class:`eegstore.torch.WindowStream` / ``WindowDataset``.  No
signal chunk is read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from eegstore.errors import ConfigError, StoreError

__all__ = ["release_split", "subject_split"]


def _coords(ds: xr.Dataset | str | Path) -> xr.Dataset:
    if isinstance(ds, xr.Dataset):
        return ds
    if isinstance(ds, str | os.PathLike):
        try:
            opened: xr.Dataset = xr.open_zarr(os.fspath(ds), chunks=None)
            return opened
        except Exception as exc:  # zarr/fsspec raise many types
            raise StoreError(f"expected a readable store at {os.fspath(ds)!r}, got "
                             f"{type(exc).__name__}: {exc}") from exc
    raise ConfigError(f"expected an xarray.Dataset or a store path, got {type(ds).__name__}")


def _values(ds: xr.Dataset, name: str) -> np.ndarray:
    if name not in ds.variables or ds[name].dims != ("window",):
        raise StoreError(f"expected a per-window coordinate {name!r}, got none; "
                         "is this an eegstore store?")
    values = np.asarray(ds[name].values)
    return values.astype(object).astype("U") if values.dtype.kind not in "U" else values


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ConfigError(f"expected {name} as a fraction in [0, 1), got {value!r}")
    return float(value)


def subject_split(ds: xr.Dataset | str | Path, valid: float = 0.1, test: float = 0.1,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Split windows by subject: no subject appears in two parts.

    Subjects (sorted, then permuted with ``seed``) go to ``test`` first, then
    ``valid``, then ``train``; each non-zero fraction gets at least one subject
    (``round(fraction * n_subjects)`` otherwise).

    Parameters
    ----------
    ds : xarray.Dataset or path
        An opened store (lazy is fine) or its path.
    valid, test : float
        Fractions of subjects.
    seed : int
        Seed of the subject permutation.

    Returns
    -------
    dict of str to numpy.ndarray
        Boolean masks ``train``, ``valid``, ``test`` over windows.
    """
    valid = _check_fraction("valid", valid)
    test = _check_fraction("test", test)
    if valid + test >= 1:
        raise ConfigError(f"expected valid + test < 1, got {valid + test}; leave subjects "
                          "for training")
    subject = _values(_coords(ds), "subject")
    subjects = np.unique(subject)
    n = len(subjects)
    n_test = max(1, round(test * n)) if test > 0 else 0
    n_valid = max(1, round(valid * n)) if valid > 0 else 0
    if n_test + n_valid >= n:
        raise ConfigError(f"expected more than {n_test + n_valid} subjects for valid={valid}, "
                          f"test={test}, got {n}; lower the fractions")
    perm = subjects[np.random.default_rng(seed).permutation(n)]
    parts = {"test": perm[:n_test], "valid": perm[n_test:n_test + n_valid],
             "train": perm[n_test + n_valid:]}
    return {name: np.isin(subject, parts[name]) for name in ("train", "valid", "test")}


def release_split(ds: xr.Dataset | str | Path,
                  train: Sequence[str] = ("R1", "R2", "R3", "R4"),
                  valid: Sequence[str] = ("R5",),
                  test: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Split windows by HBN release (default: train R1-R4, validate R5).

    Parameters
    ----------
    ds : xarray.Dataset or path
        An opened store or its path.
    train, valid, test : sequence of str
        Releases of each part; they must not overlap.

    Returns
    -------
    dict of str to numpy.ndarray
        Boolean masks ``train``, ``valid``, ``test`` over windows.

    Raises
    ------
    ConfigError
        When a release is listed twice or a subject spans two parts.
    """
    parts = {name: (rel,) if isinstance(rel, str) else tuple(rel)
             for name, rel in (("train", train), ("valid", valid), ("test", test))}
    seen: dict[str, str] = {}
    for name, rel in parts.items():
        for r in rel:
            if r in seen:
                raise ConfigError(f"expected each release in one part, got {r!r} in "
                                  f"{seen[r]} and {name}")
            seen[r] = name
    coords = _coords(ds)
    release = _values(coords, "release")
    masks = {name: np.isin(release, np.asarray(rel, dtype=str)) for name, rel in parts.items()}
    subject = _values(coords, "subject")
    for a in ("train", "valid"):
        for b in ("valid", "test"):
            if a != b:
                both = np.intersect1d(subject[masks[a]], subject[masks[b]])
                if both.size:
                    raise ConfigError(f"expected subject-disjoint releases, got subjects "
                                      f"{list(both[:3])} in both {a} and {b}")
    return masks
