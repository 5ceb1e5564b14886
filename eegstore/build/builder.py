"""``build_store``: build (or extend, or resume) a labelled Zarr store from recordings.

Every step is idempotent, so a killed build re-run with the same command finishes with
the same store as an uninterrupted one:

1. discover the recordings and read the committed store (:mod:`eegstore.build.resume`)
   while the Dask cluster starts in the background (:mod:`eegstore.build.cluster`);
2. stage the recordings and write the chunks of their windows, pipelined
   (:mod:`eegstore.build.pipeline`);
3. append the coordinates and the recordings table, the checksums and the attributes,
   and commit with one atomic write of the consolidated metadata
   (:mod:`eegstore.build.commit`); then delete staging.

Appending (another subject, another release) never rewrites full chunks of an existing
store; a trailing partial chunk is rewritten once with its old windows unchanged plus new
ones (its CRC changes accordingly).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from eegstore.build.cluster import DaskSession
from eegstore.build.commit import finish, maybe_kill, write_tables
from eegstore.build.layout import (
    DEFAULT_COMPRESSOR,
    DEFAULT_DTYPE,
    DEFAULT_UNITS,
    Compressor,
    Dtype,
    Units,
    check_layout,
)
from eegstore.build.pipeline import Pipeline, StagedMeta
from eegstore.build.resume import check_compatible, check_staged_config, read_committed
from eegstore.build.state import BuildConfig, BuildPlan, CommittedStore
from eegstore.errors import BuildError, ConfigError
from eegstore.placement import Placer
from eegstore.preprocessing import Preprocessor, steps_to_dicts
from eegstore.recipes import RECIPES, Recipe, get_recipe
from eegstore.sources import Recording
from eegstore.store import get_fs, normalize_url

from .staging import STAGING

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["BuildReport", "build_store"]


@dataclass
class BuildReport:
    """What a build did.

    Attributes
    ----------
    store : str
        The store URL.
    n_recordings, n_ok, n_skipped : int
        Recordings in the store's table after the build, usable, skipped.
    n_windows, n_new_windows : int
        Windows in the store, windows added by this build.
    n_dropped : int
        Windows dropped by this build because they ran past a recording's end.
    skipped : dict
        Recording id -> reason, for recordings skipped by this build.
    chunk_windows : int
        Windows per chunk.
    elapsed_s : float
        Wall time.
    dashboard : str or None
        The Dask dashboard link.
    """

    store: str
    n_recordings: int = 0
    n_ok: int = 0
    n_skipped: int = 0
    n_windows: int = 0
    n_new_windows: int = 0
    n_dropped: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    chunk_windows: int = 0
    elapsed_s: float = 0.0
    dashboard: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.store}: {self.n_windows} windows ({self.n_new_windows} new) from "
                f"{self.n_ok} recordings, {self.n_skipped} skipped, {self.n_dropped} windows "
                f"past a recording's end dropped, in {self.elapsed_s:.1f} s")


def build_store(
    source: str | os.PathLike[str],
    store: str | os.PathLike[str],
    recipe: str | Recipe = "challenge1",
    *,
    tasks: Sequence[str] | None = None,
    subjects: int | Sequence[str] | None = None,
    workers: int = 2,
    scheduler: str | Client | None = None,
    chunk_windows: int | None = None,
    dtype: Dtype = DEFAULT_DTYPE,
    units: Units = DEFAULT_UNITS,
    compressor: Compressor = DEFAULT_COMPRESSOR,
    preprocessing: Sequence[Preprocessor] = (),
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    recordings: Sequence[Recording] | None = None,
) -> BuildReport:
    """Build (or extend, or resume) a labelled Zarr store from recordings.

    Parameters
    ----------
    source : str or PathLike
        Local BIDS directory or ``eegdash:RN[-mini]``.
    store : str or PathLike
        Output: local path or fsspec URL (``s3://bucket/x.zarr``, ``memory://x``).
    recipe : str or Recipe
        ``"challenge1"``, ``"challenge2"``, ``"fixed"`` or a recipe object.
    tasks : sequence of str, optional
        Tasks to include (default: the recipe's, all for challenge2/fixed).
    subjects : int or sequence of str, optional
        The first N subjects in sorted order, or these subject labels.
    workers : int
        Worker processes of the LocalCluster (ignored with ``scheduler``).
    scheduler : str or distributed.Client, optional
        Address of (or client to) an existing Dask cluster.
    chunk_windows : int, optional
        Windows per chunk (default: ~8 MiB uncompressed chunks).
    dtype : {"float16", "float32"}
        Storage dtype of ``eeg``.
    units : {"uV", "V"}
        Unit of ``eeg`` (``eeg.attrs["units"]``); signals read in volts are scaled to it.
    compressor : str
        One of :data:`eegstore.build.COMPRESSORS`.
    preprocessing : sequence of Preprocessor
        Steps applied to every recording, in order.
    progress : bool
        Show tqdm progress bars and print the dashboard link.
    storage_options : mapping, optional
        fsspec options of the store URL.
    recordings : sequence of Recording, optional
        Use these instead of discovering them from ``source``.

    Returns
    -------
    BuildReport

    Raises
    ------
    ConfigError
        Bad options, or options incompatible with an existing store.
    BuildError
        No usable recording at all.
    """
    started = time.perf_counter()
    recipe_obj = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(recipe_obj, Recipe):
        raise ConfigError(f"expected a recipe name in {sorted(RECIPES)} or a Recipe, got "
                          f"{type(recipe).__name__}")
    check_layout(dtype, units, compressor)
    if chunk_windows is not None and (not isinstance(chunk_windows, int) or chunk_windows < 1):
        raise ConfigError(f"expected a positive chunk_windows, got {chunk_windows!r}")
    if int(workers) < 1:
        raise ConfigError(f"expected workers >= 1, got {workers}")
    url = normalize_url(os.fspath(store))
    options = dict(storage_options or {}) or None
    config = BuildConfig(recipe=recipe_obj.to_dict(),
                         preprocessing=tuple(steps_to_dicts(preprocessing)),
                         dtype=dtype, compressor=compressor, units=units)
    build = _Build(source=str(source), url=url, storage_options=options,
                   config=config, recipe=recipe_obj, chunk_windows=chunk_windows,
                   progress=progress)
    # the Dask cluster starts in the background while the inputs are inspected
    dask = DaskSession(int(workers), scheduler, url)
    try:
        if recordings is None:
            recordings = _discover(source, tasks or recipe_obj.default_tasks, subjects)
        plan, metas = build.run(dask, recordings, tasks)
    finally:
        dask.close(wait=True)
    return BuildReport(
        store=url, n_recordings=plan.n_recordings_total, n_ok=plan.n_ok_total,
        n_skipped=plan.n_recordings_total - plan.n_ok_total, n_windows=plan.n_total,
        n_new_windows=plan.new_windows,
        n_dropped=sum(int(m.get("n_dropped", 0)) for m in metas.values()),
        skipped={rid: reason for rid, status, reason in plan.new_rows if status != "ok"},
        chunk_windows=plan.chunk_windows, elapsed_s=time.perf_counter() - started,
        dashboard=build.dashboard)


@dataclass
class _Build:
    """One run of :func:`build_store` after its checks: stage and write, then commit."""

    source: str
    url: str
    storage_options: dict[str, Any] | None
    config: BuildConfig
    recipe: Recipe
    chunk_windows: int | None
    progress: bool
    dashboard: str | None = None
    tables_written: bool = False
    committed: CommittedStore | None = None

    def run(self, dask: DaskSession, recordings: Sequence[Recording],
            tasks: Sequence[str] | None) -> tuple[BuildPlan, Mapping[str, StagedMeta]]:
        unique, duplicates = _dedupe(recordings)
        if not unique:
            raise BuildError(f"expected recordings in {self.source}, got none"
                             + (f" for tasks {list(tasks)}" if tasks else ""))
        fs, root = get_fs(self.url, self.storage_options)
        self.committed = committed = read_committed(self.url, self.storage_options)
        if committed is not None:
            check_compatible(committed, self.config, self.chunk_windows)
        fs.makedirs(f"{root}/{STAGING}", exist_ok=True)
        check_staged_config(fs, root, self.url, self.config)
        done_ids = set(committed.ids) if committed else set()
        todo = [rec for rec in unique if rec.id not in done_ids]
        duplicates = {k: v for k, v in duplicates.items() if k not in done_ids}
        client = None
        if todo:
            client = dask.client()
            self.dashboard = client.dashboard_link
            if self.progress and self.dashboard:
                print(f"dask dashboard: {self.dashboard}", file=sys.stderr)
        pipeline = Pipeline(client, todo, duplicates, committed, self.config, self.url,
                            self.storage_options, self.chunk_windows, self.progress,
                            on_placed=self._write_tables)
        pipeline.run()
        dask.close()  # in the background, while the client commits
        plan = BuildPlan.from_placer(pipeline.placer, committed)
        if plan.n_ok_total == 0:
            fs.rm(f"{root}/{STAGING}", recursive=True)
            reasons = sorted({m.get("reason", "") for m in pipeline.metas.values()})[:5]
            raise BuildError(f"expected at least one usable recording, got none of "
                             f"{len(unique)}; reasons: {'; '.join(reasons)}")
        if plan.commit_due(committed):
            finish(plan, committed, pipeline.metas, pipeline.crcs, self.url,
                   self.storage_options, self.config, self.recipe, self.source,
                   tables_written=self.tables_written)
        fs.rm(f"{root}/{STAGING}", recursive=True)
        return plan, pipeline.metas

    def _write_tables(self, metas: Mapping[str, StagedMeta], placer: Placer) -> None:
        """Once every recording is placed: write the tables while the last chunks are written."""
        plan = BuildPlan.from_placer(placer, self.committed)
        if plan.commit_due(self.committed):
            write_tables(plan, self.committed, metas, self.url, self.storage_options,
                         self.recipe)
            self.tables_written = True
            maybe_kill("tables")


def _dedupe(recordings: Sequence[Recording]) -> tuple[list[Recording], dict[str, str]]:
    """Return the recordings with unique ids, and a table row (id -> reason) for each duplicate."""
    seen: dict[str, Recording] = {}
    duplicates: dict[str, str] = {}
    for rec in sorted(recordings, key=lambda r: (r.id, str(r.path))):
        if rec.id in seen:
            k = 1
            while f"{rec.id}~dup{k}" in duplicates:
                k += 1
            duplicates[f"{rec.id}~dup{k}"] = (f"duplicate recording: {rec.path} has the same "
                                              f"id as {seen[rec.id].path}")
        else:
            seen[rec.id] = rec
    return list(seen.values()), duplicates


def _discover(source: str | os.PathLike[str], tasks: Sequence[str] | None,
              subjects: int | Sequence[str] | None) -> list[Recording]:
    """List the recordings of ``source``; ``subjects``: labels, or N for the first N sorted."""
    from eegstore.sources import discover_recordings

    if isinstance(subjects, int) and not isinstance(subjects, bool):
        if subjects < 1:
            raise ConfigError(f"expected subjects >= 1, got {subjects}")
        recs = discover_recordings(source, tasks=tasks)
        keep = set(sorted({r.subject for r in recs})[:subjects])
        return [r for r in recs if r.subject in keep]
    return list(discover_recordings(source, tasks=tasks, subjects=subjects))
