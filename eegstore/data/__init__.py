"""Data shipped with eegstore: the real metadata of the HBN-EEG R5 mini subjects."""

from __future__ import annotations

from pathlib import Path

__all__ = ["MINI_R5_METADATA"]

#: Folder with the vendored R5 "mini" metadata (CC-BY-SA 4.0, see its LICENSE.md).
MINI_R5_METADATA: Path = Path(__file__).parent / "hbn_r5_mini"
