"""GPU feed suite: EEGNeX challenge-1 training steps fed by the stream vs an in-GPU tensor.

``python -m benchmarks run --suites gpu --out DIR`` synthesizes its own windows
(:func:`benchmarks.datasets.prepare_loading_data`, the run's smallest size, written
again as a float32 and a float16 store) and trains EEGNeX (``n_chans=129, n_outputs=1,
n_times=200, sfreq=100``) fed by

* ``gpu_tensor``  every window already on the GPU, batches gathered there (the ceiling),
* ``stream``      :class:`eegstore.torch.WindowStream` in the training process (its
  threads, no DataLoader workers), pinned batches or pageable ones,
* ``stream``      the same stream through DataLoader worker processes (pinned),

each with float32 and float16 delivery (float16 batches travel as float16 and are
converted to float32 on the GPU; the stream's float16 delivery reads the float16
store and needs its ``dtype=`` argument).  Host-to-device copies are
``non_blocking`` from pinned memory.  Per step the loop measures the wait for the
next batch on the device (iterator, copy, conversion; synchronised) and the whole
step (forward, backward, optimizer; synchronised); warm-up steps and each epoch's
first batch are not counted.  The same number of steps then runs without any
synchronisation (fetching overlaps computing, as in training): the
``overlapped_windows_per_s``.  Records are also written to ``gpu-records.json`` as
they come.  Each feed runs in its own process
(``python -m benchmarks.gpu SPEC OUT``).  Without CUDA the suite writes one record
with status ``skipped`` and reason ``no CUDA device``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.datasets import N_CHANNELS, N_TIMES, WINDOW_BYTES, prepare_loading_data
from benchmarks.procmon import python_argv, read_files, run_child
from eegstore.errors import ConfigError

__all__ = ["FEED_MODES", "GPU_SUITE_BUDGET_S", "FeedSpec", "StepTimes", "feed_specs",
           "measure_feeds", "run_feed", "run_gpu_suite", "time_free_run", "time_steps"]

FEED_MODES = ("gpu_tensor", "stream")
_DELIVERIES = ("float32", "float16")
#: Seconds the feeds of a full run may take together (a quarter with ``--quick``): the
#: suite must end inside one 10-minute command on a lent GPU machine, data included.
GPU_SUITE_BUDGET_S = 420.0
#: A batch on the device: ``(x, y, first batch of an epoch)``.
Batch = tuple[Any, Any, bool]


@dataclass(frozen=True)
class FeedSpec:
    """One feed of the GPU suite (serialised to JSON for its child process).

    Attributes
    ----------
    mode : {"gpu_tensor", "stream"}
        Where batches come from.
    delivery : {"float32", "float16"}
        dtype of the batches on their way to the device (float16: converted there).
    workers : int
        DataLoader worker processes of a stream feed (0: in the training process).
    pinned : bool
        Batches in page-locked memory and ``non_blocking`` copies (CUDA only).
    batch_size, steps, warmup : int
        Windows per batch, timed steps, untimed steps first.
    time_limit_s : float
        Stop early once a feed has run this long (with at least one timed step).
    device : str
        ``"cuda"``; ``"cpu"`` only to test the loop.
    n_chans, n_times : int
        Window shape.
    sfreq : float
        Sampling frequency of the windows (Hz).
    store : str
        Zarr store of a stream feed.
    npy, targets : str
        Windows and targets (``.npy``) of an in-GPU feed.
    seed : int
        Seed of the shuffle.
    """

    mode: str
    delivery: str = "float32"
    workers: int = 0
    pinned: bool = True
    batch_size: int = 64
    steps: int = 300
    warmup: int = 20
    time_limit_s: float = 90.0
    device: str = "cuda"
    n_chans: int = N_CHANNELS
    n_times: int = N_TIMES
    sfreq: float = 100.0
    store: str = ""
    npy: str = ""
    targets: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        _check_feed_spec(self)

    @property
    def name(self) -> str:
        """``gpu_tensor``, ``stream_threads`` or ``stream_workers<N>``, with the delivery."""
        where = self.mode if self.mode == "gpu_tensor" else (
            f"stream_workers{self.workers}" if self.workers else "stream_threads")
        return f"{where}/{self.delivery}" + ("" if self.pinned else "/pageable")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeedSpec:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _check_feed_spec(spec: FeedSpec) -> None:
    if spec.mode not in FEED_MODES:
        raise ConfigError(f"expected mode in {list(FEED_MODES)}, got {spec.mode!r}")
    if spec.delivery not in _DELIVERIES:
        raise ConfigError(f"expected delivery in {list(_DELIVERIES)}, got {spec.delivery!r}")
    if spec.workers < 0 or spec.batch_size < 1 or spec.steps < 1 or spec.warmup < 0:
        raise ConfigError(f"expected workers >= 0, batch_size >= 1, steps >= 1, warmup >= 0, "
                          f"got {spec.workers}, {spec.batch_size}, {spec.steps}, {spec.warmup}")
    need = "store" if spec.mode == "stream" else "npy"
    if not getattr(spec, need) or (spec.mode == "gpu_tensor" and not spec.targets):
        raise ConfigError(f"expected the data paths of a {spec.mode} feed, got none; "
                          f"set {need}" + ("" if spec.mode == "stream" else " and targets"))


@dataclass(frozen=True)
class StepTimes:
    """Timings of the counted steps of a feed.

    Attributes
    ----------
    steps, windows : int
        Counted steps and their windows.
    skipped : int
        Steps not counted (warm-up, each epoch's first batch).
    wait_s, total_s : float
        Time waiting for batches on the device, and whole steps, over the counted steps.
    first_batch_s : float
        From the feed's start to its first batch on the device.
    """

    steps: int
    windows: int
    skipped: int
    wait_s: float
    total_s: float
    first_batch_s: float

    @property
    def windows_per_s(self) -> float | None:
        return self.windows / self.total_s if self.total_s > 0 else None

    @property
    def data_wait_fraction(self) -> float | None:
        return self.wait_s / self.total_s if self.total_s > 0 else None

    def summary(self) -> dict[str, Any]:
        """The record fields: windows/s, data-wait fraction, step ms and the counts."""
        return {"windows_per_s": self.windows_per_s,
                "data_wait_fraction": self.data_wait_fraction,
                "step_ms": 1000.0 * self.total_s / self.steps if self.steps else None,
                "steps": self.steps, "skipped_steps": self.skipped,
                "windows_timed": self.windows, "first_batch_s": self.first_batch_s}


def time_steps(batches: Iterator[Batch], step: Callable[[Any, Any], None], *, steps: int,
               warmup: int, sync: Callable[[], None] = lambda: None,
               clock: Callable[[], float] = time.perf_counter,
               time_limit_s: float = math.inf, start: float | None = None) -> StepTimes:
    """Run ``step`` on batches until ``steps`` counted steps (or the time limit); time them.

    Parameters
    ----------
    batches : iterator of (x, y, first_of_epoch)
        Batches already on the device; a batch opening an epoch is not counted.
    step : callable
        One training step on ``(x, y)``.
    steps, warmup : int
        Counted steps wanted, and leading steps never counted.
    sync : callable
        Waits for the device (``torch.cuda.synchronize``) before each clock reading.
    clock : callable
        Seconds.
    time_limit_s : float
        Stop once this much time has passed since ``start`` and a step was counted.
    start : float, optional
        Clock reading of the feed's start (default: now).

    Returns
    -------
    StepTimes
    """
    t0 = clock() if start is None else start
    first: float | None = None
    counted = seen = windows = 0
    wait = total = 0.0
    while counted < steps:
        ts = clock()
        x, y, opens_epoch = next(batches)
        sync()
        tw = clock()
        if first is None:
            first = tw - t0
        step(x, y)
        sync()
        te = clock()
        seen += 1
        if seen > warmup and not opens_epoch:
            counted += 1
            windows += int(x.shape[0])
            wait += tw - ts
            total += te - ts
        if counted and te - t0 >= time_limit_s:
            break
    return StepTimes(steps=counted, windows=windows, skipped=seen - counted, wait_s=wait,
                     total_s=total, first_batch_s=first or 0.0)


def time_free_run(batches: Iterator[Batch], step: Callable[[Any, Any], None], *, steps: int,
                  sync: Callable[[], None] = lambda: None,
                  clock: Callable[[], float] = time.perf_counter) -> float | None:
    """Windows/s of ``steps`` steps with no synchronisation between them.

    As in training, the host fetches the next batch while the device still computes;
    epoch starts are included.  Complements :func:`time_steps`, whose per-step
    synchronisation serialises fetching and computing to tell them apart.
    """
    sync()
    t0 = clock()
    windows = 0
    for _ in range(steps):
        x, y, _ = next(batches)
        step(x, y)
        windows += int(x.shape[0])
    sync()
    elapsed = clock() - t0
    return windows / elapsed if elapsed > 0 else None


# --------------------------------------------------------------------------- feeds
def _tensor_batches(spec: FeedSpec, device: Any) -> Iterator[Batch]:
    import torch

    dtype = getattr(torch, spec.delivery)
    x_all = torch.from_numpy(np.load(spec.npy)).to(device, dtype=dtype)
    y_all = torch.from_numpy(np.load(spec.targets).astype(np.float32)).to(device)
    gen = torch.Generator(device=device).manual_seed(spec.seed)
    n, bs = x_all.shape[0], spec.batch_size
    if n < bs:
        raise ConfigError(f"expected at least one batch of {bs} windows, got {n}")
    while True:
        perm = torch.randperm(n, device=device, generator=gen)
        for start in range(0, n - bs + 1, bs):
            idx = perm[start:start + bs]
            yield x_all[idx].float(), y_all[idx], start == 0


def _stream_batches(spec: FeedSpec, device: Any) -> Iterator[Batch]:
    import torch
    from torch.utils.data import DataLoader

    from eegstore.torch import WindowStream

    pin = spec.pinned and device.type == "cuda"
    kwargs: dict[str, Any] = {"shuffle": True, "seed": spec.seed}
    if spec.delivery != "float32":
        kwargs["dtype"] = spec.delivery
    if spec.workers == 0:
        kwargs["pin_memory"] = pin  # in-process batches are built pinned
    stream = WindowStream(spec.store, spec.batch_size, **kwargs)
    epoch = 0
    while True:
        stream.set_epoch(epoch)
        loader = DataLoader(stream, batch_size=None, num_workers=spec.workers,
                            pin_memory=pin and spec.workers > 0)
        for i, (x, y, _) in enumerate(loader):
            yield (torch.as_tensor(x).to(device, non_blocking=pin).float(),
                   torch.as_tensor(y).to(device, non_blocking=pin), i == 0)
        epoch += 1


def run_feed(spec: FeedSpec) -> dict[str, Any]:
    """Train EEGNeX on batches fed as ``spec`` says; return the timings and the device.

    Returns
    -------
    dict
        :meth:`StepTimes.summary` plus ``device``, ``status`` ("ok").
    """
    import torch
    from braindecode.models import EEGNeX

    device = torch.device(spec.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t0 = time.perf_counter()
    model = EEGNeX(n_chans=spec.n_chans, n_outputs=1, n_times=spec.n_times,
                   sfreq=spec.sfreq).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss()

    def step(x: Any, y: Any) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x).squeeze(-1), y).backward()
        opt.step()

    batches = (_tensor_batches if spec.mode == "gpu_tensor" else _stream_batches)(spec, device)
    times = time_steps(batches, step, steps=spec.steps, warmup=spec.warmup, sync=sync,
                       time_limit_s=spec.time_limit_s, start=t0)
    overlapped = time_free_run(batches, step, steps=times.steps, sync=sync)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {**times.summary(), "overlapped_windows_per_s": overlapped, "device": name,
            "status": "ok"}


# --------------------------------------------------------------------------- suite
def _versions() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    cudnn: Any = torch.backends.cudnn  # its version() is untyped
    return {"torch_version": torch.__version__, "cuda_version": torch.version.cuda,
            "cudnn_version": cudnn.version() if cuda else None,
            "gpu_name": torch.cuda.get_device_name(0) if cuda else None}


def feed_specs(*, workers: int, cores: int, batch_size: int, quick: bool, stream_f16: bool,
               store: str, store_f16: str, npy: str, targets: str, seed: int = 0
               ) -> list[FeedSpec]:
    """The suite's feeds: the in-GPU ceiling, the stream in-process and with workers.

    Worker counts: ``workers`` and, where the machine has the cores, half of them (at most
    8).  Float16 stream feeds only when ``stream_f16`` (the stream's ``dtype=``).
    """
    ceiling = FeedSpec(mode="gpu_tensor", batch_size=batch_size, steps=20 if quick else 300,
                       warmup=3 if quick else 20, time_limit_s=30.0 if quick else 90.0,
                       npy=npy, targets=targets, store=store, seed=seed)
    specs = [replace(ceiling, delivery=d) for d in _DELIVERIES]
    for w in sorted({0, workers, min(8, cores // 2)}):
        for d in _DELIVERIES:
            if d == "float16" and not stream_f16:
                continue
            specs.append(replace(ceiling, mode="stream", delivery=d, workers=w,
                                 store=store_f16 if d == "float16" else store))
        if w == 0:  # what pinning and non_blocking copies buy
            specs.append(replace(ceiling, mode="stream", workers=0, pinned=False))
    return specs


def _store_copy(src: str, out: Path, npy: str, dtype: str) -> str:
    """A copy of the store ``src`` with the windows of ``npy`` as ``eeg`` in ``dtype``.

    Same chunks, codecs, units and coordinates as ``src``: the float32 and float16 feeds
    read the same windows whatever dtype ``src`` was written in.
    """
    import zarr

    from benchmarks.layout import write_layout

    eeg: Any = zarr.open_array(str(Path(src) / "eeg"), mode="r")
    write_layout(Path(src), out, np.load(npy, mmap_mode="r"), dtype=dtype,
                 compressors=list(eeg.compressors), units=eeg.attrs.get("units"))
    return str(out)


def _measure_feed(spec: FeedSpec, left_s: float) -> dict[str, Any]:
    """Run one feed in its own process (at most ``left_s`` seconds); its record fields."""
    read_files([p for p in (spec.store, spec.npy) if p])
    with tempfile.TemporaryDirectory() as tmp:
        sp, op = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        sp.write_text(json.dumps(spec.to_dict()))
        res = run_child(python_argv("benchmarks.gpu", str(sp), str(op)),
                        timeout_s=min(2 * spec.time_limit_s + 120, left_s), result_path=op)
    rec = res.payload or {"status": "failed",
                          "reason": f"exit {res.returncode}: {res.stderr_tail[-300:]}"}
    return {**rec, "peak_rss_mb": res.peak_rss_mb, "peak_pss_mb": res.peak_pss_mb}


def measure_feeds(specs: list[FeedSpec], *, budget_s: float, base: dict[str, Any],
                  progress: Path | None = None) -> list[dict[str, Any]]:
    """One record per feed, each measured in its own process, within ``budget_s`` in all.

    Feeds left when the budget is spent get status ``skipped``.  With ``progress``, the
    records so far are written there after each feed (they survive a run stopped before
    ``results.json`` is written).
    """
    out = []
    deadline = time.monotonic() + budget_s
    for spec in specs:
        rec = {**base, "strategy": f"eegnex_{spec.mode}", "variant": spec.name,
               "delivery": spec.delivery, "workers": spec.workers, "pinned": spec.pinned}
        left_s = deadline - time.monotonic()
        rec.update(_measure_feed(spec, left_s) if left_s > 30 else
                   {"status": "skipped", "reason": "the suite's time budget is spent",
                    "windows_per_s": None, "first_batch_s": None})
        out.append(rec)
        if progress is not None:
            progress.write_text(json.dumps(out, indent=1, default=str))
    return out


def run_gpu_suite(cfg: Any, data_root: Path) -> list[dict[str, Any]]:
    """Measure every feed of :func:`feed_specs` with CUDA; else one skipped record."""
    import torch

    from benchmarks.layout import stream_has_dtype

    base: dict[str, Any] = {"suite": "gpu", "cache": "warm", "batch_size": cfg.batch_size,
                            "bytes_on_disk": None, "peak_rss_mb": None, **_versions()}
    if not torch.cuda.is_available():
        return [{**base, "strategy": "eegnex_feed", "status": "skipped",
                 "reason": "no CUDA device", "store_gb": None, "windows_per_s": None,
                 "workers": None, "first_batch_s": None}]
    data = prepare_loading_data(data_root / "size0", cfg.sizes_gb[0],
                                chunk_windows=cfg.chunk_windows, hdf5="loading" in cfg.suites,
                                seed=cfg.seed)
    f16 = stream_has_dtype()
    stores = {d: _store_copy(data.zarr, data_root / f"gpu-{d}.zarr", data.npy, d)
              for d in (_DELIVERIES if f16 else ("float32",))}
    specs = feed_specs(workers=cfg.workers, cores=len(os.sched_getaffinity(0)),
                       batch_size=cfg.batch_size, quick=cfg.quick, stream_f16=f16,
                       store=stores["float32"], store_f16=stores.get("float16", ""),
                       npy=data.npy, targets=data.targets, seed=cfg.seed)
    budget_s = GPU_SUITE_BUDGET_S / 4 if cfg.quick else GPU_SUITE_BUDGET_S
    base["store_gb"] = round(data.n_windows * WINDOW_BYTES / 1e9, 4)
    out = measure_feeds(specs, budget_s=budget_s, base=base,
                        progress=Path(cfg.out) / "gpu-records.json")
    if not f16:
        out.append({**base, "strategy": "eegnex_stream", "variant": "stream/float16",
                    "delivery": "float16", "workers": None, "status": "skipped",
                    "reason": "WindowStream has no dtype= argument", "store_gb": None,
                    "windows_per_s": None, "first_batch_s": None})
    return out


def main(argv: list[str] | None = None) -> int:
    """Child entry: run the feed of the JSON spec ``argv[0]``, write its result to ``argv[1]``."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        payload = run_feed(FeedSpec.from_dict(json.loads(Path(argv[0]).read_text())))
    except Exception as exc:  # the parent records the failure and measures the next feed
        payload = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    Path(argv[1]).write_text(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
