"""Memory guard: stop a run cleanly before the operating system kills it.

:class:`MemoryGuard` samples the process's resident set size (RSS, including
DataLoader worker children) and the system's available memory with psutil
every ``every_batches`` batches.  Past a threshold it raises
:class:`eegstore.errors.MemoryGuardTriggered`; the trainer then saves a
checkpoint and the ``python -m trainers`` command exits with
:data:`EXIT_MEMORY` (75), so a supervisor can tell "stopped on purpose, resume
me with more memory" from a crash or an OOM kill (137).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from eegstore.errors import ConfigError, MemoryGuardTriggered

__all__ = ["EXIT_MEMORY", "MemoryGuard", "MemorySample"]

#: Exit code of ``python -m trainers fit`` when the memory guard stopped the run
#: (75 = EX_TEMPFAIL: try again later / with more memory, then ``--resume``).
EXIT_MEMORY = 75

_MB = 1024 * 1024


@dataclass(frozen=True)
class MemorySample:
    """One measurement: process-tree RSS and system available memory, in bytes."""

    rss_bytes: int
    available_bytes: int


class MemoryGuard:
    """Watch RSS and available memory; raise past a threshold.

    Parameters
    ----------
    max_rss_mb : float, optional
        Largest allowed RSS of this process plus its children, in MiB.
    min_available_mb : float, optional
        Smallest allowed system available memory, in MiB.
    every_batches : int
        Check once every this many calls of :meth:`step`.
    """

    def __init__(self, max_rss_mb: float | None = None, min_available_mb: float | None = None,
                 every_batches: int = 10) -> None:
        if every_batches < 1:
            raise ConfigError(f"expected every_batches >= 1, got {every_batches}")
        for name, value in (("max_rss_mb", max_rss_mb), ("min_available_mb", min_available_mb)):
            if value is not None and value <= 0:
                raise ConfigError(f"expected {name} > 0 or None, got {value}")
        self.max_rss_mb = max_rss_mb
        self.min_available_mb = min_available_mb
        self.every_batches = every_batches
        self._calls = 0
        self._process = psutil.Process()
        self.peak_rss_bytes = 0

    def __repr__(self) -> str:
        return (f"MemoryGuard(max_rss_mb={self.max_rss_mb}, "
                f"min_available_mb={self.min_available_mb}, every_batches={self.every_batches})")

    def sample(self) -> MemorySample:
        """Measure now.

        Returns
        -------
        MemorySample
            RSS of the process tree and system available memory.
        """
        rss = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            try:
                rss += child.memory_info().rss
            except psutil.Error:  # the child exited meanwhile
                continue
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        return MemorySample(rss, psutil.virtual_memory().available)

    def check(self) -> MemorySample:
        """Measure and raise if a threshold is crossed.

        Returns
        -------
        MemorySample
            The measurement.

        Raises
        ------
        MemoryGuardTriggered
            When RSS exceeds ``max_rss_mb`` or available memory falls below
            ``min_available_mb``.
        """
        s = self.sample()
        if self.max_rss_mb is not None and s.rss_bytes > self.max_rss_mb * _MB:
            raise MemoryGuardTriggered(
                f"memory guard: expected process RSS <= {self.max_rss_mb:.0f} MiB, got "
                f"{s.rss_bytes / _MB:.0f} MiB; checkpoint saved, rerun with --resume and more "
                "memory (--max-rss-mb) or a smaller --batch-size / --num-workers")
        if self.min_available_mb is not None and s.available_bytes < self.min_available_mb * _MB:
            raise MemoryGuardTriggered(
                f"memory guard: expected >= {self.min_available_mb:.0f} MiB of available system "
                f"memory, got {s.available_bytes / _MB:.0f} MiB; checkpoint saved, free memory "
                "and rerun with --resume (or lower --min-available-mb)")
        return s

    def step(self) -> MemorySample | None:
        """Count one batch; check every ``every_batches`` batches (including the first).

        Returns
        -------
        MemorySample or None
            The measurement when one was taken.
        """
        due = self._calls % self.every_batches == 0
        self._calls += 1
        return self.check() if due else None
