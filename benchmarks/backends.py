"""Backends suite: whole-chunk read rate of the same store through each read backend.

The same windows (``eegstore.testing.make_store``: 129 channels x 200 samples, 81
windows per chunk) are written once per layout (:data:`LAYOUTS`: float16 uncompressed,
the build's default; float16 + zstd-1; float32 + zstd-1) and read whole chunk by whole
chunk, warm page cache, in this process, through each backend (:data:`BACKENDS`):

``eegstore``
    :meth:`eegstore.reader.StoreReader.read_chunk` (its ``raw`` or ``decode`` path)
    into a slot owned by the reading thread.
``zarr``
    zarr-python's ``get_basic_selection`` of one whole chunk into such a slot, with its
    default codec pipeline.
``zarrs``
    The same with the Rust codec pipeline of the ``zarrs`` package
    (``codec_pipeline.path = "zarrs.ZarrsCodecPipeline"``).
``tensorstore``
    ``tensorstore.open`` of the ``zarr3`` driver over the ``file`` kvstore; each read
    returns a new array (tensorstore has no read into caller memory).

Each backend is timed with 1 calling thread and with one per usable core
(``concurrent.futures`` over the chunks); backends with their own thread pools
(zarrs, tensorstore) may use more cores than their callers.  The rate counts decoded
windows (and MB of the stored dtype).

Each backend also gets a fork-safety probe (:func:`fork_probe`), as DataLoader workers
would use it: read in the parent, ``fork``, read in the child with a timeout; the child
is killed when it overruns (``"hang"``), and a child that raises or dies records
``"error: ..."``.  Both reads span several chunks (a batch that crosses a chunk
boundary).  Each probe runs in a fresh interpreter so that one backend's threads cannot
decide another's outcome.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from benchmarks.datasets import N_CHANNELS, N_TIMES, bytes_on_disk
from benchmarks.procmon import read_files
from eegstore.errors import ConfigError

__all__ = ["ADOPT_MARGIN", "BACKENDS", "LAYOUTS", "BackendsConfig", "ChunkReader",
           "backend_verdict", "chunk_read_rate", "fork_probe", "isolated_fork_probes",
           "missing_package", "open_backend", "run_backends_suite"]

BACKENDS = ("eegstore", "zarr", "zarrs", "tensorstore")
#: ``dtype+compressor`` (a compressor name of :func:`eegstore.build.compressor_codecs`).
LAYOUTS = ("float16+none", "float16+zstd", "float32+zstd")
#: A backend is worth adopting when its best rate beats eegstore's by more than this.
ADOPT_MARGIN = 0.10
#: Package each backend needs beyond eegstore's own dependencies.
_PACKAGES = {"zarrs": "zarrs", "tensorstore": "tensorstore"}
_ZARRS_PIPELINE = "zarrs.ZarrsCodecPipeline"
#: Prefix of the outcome line a probe's interpreter prints.
_PROBE_MARK = "fork-probe: "


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1


def _default_threads() -> tuple[int, ...]:
    return tuple(sorted({1, _usable_cores()}))


@dataclass(frozen=True)
class BackendsConfig:
    """What the backends suite measures.

    Attributes
    ----------
    n_chunks, chunk_windows : int
        Whole chunks per store and windows per chunk.
    n_channels, n_times : int
        Window shape.
    layouts, backends : tuple of str
        Among :data:`LAYOUTS` and :data:`BACKENDS`.
    threads : tuple of int
        Calling threads to time each backend with.
    read_time_s : float
        Timed reading per backend, layout and thread count, after one untimed pass.
    probe_timeout_s : float
        How long a forked child may take to read before it counts as a hang.
    probe_layout : str
        Layout (in ``layouts``) of the stores the fork probes read.
    seed : int
        Seed of the synthetic windows.
    """

    n_chunks: int = 24
    chunk_windows: int = 81
    n_channels: int = N_CHANNELS
    n_times: int = N_TIMES
    layouts: tuple[str, ...] = LAYOUTS
    backends: tuple[str, ...] = BACKENDS
    threads: tuple[int, ...] = field(default_factory=_default_threads)
    read_time_s: float = 1.5
    probe_timeout_s: float = 20.0
    probe_layout: str = LAYOUTS[0]
    seed: int = 0

    def __post_init__(self) -> None:
        _check_backends_config(self)

    @classmethod
    def for_run(cls, *, quick: bool, seed: int = 0) -> BackendsConfig:
        """The defaults of a full run, or of ``--quick`` (tiny stores, short timings)."""
        if quick:
            return cls(n_chunks=4, chunk_windows=16, read_time_s=0.2, probe_timeout_s=5.0,
                       seed=seed)
        return cls(seed=seed)

    @property
    def n_windows(self) -> int:
        return self.n_chunks * self.chunk_windows


def _check_backends_config(cfg: BackendsConfig) -> None:
    sizes = (cfg.n_chunks, cfg.chunk_windows, cfg.n_channels, cfg.n_times)
    if min(sizes) < 1 or not cfg.threads or min(cfg.threads) < 1:
        raise ConfigError(f"expected positive sizes and thread counts, got n_chunks, "
                          f"chunk_windows, n_channels, n_times = {sizes} and threads "
                          f"{cfg.threads}")
    bad = [x for x in cfg.layouts if x not in LAYOUTS] \
        + [b for b in cfg.backends if b not in BACKENDS]
    if bad or not cfg.layouts or not cfg.backends:
        raise ConfigError(f"expected layouts among {list(LAYOUTS)} and backends among "
                          f"{list(BACKENDS)}, got {bad or 'none'}")
    if cfg.probe_layout not in cfg.layouts:
        raise ConfigError(f"expected probe_layout among {list(cfg.layouts)}, got "
                          f"{cfg.probe_layout!r}")
    if cfg.read_time_s <= 0 or cfg.probe_timeout_s <= 0:
        raise ConfigError(f"expected read_time_s > 0 and probe_timeout_s > 0, got "
                          f"{cfg.read_time_s} and {cfg.probe_timeout_s}")


# --------------------------------------------------------------------------- backends
class ChunkReader(Protocol):
    """Whole-chunk reads of a store's ``eeg`` through one backend."""

    chunk_windows: int
    n_windows: int
    window_nbytes: int

    def read_chunk(self, chunk: int) -> np.ndarray:
        """Read one whole chunk (decoded)."""
        ...

    def read_span(self, first: int, count: int) -> np.ndarray:
        """Read ``count`` whole chunks from ``first`` in one call."""
        ...


