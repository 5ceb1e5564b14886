"""Recipes: how a recording becomes labelled windows.

A recipe is a small frozen dataclass that keeps, prints and serialises its
parameters; the store records ``{"name": ..., "params": ...}`` in its
``recipe`` attribute.  Three recipes are registered (:data:`RECIPES`):

``challenge1``
    contrastChangeDetection runs; trials from
    :func:`eegdash.hbn.windows.build_trial_table`; trials with a stimulus and a
    response; one window per trial covering ``[stimulus + 0.5 s, stimulus +
    2.5 s)`` (200 samples at 100 Hz); ``target = rt_from_stimulus``.  The sample
    arithmetic is that of the challenge start kit (eegdash
    ``annotate_trials_with_target`` -> ``add_aux_anchors`` -> braindecode
    ``create_windows_from_events(trial_start_offset_samples=50,
    trial_stop_offset_samples=250, window_size_samples=200,
    window_stride_samples=100)``): the stimulus sample is
    ``round(stimulus_onset * sfreq)`` (mne ``time_as_index`` rounding), the
    window is ``[s + int(0.5 * sfreq), s + int(2.5 * sfreq))``.  Windows that
    would run past the recording's end (braindecode raises on them) are dropped
    and counted.
``challenge2``
    any task; 4 s windows with a 2 s stride from the first sample, the last
    partial window dropped (braindecode ``create_fixed_length_windows(...,
    drop_last_window=True)``); recordings shorter than 4 s, without 129
    channels, or whose subject has no ``externalizing`` are skipped;
    ``target = externalizing`` plus the subject coordinates.
``fixed``
    any task; ``window_s`` / ``stride_s`` windows for pretraining; ``target``
    is a participants.tsv column (``target_field``) or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from eegstore.errors import ConfigError, RecordingError
from eegstore.schema import CHALLENGE1_COORDS, CHALLENGE2_COORDS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from eegstore.sources import Recording

__all__ = [
    "RECIPES",
    "Challenge1Recipe",
    "Challenge2Recipe",
    "FixedRecipe",
    "Recipe",
    "Windows",
    "challenge1_trials",
    "get_recipe",
    "recipe_from_dict",
]

CCD_TASK = "contrastChangeDetection"
SUBJECT_FIELDS = ("externalizing", "p_factor", "attention", "internalizing", "age")


@dataclass
class Windows:
    """Windows cut from one (preprocessed) recording.

    Attributes
    ----------
    starts : ndarray of int64
        First sample of each window in the recording.
    window_samples : int
        Samples per window.
    coords : dict of str to ndarray
        Per-window coordinates of the recipe (``onset`` and ``target`` included).
    n_dropped : int
        Windows dropped because they ran past the recording's end.
    """

    starts: np.ndarray
    window_samples: int
    coords: dict[str, np.ndarray]
    n_dropped: int = 0

    def __len__(self) -> int:
        return len(self.starts)


def _to_float(value: Any) -> float:
    """Return ``value`` as float, NaN when missing or not a number."""
    if value is None:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _samples(seconds: float, sfreq: float) -> int:
    return round(seconds * sfreq)


@dataclass(frozen=True)
class Recipe:
    """Base class of recipes (not used directly)."""

    name: ClassVar[str] = "base"
    #: Tasks the recipe uses by default (None: all).
    default_tasks: ClassVar[tuple[str, ...] | None] = None

    # subclasses define a dataclass field ``sfreq: float | None``

    def params(self) -> dict[str, Any]:
        """Parameters as a JSON-serialisable dict."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "params": {...}}``, as recorded in a store."""
        return {"name": self.name, "params": self.params()}

    @property
    def expected_sfreq(self) -> float | None:
        return getattr(self, "sfreq", None)

    def extra_coords(self) -> dict[str, str]:
        """Per-window coordinates beyond the base ones: name -> dtype kind."""
        return {}

    def window_samples(self, sfreq: float) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def time_offset_s(self) -> float:
        """Seconds between the window anchor and the first sample of a window."""
        return 0.0

    def precheck(self, rec: Recording) -> None:
        """Raise :class:`RecordingError` when ``rec``'s metadata already rules it out."""

    def needs_events(self) -> bool:
        return False

    def make_windows(self, n_times: int, sfreq: float, n_channels: int, rec: Recording,
                     events: pd.DataFrame | None) -> Windows:  # pragma: no cover - abstract
        """Cut windows from a recording of ``n_times`` samples at ``sfreq``."""
        raise NotImplementedError

    def _check_sfreq(self, sfreq: float) -> None:
        want = self.expected_sfreq
        if want is not None and abs(float(sfreq) - float(want)) > 1e-6:
            raise RecordingError(f"wrong sfreq: expected {want:g} Hz, got {sfreq:g} Hz; "
                                 f"add a resample step (--resample {want:g})")


