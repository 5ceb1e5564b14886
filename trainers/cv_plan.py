"""Cross-validation folds of a store, planned from its coordinates alone.

A :class:`CVPlan` is pure data: for every repeat and fold, the subjects that
train, the subjects of the inner validation split (early stopping; drawn from
the training subjects only) and the subjects tested.  It is built from the
``subject`` and ``release`` coordinates and the finite targets
(:func:`plan_folds`, :func:`plan_store_folds`; no signal chunk is read),
serialises to the ``plan`` entry of ``cv.json`` and reloads with
:meth:`CVPlan.from_dict` / :func:`load_plan` to score another model on
identical folds.

Grouping:

* ``group="subject"``: subjects (sorted, then permuted with ``np.random.default_rng([seed,
  repeat])``) are dealt into ``n_folds`` folds whose sizes differ by at most one; every
  subject is tested exactly once per repeat.
* ``group="release"``: leave one release out; one fold per release, so ``n_folds`` is the
  number of releases and ``repeats`` must be 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from eegstore.errors import ConfigError, StoreError

__all__ = ["CV_GROUPS", "CVFold", "CVPlan", "load_plan", "plan_folds", "plan_store_folds",
           "store_coordinates"]

CV_GROUPS = ("subject", "release")
PLAN_FORMAT = 1


def _check_labels(name: str, labels: Sequence[str]) -> tuple[str, ...]:
    out = tuple(str(s) for s in labels)
    if len(set(out)) != len(out):
        raise ConfigError(f"expected distinct {name} subjects, got duplicates; rebuild the plan")
    return out


@dataclass(frozen=True)
class CVFold:
    """One fold of one repeat.

    Attributes
    ----------
    repeat, fold : int
        Position in the plan (from 0).
    label : str
        ``"fold N"`` or the held-out release.
    train, valid, test : tuple of str
        Subjects of each part (disjoint; ``valid`` comes from the training subjects).
    seed : int
        Training seed of this fold (model initialisation, stream order).
    """

    repeat: int
    fold: int
    label: str
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]
    seed: int

    def __post_init__(self) -> None:
        parts = {name: _check_labels(name, getattr(self, name))
                 for name in ("train", "valid", "test")}
        for name, labels in parts.items():
            object.__setattr__(self, name, labels)
        if not parts["train"] or not parts["test"]:
            raise ConfigError(f"expected training and test subjects in fold {self.fold}, got "
                              f"{len(parts['train'])} and {len(parts['test'])}")
        for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
            both = set(parts[a]) & set(parts[b])
            if both:
                raise ConfigError(f"expected subject-disjoint {a} and {b} in fold {self.fold}, "
                                  f"got {sorted(both)[:3]} in both")

    @property
    def name(self) -> str:
        """Directory name of the fold's run (``r0-f3``)."""
        return f"r{self.repeat}-f{self.fold}"

    def masks(self, subject: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean window masks ``train``, ``valid``, ``test`` of the fold.

        Parameters
        ----------
        subject : numpy.ndarray
            The subject of every window of the store.

        Returns
        -------
        dict of str to numpy.ndarray
            One mask per part.
        """
        subject = np.asarray(subject).astype(str)
        return {name: np.isin(subject, np.asarray(getattr(self, name), dtype=str))
                for name in ("train", "valid", "test")}

    def to_dict(self) -> dict[str, Any]:
        """Return the fold as JSON-compatible data."""
        return {"repeat": self.repeat, "fold": self.fold, "label": self.label,
                "train": list(self.train), "valid": list(self.valid), "test": list(self.test),
                "seed": self.seed}


@dataclass(frozen=True)
class CVPlan:
    """Every fold of a cross-validation, with the settings that produced it.

    Attributes
    ----------
    group : {"subject", "release"}
        What a fold holds out.
    n_folds, repeats : int
        Folds per repeat and repeats.
    seed : int
        Seed of the fold assignment, the inner validation draw and the training seeds.
    valid_fraction : float
        Fraction of each fold's training subjects kept for inner validation.
    subjects : tuple of str
        Every subject in the plan (those with a finite target), sorted.
    folds : tuple of CVFold
        Repeat-major.
    """

    group: str
    n_folds: int
    repeats: int
    seed: int
    valid_fraction: float
    subjects: tuple[str, ...]
    folds: tuple[CVFold, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "subjects", _check_labels("plan", self.subjects))
        object.__setattr__(self, "folds", tuple(self.folds))
        _check_group(self.group)
        if len(self.folds) != self.n_folds * self.repeats:
            raise ConfigError(f"expected {self.n_folds * self.repeats} folds "
                              f"({self.n_folds} x {self.repeats} repeats), got {len(self.folds)}")
        everyone = set(self.subjects)
        for repeat in range(self.repeats):
            tested = [s for f in self.folds if f.repeat == repeat for s in f.test]
            if len(tested) != len(set(tested)) or set(tested) != everyone:
                raise ConfigError(f"expected every subject tested exactly once in repeat "
                                  f"{repeat}, got {len(tested)} tests of "
                                  f"{len(set(tested))}/{len(everyone)} subjects")

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as JSON-compatible data (the ``plan`` entry of ``cv.json``)."""
        return {"format": PLAN_FORMAT, "group": self.group, "n_folds": self.n_folds,
                "repeats": self.repeats, "seed": self.seed,
                "valid_fraction": self.valid_fraction, "subjects": list(self.subjects),
                "folds": [f.to_dict() for f in self.folds]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CVPlan:
        """Rebuild a plan from :meth:`to_dict` output (validated again).

        Parameters
        ----------
        data : mapping
            A plan dict.

        Returns
        -------
        CVPlan
            The plan.
        """
        if data.get("format") != PLAN_FORMAT:
            raise ConfigError(f"expected a cross-validation plan of format {PLAN_FORMAT}, got "
                              f"{data.get('format')!r}; re-run `python -m trainers cv`")
        try:
            folds = tuple(CVFold(**f) for f in data["folds"])
            return cls(group=data["group"], n_folds=int(data["n_folds"]),
                       repeats=int(data["repeats"]), seed=int(data["seed"]),
                       valid_fraction=float(data["valid_fraction"]),
                       subjects=tuple(data["subjects"]), folds=folds)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"expected a complete cross-validation plan, got {exc!r}; "
                              "re-run `python -m trainers cv`") from exc

    def check_store(self, subject: np.ndarray, finite: np.ndarray) -> None:
        """Raise unless the plan's subjects are the store's subjects with a finite target.

        Parameters
        ----------
        subject : numpy.ndarray
            Subject of every window.
        finite : numpy.ndarray
            Boolean, the window has a finite target.
        """
        present = set(np.unique(np.asarray(subject).astype(str)[np.asarray(finite)]).tolist())
        if present != set(self.subjects):
            missing = sorted(set(self.subjects) - present)[:3]
            extra = sorted(present - set(self.subjects))[:3]
            raise ConfigError(f"expected the plan's {len(self.subjects)} subjects in the store, "
                              f"got {len(present)} (missing {missing}, extra {extra}); plan "
                              "the folds of this store instead")


def _check_group(group: str) -> None:
    if group not in CV_GROUPS:
        raise ConfigError(f"expected group in {CV_GROUPS}, got {group!r}")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"expected {name} as an integer >= {minimum}, got {value!r}")
    return int(value)


