"""Build labelled Zarr stores from recordings, in parallel with Dask.

:func:`build_store` (:mod:`eegstore.build.builder`) is the entry point; the build's
parts live in their own modules:

========================================  ==============================================
:mod:`eegstore.build.layout`              dtype, unit and codec of the stored signal
:mod:`eegstore.build.state`               the build's options, plan and committed state
:mod:`eegstore.build.staging`             the staging area's format, read and written
:mod:`eegstore.build.tasks`               the tasks the Dask workers run
:mod:`eegstore.build.cluster`             the Dask cluster's settings and lifecycle
:mod:`eegstore.build.pipeline`            staging and chunk writing, pipelined
:mod:`eegstore.build.resume`              the committed store and an interrupted build
:mod:`eegstore.build.commit`              tables, checksums, consolidated metadata
========================================  ==============================================

The ``eegstore build`` command is in :mod:`eegstore.cli`.
"""

from eegstore.build.builder import BuildReport, build_store
from eegstore.build.commit import KILL_ENV
from eegstore.build.layout import (
    COMPRESSORS,
    DEFAULT_COMPRESSOR,
    DEFAULT_DTYPE,
    DEFAULT_UNITS,
    DTYPES,
    UNITS,
    compressor_codecs,
)
from eegstore.build.pipeline import CHUNKS_PER_TASK
from eegstore.placement import TARGET_CHUNK_BYTES

__all__ = [
    "CHUNKS_PER_TASK",
    "COMPRESSORS",
    "DEFAULT_COMPRESSOR",
    "DEFAULT_DTYPE",
    "DEFAULT_UNITS",
    "DTYPES",
    "KILL_ENV",
    "TARGET_CHUNK_BYTES",
    "UNITS",
    "BuildReport",
    "build_store",
    "compressor_codecs",
]