class _Base:
    """Shape bookkeeping and a per-thread slot of one chunk."""

    def __init__(self, shape: Sequence[int], chunk_windows: int, dtype: Any) -> None:
        self.n_windows = int(shape[0])
        self.window_shape = (int(shape[1]), int(shape[2]))
        self.chunk_windows = int(chunk_windows)
        self.dtype = np.dtype(dtype)
        self.window_nbytes = self.window_shape[0] * self.window_shape[1] * self.dtype.itemsize
        self._local = threading.local()

    def _slot(self) -> np.ndarray:
        slot = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = np.empty((self.chunk_windows, *self.window_shape),
                                               dtype=self.dtype)
        return slot

    def _bounds(self, first: int, count: int = 1) -> tuple[int, int]:
        start = first * self.chunk_windows
        return start, min(self.n_windows, start + count * self.chunk_windows)


class _EegstoreReader(_Base):
    def __init__(self, store: Path) -> None:
        from eegstore.reader import StoreReader

        self.reader = StoreReader(store, target="target")
        super().__init__(self.reader.shape, self.reader.chunk_windows, self.reader.dtype)

    def read_chunk(self, chunk: int) -> np.ndarray:
        return self.reader.read_chunk(chunk, self._slot())[:self.reader.chunk_len(chunk)]

    def read_span(self, first: int, count: int) -> np.ndarray:
        start, stop = self._bounds(first, count)
        n_chunks = -(-(stop - start) // self.chunk_windows)
        out = np.empty((n_chunks * self.chunk_windows, *self.window_shape), dtype=self.dtype)
        for i in range(n_chunks):
            self.reader.read_chunk(first + i, out[i * self.chunk_windows:
                                                  (i + 1) * self.chunk_windows])
        return out[:stop - start]


class _ZarrReader(_Base):
    def __init__(self, store: Path, *, pipeline: str | None = None) -> None:
        import zarr

        settings = {} if pipeline is None else {"codec_pipeline.path": pipeline}
        with zarr.config.set(settings):  # the pipeline is chosen when the array opens
            array: Any = zarr.open_array(str(store / "eeg"), mode="r")
        self.array = array
        super().__init__(array.shape, array.chunks[0], array.dtype)

    def read_chunk(self, chunk: int) -> np.ndarray:
        from zarr.core.buffer.cpu import NDBuffer

        start, stop = self._bounds(chunk)
        slot = self._slot()[:stop - start]
        self.array.get_basic_selection((slice(start, stop),),
                                       out=NDBuffer.from_numpy_array(slot))
        return slot

    def read_span(self, first: int, count: int) -> np.ndarray:
        start, stop = self._bounds(first, count)
        return np.asarray(self.array[start:stop])


class _TensorstoreReader(_Base):
    def __init__(self, store: Path) -> None:
        import tensorstore as ts

        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store / "eeg")}}
        array: Any = ts.open(spec, read=True).result()
        self.array = array
        super().__init__(array.shape, array.chunk_layout.read_chunk.shape[0],
                         array.dtype.numpy_dtype)

    def read_chunk(self, chunk: int) -> np.ndarray:
        return self.read_span(chunk, 1)

    def read_span(self, first: int, count: int) -> np.ndarray:
        start, stop = self._bounds(first, count)
        return np.asarray(self.array[start:stop].read().result())