def _inner_valid(train: np.ndarray, fraction: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    if fraction == 0:
        return train, train[:0]
    n_valid = max(1, round(fraction * train.size))
    if n_valid >= train.size:
        raise ConfigError(f"expected more than {n_valid} training subjects per fold for an "
                          f"inner validation fraction of {fraction}, got {train.size}; use "
                          "fewer folds or a smaller valid fraction")
    perm = train[rng.permutation(train.size)]
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


def _fold_seed(seed: int, repeat: int, fold: int) -> int:
    return int(np.random.SeedSequence([seed, repeat, fold]).generate_state(1)[0] % 2**31)


def plan_folds(subject: Sequence[str] | np.ndarray, release: Sequence[str] | np.ndarray | None
               = None, *, n_folds: int | None = 5, group: str = "subject", repeats: int = 1,
               seed: int = 0, valid_fraction: float = 0.2,
               finite: np.ndarray | None = None) -> CVPlan:
    """Plan grouped K-fold cross-validation from per-window coordinates.

    Parameters
    ----------
    subject : array_like of str
        Subject of every window.
    release : array_like of str, optional
        Release of every window (needed for ``group="release"``).
    n_folds : int, optional
        Folds per repeat (``group="release"``: the number of releases, the default).
    group : {"subject", "release"}
        Hold out groups of subjects, or one release per fold.
    repeats : int
        Repeats with a fresh subject assignment each (``group="subject"`` only).
    seed : int
        Seed of the assignment, the inner validation draw and the per-fold training seeds.
    valid_fraction : float
        Fraction of each fold's training subjects held out for validation (at least one
        subject when non-zero).
    finite : numpy.ndarray of bool, optional
        Windows with a finite target; subjects without any are left out of the plan.

    Returns
    -------
    CVPlan
        The folds.
    """
    _check_group(group)
    repeats = _check_int("repeats", repeats, 1)
    if isinstance(valid_fraction, bool) or not 0 <= valid_fraction < 1:
        raise ConfigError(f"expected valid_fraction in [0, 1), got {valid_fraction!r}")
    subject = np.asarray(subject).astype(object).astype(str)
    keep = np.ones(subject.shape, bool) if finite is None else np.asarray(finite, bool)
    if keep.shape != subject.shape:
        raise ConfigError(f"expected one finite flag per window ({subject.size}), got "
                          f"{keep.size}")
    subjects = np.unique(subject[keep])
    if group == "subject":
        n_folds = _check_int("n_folds", n_folds, 2)
        if n_folds > subjects.size:
            raise ConfigError(f"expected at most one fold per subject ({subjects.size} "
                              f"subjects with a finite target), got {n_folds} folds")
        tests: list[tuple[int, int, str, np.ndarray]] = []
        for r in range(repeats):
            perm = subjects[np.random.default_rng([seed, r]).permutation(subjects.size)]
            tests.extend((r, f, f"fold {f + 1}", np.sort(part))
                         for f, part in enumerate(np.array_split(perm, n_folds)))
    else:
        if release is None:
            raise ConfigError("expected the release of every window with group='release', "
                              "got none")
        release = np.asarray(release).astype(object).astype(str)
        if release.shape != subject.shape:
            raise ConfigError(f"expected one release per window ({subject.size}), got "
                              f"{release.size}")
        releases = np.unique(release[keep])
        if releases.size < 2:
            raise ConfigError(f"expected at least two releases to leave one out, got "
                              f"{releases.tolist()}; use --group subject")
        if n_folds is not None and n_folds != releases.size:
            raise ConfigError(f"expected --folds {releases.size} (one per release "
                              f"{releases.tolist()}) with group='release', got {n_folds}")
        if repeats != 1:
            raise ConfigError(f"expected repeats=1 with group='release' (the folds are fixed), "
                              f"got {repeats}")
        n_folds = int(releases.size)
        tests = [(0, f, str(rel), np.unique(subject[keep & (release == rel)]))
                 for f, rel in enumerate(releases)]
    folds = []
    for r, f, label, test in tests:
        rest = np.setdiff1d(subjects, test)
        train, valid = _inner_valid(rest, valid_fraction, np.random.default_rng([seed, r, f]))
        folds.append(CVFold(repeat=r, fold=f, label=label, train=tuple(train),
                            valid=tuple(valid), test=tuple(test), seed=_fold_seed(seed, r, f)))
    return CVPlan(group=group, n_folds=int(n_folds), repeats=repeats, seed=seed,
                  valid_fraction=float(valid_fraction), subjects=tuple(subjects),
                  folds=tuple(folds))


def store_coordinates(store: str | os.PathLike[str], target: str = "target"
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``subject``, ``release`` and the finite-target flag of every window (no signal).

    Parameters
    ----------
    store : path-like
        An eegstore store.
    target : str
        The regressed per-window coordinate.

    Returns
    -------
    subject, release, finite : numpy.ndarray
        Per-window arrays.
    """
    try:
        ds = xr.open_zarr(os.fspath(store), chunks=None)
    except Exception as exc:  # zarr/fsspec raise many types
        raise StoreError(f"expected a readable store at {os.fspath(store)!r}, got "
                         f"{type(exc).__name__}: {exc}") from exc
    out = []
    for name in ("subject", "release", target):
        if name not in ds.variables or ds[name].dims != ("window",):
            raise StoreError(f"expected a per-window coordinate {name!r} in {store}, got none; "
                             "is this an eegstore store?")
        out.append(np.asarray(ds[name].values))
    subject, release = (a.astype(object).astype(str) for a in out[:2])
    return subject, release, np.isfinite(out[2].astype(np.float64))


def plan_store_folds(store: str | os.PathLike[str], *, target: str = "target",
                     **kwargs: Any) -> CVPlan:
    """:func:`plan_folds` on a store's coordinates (no signal chunk is read).

    Parameters
    ----------
    store : path-like
        An eegstore store.
    target : str
        Per-window target coordinate (subjects without a finite one are left out).
    **kwargs
        ``n_folds``, ``group``, ``repeats``, ``seed``, ``valid_fraction``.

    Returns
    -------
    CVPlan
        The folds.
    """
    subject, release, finite = store_coordinates(store, target)
    return plan_folds(subject, release, finite=finite, **kwargs)


def load_plan(path: str | os.PathLike[str]) -> CVPlan:
    """Load the folds of an earlier cross-validation (``cv.json`` or its directory).

    Parameters
    ----------
    path : path-like
        ``DIR/cv.json`` or ``DIR``.

    Returns
    -------
    CVPlan
        The same folds.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "cv.json"
    if not p.is_file():
        raise FileNotFoundError(f"expected a cv.json at {p}, got nothing; run "
                                "`python -m trainers cv ... --out DIR` first")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"expected JSON in {p}, got {exc}") from exc
    if "plan" not in data:
        raise ConfigError(f"expected a 'plan' entry in {p}, got {sorted(data)}")
    return CVPlan.from_dict(data["plan"])
