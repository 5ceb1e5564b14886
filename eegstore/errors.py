"""Exception hierarchy of eegstore.

Every error raised on purpose by the library derives from :class:`EegstoreError`,
which is itself a :class:`ValueError`, so callers can catch either.  Messages
follow the pattern "expected X, got Y; do Z".
"""

from __future__ import annotations

__all__ = [
    "BuildError",
    "ConfigError",
    "CorruptChunkError",
    "EegstoreError",
    "MemoryGuardTriggered",
    "RecordingError",
    "SchemaError",
    "SourceError",
    "StoreError",
]


class EegstoreError(ValueError):
    """Base class of every error eegstore raises on purpose."""


class ConfigError(EegstoreError):
    """Invalid argument, option or recipe parameter."""


class SourceError(EegstoreError):
    """A data source (BIDS directory, eegdash release) cannot be used."""


class RecordingError(EegstoreError):
    """One recording cannot be used; the build records it as skipped with this message."""


class BuildError(EegstoreError):
    """A build cannot proceed (for example: no usable recording at all)."""


class StoreError(EegstoreError):
    """A store is missing, incompatible or inconsistent."""


class SchemaError(StoreError):
    """A store does not follow the eegstore schema."""


class CorruptChunkError(StoreError):
    """A chunk of a store cannot be read or fails its checksum."""


class MemoryGuardTriggered(RuntimeError):
    """The memory guard stopped a run before the operating system would have."""
