"""Preprocessing steps applied to each recording before windowing.

Each step is a small frozen dataclass that keeps, prints and serialises its
parameters (``to_dict`` / :func:`step_from_dict`) and applies itself to an
:class:`mne.io.BaseRaw` through mne.  A build records the list of steps in the
store's ``preprocessing`` attribute.  Bringing raw 500 Hz HBN recordings to
the challenge's 0.5-50 Hz / 100 Hz form::

    steps = (BandPass(0.5, 50.0), Resample(100.0))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from eegstore.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import mne

__all__ = [
    "BandPass",
    "PickChannels",
    "Preprocessor",
    "Rereference",
    "Resample",
    "apply_steps",
    "step_from_dict",
    "steps_from_dicts",
    "steps_to_dicts",
]


@dataclass(frozen=True)
class Preprocessor:
    """Base class of preprocessing steps (not used directly)."""

    kind: ClassVar[str] = "base"

    def apply(self, raw: mne.io.BaseRaw) -> mne.io.BaseRaw:  # pragma: no cover - abstract
        """Return ``raw`` transformed (may modify it in place)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"kind": ..., **params}`` (JSON-serialisable)."""
        d: dict[str, Any] = {"kind": self.kind}
        for k, v in asdict(self).items():
            d[k] = list(v) if isinstance(v, tuple) else v
        return d


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and value > 0):
        raise ConfigError(f"expected a positive {name}, got {value!r}")


@dataclass(frozen=True)
class Resample(Preprocessor):
    """Resample to ``sfreq`` Hz (``mne.io.Raw.resample``)."""

    sfreq: float
    kind: ClassVar[str] = "resample"

    def __post_init__(self) -> None:
        _check_positive("sfreq", self.sfreq)
        object.__setattr__(self, "sfreq", float(self.sfreq))

    def apply(self, raw: mne.io.BaseRaw) -> mne.io.BaseRaw:
        if abs(raw.info["sfreq"] - self.sfreq) < 1e-9:
            return raw
        return raw.resample(self.sfreq, verbose="error")


@dataclass(frozen=True)
class BandPass(Preprocessor):
    """FIR band-pass ``l_freq``-``h_freq`` Hz (``mne.io.Raw.filter``); either may be None."""

    l_freq: float | None
    h_freq: float | None
    kind: ClassVar[str] = "bandpass"

    def __post_init__(self) -> None:
        if self.l_freq is None and self.h_freq is None:
            raise ConfigError("expected l_freq and/or h_freq, got neither; give at least one")
        for name in ("l_freq", "h_freq"):
            v = getattr(self, name)
            if v is not None:
                _check_positive(name, v)
                object.__setattr__(self, name, float(v))
        if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
            raise ConfigError(f"expected l_freq < h_freq, got {self.l_freq} >= {self.h_freq}")

    def apply(self, raw: mne.io.BaseRaw) -> mne.io.BaseRaw:
        nyq = raw.info["sfreq"] / 2.0
        if self.h_freq is not None and self.h_freq >= nyq:
            from eegstore.errors import RecordingError
            raise RecordingError(f"expected h_freq below Nyquist ({nyq} Hz), got {self.h_freq}; "
                                 "resample after filtering or lower --h-freq")
        return raw.filter(self.l_freq, self.h_freq, verbose="error")


@dataclass(frozen=True)
class PickChannels(Preprocessor):
    """Keep only ``names`` in that order (``mne.io.Raw.pick``)."""

    names: tuple[str, ...] = field(default=())
    kind: ClassVar[str] = "pick"

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        if not names:
            raise ConfigError("expected at least one channel name to pick, got none")
        object.__setattr__(self, "names", names)

    def apply(self, raw: mne.io.BaseRaw) -> mne.io.BaseRaw:
        missing = [n for n in self.names if n not in raw.ch_names]
        if missing:
            from eegstore.errors import RecordingError
            raise RecordingError(f"expected channels {missing[:5]} to pick, got a recording "
                                 f"without them ({len(missing)} missing)")
        raw.pick(list(self.names))
        return raw.reorder_channels(list(self.names))


@dataclass(frozen=True)
class Rereference(Preprocessor):
    """Re-reference to ``ref``: ``"average"`` or a channel name (``set_eeg_reference``)."""

    ref: str = "average"
    kind: ClassVar[str] = "reref"

    def __post_init__(self) -> None:
        if not isinstance(self.ref, str) or not self.ref:
            raise ConfigError(f"expected 'average' or a channel name, got {self.ref!r}")

    def apply(self, raw: mne.io.BaseRaw) -> mne.io.BaseRaw:
        ref: str | list[str] = "average" if self.ref == "average" else [self.ref]
        if ref != "average" and self.ref not in raw.ch_names:
            from eegstore.errors import RecordingError
            raise RecordingError(f"expected reference channel {self.ref!r}, got a recording "
                                 "without it")
        raw.set_eeg_reference(ref, projection=False, verbose="error")
        return raw


_KINDS: dict[str, type[Preprocessor]] = {
    c.kind: c for c in (Resample, BandPass, PickChannels, Rereference)
}


def step_from_dict(d: Mapping[str, Any]) -> Preprocessor:
    """Rebuild a step from :meth:`Preprocessor.to_dict` output."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in _KINDS:
        raise ConfigError(f"expected a preprocessing kind in {sorted(_KINDS)}, got {kind!r}")
    cls = _KINDS[kind]
    if cls is PickChannels and "names" in d:
        d["names"] = tuple(d["names"])
    try:
        return cls(**d)
    except TypeError as exc:
        raise ConfigError(f"expected parameters of {kind!r}, got {sorted(d)}: {exc}") from None


def steps_from_dicts(ds: Iterable[Mapping[str, Any]]) -> tuple[Preprocessor, ...]:
    """Rebuild a sequence of steps."""
    return tuple(step_from_dict(d) for d in ds)


def steps_to_dicts(steps: Sequence[Preprocessor]) -> list[dict[str, Any]]:
    """Serialise a sequence of steps."""
    out = []
    for s in steps:
        if not isinstance(s, Preprocessor):
            raise ConfigError(f"expected preprocessing steps, got {type(s).__name__}")
        out.append(s.to_dict())
    return out


def apply_steps(raw: mne.io.BaseRaw, steps: Sequence[Preprocessor]) -> mne.io.BaseRaw:
    """Apply ``steps`` in order and return the raw (loaded into memory)."""
    if steps:
        raw.load_data(verbose="error")
    for step in steps:
        raw = step.apply(raw)
    return raw
