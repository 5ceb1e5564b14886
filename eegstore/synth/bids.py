"""The BIDS side of the synthetic release: planning its recordings and writing its files."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eegstore._io import atomic_file, atomic_write
from eegstore.errors import ConfigError, SourceError
from eegstore.synth.bdf import write_bdf
from eegstore.synth.model import (
    CHANNEL_NAMES,
    SFREQ,
    EffectParams,
    stable_int,
    synth_signal,
)

__all__ = ["dataset_dir_name"]

log = logging.getLogger(__name__)

_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
_EEG_JSON_RE = re.compile(
    r"^sub-(?P<subject>[^_/]+)(?:_ses-(?P<session>[^_/]+))?_task-(?P<task>[^_/]+)"
    r"(?:_acq-[^_/]+)?(?:_run-(?P<run>[^_/]+))?_eeg\.json$")


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text, durable=False)


def _copy(src: Path, dest: Path) -> None:
    with open(src, "rb") as source, atomic_file(dest, durable=False) as fh:
        shutil.copyfileobj(source, fh)


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
            return str(vals[0])
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
            seed=stable_int(seed, it["stem"]), params=params))
    tasks_out = sorted({j.task for j in jobs})
    return jobs, chosen, tasks_out




def _channels_tsv() -> str:
    rows = ["name\ttype\tunits"] + [f"{n}\tEEG\tuV" for n in CHANNEL_NAMES]
    return "\n".join(rows) + "\n"


def _single_threaded() -> contextlib.AbstractContextManager[Any]:
    """Pin BLAS to one thread so sums run in the same order in every process."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    limits: contextlib.AbstractContextManager[Any] = threadpool_limits(limits=1,
                                                                       user_api="blas")
    return limits


def _synth_one(job: _Job, base_seed: int) -> dict[str, Any]:
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _single_threaded():
        data = synth_signal(subject=job.subject, task=job.task, n_times=job.n_times,
                            externalizing=job.externalizing, events_tsv=job.events_tsv,
                            seed=job.seed, base_seed=base_seed, params=job.params)
    bdf = out_dir / f"{job.stem}_eeg.bdf"
    meta = json.loads(Path(job.eeg_json).read_text(encoding="utf-8"))
    meta.update({"SamplingFrequency": SFREQ, "RecordingDuration": job.n_times / SFREQ,
                 "EEGChannelCount": len(CHANNEL_NAMES), "EEGReference": "Cz",
                 "SoftwareFilters": {"BandPass": {"LowCutoff_Hz": 0.5, "HighCutoff_Hz": 50}}})
    _write_text(out_dir / f"{job.stem}_eeg.json", json.dumps(meta, indent=2) + "\n")
    _write_text(out_dir / f"{job.stem}_channels.tsv", _channels_tsv())
    if job.events_tsv is not None:
        _copy(Path(job.events_tsv), out_dir / f"{job.stem}_events.tsv")
    # the BDF is written last, so a complete BDF implies complete sidecars
    size = write_bdf(bdf, data, SFREQ, CHANNEL_NAMES, patient=f"sub-{job.subject}",
                     recording=f"eegstore synthetic {job.stem}")
    return {"path": str(bdf), "bytes": size, "duration_s": job.n_times / SFREQ}


def _write_root(metadata: Path, root: Path, participants: pd.DataFrame, chosen: Sequence[str],
                tasks: Sequence[str], provenance: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    # subjects written now, plus those already in the tree from earlier runs
    present = {p.name.removeprefix("sub-") for p in root.glob("sub-*") if p.is_dir()}
    labels = participants["participant_id"].str.removeprefix("sub-")
    keep = participants[labels.isin(set(chosen) | present)]
    _write_text(root / "participants.tsv", keep.to_csv(sep="\t", index=False))
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
    _write_text(root / "dataset_description.json", json.dumps(desc, indent=2) + "\n")
    for name in ("participants.json", "README", "LICENSE.md"):
        if (metadata / name).is_file():
            _copy(metadata / name, root / name)
    for task in tasks:
        src = metadata / f"task-{task}_eeg.json"
        if src.is_file():
            meta = json.loads(src.read_text(encoding="utf-8"))
            meta["SamplingFrequency"] = SFREQ
            _write_text(root / src.name, json.dumps(meta, indent=2) + "\n")
        ev = metadata / f"task-{task}_events.json"
        if ev.is_file():
            _copy(ev, root / ev.name)
    (root / "code").mkdir(exist_ok=True)
    _write_text(root / "code" / "eegstore-synth.json",
                       json.dumps(provenance, indent=2) + "\n")
