"""Small I/O helpers shared by the build, the synthesizer and the trainers.

* :func:`atomic_file` / :func:`atomic_write`: files that readers see whole or not at all;
* :func:`json_default`: numpy scalars and arrays (and paths) in :func:`json.dumps`;
* :func:`encode_strings` / :func:`decode_strings`: text coordinates as a store holds them.

Text arrays are stored as zarr v3 ``variable_length_bytes`` holding UTF-8, with the CF
attribute ``_Encoding: utf-8`` (:data:`STRING_ATTRS`).  Their chunks are byte for byte
what zarr's ``string`` data type writes (both are length-prefixed UTF-8), but plain
``xarray.open_zarr`` decodes them to ordinary ``object`` arrays of ``str``, where zarr's
``string`` type opens as numpy's ``StringDType`` (which ``astype(str)`` and most pandas
idioms reject).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["STRING_ATTRS", "atomic_file", "atomic_write", "decode_strings", "encode_strings",
           "json_default"]

#: Attributes of a text array: xarray decodes its bytes with this encoding.
STRING_ATTRS: dict[str, str] = {"_Encoding": "utf-8"}


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[IO[bytes]]:
    """Open a binary file that appears at ``path`` only once the block finishes.

    The data go to a temporary file beside ``path`` that is renamed into place at the
    end, which is atomic for every other process, also when the writer is killed; on an
    error the temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or PathLike
        Destination file (its folder must exist).
    durable : bool
        ``fsync`` before the rename, so that the file also survives a crash of the machine.

    Yields
    ------
    file
        The temporary file, open for writing bytes.
    """
    dest = Path(path)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, fs: Any = None,
                 durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing.

    Parameters
    ----------
    path : str or PathLike
        Destination: a local path, or a path of the fsspec filesystem ``fs``.
    data : bytes or str
        Contents (text is written as UTF-8).
    fs : fsspec.AbstractFileSystem, optional
        Filesystem of ``path``.  On an object store a single PUT is atomic already.
    durable : bool
        On a local disk, ``fsync`` before the rename (see :func:`atomic_file`).
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if fs is not None and not _is_local(fs):
        fs.pipe_file(os.fspath(path), payload)
        return
    with atomic_file(path, durable=durable) as fh:
        fh.write(payload)


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol
    return "file" in ((protocol,) if isinstance(protocol, str) else tuple(protocol))


def json_default(value: Any) -> Any:
    """``default`` of :func:`json.dumps` for numpy scalars, numpy arrays and paths.

    Parameters
    ----------
    value : object
        What :mod:`json` cannot encode itself.

    Returns
    -------
    object
        A Python scalar, a (nested) list or a string.

    Raises
    ------
    TypeError
        For any other type, as :func:`json.dumps` does.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"expected a JSON value, numpy value or path, got {type(value).__name__}")


def encode_strings(values: Any) -> np.ndarray:
    """Text values as the object array of UTF-8 ``bytes`` a store's text array takes.

    Parameters
    ----------
    values : array-like
        Strings (``str``, ``bytes``, numpy unicode, object or ``StringDType``).

    Returns
    -------
    ndarray of object
        One ``bytes`` per value; equal values share one object.
    """
    flat = np.asarray(values, dtype=object).ravel()
    cache: dict[Any, bytes] = {}
    out = np.empty(len(flat), dtype=object)
    for i, v in enumerate(flat.tolist()):
        b = cache.get(v)
        if b is None:
            b = cache[v] = v if isinstance(v, bytes) else str(v).encode("utf-8")
        out[i] = b
    return out


def decode_strings(values: Any) -> np.ndarray:
    """Text values (UTF-8 ``bytes``, ``str``, numpy unicode or ``StringDType``) as ``str``.

    Parameters
    ----------
    values : array-like
        What a store's text array holds, however it was read.

    Returns
    -------
    ndarray of str
        A fixed-width numpy unicode array of the same length.
    """
    arr = np.asarray(values)
    if arr.dtype.kind == "U":
        return arr
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=str)
    items = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.ravel().tolist()]
    return np.array(items, dtype=str).reshape(arr.shape)
