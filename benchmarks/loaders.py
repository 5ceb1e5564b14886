"""The loading strategies, each run in its own process: ``python -m benchmarks.loaders SPEC OUT``.

``SPEC`` is a JSON file naming the strategy and its data; the child iterates a
``torch.utils.data.DataLoader`` (same batch size and worker count for every
strategy) until its time limit, window limit or (cold cache) the end of one
epoch, and writes a JSON payload to ``OUT``.  The parent samples the memory of
the child's whole process tree (see :mod:`benchmarks.procmon`).

Throughput is reported two ways: ``windows_per_s`` is the steady state inside
epochs (each epoch's first batch, which pays for worker start-up and for any
initial load, is excluded; its latency is ``first_batch_s``), and
``windows_per_s_total`` divides every delivered window by the whole wall time.
When fewer than ``MIN_STEADY_BATCHES`` batches follow the first (hdf5_seed,
whose sample is one batch per worker), ``windows_per_s`` is the whole-run rate
and ``steady_state`` is false.  The peers (``litdata``, ``mosaic``, ``xbatcher``)
are in :mod:`benchmarks.peers`.  A strategy the installed libraries cannot run as
specified (e.g. ``float16`` delivery from an eegstore without ``dtype=``) ends with
status ``skipped`` and the reason, never with a substitute measurement.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.peers import PEERS, peer_loader

__all__ = ["STRATEGIES", "Unsupported", "run_spec"]

#: Batches after each epoch's first needed for a steady-state rate.
MIN_STEADY_BATCHES = 5
STRATEGIES = ("eegstore", "hdf5_seed", "hdf5_tuned", "full_load", "braindecode_lazy",
              "zarr_chunks", "dataloader_ceiling", *PEERS)


class Unsupported(RuntimeError):
    """The installed libraries cannot run the strategy as specified (a skip, not a failure)."""


def _self_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1024.0 / 1024.0


# --------------------------------------------------------------------------- datasets
class _H5Windows:
    """Map-style dataset: one HDF5 read per window (what the replaced loaders did)."""

    def __init__(self, path: str) -> None:
        import h5py

        self.path = path
        with h5py.File(path, "r") as fh:
            self.n = int(fh["X"].shape[0])
            self.y = np.asarray(fh["y"][:], dtype=np.float32)
        self._fh: Any = None
        self._ds: Any = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, Any, int]:
        if self._ds is None:  # opened lazily, once per worker process
            import h5py

            self._fh = h5py.File(self.path, "r")
            self._ds = self._fh["X"]
        return self._ds[i], self.y[i], i


class _InRam:
    """All windows in RAM; ``__getitem__`` takes a list of indices and returns a batch."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = x
        self.y = y

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, idx: list[int]) -> tuple[Any, Any, Any]:
        import torch

        ii = np.asarray(idx, dtype=np.int64)
        return torch.from_numpy(self.x[ii]), torch.from_numpy(self.y[ii]), torch.from_numpy(ii)