def challenge1_trials(events: pd.DataFrame) -> pd.DataFrame:
    """Trials of a contrastChangeDetection run that have a stimulus and a response.

    Calls :func:`eegdash.hbn.windows.build_trial_table` and keeps the rows the
    start kit keeps (``require_stimulus=True, require_response=True``), in the
    same order.

    Parameters
    ----------
    events : pandas.DataFrame
        The run's events table (``onset`` and ``value`` columns at least).

    Returns
    -------
    pandas.DataFrame
        Columns of ``build_trial_table``; may be empty.

    Raises
    ------
    RecordingError
        When the events table is missing columns or has non-numeric onsets.
    """
    import pandas as pd
    from eegdash.hbn.windows import build_trial_table

    missing = [c for c in ("onset", "value") if c not in events.columns]
    if missing:
        raise RecordingError(f"garbled events: expected columns onset and value, "
                             f"missing {missing}")
    try:
        onsets = pd.to_numeric(events["onset"], errors="raise")
    except (ValueError, TypeError) as exc:
        raise RecordingError(f"garbled events: expected numeric onsets, got {exc}") from None
    if not np.all(np.isfinite(onsets.to_numpy(dtype=float))):
        raise RecordingError("garbled events: expected finite onsets, got NaN/Inf")
    table: pd.DataFrame = build_trial_table(events)
    if table.empty:
        return table
    keep = table["stimulus_onset"].notna() & table["response_onset"].notna()
    trials: pd.DataFrame = table[keep].reset_index(drop=True)
    return trials


@dataclass(frozen=True)
class Challenge1Recipe(Recipe):
    """Challenge 1: one window per contrast-change trial, target ``rt_from_stimulus``.

    Parameters
    ----------
    shift_after_stim_s : float
        Window start after the stimulus (0.5 s).
    window_s : float
        Window length (2.0 s).
    sfreq : float
        Sampling frequency the recordings must have after preprocessing (100 Hz).
    """

    shift_after_stim_s: float = 0.5
    window_s: float = 2.0
    sfreq: float = 100.0
    name: ClassVar[str] = "challenge1"
    default_tasks: ClassVar[tuple[str, ...] | None] = (CCD_TASK,)

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.sfreq <= 0:
            raise ConfigError(f"expected positive window_s and sfreq, got {self.window_s}, "
                              f"{self.sfreq}")

    def extra_coords(self) -> dict[str, str]:
        return dict(CHALLENGE1_COORDS)

    def start_offset_samples(self, sfreq: float) -> int:
        # the start kit uses int(SHIFT_AFTER_STIM * SFREQ)
        return int(self.shift_after_stim_s * sfreq)

    def stop_offset_samples(self, sfreq: float) -> int:
        return int((self.shift_after_stim_s + self.window_s) * sfreq)

    def window_samples(self, sfreq: float) -> int:
        return self.stop_offset_samples(sfreq) - self.start_offset_samples(sfreq)

    def time_offset_s(self) -> float:
        return float(self.shift_after_stim_s)

    def needs_events(self) -> bool:
        return True

    def precheck(self, rec: Recording) -> None:
        if getattr(rec, "task", CCD_TASK) != CCD_TASK:
            raise RecordingError(f"expected task {CCD_TASK}, got {rec.task}")

    def make_windows(self, n_times: int, sfreq: float, n_channels: int, rec: Recording,
                     events: pd.DataFrame | None) -> Windows:
        self._check_sfreq(sfreq)
        if events is None:
            raise RecordingError("missing events: expected an events.tsv beside the recording")
        trials = challenge1_trials(events)
        if trials.empty:
            raise RecordingError("no usable trials: expected trials with a stimulus and a "
                                 "response, got none")
        stim = trials["stimulus_onset"].to_numpy(dtype=float)
        # mne.events_from_annotations -> time_as_index(use_rounding=True)
        stim_samples = np.round(stim * sfreq).astype(np.int64)
        starts = stim_samples + self.start_offset_samples(sfreq)
        stops = stim_samples + self.stop_offset_samples(sfreq)
        ok = (starts >= 0) & (stops <= n_times)
        n_dropped = int((~ok).sum())
        t = trials[ok].reset_index(drop=True)
        starts = starts[ok]
        correct = np.array([1.0 if c is True else 0.0 if c is False else math.nan
                            for c in t["correct"]], dtype=np.float64)
        rtype = np.array(["" if (r is None or (isinstance(r, float) and math.isnan(r)))
                          else str(r) for r in t["response_type"]], dtype=object)
        coords = {
            "onset": starts / float(sfreq),
            "target": t["rt_from_stimulus"].to_numpy(dtype=np.float64),
            "rt_from_stimulus": t["rt_from_stimulus"].to_numpy(dtype=np.float64),
            "rt_from_trialstart": t["rt_from_trialstart"].to_numpy(dtype=np.float64),
            "stimulus_onset": t["stimulus_onset"].to_numpy(dtype=np.float64),
            "response_onset": t["response_onset"].to_numpy(dtype=np.float64),
            "correct": correct,
            "response_type": rtype,
        }
        return Windows(starts=starts, window_samples=self.window_samples(sfreq),
                       coords=coords, n_dropped=n_dropped)


