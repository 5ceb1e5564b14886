"""Whole-chunk reads of a store's ``eeg`` array, straight into caller-owned memory.

:class:`StoreReader` holds what a stream needs to know about a store (shape,
stored dtype, chunking, units, the target coordinate) and reads whole chunks of
``eeg`` into a slot the caller owns, through the cheapest path the layout
allows:

``raw``
    A local store whose chunks are stored uncompressed (the ``bytes`` codec
    alone): one ``readinto`` of the chunk file into the slot -- one copy from
    the page cache, no decode.
``decode``
    A local store compressed with zstd or blosc: the chunk file is read and
    decoded by numcodecs straight into the slot.
``zarr``
    Anything else (remote stores, other codecs): zarr-python's
    ``get_basic_selection`` into the slot.
``dataset``
    An in-memory :class:`xarray.Dataset` with no source: through xarray.

Every path releases the GIL while it copies or decodes, so several threads can
read chunks at once.  Readers are picklable and open files lazily per process,
so they are safe to use in DataLoader workers after ``fork``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import xarray as xr

from eegstore.errors import ConfigError, CorruptChunkError, StoreError
from eegstore.store import local_compute

__all__ = ["ReadPath", "StoreReader"]

ReadPath = Literal["raw", "decode", "zarr", "dataset"]
_DECODERS = {"ZstdCodec": "zstd", "BloscCodec": "blosc"}


def _chunk_layout(array: Any) -> tuple[ReadPath, str | None]:
    """Which read path a zarr v3 array's codecs allow: ``(path, decoder name)``."""
    metadata = array.metadata
    if getattr(metadata, "zarr_format", None) != 3:
        return "zarr", None
    codecs = list(metadata.codecs)
    if not codecs or type(codecs[0]).__name__ != "BytesCodec":
        return "zarr", None
    endian = getattr(codecs[0], "endian", None)
    if endian is not None and str(getattr(endian, "value", endian)) != "little":
        return "zarr", None
    if len(codecs) == 1:
        return "raw", None
    if len(codecs) == 2 and type(codecs[1]).__name__ in _DECODERS:
        return "decode", _DECODERS[type(codecs[1]).__name__]
    return "zarr", None


def _local_root(source: str | None) -> Path | None:
    """Folder of a store given as a plain local path (``None`` for URLs)."""
    if source is None:
        return None
    if source.startswith("file://"):
        source = source[len("file://"):]
    elif "://" in source:
        return None
    return Path(source)


