"""``synthesize``: a synthetic HBN-format BIDS release, and the ``eegstore synth`` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eegstore.data import MINI_R5_METADATA
from eegstore.errors import BuildError, ConfigError
from eegstore.synth.bids import (
    _Job,
    _mini_subjects,
    _plan,
    _read_participants,
    _release_of,
    _synth_one,
    _write_root,
    dataset_dir_name,
)
from eegstore.synth.model import SFREQ, EffectParams

__all__ = ["SynthReport", "configure_parser", "run", "synthesize"]

log = logging.getLogger(__name__)


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