class _Ceiling:
    """Yields fresh copies of one in-RAM batch: the least work any worker-fed loader does.

    Its rate at a worker count is the DataLoader's own transfer ceiling
    (worker -> main process through shared memory) on this machine.
    """

    def __init__(self, n_windows: int, batch_size: int, shape: tuple[int, int]) -> None:
        self.n_batches = -(-n_windows // batch_size)
        self.batch_size = batch_size
        self.shape = shape

    def __iter__(self) -> Iterator[tuple[Any, Any, Any]]:
        import torch
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        src = np.random.default_rng(wid).standard_normal(
            (self.batch_size, *self.shape), dtype=np.float32)
        for _ in range(wid, self.n_batches, nw):
            x = np.empty_like(src)
            x[:] = src
            yield torch.from_numpy(x), torch.zeros(self.batch_size), torch.zeros(self.batch_size)


# --------------------------------------------------------------------------- loaders
def _loader_factory(spec: dict[str, Any]) -> Callable[[int], Iterable[Any]]:
    """Return ``make(epoch) -> iterable of batches`` for the spec's strategy."""
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    strategy = spec["strategy"]
    bs = int(spec["batch_size"])
    workers = int(spec["workers"])
    seed = int(spec.get("seed", 0))

    def gen(epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed * 1000 + epoch)

    if strategy in PEERS:
        return peer_loader(spec)

    if strategy == "eegstore":
        import inspect

        from eegstore.torch import WindowStream

        kwargs = dict(spec.get("stream_kwargs", {}))
        accepted = inspect.signature(WindowStream).parameters
        missing = sorted(k for k in kwargs if k not in accepted)
        if missing:
            raise Unsupported(f"the installed eegstore's WindowStream has no "
                              f"{', '.join(m + '=' for m in missing)} argument")
        stream = WindowStream(spec["zarr"], bs, shuffle=True, seed=seed, **kwargs)

        def make_stream(epoch: int) -> Iterable[Any]:
            stream.set_epoch(epoch)
            return DataLoader(stream, batch_size=None, num_workers=workers)

        return make_stream

    if strategy in ("hdf5_seed", "hdf5_tuned"):
        ds = _H5Windows(spec["hdf5"])

        def make_h5(epoch: int) -> Iterable[Any]:
            return DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers,  # type: ignore[arg-type]
                              generator=gen(epoch))

        return make_h5

    if strategy == "full_load":
        x = np.load(spec["npy"])  # the whole array in RAM
        y = np.load(spec["targets"]).astype(np.float32)
        mem = _InRam(x, y)

        def make_ram(epoch: int) -> Iterable[Any]:
            sampler = BatchSampler(RandomSampler(range(len(mem)), generator=gen(epoch)), bs,
                                   drop_last=False)
            return DataLoader(mem, sampler=sampler, batch_size=None,  # type: ignore[arg-type]
                              num_workers=workers)

        return make_ram

    if strategy == "dataloader_ceiling":
        from torch.utils.data import IterableDataset

        class _It(_Ceiling, IterableDataset[tuple[Any, Any, Any]]):
            pass

        ceiling = _It(int(spec["n_windows"]), bs, tuple(spec["window_shape"]))

        def make_ceiling(epoch: int) -> Iterable[Any]:
            return DataLoader(ceiling, batch_size=None, num_workers=workers)

        return make_ceiling

    if strategy == "zarr_chunks":
        # upper bound of any chunk-wise Zarr reader: whole chunks in random order, no gather
        import zarr

        arr: Any = zarr.open_group(spec["zarr"], mode="r")["eeg"]
        cw = int(arr.chunks[0])
        n_chunks = -(-int(arr.shape[0]) // cw)

        def make_chunks(epoch: int) -> Iterable[Any]:
            order = np.random.default_rng([seed, epoch]).permutation(n_chunks)
            for c in order:
                yield (torch.from_numpy(np.asarray(arr[c * cw:(c + 1) * cw])),)

        return make_chunks

    if strategy == "braindecode_lazy":
        windows = _braindecode_windows(spec)

        def make_bd(epoch: int) -> Iterable[Any]:
            return DataLoader(windows, batch_size=bs, shuffle=True, num_workers=workers,
                              generator=gen(epoch))

        return make_bd

    raise ValueError(f"expected a strategy in {STRATEGIES}, got {strategy!r}")


def _braindecode_windows(spec: dict[str, Any]) -> Any:
    """The start-kit path: lazy BDF raws -> braindecode fixed-length windows (no preload)."""
    import mne
    from braindecode.datasets import BaseConcatDataset, RawDataset
    from braindecode.preprocessing import create_fixed_length_windows

    mne.set_log_level("ERROR")
    files = sorted(Path(spec["bids"]).rglob(spec.get("glob", "*_eeg.bdf")))
    if not files:
        raise FileNotFoundError(f"expected BDF recordings under {spec['bids']}, got none")
    datasets = []
    for f in files:
        raw = mne.io.read_raw_bdf(f, preload=False, verbose="ERROR")
        datasets.append(RawDataset(raw, description={"path": str(f), "target": 0.0},
                                   target_name="target"))
    concat = BaseConcatDataset(datasets)
    return create_fixed_length_windows(
        concat, window_size_samples=int(spec["window_samples"]),
        window_stride_samples=int(spec["stride_samples"]), drop_last_window=True,
        preload=False)


# --------------------------------------------------------------------------- the loop
def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process and return its payload.

    Parameters
    ----------
    spec : dict
        ``strategy``, ``batch_size``, ``workers``, ``time_limit_s``, ``max_windows``,
        ``single_epoch``, ``expect_dtype`` (the torch dtype name batches must have) and
        the strategy's paths.  The time limit counts from the first batch.

    Returns
    -------
    dict
        windows, epochs, first_batch_s, windows_per_s, windows_per_s_total,
        elapsed_s, baseline_rss_mb, window_shape, dtype, checksum.
    """
    import torch

    torch.set_num_threads(1)
    baseline = _self_rss_mb()
    time_limit = float(spec["time_limit_s"])
    max_windows = int(spec.get("max_windows") or 0)
    single_epoch = bool(spec.get("single_epoch", False))
    t0 = time.perf_counter()
    make = _loader_factory(spec)
    windows = 0
    steady_windows = 0
    steady_time = 0.0
    steady_batches = 0
    first_batch_s: float | None = None
    epochs = 0
    checksum = 0.0
    stop = False
    shape: list[int] = []
    dtype = ""
    expect_dtype = spec.get("expect_dtype")
    while not stop:
        it = iter(make(epochs))
        t_epoch_first: float | None = None
        t_last = time.perf_counter()
        epoch_steady = 0
        for batch in it:
            x = batch[0]
            n = int(x.shape[0])
            checksum += float(x[0, 0, 0])
            now = time.perf_counter()
            if first_batch_s is None:
                first_batch_s = now - t0
                shape = list(x.shape[1:])
                dtype = str(x.dtype).removeprefix("torch.")
                if expect_dtype and dtype != expect_dtype:
                    raise ValueError(f"expected {expect_dtype} batches, got {dtype}")
            if t_epoch_first is None:
                t_epoch_first = now
            else:
                epoch_steady += n
                steady_batches += 1
            t_last = now
            windows += n
            # the time limit runs from the first batch, so start-up never eats the run
            if (now - t0 - first_batch_s >= time_limit
                    or (max_windows and windows >= max_windows)):
                stop = True
                break
        del it
        if t_epoch_first is not None and t_last > t_epoch_first:
            steady_windows += epoch_steady
            steady_time += t_last - t_epoch_first
        epochs += 1
        if single_epoch or windows == 0:
            stop = True
    elapsed = time.perf_counter() - t0
    return {
        "windows": windows,
        "epochs": epochs,
        "first_batch_s": first_batch_s,
        # too few batches after the first for a steady state (e.g. hdf5_seed): the whole run
        "windows_per_s": steady_windows / steady_time
        if steady_time > 0 and steady_batches >= MIN_STEADY_BATCHES
        else (windows / elapsed if elapsed > 0 else 0.0),
        "steady_state": steady_time > 0 and steady_batches >= MIN_STEADY_BATCHES,
        "windows_per_s_total": windows / elapsed if elapsed > 0 else 0.0,
        "elapsed_s": elapsed,
        "baseline_rss_mb": baseline,
        "window_shape": shape,
        "dtype": dtype,
        "checksum": checksum,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    out = Path(argv[1])
    try:
        payload = run_spec(spec)
        payload["status"] = "ok"
    except Unsupported as exc:
        payload = {"status": "skipped", "reason": str(exc)}
    except Exception as exc:
        import traceback

        payload = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()[-3000:]}
    out.write_text(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