class StoreReader:
    """Metadata of a store plus fork-safe whole-chunk reads of ``eeg``.

    Parameters
    ----------
    store : str, Path or xarray.Dataset
        Path or URL of a store, or a dataset opened from one.
    target : str
        Per-window coordinate delivered as the target (read as float32).
    storage_options : mapping, optional
        fsspec options for remote URLs.
    verify_checksums : bool
        Check each read chunk against the CRC32 the build recorded.
    """

    def __init__(self, store: str | os.PathLike[str] | xr.Dataset, *, target: str,
                 storage_options: Mapping[str, Any] | None = None,
                 verify_checksums: bool = False) -> None:
        self.storage_options = dict(storage_options) if storage_options else None
        ds = self._open_dataset(store)
        if "eeg" not in ds.data_vars or ds["eeg"].dims != ("window", "channel", "time"):
            raise StoreError("expected an 'eeg' variable with dims (window, channel, time); "
                             "is this an eegstore store?")
        if target not in ds.variables or ds[target].dims != ("window",):
            raise ConfigError(f"expected target to name a per-window coordinate, got "
                              f"{target!r}")
        eeg = ds["eeg"]
        self.shape: tuple[int, int, int] = (int(eeg.shape[0]), int(eeg.shape[1]),
                                            int(eeg.shape[2]))
        self.dtype = np.dtype(eeg.dtype)
        self.units = str(eeg.attrs.get("units", "V"))
        self.chunk_windows = self._chunk_windows(ds)
        self.coords = ds.drop_vars("eeg")
        self.target = np.asarray(ds[target].values, dtype=np.float32)
        self.crcs = self._checksums(ds) if verify_checksums else None
        # Without a source (an in-memory or derived Dataset) read through xarray.
        self._dataset = None if self.source else ds
        self._array: Any = None
        self._pid = os.getpid()
        self.read_path: ReadPath = "dataset"
        self._decoder_name: str | None = None
        self._chunk_dir: Path | None = None
        if self.source:
            self._open()

    # ---- opening
    def _open_dataset(self, store: Any) -> xr.Dataset:
        if isinstance(store, xr.Dataset):
            source = store.encoding.get("source")
            self.source: str | None = str(source) if source else None
            return store
        if not isinstance(store, str | os.PathLike):
            raise ConfigError(f"expected store as a path, URL or xarray.Dataset, got "
                              f"{type(store).__name__}")
        self.source = os.fspath(store)
        if "://" not in self.source and not Path(self.source).exists():
            raise StoreError(f"expected an eegstore store at {self.source!r}, got nothing "
                             "there; build one with `eegstore build`")
        kw: dict[str, Any] = {"chunks": None}
        if self.storage_options:
            kw["storage_options"] = self.storage_options
        try:
            ds: xr.Dataset = xr.open_zarr(self.source, **kw)
        except Exception as exc:  # zarr/fsspec raise many types
            raise StoreError(f"expected a readable Zarr store at {self.source!r}, got "
                             f"{type(exc).__name__}: {exc}") from exc
        return ds

    @staticmethod
    def _chunk_windows(ds: xr.Dataset) -> int:
        eeg = ds["eeg"]
        enc_chunks = eeg.encoding.get("chunks")
        if enc_chunks:
            return int(enc_chunks[0])
        if eeg.chunks:
            return int(eeg.chunks[0][0])
        return int(ds.attrs.get("chunk_windows", 64))

    def _checksums(self, ds: xr.Dataset) -> np.ndarray:
        n_chunks = -(-self.shape[0] // self.chunk_windows)
        crcs = np.asarray(ds["chunk_crc32"].values, dtype=np.int64) \
            if "chunk_crc32" in ds.variables else np.zeros(0, dtype=np.int64)
        if ds.attrs.get("checksums") == "none" or len(crcs) != n_chunks:
            got = "none" if ds.attrs.get("checksums") == "none" else len(crcs)
            raise ConfigError(f"expected {n_chunks} recorded chunk checksums (chunk_crc32) "
                              f"for verify_checksums=True, got {got}; use a store written by "
                              "`eegstore build`")
        return crcs

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None
        state["coords"] = None  # only needed to build plans in the main process
        return state

    def _open(self) -> Any:
        """Open the zarr array (lazily, once per process) and pick the read path."""
        if self._array is None or self._pid != os.getpid():
            import zarr

            kw: dict[str, Any] = {"mode": "r"}
            if self.storage_options:
                kw["storage_options"] = self.storage_options
            self._array = zarr.open_group(self.source, **kw)["eeg"]
            self._pid = os.getpid()
            path, decoder = _chunk_layout(self._array)
            root = _local_root(self.source)
            if path in ("raw", "decode") and root is not None \
                    and Path(root, self._array.path).is_dir():
                self.read_path, self._decoder_name = path, decoder
                self._chunk_dir = Path(root, self._array.path)
            else:
                self.read_path, self._decoder_name, self._chunk_dir = "zarr", None, None
        return self._array

    # ---- sizes
    @property
    def window_nbytes(self) -> int:
        """Bytes of one stored window."""
        return self.shape[1] * self.shape[2] * self.dtype.itemsize

    @property
    def chunk_nbytes(self) -> int:
        """Bytes of one decoded (full) chunk."""
        return self.chunk_windows * self.window_nbytes

    def chunk_len(self, chunk: int) -> int:
        """Windows in ``chunk`` (the last one may be shorter)."""
        start = chunk * self.chunk_windows
        return max(0, min(self.chunk_windows, self.shape[0] - start))

    # ---- reading
    def read_chunk(self, chunk: int, out: np.ndarray) -> np.ndarray:
        """Read whole ``chunk`` into ``out`` (a short last chunk fills its first rows).

        Raises :class:`~eegstore.errors.CorruptChunkError` when the chunk cannot
        be read or (``verify_checksums``) does not match its recorded CRC32.
        """
        n = self.chunk_len(chunk)
        start = chunk * self.chunk_windows
        try:
            if self._dataset is not None:
                with local_compute():
                    out[:n] = self._dataset["eeg"][start:start + n].values
            else:
                self._open()
                if self.read_path == "zarr":
                    from zarr.core.buffer.cpu import NDBuffer

                    self._array.get_basic_selection(
                        (slice(start, start + n),), out=NDBuffer.from_numpy_array(out[:n]))
                else:
                    self._read_file(chunk, out)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # codecs and stores raise many types
            raise CorruptChunkError(
                f"expected a readable chunk {chunk} of array 'eeg' (windows {start}:"
                f"{start + n}) in {self.source or 'the dataset'}, got {type(exc).__name__}: "
                f"{exc}; run `eegstore verify` on the store and rebuild it") from exc
        if self.crcs is not None:
            crc = zlib.crc32(np.ascontiguousarray(out[:n]).data) & 0xFFFFFFFF
            if crc != int(self.crcs[chunk]):
                raise CorruptChunkError(
                    f"expected chunk {chunk} of array 'eeg' (windows {start}:{start + n}) in "
                    f"{self.source or 'the dataset'} to have its recorded CRC32 "
                    f"{int(self.crcs[chunk])}, got {crc}; run `eegstore verify` on the store "
                    "and rebuild it")
        return out

    def _read_file(self, chunk: int, out: np.ndarray) -> None:
        """Read a local chunk file: raw bytes into ``out``, or decode into it."""
        if out.dtype != self.dtype or not out.flags.c_contiguous \
                or out.shape != (self.chunk_windows, *self.shape[1:]):
            raise ConfigError(f"expected a C-contiguous {self.dtype} slot of shape "
                              f"{(self.chunk_windows, *self.shape[1:])}, got {out.dtype} "
                              f"{out.shape}")
        key = self._array.metadata.encode_chunk_key((chunk, 0, 0))
        path = Path(self._chunk_dir or ".", key)
        target = out.reshape(-1).view(np.uint8).data
        try:
            fh = open(path, "rb", buffering=0)
        except FileNotFoundError:
            out[...] = self._array.metadata.fill_value  # a chunk never written
            return
        with fh:
            if self.read_path == "raw":
                got = fh.readinto(target)
                if got != target.nbytes or fh.read(1):
                    raise ValueError(f"chunk file {path} holds another size than the "
                                     f"{target.nbytes} bytes of a raw chunk")
                return
            data = fh.read()
        self._decoder().decode(data, out=target)

    def _decoder(self) -> Any:
        import numcodecs

        if self._decoder_name == "zstd":
            return numcodecs.Zstd()
        return numcodecs.Blosc()
