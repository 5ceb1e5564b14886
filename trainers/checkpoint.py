"""Checkpoint files that load with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and primitive containers (dict, list, tuple,
str, int, float, bool, None): numpy arrays and scalars are converted on save,
so loading never unpickles arbitrary objects.  Writes are atomic (temporary
file + rename), so an interrupted save never leaves a truncated checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from eegstore._io import atomic_file
from eegstore.errors import ConfigError

__all__ = ["load_checkpoint", "safe_load", "save_checkpoint", "to_safe"]


def to_safe(obj: Any) -> Any:
    """Convert ``obj`` into tensors and primitive containers.

    Parameters
    ----------
    obj : object
        Nested dicts/lists/tuples of tensors, numpy arrays, numpy scalars and primitives.

    Returns
    -------
    object
        The same structure with numpy values replaced by tensors or Python scalars.

    Raises
    ------
    ConfigError
        On a value that cannot be represented safely.
    """
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "USO":
            return [to_safe(v) for v in obj.tolist()]
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {to_safe(k): to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [to_safe(v) for v in obj]
        return tuple(out) if isinstance(obj, tuple) else out
    raise ConfigError(f"expected tensors, arrays or primitives in a checkpoint, got "
                      f"{type(obj).__name__}; convert it before saving")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (made safe with :func:`to_safe`) to ``path``.

    Parameters
    ----------
    path : str or Path
        Destination file.
    payload : dict
        Checkpoint contents.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, durable=False) as fh:
        torch.save(to_safe(payload), fh)
    return path


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; a file holding other objects is refused.

    Parameters
    ----------
    path : str or Path
        A file written by ``torch.save``.
    map_location : str or torch.device
        Where tensors are loaded.

    Returns
    -------
    object
        Tensors in primitive containers.

    Raises
    ------
    ConfigError
        When the file holds anything else (e.g. a pickled object that would run code).
    """
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        what = next((ln for ln in lines if "unsupported global" in ln.lower()),
                    lines[-1] if lines else type(exc).__name__)
        raise ConfigError(f"expected only tensors and primitives in {path}, got other objects; "
                          f"refusing to unpickle them ({what[:200]})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Parameters
    ----------
    path : str or Path
        Checkpoint file.
    map_location : str or torch.device
        Where tensors are loaded.

    Returns
    -------
    dict
        The checkpoint contents.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a checkpoint at {path}, got nothing; "
                                "train first or check --run/--out")
    data = safe_load(path, map_location)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a dict checkpoint in {path}, got {type(data).__name__}")
    return data
