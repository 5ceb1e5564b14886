"""Imported by the forkserver of the build's own workers (:mod:`eegstore._forkserver`).

Everything a worker process needs before its first task, in the state it needs it:
one BLAS/OpenMP thread, glibc's malloc thresholds, Dask, the readers and zarr.
Importing it has these side effects on purpose; nothing else imports it.
"""

import encodings.utf_8_sig  # noqa: F401  (BIDS tables with a byte-order mark)
import os

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
