"""The Dask cluster of a build: its settings, and a session that starts and closes it.

A build runs on the caller's cluster (``scheduler``: an address or a
``distributed.Client``) or on its own ``LocalCluster`` of single-threaded worker
processes (threads for ``memory://`` stores, which live in one process).  Starting and
closing a LocalCluster each take about as long as the client's own work before and after
(discovering recordings and inspecting the store; the commit), which does not need the
cluster, so :class:`DaskSession` does both in a background thread.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

__all__ = ["LOCAL_CLUSTER_CONFIG", "WORKER_ENV", "DaskSession"]

#: Dask settings of the build's own LocalCluster.  Each build task runs for a fraction of
#: a second to seconds, so the statistical profiler (100 stack samples a second in every
#: worker), the 20 ms event-loop tick and the fast memory/system monitors cost CPU that
#: the workers need on a machine with as many cores as workers.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}

#: glibc malloc settings of the build's own worker processes (added to Dask's
#: ``distributed.nanny.pre-spawn-environ``).  Dask sets ``MALLOC_TRIM_THRESHOLD_`` to
#: 64 KiB, which also freezes glibc's mmap threshold at 128 KiB: every recording-sized
#: array and chunk buffer is then a fresh mmap whose pages the kernel faults in and
#: zeroes one by one, for every recording.  Arrays up to the mmap threshold come from
#: the heap instead, and freed heap up to the trim threshold is kept for the next
#: recording (the build suite of ``python -m benchmarks run`` measures the effect).
WORKER_ENV: dict[str, int] = {
    "MALLOC_MMAP_THRESHOLD_": 64 * 2**20,
    "MALLOC_TRIM_THRESHOLD_": 128 * 2**20,
}


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables of this process for the block, then restore them."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _start(workers: int, scheduler: str | Client | None, store: str
           ) -> tuple[Client, LocalCluster | None]:
    """Connect to ``scheduler`` or start a LocalCluster; return the client and own cluster."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if isinstance(scheduler, Client):
            return scheduler, None
        return Client(scheduler), None
    processes = not store.startswith("memory://")  # memory:// lives in one process
    environ = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_ENV}
    # a Nanny takes each of these from this process's environment when set there (and
    # sets it there for its worker): any Nanny started before would impose Dask's values
    with dask.config.set({**LOCAL_CLUSTER_CONFIG,
                          "distributed.nanny.pre-spawn-environ": environ}), \
            _environ({name: str(value) for name, value in WORKER_ENV.items()}):
        # only critical logs: a worker whose heartbeat races the scheduler's shutdown logs
        # a harmless CommClosedError traceback at ERROR level after a successful build,
        # while a failing task reaches the client (and the build's error message) anyway
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                               dashboard_address=":0", silence_logs=logging.CRITICAL)
    return Client(cluster), cluster


class DaskSession:
    """The build's Dask client, started and closed in a background thread.

    A client or cluster that was never needed is closed unused; a caller's
    ``distributed.Client`` is used and left open.

    Parameters
    ----------
    workers : int
        Worker processes of the build's own LocalCluster.
    scheduler : str or distributed.Client, optional
        Address of (or client to) an existing Dask cluster; ``None``: the build's own
        LocalCluster.
    store : str
        The store URL (``memory://`` stores get a cluster of threads).
    """

    def __init__(self, workers: int, scheduler: str | Client | None, store: str) -> None:
        # a caller cannot hold a Client unless distributed is imported already
        # (importing it is left to the background thread)
        dist = sys.modules.get("distributed")
        self._owns_client = dist is None or not isinstance(scheduler, dist.Client)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eegstore-dask")
        self._started: Future[tuple[Client, LocalCluster | None]] = self._pool.submit(
            _start, workers, scheduler, store)
        self._closing: Future[None] | None = None

    def client(self) -> Client:
        """Return the client once the cluster is up (raise what starting it raised)."""
        return self._started.result()[0]

    def _close(self) -> None:
        try:
            client, cluster = self._started.result()
        except Exception:  # never started: nothing to close
            return
        if self._owns_client:  # ours (a LocalCluster's, or one we connected to an address)
            client.close()
        if cluster is not None:
            cluster.close()

    def close(self, *, wait: bool = False) -> None:
        """Close the client and cluster (once), in the background unless ``wait``."""
        if self._closing is None:
            self._closing = self._pool.submit(self._close)
        if wait:
            self._pool.shutdown(wait=True)
            self._closing.result()