def _fixed_starts(n_times: int, window_samples: int, stride_samples: int) -> np.ndarray:
    if n_times < window_samples:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_times - window_samples + 1, stride_samples, dtype=np.int64)


def _subject_coords(rec: Recording, n: int) -> dict[str, np.ndarray]:
    part = getattr(rec, "participant", {}) or {}
    out: dict[str, np.ndarray] = {}
    for name in SUBJECT_FIELDS:
        out[name] = np.full(n, _to_float(part.get(name)), dtype=np.float64)
    sex = part.get("sex")
    sex_s = "" if sex is None or (isinstance(sex, float) and math.isnan(sex)) else str(sex)
    out["sex"] = np.array([sex_s] * n, dtype=object)
    return out


@dataclass(frozen=True)
class Challenge2Recipe(Recipe):
    """Challenge 2: 4 s windows, 2 s stride, target ``externalizing``.

    Parameters
    ----------
    window_s, stride_s : float
        Window length and stride (4 s, 2 s).
    sfreq : float
        Sampling frequency the recordings must have after preprocessing (100 Hz).
    n_channels : int
        Channels a recording must have (129).
    target_field : str
        participants.tsv column used as ``target`` (``externalizing``).
    """

    window_s: float = 4.0
    stride_s: float = 2.0
    sfreq: float = 100.0
    n_channels: int = 129
    target_field: str = "externalizing"
    name: ClassVar[str] = "challenge2"

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.stride_s <= 0 or self.sfreq <= 0:
            raise ConfigError(f"expected positive window_s, stride_s, sfreq, got "
                              f"{self.window_s}, {self.stride_s}, {self.sfreq}")

    def extra_coords(self) -> dict[str, str]:
        return dict(CHALLENGE2_COORDS)

    def window_samples(self, sfreq: float) -> int:
        return _samples(self.window_s, sfreq)

    def precheck(self, rec: Recording) -> None:
        part = getattr(rec, "participant", {}) or {}
        if math.isnan(_to_float(part.get(self.target_field))):
            raise RecordingError(f"missing target: expected {self.target_field} for subject "
                                 f"{rec.subject} in participants.tsv, got none")
        n_ch = getattr(rec, "n_channels", None)
        if n_ch is not None and int(n_ch) != self.n_channels:
            raise RecordingError(f"wrong channel count: expected {self.n_channels}, got {n_ch}")
        dur = getattr(rec, "duration_s", None)
        if dur is not None and float(dur) < self.window_s:
            raise RecordingError(f"too short: expected at least {self.window_s:g} s, "
                                 f"got {float(dur):g} s")

    def make_windows(self, n_times: int, sfreq: float, n_channels: int, rec: Recording,
                     events: pd.DataFrame | None) -> Windows:
        self._check_sfreq(sfreq)
        if n_channels != self.n_channels:
            raise RecordingError(f"wrong channel count: expected {self.n_channels}, "
                                 f"got {n_channels}")
        w = self.window_samples(sfreq)
        if n_times < w:
            raise RecordingError(f"too short: expected at least {self.window_s:g} s, "
                                 f"got {n_times / sfreq:g} s")
        starts = _fixed_starts(n_times, w, _samples(self.stride_s, sfreq))
        coords = _subject_coords(rec, len(starts))
        coords["onset"] = starts / float(sfreq)
        coords["target"] = coords[self.target_field].copy() if self.target_field in coords \
            else np.full(len(starts), _to_float((rec.participant or {}).get(self.target_field)))
        return Windows(starts=starts, window_samples=w, coords=coords)


