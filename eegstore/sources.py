"""Recordings from a local BIDS directory or from eegdash, described one way.

A :class:`Recording` is a small, serialisable description of one EEG recording
(where its signal file is, its BIDS entities, sampling rate, channel count,
duration, its subject's ``participants.tsv`` row and its ``events.tsv``).
:func:`discover_recordings` produces them from

* a local BIDS directory holding any MNE-readable EEG (BDF, EDF, EEGLAB
  ``.set``, BrainVision ``.vhdr``, FIF), reading sidecars only (``*_eeg.json``
  with BIDS inheritance, ``*_channels.tsv``, ``participants.tsv``) and the file
  header (never the signal) when a sidecar lacks a value; or
* ``"eegdash:R5"`` / ``"eegdash:R5-mini"`` (any release ``RN``): eegdash's
  ``EEGChallengeDataset`` over a cache folder (``cache_dir``, else
  ``$EEGSTORE_EEGDASH_CACHE``, else ``~/.cache/eegstore/eegdash``).  Offline
  (``download=False``, the default when the release is already in the cache)
  it reads ``CACHE/EEG2025r5mini/`` or ``CACHE/EEG2025r5/``; online it first
  checks in a few seconds that eegdash's API is reachable and fails with a
  :class:`~eegstore.errors.SourceError` otherwise.

:func:`read_raw` and :func:`read_events` load one recording.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eegstore.errors import ConfigError, RecordingError, SourceError

if TYPE_CHECKING:  # pragma: no cover
    import mne
    import pandas as pd

__all__ = [
    "EEG_EXTENSIONS",
    "Recording",
    "default_eegdash_cache",
    "discover_recordings",
    "parse_eegdash_source",
    "read_events",
    "read_raw",
]

#: Signal-file extensions recognised in a BIDS ``eeg/`` folder (primary files only).
EEG_EXTENSIONS: tuple[str, ...] = (".bdf", ".edf", ".set", ".vhdr", ".fif")
_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
_FILE_RE = re.compile(
    r"^sub-(?P<subject>[A-Za-z0-9]+)(?:_ses-(?P<session>[A-Za-z0-9]+))?"
    r"_task-(?P<task>[A-Za-z0-9]+)(?:_acq-(?P<acq>[A-Za-z0-9]+))?"
    r"(?:_run-(?P<run>[A-Za-z0-9]+))?_eeg(?P<ext>\.[a-z]+)$")
_EEGDASH_RE = re.compile(r"^eegdash:(?P<release>R\d+)(?P<mini>[-_]?mini)?$", re.IGNORECASE)
_PROBE_TIMEOUT_S = 4.0
#: A file shorter than its sidecar's RecordingDuration by more than this is truncated.
_TRUNCATION_TOLERANCE_S = 1.0
_DEFAULT_API_URL = "https://data.eegdash.org"


def _safe_label(label: str) -> str:
    out = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
    return out or "x"


@dataclass(frozen=True)
class Recording:
    """One EEG recording.

    Attributes
    ----------
    path : str
        Absolute path (or fsspec URL) of the signal file.
    subject, session, task, run : str
        BIDS labels (without ``sub-`` etc.); ``session`` and ``run`` are ``""``
        when absent.
    release : str
        HBN release such as ``"R5"`` (``""`` if unknown).
    sfreq : float
        Sampling frequency (Hz).
    n_channels : int
        Number of channels in the file.
    duration_s : float
        Duration (s).
    participant : mapping
        The subject's ``participants.tsv`` row: numbers as float, ``"n/a"`` or
        empty as ``None``, other text unchanged.
    events_path : str or None
        The ``events.tsv`` beside the file, ``None`` when missing.
    """

    path: str
    subject: str
    session: str
    task: str
    run: str
    release: str
    sfreq: float
    n_channels: int
    duration_s: float
    participant: Mapping[str, Any] = field(default_factory=dict, hash=False)
    events_path: str | None = None

    @property
    def id(self) -> str:
        """``sub-X[_ses-Y]_task-T[_run-N]`` with labels made filesystem-safe."""
        parts = [f"sub-{_safe_label(self.subject)}"]
        if self.session:
            parts.append(f"ses-{_safe_label(self.session)}")
        parts.append(f"task-{_safe_label(self.task)}")
        if self.run:
            parts.append(f"run-{_safe_label(self.run)}")
        return "_".join(parts)

    @property
    def n_times(self) -> int:
        """Number of samples, ``round(duration_s * sfreq)``."""
        return round(self.duration_s * self.sfreq)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (inverse: :meth:`from_dict`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["participant"] = dict(self.participant)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recording:
        """Build a recording from :meth:`to_dict` output."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"expected Recording fields {sorted(names)}, got unknown {unknown}")
        kw = dict(d)
        kw["participant"] = dict(kw.get("participant") or {})
        kw["sfreq"] = float(kw["sfreq"])
        kw["n_channels"] = int(kw["n_channels"])
        kw["duration_s"] = float(kw["duration_s"])
        return cls(**kw)

    def __repr__(self) -> str:
        return (f"Recording({self.id!r}, release={self.release!r}, sfreq={self.sfreq:g}, "
                f"n_channels={self.n_channels}, duration_s={self.duration_s:g})")


