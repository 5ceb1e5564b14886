"""The state a build carries between its steps, as frozen dataclasses.

:class:`BuildConfig`
    the options that decide a store's contents (recipe, preprocessing, layout); an
    interrupted build resumes only with the same, and an existing store is extended
    only with the same.
:class:`CommittedStore`
    what the store's consolidated metadata says before the build (``None`` for a new
    store).
:class:`BuildPlan`
    where the build placed every new recording's windows, as the commit and the
    report need it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eegstore.placement import Placer

__all__ = ["BuildConfig", "BuildPlan", "CommittedStore", "Placement", "TableRow"]

#: A placed recording: id, first window, number of windows.
Placement = tuple[str, int, int]
#: A row of the recordings table: id, status ("ok" or "skipped"), reason.
TableRow = tuple[str, str, str]


@dataclass(frozen=True)
class BuildConfig:
    """The options of a build that decide the store's contents.

    Attributes
    ----------
    recipe : mapping
        :meth:`eegstore.recipes.Recipe.to_dict` of the recipe.
    preprocessing : tuple of mapping
        :func:`eegstore.preprocessing.steps_to_dicts` of the steps.
    dtype : str
        Storage dtype of ``eeg``.
    compressor : str
        Compressor of ``eeg``.
    units : str
        Unit of ``eeg``.
    """

    recipe: Mapping[str, Any]
    preprocessing: tuple[Mapping[str, Any], ...]
    dtype: str
    compressor: str
    units: str

    def to_dict(self) -> dict[str, Any]:
        """Return the options as JSON-ready values (what staging's ``config.json`` holds)."""
        return {"recipe": dict(self.recipe),
                "preprocessing": [dict(step) for step in self.preprocessing],
                "dtype": self.dtype, "compressor": self.compressor, "units": self.units}


@dataclass(frozen=True)
class CommittedStore:
    """An existing store as its consolidated metadata describes it.

    Attributes
    ----------
    n_windows : int
        Windows in ``eeg``.
    shape_tail : tuple of int
        ``(channels, samples)`` of a window.
    chunk_windows : int
        Windows per chunk.
    dtype : str
        Storage dtype of ``eeg``.
    units : str
        Unit of ``eeg`` (``"V"`` for stores written before units were configurable).
    ids : tuple of str
        Recording ids in the recordings table.
    n_chunks : int
        Chunks with a recorded checksum.
    channels : tuple of str
        Channel names.
    n_ok : int
        Usable recordings in the table.
    attrs : mapping
        The store's attributes.
    """

    n_windows: int
    shape_tail: tuple[int, int]
    chunk_windows: int
    dtype: str
    units: str
    ids: tuple[str, ...]
    n_chunks: int
    channels: tuple[str, ...]
    n_ok: int
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sfreq(self) -> float:
        """The store's sampling frequency (Hz)."""
        return float(self.attrs["sfreq"])


@dataclass(frozen=True)
class BuildPlan:
    """Where a finished placement put the new recordings, with the totals after the build.

    Attributes
    ----------
    n_old : int
        Windows committed before the build.
    n_total : int
        Windows after the build.
    placed : tuple of Placement
        The new usable recordings, in window order.
    new_rows : tuple of TableRow
        The new rows of the recordings table, in table order.
    reference : mapping or None
        ``channels``, ``window_samples`` and ``sfreq`` every recording matches.
    shape_tail : tuple of int
        ``(channels, samples)`` of a window.
    chunk_windows : int
        Windows per chunk.
    n_ok_total, n_recordings_total : int
        Usable recordings, and rows of the recordings table, after the build.
    """

    n_old: int
    n_total: int
    placed: tuple[Placement, ...]
    new_rows: tuple[TableRow, ...]
    reference: Mapping[str, Any] | None
    shape_tail: tuple[int, int]
    chunk_windows: int
    n_ok_total: int
    n_recordings_total: int

    @classmethod
    def from_placer(cls, placer: Placer, committed: CommittedStore | None) -> BuildPlan:
        """Describe the placement ``placer`` reached on top of ``committed``."""
        return cls(
            n_old=placer.n_old, n_total=placer.n_total, placed=tuple(placer.placed),
            new_rows=tuple(placer.rows), reference=placer.ref,
            shape_tail=placer.shape_tail, chunk_windows=int(placer.k or 1),
            n_ok_total=(committed.n_ok if committed else 0) + len(placer.placed),
            n_recordings_total=(len(committed.ids) if committed else 0) + len(placer.rows),
        )

    @property
    def new_windows(self) -> int:
        """Windows this build adds."""
        return self.n_total - self.n_old

    def commit_due(self, committed: CommittedStore | None) -> bool:
        """Whether the build commits anything: usable windows, and a new store or new rows."""
        return bool(self.n_ok_total) and (committed is None or bool(self.new_rows))
