"""The peer loaders of the loading suite: LitData, MosaicML Streaming and xbatcher.

Each peer delivers the same windows as eegstore (the benchmark's Zarr store) as
float32, in batches of the same size, shuffled, through a
``torch.utils.data.DataLoader`` (or LitData's own ``StreamingDataLoader``) at the
same worker counts.  :data:`PEER_NOTES` says how each is set up and what its
shuffle means (the report prints it).

``python -m benchmarks.peers SPEC OUT`` converts the store into one peer's format
(``SPEC``: ``peer``, ``zarr``, ``out_dir``, ``workers``) in its own process, so the
parent measures its time and memory like a loader's.
"""

from __future__ import annotations

import functools
import importlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CONVERTED_PEERS", "PEERS", "PEER_NOTES", "convert", "peer_loader"]

PEERS = ("litdata", "mosaic", "xbatcher")
#: Peers that read a format of their own, written from the store by :func:`convert`.
CONVERTED_PEERS = ("litdata", "mosaic")
#: How each peer is set up and what "shuffle" means for it.
PEER_NOTES = {
    "litdata": "`litdata.optimize` into 64 MB chunks, `StreamingDataset(shuffle=True)` + "
               "`StreamingDataLoader`; shuffle permutes the chunk order per epoch and the "
               "windows within each worker's chunks",
    "mosaic": "MosaicML Streaming `MDSWriter` into 64 MB uncompressed shards of a "
              "fixed-shape float32 `ndarray` column, `StreamingDataset(shuffle=True)` + "
              "DataLoader; shuffle is its default algorithm (windows permuted within blocks "
              "spanning shards)",
    "xbatcher": "`BatchGenerator` of whole batches over the eegstore store opened with "
                "`xarray.open_zarr(chunks=None)` (no Dask graph per batch), + "
                "`xbatcher.loaders.torch.MapDataset` casting to float32; shuffle permutes the "
                "order of the batches only (each batch is a contiguous block of windows) and "
                "the last, partial batch is dropped; no conversion",
}
#: The module each converted peer's library is imported as.
_MODULES = {"litdata": "litdata", "mosaic": "streaming"}
#: Bytes per LitData chunk / MDS shard (both libraries' usual 64 MB).
CHUNK_BYTES = 64_000_000


def _open_eeg(zarr_path: str) -> tuple[Any, np.ndarray]:
    import zarr

    group: Any = zarr.open_group(zarr_path, mode="r")
    return group["eeg"], np.asarray(group["target"][:], dtype=np.float32)


def _chunk_items(start: int, *, zarr_path: str, step: int) -> Iterator[dict[str, Any]]:
    """The windows ``start:start + step`` of the store as ``{"x", "y", "i"}`` items.

    ``x`` is float32 whatever the store's dtype: the peers deliver what eegstore's
    float32 delivery does.
    """
    eeg, target = _open_eeg(zarr_path)
    block = np.asarray(eeg[start:start + step], dtype=np.float32)
    for k in range(block.shape[0]):
        yield {"x": np.ascontiguousarray(block[k]), "y": float(target[start + k]),
               "i": start + k}


def _starts(zarr_path: str) -> tuple[list[int], int]:
    eeg, _ = _open_eeg(zarr_path)
    step = int(eeg.chunks[0])
    return list(range(0, int(eeg.shape[0]), step)), step


def _convert_litdata(zarr_path: str, out_dir: Path, workers: int) -> None:
    import litdata

    starts, step = _starts(zarr_path)
    litdata.optimize(fn=functools.partial(_chunk_items, zarr_path=zarr_path, step=step),
                     inputs=starts, output_dir=str(out_dir.resolve()),
                     chunk_bytes=CHUNK_BYTES, num_workers=max(1, workers), verbose=False)


def _convert_mosaic(zarr_path: str, out_dir: Path) -> None:
    from streaming import MDSWriter

    eeg, _ = _open_eeg(zarr_path)
    shape = ",".join(str(int(s)) for s in eeg.shape[1:])
    columns = {"x": f"ndarray:float32:{shape}", "y": "float32",
               "i": "int64"}
    starts, step = _starts(zarr_path)
    with MDSWriter(out=str(out_dir), columns=columns, compression=None,
                   size_limit=CHUNK_BYTES, progress_bar=False) as writer:
        for start in starts:
            for item in _chunk_items(start, zarr_path=zarr_path, step=step):
                writer.write({**item, "y": np.float32(item["y"])})


