"""The benchmark's data: one set of windows written in every competing layout.

For each store size the same windows (``eegstore.testing.make_store``: seeded
noise plus a planted target, 129 channels x 200 samples) are written as

* ``store.zarr``      the eegstore Zarr store (the source of truth) in the layout
  ``eegstore build`` uses by default (storage dtype, units, compressor),
* ``windows.npy``     the store's windows as float32, for the full-load baseline,
* ``seed.h5``         HDF5 as the competitors wrote it: ``create_dataset(...,
  compression="gzip", compression_opts=4)`` with h5py's automatic chunks,
* ``chunk1.h5``       HDF5 with one window per chunk (gzip 4, same codec as seed),
* ``contiguous.h5``   HDF5 contiguous, uncompressed.

Every copy holds the store's windows as float32 (the HDF5 files too) and is written
chunk by chunk from the Zarr store, so memory stays bounded.  The peers' formats
are written from the store by :mod:`benchmarks.peers`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["N_CHANNELS", "N_TIMES", "WINDOW_BYTES", "LoadingData", "bytes_on_disk",
           "prepare_loading_data", "product_chunk_windows", "product_codec", "product_dtype",
           "recode_store",
           "windows_for_gb"]

N_CHANNELS = 129
N_TIMES = 200
WINDOW_BYTES = N_CHANNELS * N_TIMES * 4
GB = 1e9


def windows_for_gb(size_gb: float) -> int:
    """Number of float32 129x200 windows in ``size_gb`` (decimal) gigabytes, at least 8."""
    return max(8, round(size_gb * GB / WINDOW_BYTES))


def bytes_on_disk(path: str | Path, *, apparent: bool = False) -> int:
    """Allocated size (or with ``apparent``, the summed file sizes) of a file or tree, in bytes."""
    p = Path(path)
    files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]
    if apparent:
        return sum(q.stat().st_size for q in files)
    return sum(q.stat().st_blocks * 512 for q in files)


def product_codec() -> tuple[str, list[Any]]:
    """Name and Zarr codecs of the compressor ``eegstore build`` uses by default."""
    from eegstore.build import DEFAULT_COMPRESSOR, compressor_codecs

    return DEFAULT_COMPRESSOR, compressor_codecs(DEFAULT_COMPRESSOR)


def product_dtype() -> str:
    """Storage dtype ``eegstore build`` uses by default (float32 before it had a choice)."""
    try:
        from eegstore.build.layout import DEFAULT_DTYPE
    except ImportError:
        return "float32"
    return str(DEFAULT_DTYPE)


def product_chunk_windows(default: int = 64) -> int:
    """Windows per chunk ``eegstore build`` would choose for 129 x 200 windows by default."""
    try:
        from eegstore.placement import chunk_windows_for
    except ImportError:
        return default
    return chunk_windows_for(N_CHANNELS, N_TIMES, product_dtype())


def recode_store(path: Path) -> str:
    """Re-encode a ``make_store`` store's ``eeg`` with the build's default compressor.

    ``make_store`` writes with xarray's default codec; the benchmark must read
    what ``eegstore build`` writes, so the array is copied chunk by chunk into
    one with the product's codecs and swapped in place (metadata re-consolidated).
    """
    import zarr

    name, codecs = product_codec()
    group: Any = zarr.open_group(str(path), mode="r+")
    src = group["eeg"]
    dst = group.create_array("eeg_recoded", shape=src.shape, dtype=src.dtype,
                             chunks=src.chunks, compressors=codecs or None,
                             dimension_names=src.metadata.dimension_names,
                             attributes=dict(src.attrs), fill_value=src.fill_value)
    step = src.chunks[0]
    for start in range(0, src.shape[0], step):
        dst[start:start + step] = src[start:start + step]
    shutil.rmtree(path / "eeg")
    (path / "eeg_recoded").rename(path / "eeg")
    zarr.consolidate_metadata(str(path))
    return name


@dataclass
class LoadingData:
    """Paths and shape of one size's data in every layout."""

    root: str
    size_gb: float
    n_windows: int
    chunk_windows: int
    zarr: str
    npy: str
    targets: str
    hdf5: dict[str, str]
    hdf5_chunks: dict[str, list[int] | None]

    @property
    def data_gb(self) -> float:
        return self.n_windows * WINDOW_BYTES / GB

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write_hdf5(path: Path, src: Any, targets: np.ndarray, layout: str,
                slab: int) -> list[int] | None:
    import h5py

    n = src.shape[0]
    with h5py.File(path, "w") as fh:
        if layout == "seed":
            # identical to create_dataset("X", data=X, compression="gzip",
            # compression_opts=4): h5py guesses the chunk shape from shape and dtype
            ds = fh.create_dataset("X", shape=src.shape, dtype="float32", chunks=True,
                                   compression="gzip", compression_opts=4)
        elif layout == "chunk1":
            ds = fh.create_dataset("X", shape=src.shape, dtype="float32",
                                   chunks=(1, *src.shape[1:]), compression="gzip",
                                   compression_opts=4)
        elif layout == "contiguous":
            ds = fh.create_dataset("X", shape=src.shape, dtype="float32")
        else:  # pragma: no cover - internal
            raise ValueError(f"unknown layout {layout}")
        step = slab
        if ds.chunks is not None:
            step = max(ds.chunks[0], (slab // ds.chunks[0]) * ds.chunks[0])
        for start in range(0, n, step):
            ds[start:start + step] = src[start:start + step]
        fh.create_dataset("y", data=targets)
        return list(ds.chunks) if ds.chunks is not None else None


def prepare_loading_data(root: str | Path, size_gb: float, *, chunk_windows: int,
                         hdf5: bool, seed: int = 0) -> LoadingData:
    """Write (or reuse) one size's windows in every layout under ``root``.

    Parameters
    ----------
    root : path
        Directory of this size's files (reused when its manifest matches).
    size_gb : float
        Size of the float32 data in decimal GB.
    chunk_windows : int
        Windows per chunk of the Zarr store.
    hdf5 : bool
        Also write the HDF5 variants.
    seed : int
        Seed of the windows.

    Returns
    -------
    LoadingData
        Paths and shape.
    """
    import zarr

    from eegstore.testing import make_store

    root = Path(root)
    n_windows = windows_for_gb(size_gb)
    manifest = root / "manifest.json"
    want = {"n_windows": n_windows, "chunk_windows": chunk_windows, "hdf5": hdf5, "seed": seed,
            "n_channels": N_CHANNELS, "n_times": N_TIMES, "codec": product_codec()[0],
            "dtype": product_dtype(), "version": 2}
    paths = {
        "zarr": root / "store.zarr",
        "npy": root / "windows.npy",
        "targets": root / "targets.npy",
    }
    h5_paths = {k: root / f"{k}.h5" for k in ("seed", "chunk1", "contiguous")} if hdf5 else {}
    if manifest.exists():
        got = json.loads(manifest.read_text())
        if got.get("params") == want:
            return LoadingData(root=str(root), size_gb=size_gb, n_windows=n_windows,
                               chunk_windows=chunk_windows,
                               **{k: str(v) for k, v in paths.items()},
                               hdf5={k: str(v) for k, v in h5_paths.items()},
                               hdf5_chunks=got["hdf5_chunks"])
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    make_store(paths["zarr"], n_windows=n_windows, n_channels=N_CHANNELS, n_times=N_TIMES,
               chunk_windows=chunk_windows, n_subjects=max(1, min(64, n_windows // 16)),
               seed=seed)
    codec = recode_store(paths["zarr"])
    group: Any = zarr.open_group(str(paths["zarr"]), mode="r")
    src = group["eeg"]
    targets = np.asarray(group["target"][:], dtype=np.float32)
    np.save(paths["targets"], targets)
    out = np.lib.format.open_memmap(paths["npy"], mode="w+", dtype=np.float32,
                                    shape=(n_windows, N_CHANNELS, N_TIMES))
    slab = max(chunk_windows, (512 // chunk_windows) * chunk_windows)
    for start in range(0, n_windows, slab):
        out[start:start + slab] = src[start:start + slab]
    out.flush()
    del out
    chunks: dict[str, list[int] | None] = {}
    for layout, p in h5_paths.items():
        chunks[layout] = _write_hdf5(p, src, targets, layout, slab)
    manifest.write_text(json.dumps({"params": want, "hdf5_chunks": chunks, "codec": codec}))
    return LoadingData(root=str(root), size_gb=size_gb, n_windows=n_windows,
                       chunk_windows=chunk_windows, **{k: str(v) for k, v in paths.items()},
                       hdf5={k: str(v) for k, v in h5_paths.items()}, hdf5_chunks=chunks)
