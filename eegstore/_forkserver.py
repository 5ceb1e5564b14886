"""The forkserver the build's own Dask workers are forked from.

A spawned Dask worker starts a fresh interpreter and imports Dask, the readers and
zarr itself: about a second per worker, after the client has imported Dask and
started the scheduler.  The build's LocalCluster instead forks its workers from a
multiprocessing forkserver (:func:`start`) that imports :data:`PRELOAD`: it starts
with the build, imports all that once while the client starts up, and each worker
begins as a copy of it.  The preload also does what Dask's
``distributed.nanny.pre-spawn-environ`` does for spawned workers, which forked ones
would miss: one BLAS/OpenMP thread per worker, and glibc's malloc thresholds
(:data:`MMAP_THRESHOLD_BYTES`, :data:`TRIM_THRESHOLD_BYTES`).
"""

from __future__ import annotations

import ctypes
from typing import Any

#: Arrays below this come from the heap instead of a fresh mmap, whose pages the kernel
#: faults in and zeroes one by one: every recording-sized array and chunk buffer.
MMAP_THRESHOLD_BYTES = 64 * 2**20
#: Freed heap kept for the next recording (Dask sets 64 KiB, which also freezes the
#: mmap threshold at its 128 KiB default).
TRIM_THRESHOLD_BYTES = 128 * 2**20
#: Set before numpy loads its BLAS: one thread per worker, as Dask does.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def tune_malloc() -> bool:
    """Set glibc's malloc thresholds in this process; return whether it could."""
    try:
        libc = ctypes.CDLL(None)  # this process's symbols, glibc's among them on Linux
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc: its own defaults stay
        return False


#: Module the forkserver imports before it forks any worker.
PRELOAD = "eegstore._forkserver_preload"


def start() -> bool:
    """Start this process's forkserver with :data:`PRELOAD`, unless it runs already.

    Returns at once (the preload runs in the server) and says whether a forkserver runs
    (else workers are spawned: no forkservers on this platform, or it could not start).
    A forkserver already running is reused, whatever it preloaded: its workers then
    import what they need themselves.
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from multiprocessing import forkserver

    if _running() is None:
        multiprocessing.get_context("forkserver").set_forkserver_preload([PRELOAD])
    try:
        forkserver.ensure_running()
    except OSError:  # no socket or process for it here: spawn the workers instead
        return False
    return True


def stop() -> None:
    """Stop this process's forkserver, if it runs, and wait for it to exit.

    The CLI does this after a build: the forkserver has reaped the workers it forked, so
    the build process's own account of its children's CPU time then includes theirs.
    """
    server = _running()
    if server is not None:
        server._stop()


def _running() -> Any:
    """Return the multiprocessing forkserver of this process if it runs, else ``None``."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    return server if getattr(server, "_forkserver_pid", None) else None