def convert(peer: str, zarr_path: str, out_dir: str | Path, *, workers: int = 1) -> Path:
    """Write the store's windows in ``peer``'s format into ``out_dir`` (replaced).

    Parameters
    ----------
    peer : {"litdata", "mosaic"}
        The format.
    zarr_path : str
        The benchmark's eegstore store (the source windows).
    out_dir : path
        Output directory.
    workers : int
        Processes of ``litdata.optimize`` (MDSWriter writes in this process).

    Returns
    -------
    Path
        ``out_dir``.
    """
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    if peer == "litdata":
        _convert_litdata(zarr_path, out, workers)
    elif peer == "mosaic":
        _convert_mosaic(zarr_path, out)
    else:
        raise ValueError(f"expected a peer format in {CONVERTED_PEERS}, got {peer!r}")
    return out


# --------------------------------------------------------------------------- readers
def _float32_tensor(batch: Any) -> Any:
    """An xbatcher batch (a DataArray) as a float32 tensor, whatever the store's dtype."""
    import torch

    return torch.from_numpy(np.asarray(batch.values, dtype=np.float32))


def _as_tuples(loader: Iterable[dict[str, Any]]) -> Iterator[tuple[Any, Any, Any]]:
    for batch in loader:
        yield batch["x"], batch["y"], batch["i"]


def peer_loader(spec: dict[str, Any]) -> Callable[[int], Iterable[Any]]:
    """``make(epoch) -> iterable of (x, y, index) batches`` for a peer strategy.

    LitData and Mosaic advance their epoch themselves at each new iteration of the
    same loader; xbatcher's DataLoader is seeded with ``(seed, epoch)``.
    """
    import torch
    from torch.utils.data import DataLoader

    strategy = spec["strategy"]
    bs = int(spec["batch_size"])
    workers = int(spec["workers"])
    seed = int(spec.get("seed", 0))

    if strategy == "litdata":
        import litdata

        lds = litdata.StreamingDataset(str(Path(spec["litdata"]).resolve()), shuffle=True,
                                       seed=seed)
        lloader = litdata.StreamingDataLoader(lds, batch_size=bs, num_workers=workers)
        return lambda epoch: _as_tuples(lloader)

    if strategy == "mosaic":
        import warnings

        from streaming import StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        # MDS hands out read-only numpy views; torch warns once per process about them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        clean_stale_shared_memory()
        mds = StreamingDataset(local=spec["mosaic"], remote=None, shuffle=True,
                               shuffle_seed=seed, batch_size=bs)
        mloader = DataLoader(mds, batch_size=bs, num_workers=workers)
        return lambda epoch: _as_tuples(mloader)

    if strategy == "xbatcher":
        import xarray as xr
        import xbatcher
        from xbatcher.loaders.torch import MapDataset

        ds = xr.open_zarr(spec["zarr"], chunks=None)
        x_gen = xbatcher.BatchGenerator(ds["eeg"], input_dims={"channel": ds.sizes["channel"],
                                                               "time": ds.sizes["time"]},
                                        batch_dims={"window": bs})
        y_gen = xbatcher.BatchGenerator(ds["target"], input_dims={}, batch_dims={"window": bs})
        batches = MapDataset(x_gen, y_gen, transform=_float32_tensor)

        def make_xbatcher(epoch: int) -> Iterable[Any]:
            return DataLoader(batches, batch_size=None, shuffle=True, num_workers=workers,
                              generator=torch.Generator().manual_seed(seed * 1000 + epoch))

        return make_xbatcher

    raise ValueError(f"expected a peer in {PEERS}, got {strategy!r}")


def main(argv: list[str] | None = None) -> int:
    """Convert as ``SPEC`` says and write ``{"status", "conversion_s"}`` to ``OUT``."""
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    try:
        # the library's import is not part of the conversion
        importlib.import_module(_MODULES.get(spec["peer"], "json"))
        t0 = time.perf_counter()
        convert(spec["peer"], spec["zarr"], spec["out_dir"], workers=int(spec["workers"]))
        payload: dict[str, Any] = {"status": "ok", "conversion_s": time.perf_counter() - t0}
    except Exception as exc:
        payload = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    Path(argv[1]).write_text(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
