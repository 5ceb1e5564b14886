"""Imported by the forkserver of the build's own workers (:mod:`eegstore._forkserver`).

Everything a worker process needs before its first task, in the state it needs it:
one BLAS/OpenMP thread, glibc's malloc thresholds, Dask, the readers and zarr.
Importing it has these side effects on purpose; nothing else imports it.

When the build stops the forkserver, it leaves at once instead of tearing down an
interpreter full of modules (about 0.3 s, which the build waits for): it holds no
files or data, and the workers it forked leave through ``os._exit`` anyway.
"""

import atexit
import encodings.utf_8_sig  # noqa: F401  (BIDS tables with a byte-order mark)
import os
import sys

from eegstore._forkserver import THREAD_ENV, tune_malloc

os.environ.update(THREAD_ENV)  # before numpy loads its BLAS
tune_malloc()

import distributed  # noqa: E402,F401
import fsspec.implementations.chained  # noqa: E402
import fsspec.implementations.local  # noqa: E402,F401
import mne.io  # noqa: E402,F401
import numcodecs  # noqa: E402,F401
import zarr  # noqa: E402,F401

import eegstore.build  # noqa: E402
import eegstore.sources  # noqa: E402,F401

try:  # mne.io.read_raw loads all of mne's readers on its first call: load them now
    from mne.io import _read_raw

    _read_raw._get_readers()
except (ImportError, AttributeError):  # another mne: the first task loads them
    pass


_SERVER_PID = os.getpid()


def _leave_now() -> None:
    """At the forkserver's exit, skip the interpreter's teardown (not in its children)."""
    if os.getpid() == _SERVER_PID:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):  # closed or missing
                pass
        os._exit(0)


atexit.register(_leave_now)  # registered last, so it runs first
