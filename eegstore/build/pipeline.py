"""Staging and chunk writing, pipelined on the Dask cluster (:class:`Pipeline`).

Recordings are staged in sorted-id order, one task each
(:func:`eegstore.build.tasks.stage_recording`).  The client places them as they finish
(:class:`eegstore.placement.Placer`): the committed store keeps its recordings and
windows, the new recordings follow in sorted-id order, so window ranges are
deterministic whatever order the workers finish in.  A chunk is ready once every
recording sorted before its last window is staged; a chunk-writing task
(:func:`eegstore.build.tasks.write_chunks`) goes out as soon as enough ready chunks fill
it (:data:`CHUNKS_PER_TASK`), at a higher priority than the remaining staging tasks; the
rest go once every recording is placed, split evenly between the workers.  No two tasks
write the same chunk.  Once all chunks of a recording are written its staged windows
are deleted, so staging holds a few recordings at a time.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from eegstore.build.commit import create_eeg, maybe_kill, open_root
from eegstore.build.resume import array_of, resume_records
from eegstore.build.state import BuildConfig, CommittedStore
from eegstore.build.tasks import stage_recording, write_chunks
from eegstore.placement import ChunkJob, Placer, task_bounds
from eegstore.sources import Recording
from eegstore.store import get_fs, zarr_kwargs

from .staging import STAGED_OFFSETS, STAGED_SIGNAL, STAGING, safe_name

__all__ = ["CHUNKS_PER_TASK", "Pipeline", "StagedMeta"]

#: Chunks written by one chunk-writing task.  Ready chunks wait until they fill a task (the
#: rest go once every recording is placed): fewer, longer tasks cost the client and the
#: Dask scheduler less CPU, which on a machine with as many cores as workers the workers
#: need.  The price is staged windows kept on disk for up to this many chunks longer.
CHUNKS_PER_TASK = 16

#: A staged recording's ``done.json``, as :func:`eegstore.build.tasks.stage_recording`
#: returns it (coordinates as numpy arrays once the client has it).
StagedMeta = dict[str, Any]


class Pipeline:
    """Stage ``todo`` and write every chunk of the new windows, on ``client``'s cluster.

    Parameters
    ----------
    client : distributed.Client or None
        The cluster's client (``None`` when nothing is to be staged).
    todo : sequence of Recording
        The recordings to stage.
    duplicates : mapping
        Extra recording ids -> reason: table rows of skipped duplicates.
    committed : CommittedStore or None
        The store before the build.
    config : BuildConfig
        The build's options.
    url, storage_options
        The store.
    chunk_windows : int, optional
        Windows per chunk of a new store.
    progress : bool
        Show progress bars.
    on_placed : callable, optional
        Runs on the client once every recording is staged and placed, while the
        workers write the last chunks (with the staged metadata and the placer).

    Attributes
    ----------
    metas : dict
        Recording id -> its staged metadata.
    crcs : dict
        Chunk index -> CRC32 of the chunks written (or found written).
    placer : Placer
        The placement.
    """

    def __init__(self, client: Any, todo: Sequence[Recording], duplicates: Mapping[str, str],
                 committed: CommittedStore | None, config: BuildConfig, url: str,
                 storage_options: dict[str, Any] | None, chunk_windows: int | None,
                 progress: bool,
                 on_placed: Callable[[Mapping[str, StagedMeta], Placer], None] | None = None,
                 ) -> None:
        self._client = client
        self._todo = list(todo)
        self._committed = committed
        self._config = config
        self._url = url
        self._storage_options = storage_options
        self._progress = progress
        self._on_placed = on_placed
        self._fs, self._root = get_fs(url, storage_options)
        self._n_old = committed.n_windows if committed else 0
        reference = None
        if committed is not None:
            reference = {"channels": list(committed.channels),
                         "window_samples": committed.shape_tail[1], "sfreq": committed.sfreq}
            chunk_windows = committed.chunk_windows
        ids = [rec.id for rec in self._todo] + list(duplicates)
        self.placer = Placer(ids, n_old=self._n_old, ref=reference, chunk_windows=chunk_windows,
                             dtype=config.dtype, name=safe_name)
        self._records = resume_records(self._fs, self._root, ids, self._n_old)
        for rid, reason in duplicates.items():
            self.placer.offer(rid, {"status": "skipped", "reason": reason})
        self.metas: dict[str, StagedMeta] = {}
        self.crcs: dict[int, int] = {}
        self._unwritten: dict[str, int] = {}  # staging name -> its chunks not written yet
        self._jobs: dict[str, list[ChunkJob]] = {}  # future key -> the chunks it writes
        self._waiting: list[tuple[ChunkJob, str]] = []  # chunks to write, not submitted yet
        self._eeg: Any = None  # the eeg array, opened when the first chunk is ready
        self._n_written = 0  # chunks written by this run's tasks (kill points count them)
        self._slots = 1  # tasks the cluster runs at once
        self._completed: Any = None
        self._rec_bar: Any = None
        self._chunk_bar: Any = None

    def run(self) -> None:
        """Stage every recording and write every chunk; return once all are done."""
        from tqdm.auto import tqdm

        self._rec_bar = tqdm(total=len(self._todo), desc="recordings", unit="rec",
                             disable=not self._progress)
        self._chunk_bar = tqdm(total=0, desc="chunks", unit="chunk",
                               disable=not self._progress)
        try:
            if self._client is None:  # nothing to stage (only duplicates of committed ones)
                self._schedule()
                return
            self._run_on_cluster()
        finally:
            self._rec_bar.close()
            self._chunk_bar.close()

    def _run_on_cluster(self) -> None:
        from distributed import as_completed

        client = self._client
        self._completed = as_completed(loop=client.loop, with_results=True)
        self._slots = max(1, sum(client.nthreads().values()))
        # sorted by id, so placement advances as they finish; one graph update
        self._completed.update(client.map(
            stage_recording, self._todo, config=self._config, store=self._url,
            storage_options=self._storage_options, pure=False,
            key=[f"stage-{safe_name(r.id)}-{time.time_ns()}" for r in self._todo]))
        self._schedule()
        for future, result in self._completed:  # results gathered on the client's loop
            if future.status != "finished":
                future.result()  # raises the task's error
            future.release()
            group = self._jobs.pop(future.key, None)
            if group is not None:
                for job, (_chunk, crc) in zip(group, result, strict=True):
                    self._chunk_done(job, int(crc))
                    self._n_written += 1
                    maybe_kill(f"chunk:{self._n_written}")
                continue
            self._staged(result)
        placer = self.placer
        if self._eeg is not None and self._eeg.shape[0] != placer.n_total:
            self._eeg.resize((placer.n_total, *placer.shape_tail))

    def _staged(self, meta: StagedMeta) -> None:
        """Take a staging task's result: place it, schedule the chunks it made ready."""
        coords = meta.get("coords")
        if coords:
            meta = {**meta, "coords": {k: np.asarray(v) for k, v in coords.items()}}
        self.metas[meta["id"]] = meta
        self.placer.offer(meta["id"], meta)
        self._rec_bar.update(1)
        maybe_kill(f"stage:{len(self.metas)}")
        self._schedule()
        if self.placer.complete and self._on_placed is not None:
            self._on_placed(self.metas, self.placer)
            self._on_placed = None  # once

    def _chunk_done(self, job: ChunkJob, crc: int) -> None:
        """Record a written chunk; delete staged recordings whose chunks are all written."""
        self.crcs[job.chunk] = crc
        self._chunk_bar.update(1)
        for name in set(job.sources):
            self._unwritten[name] -= 1
            if self._unwritten[name] == 0:  # every window of it is in the store now
                for staged in (STAGED_SIGNAL, STAGED_OFFSETS):
                    try:
                        self._fs.rm(f"{self._root}/{STAGING}/{name}/{staged}")
                    except FileNotFoundError:
                        pass

    def _open_eeg(self) -> Any:
        """Open (or create) the ``eeg`` array to write into."""
        import zarr

        placer = self.placer
        chunk_windows = int(placer.k or 1)
        config = self._config
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self._committed is not None:
                return zarr.open_array(**zarr_kwargs(self._url, self._storage_options),
                                       path="eeg", mode="r+")
            root = open_root(self._url, self._storage_options)
            arr = array_of(root, "eeg") if "eeg" in root else None
            if arr is not None and arr.chunks[0] == chunk_windows \
                    and tuple(arr.shape[1:]) == placer.shape_tail \
                    and str(arr.dtype) == config.dtype:
                return arr  # an interrupted build's array: its chunks are reused
            self._records.clear()  # records of chunks of another array
            return create_eeg(root, placer.shape_tail, chunk_windows, config)

    def _schedule(self) -> None:
        """Place what can be placed; send the chunk-writing tasks that are due."""
        placer = self.placer
        for rid, first, n in placer.advance():
            self._unwritten[safe_name(rid)] = len(placer.chunks_of(first, n))
        ready = placer.ready_chunks()
        chunk_windows = int(placer.k or 1)
        if ready:
            if self._eeg is None:
                self._eeg = self._open_eeg()
            end = ready[-1].chunk * chunk_windows + ready[-1].n_windows
            if self._eeg.shape[0] < end:
                self._eeg.resize((end, *placer.shape_tail))
            context = [self._n_old, chunk_windows, list(placer.shape_tail), self._config.dtype,
                       self._config.compressor, self._config.units]
            self._chunk_bar.total = (self._chunk_bar.total or 0) + len(ready)
            self._chunk_bar.refresh()
            for job in ready:
                signature = job.signature(context)
                record = self._records.get(job.chunk)
                if record is not None and record.get("signature") == signature:
                    self._chunk_done(job, int(record["crc32"]))  # written before
                else:
                    self._waiting.append((job, signature))
        # whole groups only (the rest once every recording is placed): fewer, longer tasks
        waiting = self._waiting
        n_send = len(waiting) if placer.complete else \
            len(waiting) - len(waiting) % CHUNKS_PER_TASK
        if not n_send:
            return
        send, waiting[:n_send] = waiting[:n_send], []
        bounds = task_bounds(n_send, CHUNKS_PER_TASK, slots=self._slots, last=placer.complete)
        groups = [[job for job, _ in send[a:b]] for a, b in bounds]
        signatures = [[signature for _, signature in send[a:b]] for a, b in bounds]
        # one graph update for the batch, ahead of the staging tasks
        futures = self._client.map(
            write_chunks, groups, signatures, store=self._url,
            storage_options=self._storage_options, chunk_windows=chunk_windows,
            shape_tail=placer.shape_tail, dtype=self._config.dtype, pure=False, priority=10,
            key=[f"chunks-{group[0].chunk}-{time.time_ns()}" for group in groups])
        for future, group in zip(futures, groups, strict=True):
            self._jobs[future.key] = group
        if self._completed is not None:
            self._completed.update(futures)