def missing_package(backend: str) -> str | None:
    """The package ``backend`` needs that is not installed, or None."""
    if backend not in BACKENDS:
        raise ConfigError(f"expected a backend in {list(BACKENDS)}, got {backend!r}")
    package = _PACKAGES.get(backend)
    if package is not None and importlib.util.find_spec(package) is None:
        return package
    return None


def open_backend(backend: str, store: str | os.PathLike[str]) -> ChunkReader:
    """Open ``store``'s ``eeg`` array for whole-chunk reads through ``backend``.

    Parameters
    ----------
    backend : str
        One of :data:`BACKENDS`.
    store : path
        A local eegstore store.

    Returns
    -------
    ChunkReader
        ``read_chunk(chunk)`` and ``read_span(first, count)``.
    """
    package = missing_package(backend)
    if package is not None:
        raise ConfigError(f"expected the {package!r} package for backend {backend!r}, got "
                          "none installed; install the bench extra: pip install -e '.[bench]'")
    path = Path(store)
    if backend == "eegstore":
        return _EegstoreReader(path)
    if backend == "tensorstore":
        return _TensorstoreReader(path)
    return _ZarrReader(path, pipeline=_ZARRS_PIPELINE if backend == "zarrs" else None)


# --------------------------------------------------------------------------- timing
def chunk_read_rate(reader: ChunkReader, *, threads: int, time_s: float) -> dict[str, Any]:
    """Warm whole-chunk read rate: every chunk once untimed, then passes until ``time_s``.

    ``threads`` calling threads read the chunks of a pass (1: the calling thread alone).

    Returns
    -------
    dict
        ``windows_per_s``, ``mb_per_s`` (decoded MB of the stored dtype), ``passes``,
        ``windows_read``.
    """
    if threads < 1 or time_s <= 0:
        raise ConfigError(f"expected threads >= 1 and time_s > 0, got {threads} and {time_s}")
    n_chunks = -(-reader.n_windows // reader.chunk_windows)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def one_pass() -> int:
        chunks = range(n_chunks)
        results = pool.map(reader.read_chunk, chunks) if pool is not None \
            else map(reader.read_chunk, chunks)
        return sum(len(x) for x in results)

    try:
        one_pass()
        windows = passes = 0
        t0 = time.perf_counter()
        while passes == 0 or time.perf_counter() - t0 < time_s:
            windows += one_pass()
            passes += 1
        elapsed = time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.shutdown()
    return {"windows_per_s": windows / elapsed,
            "mb_per_s": windows * reader.window_nbytes / elapsed / 1e6,
            "passes": passes, "windows_read": windows}


# --------------------------------------------------------------------------- fork safety
def _probe_child(read: Callable[[], object], conn: Any, stderr_fd: int) -> None:
    """Body of the forked child: read, then report ``ok`` or the exception."""
    os.dup2(stderr_fd, 2)  # what a dying runtime prints becomes the probe's reason
    try:
        read()
        conn.send("ok")
    except BaseException as exc:  # any failure is the outcome being probed
        conn.send(f"error: {type(exc).__name__}: {exc}")


def _last_line(fh: Any) -> str:
    fh.seek(0)
    lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def fork_probe(parent_read: Callable[[], object], child_read: Callable[[], object], *,
               timeout_s: float) -> str:
    """Whether reads still work in a ``fork``-ed child, as in DataLoader workers.

    Calls ``parent_read()`` here, forks (multiprocessing's ``fork`` context) and calls
    ``child_read()`` in the child; a child still busy after ``timeout_s`` is killed.

    Returns
    -------
    str
        ``"ok"``, ``"hang"`` (no answer within ``timeout_s``) or ``"error: ..."`` (the
        child raised, or died: its signal and the last line it wrote to stderr).
    """
    if timeout_s <= 0:
        raise ConfigError(f"expected timeout_s > 0, got {timeout_s}")
    parent_read()
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    with tempfile.TemporaryFile() as err:
        proc = ctx.Process(target=_probe_child, args=(child_read, send, err.fileno()),
                           daemon=True)
        proc.start()
        send.close()
        deadline = time.monotonic() + timeout_s
        outcome = "hang"
        try:
            if recv.poll(timeout_s):
                outcome = recv.recv()
                proc.join(max(0.0, deadline - time.monotonic()))
                if proc.is_alive():  # answered but never exits: a worker that blocks shutdown
                    outcome = "hang"
        except EOFError:  # died without an answer
            proc.join(timeout_s)
            code = proc.exitcode
            why = signal.Signals(-code).name if code is not None and code < 0 \
                else f"exit code {code}"
            last = _last_line(err)
            outcome = f"error: child died ({why})" + (f": {last}" if last else "")
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join()
            recv.close()
    return outcome


def _probe_main(argv: Sequence[str]) -> str:
    """The fresh interpreter of :func:`isolated_fork_probes`: ``backend store timeout_s``."""
    backend, store, timeout_s = argv[0], argv[1], float(argv[2])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = open_backend(backend, store)
            count = min(2, -(-reader.n_windows // reader.chunk_windows))
            return fork_probe(lambda: reader.read_span(0, count),
                              lambda: reader.read_span(0, count), timeout_s=timeout_s)
    except Exception as exc:  # reported as the probe's outcome
        return f"error: in the parent: {type(exc).__name__}: {exc}"


def isolated_fork_probes(backends: Sequence[str], store: str | os.PathLike[str], *,
                         timeout_s: float) -> dict[str, str]:
    """:func:`fork_probe` of each backend on ``store``, each in its own fresh interpreter.

    The parent reads (and the child reads) two whole chunks in one call.  A fresh
    interpreter holds no other backend's threads or fork handlers; the interpreters run
    at the same time (a probe's outcome does not depend on its speed, only on whether
    its child answers within ``timeout_s``).

    Returns
    -------
    dict
        Backend to the outcome of :func:`fork_probe`; ``"error: ..."`` also when the
        probe's own interpreter fails or gives no answer.
    """
    limit_s = timeout_s * 2 + 120.0  # the interpreter imports numpy, zarr and the backend
    code = ("import sys; from benchmarks.backends import _probe_main; "
            f"print({_PROBE_MARK!r} + ' '.join(_probe_main(sys.argv[1:]).split()))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p)
    deadline = time.monotonic() + limit_s
    outcomes: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        running = []
        for backend in backends:
            err = stack.enter_context(tempfile.TemporaryFile())
            proc = stack.enter_context(subprocess.Popen(
                [sys.executable, "-c", code, backend, os.fspath(store), str(timeout_s)],
                stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True))
            running.append((backend, proc, err))
        for backend, proc, err in running:
            outcomes[backend] = _probe_outcome(proc, err, deadline, limit_s)
    return outcomes


def _probe_outcome(proc: subprocess.Popen[bytes], err: Any, deadline: float,
                   limit_s: float) -> str:
    """The outcome line one probe interpreter printed.

    Past ``deadline`` the interpreter's process group (its session) is killed.
    """
    try:
        out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # with the child it forked, if any
        proc.communicate()
        return f"error: the probe's interpreter gave no answer in {limit_s:.0f} s"
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith(_PROBE_MARK):
            return line[len(_PROBE_MARK):]
    return f"error: the probe's interpreter failed (exit code {proc.returncode}): " \
        + _last_line(err)


# --------------------------------------------------------------------------- suite
def _layout_stores(root: Path, cfg: BackendsConfig) -> Iterator[tuple[str, Path]]:
    """Yield ``(layout, store)``: the same windows in each layout, each store removed after.

    One ``make_store`` store (float32, uncompressed) is the template; each layout is a
    copy of it with ``eeg`` rewritten (:func:`benchmarks.layout.write_layout`).
    """
    import zarr

    from benchmarks.layout import write_layout
    from eegstore.build import compressor_codecs
    from eegstore.testing import make_store

    template = make_store(root / "template.zarr", n_windows=cfg.n_windows,
                          n_channels=cfg.n_channels, n_times=cfg.n_times,
                          chunk_windows=cfg.chunk_windows,
                          n_subjects=max(1, min(64, cfg.n_windows // 16)), dtype="float32",
                          compressor="none", seed=cfg.seed)
    x = np.asarray(zarr.open_array(str(template / "eeg"), mode="r")[:])
    for layout in cfg.layouts:
        dtype, compressor = layout.split("+")
        store = root / f"{layout}.zarr"
        write_layout(template, store, x, dtype=dtype, compressors=compressor_codecs(compressor),
                     units=None)
        yield layout, store
        shutil.rmtree(store)
    shutil.rmtree(template)


def _measure(backend: str, store: Path, cfg: BackendsConfig, reference: np.ndarray
             ) -> list[dict[str, Any]]:
    """One record per thread count of ``backend`` on ``store`` (failed with the reason)."""
    base = {"backend": backend, "strategy": backend}
    missing = missing_package(backend)
    if missing is not None:
        return [{**base, "threads": t, "status": "skipped", "windows_per_s": None,
                 "mb_per_s": None, "reason": f"package {missing!r} not installed "
                 "(pip install -e '.[bench]')"} for t in cfg.threads]
    try:
        reader = open_backend(backend, store)
        first = np.array(reader.read_chunk(0), copy=True)
    except Exception as exc:  # one backend failing must not end the suite
        return [{**base, "threads": t, "status": "failed", "windows_per_s": None,
                 "mb_per_s": None, "reason": f"{type(exc).__name__}: {exc}"}
                for t in cfg.threads]
    if not np.array_equal(first, reference):
        return [{**base, "threads": t, "status": "failed", "windows_per_s": None,
                 "mb_per_s": None, "reason": "chunk 0 differs from zarr-python's read"}
                for t in cfg.threads]
    path = getattr(getattr(reader, "reader", None), "read_path", None)
    records = []
    for t in cfg.threads:
        rec: dict[str, Any] = {**base, "threads": t, "read_path": path}
        try:
            rec.update(chunk_read_rate(reader, threads=t, time_s=cfg.read_time_s),
                       status="ok", reason="")
        except Exception as exc:  # one thread count failing must not end the suite
            rec.update(status="failed", reason=f"{type(exc).__name__}: {exc}",
                       windows_per_s=None, mb_per_s=None)
        records.append(rec)
    return records


def run_backends_suite(cfg: Any, data_root: Path, *, bcfg: BackendsConfig | None = None
                       ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Measure every backend on every layout; return the records and the verdict.

    Parameters
    ----------
    cfg : RunConfig
        The run (``quick``, ``seed``).
    data_root : Path
        Scratch directory; the stores are removed once measured.
    bcfg : BackendsConfig, optional
        Overrides the run's defaults (:meth:`BackendsConfig.for_run`).

    Returns
    -------
    tuple
        The records (suite ``backends``) and ``{"backends_verdict": ...}``.
    """
    bcfg = bcfg or BackendsConfig.for_run(quick=bool(cfg.quick), seed=int(cfg.seed))
    root = data_root / "backends"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    with warnings.catch_warnings():
        # the stores are consolidated and hold variable-length strings: zarr warns at
        # every open that both are outside the Zarr v3 specification
        warnings.simplefilter("ignore")
        try:
            records = _sweep(bcfg, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return records, {"backends_verdict": backend_verdict(records)}


def _sweep(bcfg: BackendsConfig, root: Path) -> list[dict[str, Any]]:
    import zarr

    records: list[dict[str, Any]] = []
    fork_safe: dict[str, str] = {}
    for layout, store in _layout_stores(root, bcfg):
        dtype, codec = layout.split("+")
        reference = np.asarray(zarr.open_array(str(store / "eeg"), mode="r")
                               [:bcfg.chunk_windows])
        layout_fields = {
            "suite": "backends", "layout": layout, "variant": layout, "dtype": dtype,
            "codec": codec, "cache": "warm", "workers": 0, "n_windows": bcfg.n_windows,
            "chunk_windows": bcfg.chunk_windows,
            "store_gb": round(bcfg.n_windows * reference[0].nbytes / 1e9, 4),
            "bytes_on_disk": bytes_on_disk(store / "eeg"), "first_batch_s": None,
            "peak_rss_mb": None}
        read_files([store / "eeg"])
        for backend in bcfg.backends:
            records += [{**layout_fields, **r}
                        for r in _measure(backend, store, bcfg, reference)]
        if layout == bcfg.probe_layout:
            present = [b for b in bcfg.backends if missing_package(b) is None]
            fork_safe = {**dict.fromkeys(bcfg.backends, "skipped"),
                         **isolated_fork_probes(present, store, timeout_s=bcfg.probe_timeout_s)}
    for r in records:
        r["fork_safe"] = fork_safe.get(r["backend"])
        r["fork_probe_layout"] = bcfg.probe_layout
    return records


# --------------------------------------------------------------------------- verdict
def backend_verdict(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Which backend reads each layout fastest, and whether adopting another is justified.

    A backend other than ``eegstore`` is adopted when its best rate (any thread count)
    beats eegstore's best by more than :data:`ADOPT_MARGIN` on some layout *and* its fork
    probe was ``"ok"``.

    Returns
    -------
    dict
        ``winners`` (per layout: backend, threads, windows/s, ratio to eegstore's best),
        ``fork_safe`` (per backend), ``adopt`` (backends justified), ``line`` (one
        sentence).
    """
    ok = [r for r in records if r.get("suite") == "backends" and r.get("status") == "ok"
          and r.get("windows_per_s")]
    fork_safe = {r["backend"]: r.get("fork_safe") for r in records
                 if r.get("suite") == "backends"}
    winners: dict[str, dict[str, Any]] = {}
    faster: dict[str, list[str]] = {}
    for layout in dict.fromkeys(r["layout"] for r in ok):
        rows = [r for r in ok if r["layout"] == layout]
        best = max(rows, key=lambda r: r["windows_per_s"])
        own = max((r["windows_per_s"] for r in rows if r["backend"] == "eegstore"),
                  default=None)
        ratio = best["windows_per_s"] / own if own else None
        winners[layout] = {"backend": best["backend"], "threads": best["threads"],
                           "windows_per_s": best["windows_per_s"], "vs_eegstore": ratio}
        for backend in dict.fromkeys(r["backend"] for r in rows):
            top = max(r["windows_per_s"] for r in rows if r["backend"] == backend)
            if backend != "eegstore" and own and top > own * (1 + ADOPT_MARGIN):
                faster.setdefault(backend, []).append(layout)
    adopt = [b for b in faster if fork_safe.get(b) == "ok"]
    return {"winners": winners, "fork_safe": fork_safe, "adopt": adopt,
            "faster_than_eegstore": faster, "line": _verdict_line(winners, faster, adopt,
                                                                   fork_safe)}


def _verdict_line(winners: dict[str, dict[str, Any]], faster: dict[str, list[str]],
                  adopt: list[str], fork_safe: dict[str, str | None]) -> str:
    if not winners:
        return "No backend was measured."
    parts = []
    for layout, w in winners.items():
        vs = "" if w["backend"] == "eegstore" or not w["vs_eegstore"] \
            else f", {w['vs_eegstore']:.2f}x eegstore"
        parts.append(f"{layout}: {w['backend']} ({w['windows_per_s']:,.0f} windows/s, "
                     f"{w['threads']} thread{'s' if w['threads'] > 1 else ''}{vs})")
    line = "Fastest: " + "; ".join(parts) + ". "
    if adopt:
        return line + "Adoption justified for " + ", ".join(
            f"{b} (faster by > {ADOPT_MARGIN:.0%} on {', '.join(faster[b])}, fork probe ok)"
            for b in adopt) + "."
    unsafe = [f"{b} (fork probe: {fork_safe.get(b)})" for b in faster]
    if unsafe:
        return line + "Adoption not justified: faster backends are not fork-safe: " \
            + "; ".join(unsafe) + "."
    return line + (f"Adoption not justified: no backend beats eegstore by more than "
                   f"{ADOPT_MARGIN:.0%} on any layout.")