# --------------------------------------------------------------------------- helpers
def _cell(value: str) -> Any:
    text = value.strip()
    if text in ("", "n/a", "N/A", "NaN", "nan"):
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else None


def _read_participants(root: Path) -> dict[str, dict[str, Any]]:
    tsv = root / "participants.tsv"
    if not tsv.is_file():
        return {}
    rows: dict[str, dict[str, Any]] = {}
    # the csv module, not pandas: discovery runs before a build's workers can start
    with open(tsv, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", restval="")
        if "participant_id" not in (reader.fieldnames or []):
            return {}
        for rec in reader:
            pid = str(rec["participant_id"])
            row = {str(k): (_cell(str(v)) if k != "participant_id" else pid)
                   for k, v in rec.items() if k is not None}
            rows[pid.removeprefix("sub-")] = row
    return rows


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sidecar(root: Path, eeg_file: Path, labels: Mapping[str, str]) -> dict[str, Any]:
    """``*_eeg.json`` values with BIDS inheritance (dataset -> subject -> file level)."""
    task = labels["task"]
    sub = f"sub-{labels['subject']}"
    candidates = [root / f"task-{task}_eeg.json", root / sub / f"{sub}_task-{task}_eeg.json"]
    stem = eeg_file.name[: -len(labels["ext"])]
    candidates.append(eeg_file.with_name(f"{stem}.json"))
    out: dict[str, Any] = {}
    for c in candidates:
        if c.is_file():
            out.update(_read_json(c))
    return out


def _count_channels(channels_tsv: Path) -> int | None:
    """Rows of a channels.tsv below its header (None when missing, unreadable or empty)."""
    try:
        with open(channels_tsv, encoding="utf-8") as fh:
            rows = sum(1 for line in fh if line.strip())
    except (OSError, UnicodeDecodeError):
        return None
    return rows - 1 if rows > 1 else None


def _positive(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _header_info(path: Path) -> tuple[float, int, float]:
    import mne

    try:
        raw = mne.io.read_raw(path, preload=False, verbose="error")
    except Exception as exc:
        raise RecordingError(f"expected a readable EEG file, got {path} "
                             f"({type(exc).__name__}: {exc}); check or remove it") from exc
    sfreq = float(raw.info["sfreq"])
    return sfreq, len(raw.ch_names), raw.n_times / sfreq


def _within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (OSError, ValueError):
        return False
    return True


def _check_labels(kind: str, values: Sequence[str] | str | None, prefix: str) -> set[str] | None:
    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    out: set[str] = set()
    for v in items:
        label = str(v).removeprefix(prefix)
        if not _LABEL_RE.match(label):
            raise ConfigError(f"expected alphanumeric BIDS {kind} labels, got {v!r}")
        out.add(label)
    return out


def _release_from(row: Mapping[str, Any], root: Path) -> str:
    rel = row.get("release_number")
    if isinstance(rel, str) and re.fullmatch(r"R\d+", rel):
        return rel
    m = re.match(r"EEG2025r(\d+)", root.name)
    return f"R{m.group(1)}" if m else ""


def _iter_eeg_files(root: Path, subjects: set[str] | None) -> Iterator[tuple[Path, dict[str, str]]]:
    for sub_dir in sorted(root.glob("sub-*")):
        label = sub_dir.name.removeprefix("sub-")
        if not _LABEL_RE.match(label) or not sub_dir.is_dir() or not _within(sub_dir, root):
            continue
        if subjects is not None and label not in subjects:
            continue
        eeg_dirs = [sub_dir / "eeg", *sorted(sub_dir.glob("ses-*/eeg"))]
        for eeg_dir in eeg_dirs:
            if not eeg_dir.is_dir():
                continue
            for f in sorted(eeg_dir.iterdir()):
                m = _FILE_RE.match(f.name)
                if not m or m.group("ext").lower() not in EEG_EXTENSIONS:
                    continue
                if m.group("subject") != label or not _within(f, root):
                    continue
                labels = {k: (v or "") for k, v in m.groupdict().items()}
                yield f, labels


def _recording_from_file(root: Path, f: Path, labels: Mapping[str, str],
                         participants: Mapping[str, dict[str, Any]],
                         read_headers: bool) -> Recording:
    meta = _sidecar(root, f, labels)
    sfreq = _positive(meta.get("SamplingFrequency"))
    duration = _positive(meta.get("RecordingDuration"))
    stem = f.name[: -len(labels["ext"])].removesuffix("_eeg")
    n_ch: float | int | None = _count_channels(f.with_name(f"{stem}_channels.tsv"))
    if n_ch is None:
        n_ch = _positive(meta.get("EEGChannelCount"))
    if read_headers or sfreq is None or duration is None or n_ch is None:
        sfreq, n_ch, duration = _header_info(f)
    events = f.with_name(f"{stem}_events.tsv")
    row = dict(participants.get(labels["subject"], {}))
    return Recording(
        path=str(f.resolve()), subject=labels["subject"], session=labels["session"],
        task=labels["task"], run=labels["run"], release=_release_from(row, root),
        sfreq=float(sfreq), n_channels=int(n_ch), duration_s=float(duration),
        participant=row, events_path=str(events.resolve()) if events.is_file() else None)


def _fmt(values: set[str] | None) -> str:
    return "all" if values is None else ",".join(sorted(values))


def _discover_local(source: Path, tasks: set[str] | None, subjects: set[str] | None,
                    read_headers: bool) -> list[Recording]:
    if not source.is_dir():
        raise SourceError(f"expected a BIDS directory, got {str(source)!r} (missing or not a "
                          f"directory); pass a folder with sub-*/eeg/ or 'eegdash:R5'")
    root = source.resolve()
    participants = _read_participants(root)
    recs: list[Recording] = []
    for f, labels in _iter_eeg_files(root, subjects):
        if tasks is not None and labels["task"] not in tasks:
            continue
        recs.append(_recording_from_file(root, f, labels, participants, read_headers))
    if not recs:
        inner = sorted(p.name for p in root.glob("EEG2025r*") if p.is_dir())
        hint = (f"; the BIDS root is probably {root / inner[0]}" if inner
                else "; check tasks/subjects and that files are named sub-*_task-*_eeg.<ext>")
        raise SourceError(f"expected EEG recordings under {root} (tasks={_fmt(tasks)}, "
                          f"subjects={_fmt(subjects)}), got none{hint}")
    # Several signal files for one recording (e.g. BDF and FIF) are all returned, sorted by
    # (id, path): a build keeps the first and records the others as skipped duplicates,
    # so one stray file does not stop the whole build.
    return sorted(recs, key=lambda r: (r.id, r.path))


# --------------------------------------------------------------------------- eegdash
def default_eegdash_cache() -> Path:
    """Return ``$EEGSTORE_EEGDASH_CACHE`` or ``~/.cache/eegstore/eegdash``."""
    env = os.environ.get("EEGSTORE_EEGDASH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eegstore" / "eegdash"


def parse_eegdash_source(source: str) -> tuple[str, bool]:
    """Parse ``"eegdash:R5"`` or ``"eegdash:R5-mini"`` into ``("R5", mini)``.

    Parameters
    ----------
    source : str
        The source string.

    Returns
    -------
    tuple of (str, bool)
        Release and whether it is the mini subset.
    """
    m = _EEGDASH_RE.match(source.strip())
    if not m:
        raise ConfigError(f"expected 'eegdash:RN' or 'eegdash:RN-mini' (e.g. eegdash:R5-mini), "
                          f"got {source!r}")
    return m.group("release").upper(), bool(m.group("mini"))


def _probe(url: str, timeout_s: float) -> str | None:
    """Return None when ``url``'s host accepts a TCP connection in time, else the reason."""
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(None)
        except OSError as exc:
            result.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)  # DNS lookups ignore the socket timeout: bound them here
    if not result:
        return f"no answer within {timeout_s:g} s"
    return result[0]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _eegdash_dataset(release: str, mini: bool, cache: Path, download: bool,
                     tasks: set[str] | None, subjects: set[str] | None) -> Any:
    try:
        from eegdash.dataset import EEGChallengeDataset
    except ImportError as exc:  # pragma: no cover - eegdash is a dependency
        raise SourceError(f"expected eegdash to be installed, got {exc}") from exc
    kwargs: dict[str, Any] = {}
    if tasks is not None:
        kwargs["task"] = sorted(tasks)
    if subjects is not None:
        kwargs["subject"] = sorted(subjects)
    try:
        with _quiet():
            return EEGChallengeDataset(release=release, mini=mini, download=download,
                                       cache_dir=str(cache), **kwargs)
    except (ValueError, AssertionError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "not part of the mini release" in msg:
            raise ConfigError(f"expected subjects of the {release} mini release, got {msg}; "
                              f"use eegdash:{release} for other subjects") from exc
        raise SourceError(f"expected eegdash {release}{' mini' if mini else ''} to be usable "
                          f"from {cache}, got: {msg}") from exc


def _discover_eegdash(source: str, tasks: set[str] | None, subjects: set[str] | None,
                      cache_dir: str | os.PathLike[str] | None, download: bool | None,
                      read_headers: bool) -> list[Recording]:
    from eegstore.synth import dataset_dir_name

    release, mini = parse_eegdash_source(source)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_eegdash_cache()
    data_dir = cache / dataset_dir_name(release, mini)
    if download is None:
        download = not data_dir.is_dir()
    if download:
        api = os.environ.get("EEGDASH_API_URL", _DEFAULT_API_URL)
        reason = _probe(api, _PROBE_TIMEOUT_S)
        if reason is not None:
            raise SourceError(f"expected network access to eegdash ({api}) to download "
                              f"{source}, got {reason}; put the release under {data_dir} "
                              f"(e.g. `eegstore synth {cache}`) and use download=False")
        cache.mkdir(parents=True, exist_ok=True)
        ds = _eegdash_dataset(release, mini, cache, True, tasks, subjects)
        try:
            with _quiet():
                ds.download_all()
        except Exception as exc:
            raise SourceError(f"expected to download {source} into {cache}, got "
                              f"{type(exc).__name__}: {exc}") from exc
    elif not data_dir.is_dir():
        raise SourceError(f"expected the {source} release under {data_dir}, got no such "
                          f"directory; download it (download=True) or synthesize it with "
                          f"`eegstore synth {cache}`")
    ds = _eegdash_dataset(release, mini, cache, False, tasks, subjects)
    root = data_dir.resolve()
    participants = _read_participants(root)
    recs: list[Recording] = []
    for item in ds.datasets:
        f = Path(item.filecache)
        if not f.is_absolute():
            f = root / f
        m = _FILE_RE.match(f.name)
        if not m or not f.is_file() or not _within(f, root):
            continue
        labels = {k: (v or "") for k, v in m.groupdict().items()}
        recs.append(_recording_from_file(root, f, labels, participants, read_headers))
    if not recs:
        raise SourceError(f"expected recordings in {data_dir} (tasks={_fmt(tasks)}, "
                          f"subjects={_fmt(subjects)}), got none")
    return sorted(recs, key=lambda r: r.id)


# --------------------------------------------------------------------------- public
def discover_recordings(source: str | os.PathLike[str], tasks: Sequence[str] | None = None,
                        subjects: Sequence[str] | int | None = None, *,
                        cache_dir: str | os.PathLike[str] | None = None,
                        download: bool | None = None,
                        read_headers: bool = False) -> list[Recording]:
    """List the recordings of a source, sorted by :attr:`Recording.id`.

    Parameters
    ----------
    source : str or path-like
        A local BIDS directory, or ``"eegdash:RN"`` / ``"eegdash:RN-mini"``.
    tasks : sequence of str, optional
        Keep only these tasks.
    subjects : sequence of str or int, optional
        Keep only these subjects (labels with or without ``sub-``; must be
        alphanumeric, so nothing can point outside the source), or the first N
        subjects in sorted order.
    cache_dir : path-like, optional
        eegdash cache folder (default :func:`default_eegdash_cache`).
    download : bool, optional
        eegdash only: download missing files (``True``), use the local tree only
        (``False``), or decide by whether the release is already in the cache
        (``None``, default).
    read_headers : bool
        Read sampling rate, channel count and duration from each file's header
        even when the sidecars give them (default ``False``: sidecars first,
        header only when a value is missing).

    Returns
    -------
    list of Recording

    Raises
    ------
    SourceError
        The source is missing, unreachable or holds no usable release.
    ConfigError
        Bad ``tasks``/``subjects`` labels or source string.
    RecordingError
        A file lacking sidecar values cannot be read.
    """
    task_set = _check_labels("task", tasks, "task-")
    first_n: int | None = None
    labels: Sequence[str] | None
    if isinstance(subjects, bool):
        raise ConfigError(f"expected subject labels or a number of subjects, got {subjects!r}")
    if isinstance(subjects, int):
        if subjects < 1:
            raise ConfigError(f"expected a positive number of subjects, got {subjects}")
        first_n, labels = subjects, None
    else:
        labels = subjects
    subject_set = _check_labels("subject", labels, "sub-")
    if isinstance(source, str) and source.lower().startswith("eegdash:"):
        recs = _discover_eegdash(source, task_set, subject_set, cache_dir, download,
                                 read_headers)
    else:
        recs = _discover_local(Path(source).expanduser(), task_set, subject_set, read_headers)
    if first_n is not None:
        keep = set(sorted({r.subject for r in recs})[:first_n])
        recs = [r for r in recs if r.subject in keep]
    return recs


def _local_path(path: str) -> str:
    parsed = urllib.parse.urlparse(path)
    if parsed.scheme in ("", "file") or re.fullmatch(r"[A-Za-z]", parsed.scheme):
        return urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else path
    import fsspec

    if parsed.path.lower().endswith((".set", ".vhdr")):
        raise RecordingError(f"expected a single-file format for a remote recording, got "
                             f"{path}; copy EEGLAB/BrainVision recordings locally")
    return str(fsspec.open_local(f"simplecache::{path}"))


def read_raw(rec: Recording, preload: bool = True) -> mne.io.BaseRaw:
    """Read a recording with MNE (any format MNE reads).

    Parameters
    ----------
    rec : Recording
        The recording.
    preload : bool
        Load the data into memory (default ``True``).

    Returns
    -------
    mne.io.BaseRaw

    Raises
    ------
    RecordingError
        The file cannot be read, or its sampling rate or channel count differ
        from the description.
    """
    import mne

    path = _local_path(rec.path)
    try:
        raw = mne.io.read_raw(path, preload=preload, verbose="error")
    except Exception as exc:
        raise RecordingError(f"expected a readable EEG file for {rec.id}, got "
                             f"{type(exc).__name__}: {exc}") from exc
    if not math.isclose(float(raw.info["sfreq"]), rec.sfreq, rel_tol=1e-9):
        raise RecordingError(f"expected {rec.sfreq:g} Hz for {rec.id} (sidecar), got "
                             f"{raw.info['sfreq']:g} Hz in the file; fix the eeg.json")
    if len(raw.ch_names) != rec.n_channels:
        raise RecordingError(f"expected {rec.n_channels} channels for {rec.id} (sidecar), got "
                             f"{len(raw.ch_names)} in the file; fix the channels.tsv")
    # MNE reads a truncated BDF/EDF without error (fewer samples): compare with the sidecar
    missing_s = rec.duration_s - raw.n_times / float(raw.info["sfreq"])
    if missing_s > _TRUNCATION_TOLERANCE_S:
        raise RecordingError(f"truncated file: expected {rec.duration_s:g} s for {rec.id} "
                             f"(sidecar), got {raw.n_times / float(raw.info['sfreq']):g} s in "
                             "the file; download it again or fix the eeg.json")
    return raw


def read_events(rec: Recording) -> pd.DataFrame:
    """Read a recording's ``events.tsv`` (``"n/a"`` as NaN, ``onset`` numeric).

    Parameters
    ----------
    rec : Recording
        The recording.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    RecordingError
        The recording has no events file, or it lacks an ``onset`` column.
    """
    if rec.events_path is None:
        raise RecordingError(f"expected an events.tsv beside {rec.id}, got none")
    import pandas as pd

    try:
        df = pd.read_csv(_local_path(rec.events_path), sep="\t")
    except (OSError, ValueError) as exc:
        raise RecordingError(f"expected a readable events.tsv for {rec.id}, got {exc}") from exc
    if "onset" not in df.columns:
        raise RecordingError(f"expected an onset column in {rec.events_path}, got "
                             f"{list(df.columns)}")
    df["onset"] = pd.to_numeric(df["onset"], errors="coerce")
    return df