@dataclass(frozen=True)
class FixedRecipe(Recipe):
    """FixedRecipe-length windows over any task, for pretraining.

    Parameters
    ----------
    window_s, stride_s : float
        Window length and stride in seconds.
    sfreq : float, optional
        Required sampling frequency after preprocessing (None: the first recording's).
    target_field : str, optional
        participants.tsv column used as ``target`` (None: NaN).
    """

    window_s: float = 2.0
    stride_s: float = 2.0
    sfreq: float | None = None
    target_field: str | None = None
    name: ClassVar[str] = "fixed"

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.stride_s <= 0:
            raise ConfigError(f"expected positive window_s and stride_s, got {self.window_s}, "
                              f"{self.stride_s}")
        if self.sfreq is not None and self.sfreq <= 0:
            raise ConfigError(f"expected a positive sfreq or None, got {self.sfreq}")

    def window_samples(self, sfreq: float) -> int:
        return _samples(self.window_s, sfreq)

    def make_windows(self, n_times: int, sfreq: float, n_channels: int, rec: Recording,
                     events: pd.DataFrame | None) -> Windows:
        self._check_sfreq(sfreq)
        w = self.window_samples(sfreq)
        if n_times < w:
            raise RecordingError(f"too short: expected at least {self.window_s:g} s, "
                                 f"got {n_times / sfreq:g} s")
        starts = _fixed_starts(n_times, w, _samples(self.stride_s, sfreq))
        value = math.nan
        if self.target_field is not None:
            value = _to_float((getattr(rec, "participant", {}) or {}).get(self.target_field))
        coords = {"onset": starts / float(sfreq),
                  "target": np.full(len(starts), value, dtype=np.float64)}
        return Windows(starts=starts, window_samples=w, coords=coords)


#: Recipe classes by name.
RECIPES: dict[str, type[Recipe]] = {
    c.name: c for c in (Challenge1Recipe, Challenge2Recipe, FixedRecipe)}


def get_recipe(name: str, **params: Any) -> Recipe:
    """Return the recipe ``name`` with ``params``.

    Raises
    ------
    ConfigError
        Unknown name or parameter.
    """
    if name not in RECIPES:
        raise ConfigError(f"expected a recipe in {sorted(RECIPES)}, got {name!r}")
    try:
        return RECIPES[name](**params)
    except TypeError as exc:
        raise ConfigError(f"expected parameters of recipe {name!r}, got {sorted(params)}: "
                          f"{exc}") from None


def recipe_from_dict(d: Mapping[str, Any]) -> Recipe:
    """Rebuild a recipe from :meth:`Recipe.to_dict` output (``{"name", "params"}``)."""
    if not isinstance(d, Mapping) or "name" not in d:
        raise ConfigError(f"expected a dict with 'name' and 'params', got {d!r}")
    return get_recipe(str(d["name"]), **dict(d.get("params") or {}))

