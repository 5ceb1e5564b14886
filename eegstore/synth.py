"""Synthetic HBN-format EEG laid over real HBN-EEG metadata.

:func:`synthesize` reads a folder of real HBN-EEG metadata (``participants.tsv``
and, per recording, ``*_eeg.json``, ``*_channels.tsv`` and ``*_events.tsv``;
default: the vendored R5 "mini" subjects, :data:`eegstore.data.MINI_R5_METADATA`)
and writes, for every recording it lists, a 100 Hz BDF file with 129 channels
(``E1`` ... ``E128`` and the flat reference ``Cz``), exactly
``round(RecordingDuration * 100)`` samples long, in the layout eegdash reads
offline (``OUT/EEG2025r5mini/`` for a metadata folder whose subjects all belong
to the official mini subset, else ``OUT/EEG2025r5/``).  The real events are
copied beside each file, so trial tables, targets and windows behave as on the
challenge data.

Signal model (all in µV, per recording ``x = A @ s + noise``):

* **background**: 64 latent sources with a ``1/f^b`` power spectrum
  (subject-specific ``b`` in 1.6-2.0, falling faster above ~15 Hz)
  band-limited to 0.5-45 Hz, mixed through
  local topographies whose layout is shared by all subjects (a common "head
  model", jittered and re-weighted per subject), plus an occipital alpha
  rhythm (subject-specific peak 8.5-11.5 Hz, stronger in ``RestingState``) and
  independent sensor noise; per-subject and per-channel gains vary.
* **RT effect** (``contrastChangeDetection`` only): for every trial with a
  stimulus and a response (:func:`eegdash.hbn.windows.build_trial_table`), a
  centro-parietal component ramps up from ``stimulus + rt_ramp_onset_s`` to its
  peak at the response and decays after it (Gaussian, ``rt_width_s``), with
  peak ``rt_amplitude_uv`` at the topography maximum.  Its latency inside the
  window ``[stimulus + 0.5 s, stimulus + 2.5 s)`` encodes ``rt_from_stimulus``.
* **externalizing effect**: a frontal beta source (Gaussian spectrum centred
  on 22 Hz, 3 Hz wide) present in every
  recording of a subject, with RMS ``externalizing_strength_uv *
  (externalizing_offset + externalizing)`` µV at the topography maximum
  (``externalizing`` missing: 0), i.e. its amplitude is linear in the score.

Both effects are far below the background on a single channel (single-trial,
per-channel SNR well below 1) but share one topography over many channels, so a
small multichannel CNN learns them.  Every recording gets its own random stream
derived from ``seed`` and its id (subject-level properties from ``seed`` and the
subject), so serial and parallel runs write identical bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eegstore.data import MINI_R5_METADATA
from eegstore.errors import BuildError, ConfigError, SourceError

__all__ = [
    "CHANNEL_NAMES",
    "SFREQ",
    "EffectParams",
    "SynthReport",
    "configure_parser",
    "dataset_dir_name",
    "externalizing_topography",
    "rt_topography",
    "run",
    "synthesize",
    "write_bdf",
]

#: Sampling frequency of the synthetic recordings (Hz), as in the challenge data.
SFREQ: float = 100.0
#: The 129 HBN channel names; ``Cz`` is the (flat) reference.
CHANNEL_NAMES: tuple[str, ...] = (*(f"E{i}" for i in range(1, 129)), "Cz")
#: Largest number of samples per BDF data record.
_MAX_RECORD_SAMPLES = 1000
#: Samples per channel converted to 24-bit at a time (bounds the writer's memory).
_BLOCK_SAMPLES = 20_000
#: BDF physical range (µV) and digital range: 1 digital unit = 0.001 µV.
_PHYS_MAX_UV = 8000.0
_DIG_MAX = 8_000_000
_CCD = "contrastChangeDetection"
_N_BACKGROUND = 64
_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
_EEG_JSON_RE = re.compile(
    r"^sub-(?P<subject>[^_/]+)(?:_ses-(?P<session>[^_/]+))?_task-(?P<task>[^_/]+)"
    r"(?:_acq-[^_/]+)?(?:_run-(?P<run>[^_/]+))?_eeg\.json$")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- params
@dataclass(frozen=True)
class EffectParams:
    """Strengths of the planted effects and of the background.

    Parameters
    ----------
    rt_amplitude_uv : float
        Peak of the response-locked component at its topography maximum (µV),
        default 16.0 (the background is about 25 µV RMS per channel; averaged
        over a 2 s window the component's power is about 0.1-0.2 of the
        background's at its best channel and far less elsewhere).
    rt_width_s : float
        Standard deviation of the component's decay after the response (s),
        default 0.15.
    rt_ramp_onset_s : float
        Time after the stimulus where the component starts ramping up (s),
        default 0.2.
    externalizing_strength_uv : float
        RMS (µV at the topography maximum) of the ~22 Hz source per unit of
        ``externalizing``, default 6.0.
    externalizing_offset : float
        Added to ``externalizing`` before scaling, default 2.0 (R5 scores lie in
        [-1.68, 2.32]); negative results are clipped at 0.
    background_uv : float
        Typical RMS of the background per channel (µV), default 25.0.
    """

    rt_amplitude_uv: float = 16.0
    rt_width_s: float = 0.15
    rt_ramp_onset_s: float = 0.2
    externalizing_strength_uv: float = 6.0
    externalizing_offset: float = 2.0
    background_uv: float = 25.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ConfigError(f"expected a finite number for {name}, got {value!r}")
        for name in ("rt_width_s", "background_uv"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"expected {name} > 0, got {getattr(self, name)!r}")
        for name in ("rt_amplitude_uv", "externalizing_strength_uv", "rt_ramp_onset_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"expected {name} >= 0, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, float]:
        """Return the parameters as a JSON-serialisable dict."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EffectParams:
        """Build parameters from :meth:`to_dict` output."""
        return cls(**{k: float(v) for k, v in d.items()})


@dataclass(frozen=True)
class SynthReport:
    """What :func:`synthesize` wrote.

    Attributes
    ----------
    root : pathlib.Path
        The BIDS root (``OUT/EEG2025r5mini`` or ``OUT/EEG2025r5``).
    files : tuple of pathlib.Path
        The BDF files, sorted.
    n_subjects, n_recordings : int
        Counts.
    tasks : tuple of str
        Tasks written.
    duration_s : float
        Total signal duration.
    bytes_written : int
        Total size of the BDF files.
    elapsed_s : float
        Wall time.
    seed, workers : int
        Run settings.
    params : EffectParams
        Effect strengths used.
    """

    root: Path
    files: tuple[Path, ...]
    n_subjects: int
    n_recordings: int
    tasks: tuple[str, ...]
    duration_s: float
    bytes_written: int
    elapsed_s: float
    seed: int
    workers: int
    params: EffectParams = field(default_factory=EffectParams)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {"root": str(self.root), "files": [str(f) for f in self.files],
                "n_subjects": self.n_subjects, "n_recordings": self.n_recordings,
                "tasks": list(self.tasks), "duration_s": self.duration_s,
                "bytes_written": self.bytes_written, "elapsed_s": self.elapsed_s,
                "seed": self.seed, "workers": self.workers, "params": self.params.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SynthReport:
        """Inverse of :meth:`to_dict`."""
        return cls(root=Path(d["root"]), files=tuple(Path(f) for f in d["files"]),
                   n_subjects=int(d["n_subjects"]), n_recordings=int(d["n_recordings"]),
                   tasks=tuple(d["tasks"]), duration_s=float(d["duration_s"]),
                   bytes_written=int(d["bytes_written"]), elapsed_s=float(d["elapsed_s"]),
                   seed=int(d["seed"]), workers=int(d["workers"]),
                   params=EffectParams.from_dict(d["params"]))

    def summary(self) -> str:
        """One-line human summary."""
        return (f"wrote {self.n_recordings} recordings of {self.n_subjects} subjects "
                f"({', '.join(self.tasks)}; {self.duration_s / 3600:.2f} h, "
                f"{self.bytes_written / 1e6:.1f} MB) to {self.root} in {self.elapsed_s:.1f} s "
                f"with {self.workers} worker(s)")


# --------------------------------------------------------------------------- BDF
def _field(value: object, width: int) -> bytes:
    text = str(value)
    if len(text) > width:
        raise ConfigError(f"expected a BDF header field of at most {width} characters, "
                          f"got {text!r}")
    return text.ljust(width).encode("ascii")


def _duration_text(seconds: float) -> str:
    return f"{seconds:.8f}".rstrip("0").rstrip(".")[:8]


def _record_samples(n_times: int, sfreq: float, max_samples: int = _MAX_RECORD_SAMPLES) -> int:
    """Largest record size dividing ``n_times`` whose duration text gives back ``sfreq``."""
    for d in range(min(max_samples, n_times), 0, -1):
        if n_times % d == 0:
            text = _duration_text(d / sfreq)
            if float(text) > 0 and d / float(text) == sfreq:
                return d
    raise ConfigError(f"expected a sampling frequency representable in a BDF header, "
                      f"got {sfreq!r}; use an integer sampling frequency")


def _ascii(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]", "_", text)


def write_bdf(path: str | os.PathLike[str], data_uv: np.ndarray, sfreq: float,
              ch_names: Sequence[str], *, patient: str = "X", recording: str = "X",
              start: _dt.datetime | None = None) -> int:
    """Write a BDF (24-bit) file atomically.

    Values are stored with a resolution of 0.001 µV in ±8000 µV (clipped).  Data
    records hold up to 1000 samples and divide the signal length exactly, so
    the file has exactly ``data_uv.shape[1]`` samples.  The file is written under
    a hidden temporary name in the same folder and renamed when complete.

    Parameters
    ----------
    path : path-like
        Destination ``.bdf`` file.
    data_uv : numpy.ndarray, shape (n_channels, n_times)
        Signals in µV.
    sfreq : float
        Sampling frequency (Hz); ``record samples / sfreq`` must fit 8 characters.
    ch_names : sequence of str
        Channel labels (at most 16 ASCII characters each).
    patient, recording : str
        Header identification fields (truncated to 80 characters).
    start : datetime.datetime, optional
        Start of the recording (default 2000-01-01 00:00:00, deterministic).

    Returns
    -------
    int
        The size of the file in bytes.
    """
    data = np.asarray(data_uv)
    if data.ndim != 2 or data.shape[0] != len(ch_names) or data.shape[1] < 1:
        raise ConfigError(f"expected data of shape ({len(ch_names)}, n_times >= 1), "
                          f"got {data.shape}")
    n_ch, n_times = data.shape
    rec_samples = _record_samples(n_times, float(sfreq))
    n_records = n_times // rec_samples
    rec_dur_text = _duration_text(rec_samples / float(sfreq))
    start = start or _dt.datetime(2000, 1, 1)
    header_bytes = 256 * (n_ch + 1)
    head = b"".join([
        b"\xffBIOSEMI",
        _field(_ascii(patient)[:80], 80), _field(_ascii(recording)[:80], 80),
        _field(start.strftime("%d.%m.%y"), 8), _field(start.strftime("%H.%M.%S"), 8),
        _field(header_bytes, 8), _field("24BIT", 44), _field(n_records, 8),
        _field(rec_dur_text, 8), _field(n_ch, 4),
    ])
    names = [_ascii(n) for n in ch_names]
    cols = [
        b"".join(_field(n, 16) for n in names),
        b"".join(_field("AgAgCl electrode", 80) for _ in names),
        b"".join(_field("uV", 8) for _ in names),
        b"".join(_field(f"{-_PHYS_MAX_UV:g}", 8) for _ in names),
        b"".join(_field(f"{_PHYS_MAX_UV:g}", 8) for _ in names),
        b"".join(_field(-_DIG_MAX, 8) for _ in names),
        b"".join(_field(_DIG_MAX, 8) for _ in names),
        b"".join(_field("HP:0.5Hz LP:50Hz", 80) for _ in names),
        b"".join(_field(rec_samples, 8) for _ in names),
        b"".join(_field("", 32) for _ in names),
    ]
    header = head + b"".join(cols)
    if len(header) != header_bytes:  # pragma: no cover - internal invariant
        raise RuntimeError("BDF header size mismatch")
    scale = _DIG_MAX / _PHYS_MAX_UV
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.partial")
    per_block = max(1, _BLOCK_SAMPLES // rec_samples)  # records converted at a time
    with open(tmp, "wb") as fh:
        fh.write(header)
        for r0 in range(0, n_records, per_block):
            r1 = min(n_records, r0 + per_block)
            seg = data[:, r0 * rec_samples:r1 * rec_samples].astype(np.float64) * scale
            digital = np.rint(np.clip(seg, -_DIG_MAX, _DIG_MAX)).astype("<i4")
            blocks = digital.reshape(n_ch, r1 - r0, rec_samples).transpose(1, 0, 2)
            payload = np.ascontiguousarray(blocks).view(np.uint8).reshape(-1, 4)[:, :3]
            fh.write(np.ascontiguousarray(payload).tobytes())
    os.replace(tmp, dest)
    return header_bytes + 3 * n_ch * n_times


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _atomic_copy(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


# --------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class _Job:
    rec_id: str
    subject: str
    task: str
    n_times: int
    externalizing: float | None
    eeg_json: str
    events_tsv: str | None
    out_dir: str
    stem: str
    seed: int
    params: EffectParams


def _stable_int(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def dataset_dir_name(release: str, mini: bool) -> str:
    """Return the folder name eegdash uses offline for a challenge release.

    Parameters
    ----------
    release : str
        ``"R1"`` ... ``"R11"``.
    mini : bool
        Whether the tree holds the mini subset.

    Returns
    -------
    str
        For example ``"EEG2025r5mini"``.
    """
    m = re.fullmatch(r"R(\d+)", release)
    if not m:
        raise ConfigError(f"expected a release like 'R5', got {release!r}")
    return f"EEG2025r{m.group(1)}{'mini' if mini else ''}"


def _mini_subjects(release: str) -> set[str]:
    try:
        from eegdash.const import SUBJECT_MINI_RELEASE_MAP
    except ImportError:  # pragma: no cover - eegdash is a dependency
        return set()
    return set(SUBJECT_MINI_RELEASE_MAP.get(release, []))


def _read_participants(metadata: Path) -> pd.DataFrame:
    tsv = metadata / "participants.tsv"
    if not metadata.is_dir():
        raise SourceError(f"expected a metadata directory, got {str(metadata)!r} "
                          f"(missing); pass --metadata DIR with participants.tsv and sub-*/")
    if not tsv.is_file():
        raise SourceError(f"expected participants.tsv in {str(metadata)!r}, got none; "
                          f"pass an HBN-EEG metadata directory")
    df = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    if "participant_id" not in df.columns:
        raise SourceError(f"expected a participant_id column in {tsv}, got {list(df.columns)}")
    return df


def _release_of(participants: pd.DataFrame) -> str:
    if "release_number" in participants.columns:
        vals = sorted({v for v in participants["release_number"] if re.fullmatch(r"R\d+", v)})
        if len(vals) == 1:
            return vals[0]
    return "R5"


def _float_or_none(value: object) -> float | None:
    try:
        out = float(str(value))
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def _scan_metadata(metadata: Path) -> list[dict[str, Any]]:
    """List the recordings described by ``*_eeg.json`` sidecars (no signal reading)."""
    items: list[dict[str, Any]] = []
    root = metadata.resolve()
    for sub_dir in sorted(root.glob("sub-*")):
        if not sub_dir.is_dir():
            continue
        for eeg_json in sorted(sub_dir.glob("**/eeg/*_eeg.json")):
            m = _EEG_JSON_RE.match(eeg_json.name)
            if not m:
                continue
            labels = {k: (v or "") for k, v in m.groupdict().items()}
            if not all(_LABEL_RE.match(v) for v in labels.values() if v) or \
                    f"sub-{labels['subject']}" != sub_dir.name:
                log.warning("skipping %s: unsafe or inconsistent BIDS labels", eeg_json)
                continue
            stem = eeg_json.name[: -len("_eeg.json")]
            events = eeg_json.with_name(f"{stem}_events.tsv")
            items.append({**labels, "stem": stem, "eeg_json": eeg_json,
                          "events": events if events.is_file() else None,
                          "rel_dir": eeg_json.parent.relative_to(root)})
    return items


def _plan(metadata: Path, out_root: Path, subjects: int | Sequence[str] | None,
          tasks: Sequence[str] | None, seed: int, params: EffectParams,
          participants: pd.DataFrame) -> tuple[list[_Job], list[str], list[str]]:
    items = _scan_metadata(metadata)
    available_tasks = sorted({it["task"] for it in items})
    if tasks is not None:
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        unknown = sorted(set(tasks) - set(available_tasks))
        if unknown:
            raise ConfigError(f"expected tasks among {available_tasks}, got unknown "
                              f"{unknown}; check --tasks")
        items = [it for it in items if it["task"] in set(tasks)]
    listed = {p.removeprefix("sub-") for p in participants["participant_id"]}
    items = [it for it in items if it["subject"] in listed]
    have = sorted({it["subject"] for it in items})
    if subjects is None:
        chosen = have
    elif isinstance(subjects, (int, np.integer)) and not isinstance(subjects, bool):
        if subjects < 1:
            raise ConfigError(f"expected a positive number of subjects, got {subjects}")
        if subjects > len(have):
            raise ConfigError(f"expected at most {len(have)} subjects (with recordings of "
                              f"the selected tasks), got {subjects}")
        chosen = have[: int(subjects)]
    elif isinstance(subjects, str) or not isinstance(subjects, Sequence):
        raise ConfigError(f"expected an int or a sequence of subject labels, got {subjects!r}")
    else:
        wanted = [s.removeprefix("sub-") for s in subjects]
        missing = sorted(set(wanted) - set(have))
        if missing:
            raise ConfigError(f"expected subjects with recordings in the metadata, got "
                              f"unknown {missing}")
        chosen = sorted(set(wanted))
    if not chosen:
        raise ConfigError("expected at least one recording to synthesize, got none; "
                          "check --tasks and --metadata")
    ext = {}
    if "externalizing" in participants.columns:
        ext = {p.removeprefix("sub-"): _float_or_none(v)
               for p, v in zip(participants["participant_id"], participants["externalizing"],
                               strict=True)}
    jobs: list[_Job] = []
    for it in items:
        if it["subject"] not in set(chosen):
            continue
        meta = json.loads(Path(it["eeg_json"]).read_text(encoding="utf-8"))
        duration = _float_or_none(meta.get("RecordingDuration"))
        if duration is None or duration <= 0:
            log.warning("skipping %s: no RecordingDuration", it["eeg_json"])
            continue
        jobs.append(_Job(
            rec_id=it["stem"], subject=it["subject"], task=it["task"],
            n_times=max(1, round(duration * SFREQ)), externalizing=ext.get(it["subject"]),
            eeg_json=str(it["eeg_json"]), events_tsv=str(it["events"]) if it["events"] else None,
            out_dir=str(out_root / it["rel_dir"]), stem=it["stem"],
            seed=_stable_int(seed, it["stem"]), params=params))
    tasks_out = sorted({j.task for j in jobs})
    return jobs, chosen, tasks_out


# --------------------------------------------------------------------------- signals
@functools.lru_cache(maxsize=1)
def _positions() -> np.ndarray:
    import mne

    montage = mne.channels.make_standard_montage("GSN-HydroCel-129")
    pos = montage.get_positions()["ch_pos"]
    xyz = np.array([pos[n] for n in CHANNEL_NAMES], dtype=np.float64)
    xyz -= xyz.mean(axis=0)
    return xyz / np.linalg.norm(xyz, axis=1, keepdims=True)


def _blob(center: np.ndarray, width: float) -> np.ndarray:
    pos = _positions()[:128]
    c = center / np.linalg.norm(center)
    d2 = np.sum((pos - c) ** 2, axis=1)
    return np.exp(-d2 / (2.0 * width**2))


def _at(name: str) -> np.ndarray:
    return _positions()[CHANNEL_NAMES.index(name)]


def rt_topography() -> np.ndarray:
    """Nominal topography of the RT component over :data:`CHANNEL_NAMES` (max 1, Cz 0).

    Each subject's pattern is this one, slightly shifted and scaled.

    Returns
    -------
    numpy.ndarray, shape (129,)
    """
    topo = _blob(_at("E62"), 0.6)
    return np.append(topo / topo.max(), 0.0)


def externalizing_topography() -> np.ndarray:
    """Nominal topography of the externalizing (beta) source over :data:`CHANNEL_NAMES`.

    Returns
    -------
    numpy.ndarray, shape (129,)
        Maximum 1 (frontal), 0 at ``Cz``.
    """
    topo = _blob(_at("E11"), 0.55)
    return np.append(topo / topo.max(), 0.0)


def _colored(rng: np.random.Generator, envelopes: np.ndarray, n_times: int) -> np.ndarray:
    """Unit-variance noise with the given amplitude spectra, shape (k, n_times)."""
    import scipy.fft

    k, n_freq = envelopes.shape
    spec = rng.standard_normal((k, n_freq), dtype=np.float32) \
        + 1j * rng.standard_normal((k, n_freq), dtype=np.float32)
    spec *= envelopes.astype(np.float32)
    x = scipy.fft.irfft(spec, n=n_times, axis=1).astype(np.float32, copy=False)
    std = x.std(axis=1, keepdims=True)
    return x / np.where(std > 0, std, 1.0)


def _subject_model(base_seed: int, subject: str, params: EffectParams) -> dict[str, Any]:
    # background source layout shared by all subjects ("head model"), jittered per subject
    layout = np.random.default_rng(_stable_int(base_seed, "layout"))
    n_bg = _N_BACKGROUND
    centers = layout.standard_normal((n_bg, 3))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    centers[:, 2] = np.abs(centers[:, 2]) + 0.2  # upper hemisphere
    widths = layout.uniform(0.18, 0.32, n_bg)
    signs = layout.choice([-1.0, 1.0], n_bg)
    rng = np.random.default_rng(_stable_int(base_seed, "subject", subject))
    centers = centers + 0.03 * rng.standard_normal(centers.shape)
    mix = np.stack([s * _blob(c, w) for c, w, s in zip(centers, widths, signs, strict=True)],
                   axis=1)
    mix *= rng.lognormal(0.0, 0.2, n_bg)[None, :]
    gain = rng.lognormal(0.0, 0.1)
    ch_gain = rng.lognormal(0.0, 0.1, 128)
    scale = params.background_uv * 0.85 / np.sqrt(np.median(np.sum(mix**2, axis=1)))
    mix = mix * scale * gain * ch_gain[:, None]
    alpha_mix = np.stack([_blob(_at("E70"), 0.45), _blob(_at("E83"), 0.45)], axis=1)
    alpha_mix *= params.background_uv * rng.uniform(0.4, 0.8) * gain * ch_gain[:, None]
    rt_topo = _blob(_at("E62") + 0.15 * rng.standard_normal(3), 0.6)
    rt_topo /= rt_topo.max()
    ext_topo = _blob(_at("E11") + 0.1 * rng.standard_normal(3), 0.55)
    ext_topo /= ext_topo.max()
    return {
        "mix": mix.astype(np.float32),
        "alpha_mix": alpha_mix.astype(np.float32),
        "alpha_hz": rng.uniform(8.5, 11.5),
        "exponent": rng.uniform(1.6, 2.0),
        "noise_uv": (params.background_uv * 0.5 * rng.uniform(0.15, 0.3, 128)
                     * gain).astype(np.float32),
        "rt_topo": (rt_topo * rng.lognormal(0.0, 0.1)).astype(np.float32),
        "ext_topo": ext_topo.astype(np.float32),
    }


def _trial_onsets(events_tsv: str | None) -> tuple[np.ndarray, np.ndarray]:
    if events_tsv is None:
        return np.empty(0), np.empty(0)
    from eegdash.hbn.windows import build_trial_table

    events = pd.read_csv(events_tsv, sep="\t")
    if not {"onset", "value"} <= set(events.columns):
        return np.empty(0), np.empty(0)
    table = build_trial_table(events)
    if table.empty:
        return np.empty(0), np.empty(0)
    stim = table["stimulus_onset"].to_numpy(float)
    resp = table["response_onset"].to_numpy(float)
    ok = np.isfinite(stim) & np.isfinite(resp) & (resp > stim)
    return stim[ok], resp[ok]


def _rt_component(stim: np.ndarray, resp: np.ndarray, n_times: int, params: EffectParams,
                  rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n_times, dtype=np.float32)
    amps = rng.lognormal(0.0, 0.25, len(stim))
    tail = math.ceil(4 * params.rt_width_s * SFREQ)
    for s, r, a in zip(stim, resp, amps, strict=True):
        r_idx = round(float(r) * SFREQ)
        on_idx = round((float(s) + params.rt_ramp_onset_s) * SFREQ)
        if r_idx >= n_times:
            continue
        if on_idx < r_idx:
            ramp = np.linspace(0.0, 1.0, r_idx - on_idx, endpoint=False)
            lo = max(on_idx, 0)
            out[lo:r_idx] += a * ramp[lo - on_idx:]
        stop = min(n_times, r_idx + tail + 1)
        t = (np.arange(r_idx, stop) - r * SFREQ) / (params.rt_width_s * SFREQ)
        out[r_idx:stop] += a * np.exp(-0.5 * t**2)
    return out


def _synth_signal(job: _Job, base_seed: int) -> np.ndarray:
    """Return the (129, n_times) signal of one recording in µV (float32)."""
    p = job.params
    model = _subject_model(base_seed, job.subject, p)
    rng = np.random.default_rng(job.seed)
    n = job.n_times
    freqs = np.fft.rfftfreq(n, 1.0 / SFREQ)
    band = (freqs**2 / (freqs**2 + 0.5**2)) / (1.0 + (freqs / 45.0) ** 8)
    # 1/f^b power with a steeper fall above ~15 Hz (the "knee" of EEG spectra)
    bg_env = band / (freqs + 1.0) ** (model["exponent"] / 2.0) \
        / np.sqrt(1.0 + (freqs / 15.0) ** 4)
    n_bg = model["mix"].shape[1]
    env = np.empty((n_bg + 3, freqs.size))
    env[:n_bg] = bg_env
    env[n_bg:n_bg + 2] = np.exp(-0.5 * ((freqs - model["alpha_hz"]) / 1.0) ** 2)
    env[n_bg + 2] = np.exp(-0.5 * ((freqs - 22.0) / 3.0) ** 2)
    sources = _colored(rng, env, n)
    x = model["mix"] @ sources[:n_bg]
    alpha_gain = 1.6 if job.task == "RestingState" else 1.0
    x += (alpha_gain * model["alpha_mix"]) @ sources[n_bg:n_bg + 2]
    ext = 0.0 if job.externalizing is None else job.externalizing
    ext_rms = max(0.0, p.externalizing_strength_uv * (p.externalizing_offset + ext))
    x += np.float32(ext_rms) * model["ext_topo"][:, None] * sources[n_bg + 2][None, :]
    if job.task == _CCD and p.rt_amplitude_uv > 0:
        stim, resp = _trial_onsets(job.events_tsv)
        comp = _rt_component(stim, resp, n, p, rng)
        x += np.float32(p.rt_amplitude_uv) * model["rt_topo"][:, None] * comp[None, :]
    for t0 in range(0, n, _BLOCK_SAMPLES):  # sensor noise, block by block (bounded memory)
        t1 = min(n, t0 + _BLOCK_SAMPLES)
        x[:, t0:t1] += model["noise_uv"][:, None] * rng.standard_normal((128, t1 - t0),
                                                                          dtype=np.float32)
    return np.concatenate([x, np.zeros((1, n), dtype=np.float32)], axis=0)


def _channels_tsv() -> str:
    rows = ["name\ttype\tunits"] + [f"{n}\tEEG\tuV" for n in CHANNEL_NAMES]
    return "\n".join(rows) + "\n"


def _single_threaded() -> contextlib.AbstractContextManager[Any]:
    """Pin BLAS to one thread so sums run in the same order in every process."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _synth_one(job: _Job, base_seed: int) -> dict[str, Any]:
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _single_threaded():
        data = _synth_signal(job, base_seed)
    bdf = out_dir / f"{job.stem}_eeg.bdf"
    meta = json.loads(Path(job.eeg_json).read_text(encoding="utf-8"))
    meta.update({"SamplingFrequency": SFREQ, "RecordingDuration": job.n_times / SFREQ,
                 "EEGChannelCount": len(CHANNEL_NAMES), "EEGReference": "Cz",
                 "SoftwareFilters": {"BandPass": {"LowCutoff_Hz": 0.5, "HighCutoff_Hz": 50}}})
    _atomic_write_text(out_dir / f"{job.stem}_eeg.json", json.dumps(meta, indent=2) + "\n")
    _atomic_write_text(out_dir / f"{job.stem}_channels.tsv", _channels_tsv())
    if job.events_tsv is not None:
        _atomic_copy(Path(job.events_tsv), out_dir / f"{job.stem}_events.tsv")
    # the BDF is written last, so a complete BDF implies complete sidecars
    size = write_bdf(bdf, data, SFREQ, CHANNEL_NAMES, patient=f"sub-{job.subject}",
                     recording=f"eegstore synthetic {job.stem}")
    return {"path": str(bdf), "bytes": size, "duration_s": job.n_times / SFREQ}


# --------------------------------------------------------------------------- driver
def _write_root(metadata: Path, root: Path, participants: pd.DataFrame, chosen: Sequence[str],
                tasks: Sequence[str], provenance: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    # subjects written now, plus those already in the tree from earlier runs
    present = {p.name.removeprefix("sub-") for p in root.glob("sub-*") if p.is_dir()}
    labels = participants["participant_id"].str.removeprefix("sub-")
    keep = participants[labels.isin(set(chosen) | present)]
    _atomic_write_text(root / "participants.tsv", keep.to_csv(sep="\t", index=False))
    desc_path = metadata / "dataset_description.json"
    desc: dict[str, Any] = {"Name": "HBN-EEG", "BIDSVersion": "1.9.0"}
    if desc_path.is_file():
        desc = json.loads(desc_path.read_text(encoding="utf-8"))
    desc["Name"] = f"{desc.get('Name', 'HBN-EEG')} - synthetic signals (eegstore)"
    desc["DatasetType"] = "derivative"
    generated = list(desc.get("GeneratedBy", []))
    generated.append({"Name": "eegstore synth",
                      "Description": "synthetic EEG over the real HBN-EEG metadata"})
    desc["GeneratedBy"] = generated
    _atomic_write_text(root / "dataset_description.json", json.dumps(desc, indent=2) + "\n")
    for name in ("participants.json", "README", "LICENSE.md"):
        if (metadata / name).is_file():
            _atomic_copy(metadata / name, root / name)
    for task in tasks:
        src = metadata / f"task-{task}_eeg.json"
        if src.is_file():
            meta = json.loads(src.read_text(encoding="utf-8"))
            meta["SamplingFrequency"] = SFREQ
            _atomic_write_text(root / src.name, json.dumps(meta, indent=2) + "\n")
        ev = metadata / f"task-{task}_events.json"
        if ev.is_file():
            _atomic_copy(ev, root / ev.name)
    (root / "code").mkdir(exist_ok=True)
    _atomic_write_text(root / "code" / "eegstore-synth.json",
                       json.dumps(provenance, indent=2) + "\n")


@contextlib.contextmanager
def _progress(total: int, enabled: bool, desc: str) -> Iterator[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not enabled, desc=desc, unit="rec")
    try:
        yield bar
    finally:
        bar.close()


def _run_jobs(jobs: list[_Job], seed: int, workers: int, progress: bool) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    if workers <= 1 or len(jobs) <= 1:
        with _progress(len(jobs), progress, "synth") as bar:
            for job in jobs:
                try:
                    results.append(_synth_one(job, seed))
                except (OSError, ValueError) as exc:
                    raise BuildError(f"cannot synthesize {job.rec_id}: {exc}") from exc
                bar.update(1)
        return results
    from dask.distributed import Client, LocalCluster, as_completed

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client, _progress(len(jobs), progress, "synth") as bar:
        futures = client.map(_synth_one, jobs, base_seed=seed, pure=False)
        names = {f.key: j.rec_id for f, j in zip(futures, jobs, strict=True)}
        for fut in as_completed(futures):
            try:
                results.append(fut.result())
            except (OSError, ValueError) as exc:
                client.cancel(futures)
                raise BuildError(f"cannot synthesize {names[fut.key]}: {exc}") from exc
            bar.update(1)
    return results


def synthesize(
    out: str | os.PathLike[str],
    *,
    metadata: str | os.PathLike[str] = MINI_R5_METADATA,
    subjects: int | Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    rt_amplitude_uv: float = EffectParams.rt_amplitude_uv,
    rt_width_s: float = EffectParams.rt_width_s,
    rt_ramp_onset_s: float = EffectParams.rt_ramp_onset_s,
    externalizing_strength_uv: float = EffectParams.externalizing_strength_uv,
    externalizing_offset: float = EffectParams.externalizing_offset,
    background_uv: float = EffectParams.background_uv,
) -> SynthReport:
    """Write a synthetic HBN-format BIDS release over real metadata.

    Parameters
    ----------
    out : path-like
        Output folder; the BIDS tree goes to ``out/EEG2025r<N>mini`` when every
        subject of ``metadata`` is in eegdash's mini subset of the release, else
        to ``out/EEG2025r<N>`` (``N`` from ``participants.tsv``'s
        ``release_number``; default R5).
    metadata : path-like
        HBN-EEG metadata folder (default: the vendored R5 mini subjects).
    subjects : int or sequence of str, optional
        Number of subjects (the first ones in sorted order among those with
        recordings of the selected tasks) or their labels; default all.
    tasks : sequence of str, optional
        Tasks to write (default all tasks in the metadata).
    seed : int
        Seed; a recording's content depends only on ``seed``, its subject and
        its id, so any subset, order or worker count gives the same bytes.
    workers : int
        Worker processes (Dask ``LocalCluster``); 1 runs in this process.  Each
        worker holds one recording at a time (about 30 MB per 6 min).
    progress : bool
        Show a tqdm progress bar over recordings.
    rt_amplitude_uv, rt_width_s, rt_ramp_onset_s, externalizing_strength_uv, \
externalizing_offset, background_uv : float
        Effect and background strengths; see :class:`EffectParams` for meaning
        and defaults.

    Returns
    -------
    SynthReport
        Files, counts, size and wall time.

    Raises
    ------
    SourceError
        ``metadata`` is missing or is not an HBN-EEG metadata folder.
    ConfigError
        Unknown task, bad subject count or label, bad parameter.
    BuildError
        A recording could not be written.
    """
    t0 = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"expected a non-negative integer seed, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"expected workers >= 1, got {workers!r}")
    params = EffectParams(rt_amplitude_uv=rt_amplitude_uv, rt_width_s=rt_width_s,
                          rt_ramp_onset_s=rt_ramp_onset_s,
                          externalizing_strength_uv=externalizing_strength_uv,
                          externalizing_offset=externalizing_offset, background_uv=background_uv)
    meta_dir = Path(metadata).expanduser()
    participants = _read_participants(meta_dir)
    release = _release_of(participants)
    labels = {p.removeprefix("sub-") for p in participants["participant_id"]}
    mini_set = _mini_subjects(release)
    mini = bool(mini_set) and labels <= mini_set
    out_dir = Path(out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"expected an output directory, got the file {str(out_dir)!r}")
    root = (out_dir / dataset_dir_name(release, mini)).resolve()
    jobs, chosen, tasks_out = _plan(meta_dir, root, subjects, tasks, int(seed), params,
                                    participants)
    provenance = {"generator": "eegstore.synth", "seed": int(seed),
                  "metadata": str(meta_dir.resolve()), "release": release, "mini": mini,
                  "subjects": list(chosen), "tasks": tasks_out, "sfreq": SFREQ,
                  "params": params.to_dict()}
    _write_root(meta_dir, root, participants, chosen, tasks_out, provenance)
    results = _run_jobs(jobs, int(seed), int(workers), progress)
    files = tuple(sorted(Path(r["path"]) for r in results))
    return SynthReport(
        root=root, files=files, n_subjects=len(chosen), n_recordings=len(results),
        tasks=tuple(tasks_out), duration_s=float(sum(r["duration_s"] for r in results)),
        bytes_written=int(sum(r["bytes"] for r in results)),
        elapsed_s=time.perf_counter() - t0, seed=int(seed), workers=int(workers), params=params)


# --------------------------------------------------------------------------- CLI
def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``eegstore synth`` arguments to ``parser``."""
    d = EffectParams()
    parser.add_argument("out", help="output folder (the BIDS tree goes to OUT/EEG2025r5mini "
                        "or OUT/EEG2025r5)")
    parser.add_argument("--metadata", default=str(MINI_R5_METADATA),
                        help="HBN-EEG metadata folder (default: vendored R5 mini subjects)")
    parser.add_argument("--subjects", type=_nonneg_int, default=None, metavar="N",
                        help="only the first N subjects (sorted)")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help="only these tasks (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=_nonneg_int, default=1,
                        help="worker processes (default 1)")
    parser.add_argument("--rt-amplitude-uv", type=float, default=d.rt_amplitude_uv,
                        help=f"RT component peak in µV (default {d.rt_amplitude_uv})")
    parser.add_argument("--externalizing-strength-uv", type=float,
                        default=d.externalizing_strength_uv,
                        help="externalizing band RMS per unit score in µV "
                        f"(default {d.externalizing_strength_uv})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``eegstore synth`` with parsed ``args``; return the exit code."""
    report = synthesize(
        args.out, metadata=args.metadata, subjects=args.subjects, tasks=args.tasks,
        seed=args.seed, workers=args.workers, progress=not args.no_progress,
        rt_amplitude_uv=args.rt_amplitude_uv,
        externalizing_strength_uv=args.externalizing_strength_uv)
    print(report.summary())
    return 0
