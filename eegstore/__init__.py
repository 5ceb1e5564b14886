"""eegstore: labelled Zarr stores for EEG deep learning.

Raw recordings (local BIDS or eegdash releases) become chunked, labelled
``eeg(window, channel, time)`` stores built in parallel with Dask
(:func:`build_store`), which a chunk-aware PyTorch ``IterableDataset``
(:class:`eegstore.torch.WindowStream`) streams into training.

Public names are imported lazily so that ``import eegstore`` stays cheap
(torch, mne and dask load only when the name that needs them is used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # sources and synthetic data
    "Recording": "eegstore.sources",
    "discover_recordings": "eegstore.sources",
    "read_raw": "eegstore.sources",
    "synthesize": "eegstore.synth",
    # building and opening stores
    "build_store": "eegstore.build",
    "BuildReport": "eegstore.build",
    "open_store": "eegstore.store",
    "store_info": "eegstore.store",
    "verify_store": "eegstore.verify",
    "get_recipe": "eegstore.recipes",
    "Challenge1Recipe": "eegstore.recipes",
    "Challenge2Recipe": "eegstore.recipes",
    "FixedRecipe": "eegstore.recipes",
    # streaming and splits
    "WindowStream": "eegstore.torch",
    "WindowDataset": "eegstore.torch",
    "StreamLoader": "eegstore.loader",
    "subject_split": "eegstore.splits",
    "release_split": "eegstore.splits",
    "check_schema": "eegstore.schema",
}

__all__ = [
    "BuildReport",
    "Challenge1Recipe",
    "Challenge2Recipe",
    "FixedRecipe",
    "Recording",
    "StreamLoader",
    "WindowDataset",
    "WindowStream",
    "__version__",
    "build_store",
    "check_schema",
    "discover_recordings",
    "get_recipe",
    "open_store",
    "read_raw",
    "release_split",
    "store_info",
    "subject_split",
    "synthesize",
    "verify_store",
]

if TYPE_CHECKING:  # pragma: no cover
    from eegstore.build import BuildReport, build_store
    from eegstore.loader import StreamLoader
    from eegstore.recipes import Challenge1Recipe, Challenge2Recipe, FixedRecipe, get_recipe
    from eegstore.schema import check_schema
    from eegstore.sources import Recording, discover_recordings, read_raw
    from eegstore.splits import release_split, subject_split
    from eegstore.store import open_store, store_info
    from eegstore.synth import synthesize
    from eegstore.torch import WindowDataset, WindowStream
    from eegstore.verify import verify_store


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eegstore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
