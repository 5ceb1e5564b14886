"""Layout suite: the store layout (dtype x codec x chunk size) chosen by measurement.

The same windows of synthetic EEG in µV (``eegstore synth``'s signal model: one
subject's recordings written as BDF and read back in µV, cut into 2 s windows of
129 channels x 200 samples) are written once per layout:

* dtype   ``float32`` or ``float16`` (the same µV values, rounded to half precision),
* codec   ``none``, ``lz4``, ``zstd-1`` (the build's default ``zstd``), ``blosc-lz4``,
  ``blosc-zstd``,
* chunk   windows per chunk (:attr:`LayoutConfig.chunk_windows`).

Each layout records its bytes on disk and their ratio to ``float32`` + ``zstd-1`` at the
same chunk size (today's default), the write time, and the warm in-process read rate of
:class:`eegstore.torch.WindowStream` (shuffled batches, no DataLoader workers, the
stream's default threads; float16 layouts also with float16 delivery when the stream
has a ``dtype=`` argument).  Float16 layouts carry the error bound of half precision on
the signal: max and RMS absolute error relative to the signal's std, overall and for
the worst channel.
"""

from __future__ import annotations

import inspect
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.datasets import N_CHANNELS, N_TIMES, WINDOW_BYTES, bytes_on_disk
from benchmarks.procmon import read_files
from eegstore.errors import ConfigError

__all__ = ["LAYOUT_CODECS", "LAYOUT_DTYPES", "SIZE_SLACK", "Float16Error", "LayoutConfig",
           "best_layout", "build_chunk_windows", "default_layout", "float16_error",
           "layout_codecs", "read_rate", "run_layout_suite", "stream_has_dtype",
           "synth_windows_uv", "write_layout"]

#: Codecs of the sweep; ``zstd-1`` is the build's default ``zstd``.
LAYOUT_CODECS = ("none", "lz4", "zstd-1", "blosc-lz4", "blosc-zstd")
LAYOUT_DTYPES = ("float32", "float16")
#: Today's default layout, the reference of the size comparison.
REFERENCE = ("float32", "zstd-1")
#: A layout qualifies when it is at most this much larger on disk than the reference.
SIZE_SLACK = 0.10
#: Build compressor names of the sweep's codecs (``lz4`` is not a build compressor).
_BUILD_NAMES = {"none": "none", "zstd-1": "zstd", "blosc-lz4": "blosc-lz4",
                "blosc-zstd": "blosc-zstd", "lz4": "lz4"}


@dataclass(frozen=True)
class LayoutConfig:
    """What the layout suite measures.

    Attributes
    ----------
    n_windows : int
        Windows written in every layout (at most what the synthetic subject holds).
    chunk_windows : tuple of int
        Windows per chunk to try (a full run: 32 and the build's choices for float32 and
        float16, :func:`build_chunk_windows`).
    dtypes, codecs : tuple of str
        Among :data:`LAYOUT_DTYPES` and :data:`LAYOUT_CODECS`.
    batch_size : int
        Windows per batch of the read.
    read_time_s : float
        Timed reading per layout and delivery, after one untimed warm-up epoch.
    synth_tasks : tuple of str or None
        Tasks synthesized for the one subject; ``None``: all of them.
    seed : int
        Seed of the synthetic signal and of the stream's shuffle.
    """

    n_windows: int = 1600
    chunk_windows: tuple[int, ...] = (32, 81, 162)
    dtypes: tuple[str, ...] = LAYOUT_DTYPES
    codecs: tuple[str, ...] = LAYOUT_CODECS
    batch_size: int = 64
    read_time_s: float = 1.5
    synth_tasks: tuple[str, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_layout_config(self)

    @classmethod
    def for_run(cls, *, quick: bool, batch_size: int, seed: int = 0) -> LayoutConfig:
        """The defaults of a full run, or of ``--quick`` (one task, one chunk size)."""
        if quick:
            return cls(n_windows=160, chunk_windows=(32,), batch_size=batch_size,
                       read_time_s=0.2, synth_tasks=("RestingState",), seed=seed)
        return cls(chunk_windows=(32, *build_chunk_windows().values()), batch_size=batch_size,
                   seed=seed)


def build_chunk_windows() -> dict[str, int]:
    """Windows per chunk ``eegstore build`` chooses for 129 x 200 windows, by dtype."""
    from eegstore.placement import chunk_windows_for

    return {d: chunk_windows_for(N_CHANNELS, N_TIMES, d) for d in LAYOUT_DTYPES}


def default_layout(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The record of the layout ``eegstore build`` writes by default (dtype, codec, chunk).

    At the measured chunk size nearest the build's; ``None`` when not measured.
    """
    from eegstore.build import DEFAULT_COMPRESSOR, DEFAULT_DTYPE

    codec = next((k for k, v in _BUILD_NAMES.items() if v == DEFAULT_COMPRESSOR), None)
    chunk = build_chunk_windows().get(DEFAULT_DTYPE, 0)
    found = [r for r in records if r.get("suite") == "layout" and r.get("dtype") == DEFAULT_DTYPE
             and r.get("codec") == codec and r.get("size_vs_reference") is not None]
    return min(found, key=lambda r: abs(r["chunk_windows"] - chunk)) if found else None


def _check_layout_config(cfg: LayoutConfig) -> None:
    if cfg.n_windows < 1 or cfg.batch_size < 1 or not cfg.chunk_windows \
            or min(cfg.chunk_windows) < 1:
        raise ConfigError(f"expected positive n_windows, batch_size and chunk_windows, got "
                          f"{cfg.n_windows}, {cfg.batch_size} and {cfg.chunk_windows}")
    bad = [d for d in cfg.dtypes if d not in LAYOUT_DTYPES] \
        + [c for c in cfg.codecs if c not in LAYOUT_CODECS]
    if bad or not cfg.dtypes or not cfg.codecs:
        raise ConfigError(f"expected dtypes among {list(LAYOUT_DTYPES)} and codecs among "
                          f"{list(LAYOUT_CODECS)}, got {bad or 'none'}")
    if cfg.read_time_s <= 0:
        raise ConfigError(f"expected read_time_s > 0, got {cfg.read_time_s}")


def layout_codecs(name: str) -> list[Any]:
    """Zarr v3 codecs of a sweep codec name in :data:`LAYOUT_CODECS`.

    The build's own codecs (:func:`eegstore.build.compressor_codecs`) where the build
    offers the codec; plain LZ4 through numcodecs otherwise.
    """
    from eegstore.build import COMPRESSORS, compressor_codecs

    if name not in LAYOUT_CODECS:
        raise ConfigError(f"expected a codec in {list(LAYOUT_CODECS)}, got {name!r}")
    build_name = _BUILD_NAMES[name]
    if build_name in COMPRESSORS:
        return list(compressor_codecs(build_name))
    from zarr.codecs.numcodecs import LZ4

    return [LZ4(acceleration=1)]


# --------------------------------------------------------------------------- data
def synth_windows_uv(root: Path, n_windows: int, *, tasks: Sequence[str] | None = None,
                     seed: int = 0) -> np.ndarray:
    """Windows of one synthetic subject in µV, shape ``(n, 129, 200)`` float32.

    ``eegstore synth`` writes the subject's recordings as BDF (resolution 0.001 µV);
    they are read back in µV and cut into consecutive, non-overlapping windows of
    200 samples, recording after recording, until ``n_windows`` (or the subject's
    last window).
    """
    import mne

    from eegstore.synth import synthesize

    report = synthesize(root, subjects=1, tasks=None if tasks is None else list(tasks),
                        seed=seed, progress=False)
    out = np.empty((n_windows, N_CHANNELS, N_TIMES), dtype=np.float32)
    n = 0
    for path in report.files:
        if n == n_windows:
            break
        raw = mne.io.read_raw_bdf(str(path), preload=True, verbose="error")
        x = raw.get_data(units="uV").astype(np.float32)
        k = min(n_windows - n, x.shape[1] // N_TIMES)
        windows = x[:, :k * N_TIMES].reshape(N_CHANNELS, k, N_TIMES)
        out[n:n + k] = windows.transpose(1, 0, 2)
        n += k
    return out[:n]


@dataclass(frozen=True)
class Float16Error:
    """Error of float16 against the float32 original, relative to the signal's std.

    Attributes
    ----------
    std_uv : float
        Standard deviation of the whole signal (µV).
    max_abs_uv, rms_uv : float
        Largest and root-mean-square absolute error (µV).
    max_rel_std, rms_rel_std : float
        The same divided by ``std_uv``.
    channel_max_rel_std, channel_rms_rel_std : float
        Largest over channels of the channel's max (RMS) error divided by the channel's
        std; channels with zero std (a flat reference) are left out.
    """

    std_uv: float
    max_abs_uv: float
    rms_uv: float
    max_rel_std: float
    rms_rel_std: float
    channel_max_rel_std: float
    channel_rms_rel_std: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def float16_error(x: np.ndarray, *, channel_axis: int = -2) -> Float16Error:
    """The error of storing float32 ``x`` as float16.

    Parameters
    ----------
    x : numpy.ndarray
        Float32 signal, e.g. windows ``(window, channel, time)``.
    channel_axis : int
        Axis of the channels.

    Returns
    -------
    Float16Error
        Max and RMS absolute error, also relative to the signal's std (overall and worst
        channel).
    """
    x32 = np.asarray(x, dtype=np.float32)
    x64 = x32.astype(np.float64)
    err = np.abs(x32.astype(np.float16).astype(np.float64) - x64)
    other = tuple(a for a in range(x32.ndim) if a != channel_axis % x32.ndim)
    ch_std = x64.std(axis=other)
    ch_max = err.max(axis=other)
    ch_rms = np.sqrt(np.mean(err**2, axis=other))
    live = ch_std > 0
    std = float(x64.std())
    max_abs, rms = float(err.max()), float(np.sqrt(np.mean(err**2)))

    def rel(v: float, s: float) -> float:
        return v / s if s > 0 else 0.0

    return Float16Error(
        std_uv=std, max_abs_uv=max_abs, rms_uv=rms, max_rel_std=rel(max_abs, std),
        rms_rel_std=rel(rms, std),
        channel_max_rel_std=float((ch_max[live] / ch_std[live]).max()) if live.any() else 0.0,
        channel_rms_rel_std=float((ch_rms[live] / ch_std[live]).max()) if live.any() else 0.0)


def _template(root: Path, n_windows: int, chunk_windows: int, seed: int) -> Path:
    """A schema-conformant store of ``n_windows`` windows, its ``eeg`` left out."""
    from eegstore.testing import make_store

    path = make_store(root, n_windows=n_windows, n_channels=N_CHANNELS, n_times=N_TIMES,
                      chunk_windows=chunk_windows, n_subjects=max(1, min(64, n_windows // 16)),
                      seed=seed, compressor="none")
    return path


def write_layout(template: Path, out: Path, x: np.ndarray, *, dtype: str,
                 compressors: Sequence[Any], units: str | None = "uV") -> float:
    """Copy ``template`` without its ``eeg`` and write ``x`` as ``eeg`` in the given layout.

    Parameters
    ----------
    template : Path
        A store of ``len(x)`` windows; its chunking and coordinates are kept.
    out : Path
        The new store (replaced).
    x : numpy.ndarray
        Windows ``(window, channel, time)``; written chunk by chunk.
    dtype : str
        Stored dtype.
    compressors : sequence
        Zarr v3 codecs (empty: uncompressed).
    units : str, optional
        Physical unit of ``x``, recorded in the array's attrs (None: the template's).

    Returns
    -------
    float
        Seconds spent writing ``eeg`` (encoding, writing, fsync of its files).
    """
    import zarr

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(template, out, ignore=lambda d, names: ["eeg"] if Path(d) == template
                    else [])
    src: Any = zarr.open_array(str(template / "eeg"), mode="r")
    if src.shape != x.shape:
        raise ConfigError(f"expected windows of shape {src.shape}, got {x.shape}; "
                          "make the template from the same windows")
    group: Any = zarr.open_group(str(out), mode="r+")
    t0 = time.perf_counter()
    dst = group.create_array("eeg", shape=src.shape, dtype=dtype, chunks=src.chunks,
                             compressors=list(compressors) or None,
                             dimension_names=src.metadata.dimension_names,
                             attributes={**dict(src.attrs),
                                         **({} if units is None else {"units": units})},
                             fill_value=0)
    step = src.chunks[0]
    for start in range(0, x.shape[0], step):
        dst[start:start + step] = np.asarray(x[start:start + step], dtype=dtype)
    for f in (out / "eeg").rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    elapsed = time.perf_counter() - t0
    zarr.consolidate_metadata(str(out))
    return elapsed


# --------------------------------------------------------------------------- reading
def stream_has_dtype() -> bool:
    """Whether :class:`eegstore.torch.WindowStream` takes a delivery ``dtype=``."""
    from eegstore.torch import WindowStream

    return "dtype" in inspect.signature(WindowStream).parameters


def read_rate(store: Path, *, batch_size: int, time_s: float, seed: int = 0,
              dtype: str | None = None) -> dict[str, Any]:
    """Warm in-process read rate of a store through ``WindowStream`` (shuffle on).

    One untimed epoch first (page cache, imports); then whole epochs until ``time_s``
    of timed reading, each epoch's first batch excluded (as in the loading suite).

    Returns
    -------
    dict
        ``windows_per_s``, ``first_batch_s`` (from the stream's creation), ``epochs``,
        ``windows_read``, ``delivered_dtype``.
    """
    from eegstore.torch import WindowStream

    read_files([store])
    kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
    t0 = time.perf_counter()
    stream = WindowStream(str(store), batch_size, shuffle=True, seed=seed, **kwargs)
    first_batch_s: float | None = None
    delivered = None
    timed = 0.0
    windows = 0
    epoch = 0
    while epoch == 0 or timed < time_s:
        stream.set_epoch(epoch)
        prev = time.perf_counter()
        for i, (x, _, _) in enumerate(stream):
            now = time.perf_counter()
            if first_batch_s is None:
                first_batch_s = now - t0
                delivered = str(x.dtype).removeprefix("torch.")
            if epoch > 0 and i > 0:
                timed += now - prev
                windows += int(x.shape[0])
            prev = now
        epoch += 1
        if epoch > 1 and windows == 0:  # one batch per epoch: nothing to time
            break
    return {"windows_per_s": windows / timed if timed > 0 else None,
            "first_batch_s": first_batch_s, "epochs": epoch, "windows_read": windows,
            "delivered_dtype": delivered}


# --------------------------------------------------------------------------- suite
def _mark_sizes(records: list[dict[str, Any]]) -> None:
    """Add ``size_vs_reference`` and ``within_size_target`` (same chunk size's reference)."""
    ref = {r["chunk_windows"]: r["bytes_on_disk"] for r in records
           if (r["dtype"], r["codec"]) == REFERENCE and r.get("bytes_on_disk")}
    for r in records:
        base = ref.get(r["chunk_windows"])
        if base and r.get("bytes_on_disk"):
            r["size_vs_reference"] = r["bytes_on_disk"] / base
            r["within_size_target"] = r["size_vs_reference"] <= 1.0 + SIZE_SLACK
        else:
            r["size_vs_reference"] = r["within_size_target"] = None


def best_layout(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest layout (any delivery) within the size target, or None."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("within_size_target")
          and r.get("windows_per_s")]
    if not ok:
        return None
    r = max(ok, key=lambda r: r["windows_per_s"])
    return {k: r.get(k) for k in ("dtype", "codec", "chunk_windows", "delivery",
                                  "windows_per_s", "size_vs_reference")}


def run_layout_suite(cfg: Any, data_root: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Write and read every layout; return the records and ``{"best_layout": ...}``.

    Parameters
    ----------
    cfg : RunConfig
        The run (``quick``, ``batch_size``, ``seed``).
    data_root : Path
        Scratch directory; every layout's store is removed once measured.
    """
    lcfg = LayoutConfig.for_run(quick=bool(cfg.quick), batch_size=int(cfg.batch_size),
                                seed=int(cfg.seed))
    with warnings.catch_warnings():
        # lz4 is a numcodecs codec, and the stores are consolidated: zarr says both are
        # outside the Zarr v3 specification at every array opened
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not")
        return _sweep(lcfg, data_root)


def _sweep(lcfg: LayoutConfig, data_root: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    root = data_root / "layout"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    x = synth_windows_uv(root / "synth", lcfg.n_windows, tasks=lcfg.synth_tasks, seed=lcfg.seed)
    shutil.rmtree(root / "synth")
    err = float16_error(x)
    f16_delivery = stream_has_dtype()
    base: dict[str, Any] = {"suite": "layout", "strategy": "eegstore", "cache": "warm",
                            "workers": 0, "batch_size": lcfg.batch_size, "peak_rss_mb": None,
                            "store_gb": round(x.shape[0] * WINDOW_BYTES / 1e9, 4),
                            "n_windows": int(x.shape[0]), "units": "uV",
                            "signal_std_uv": err.std_uv}
    records: list[dict[str, Any]] = []
    for chunk in lcfg.chunk_windows:
        template = _template(root / f"template-{chunk}", x.shape[0], chunk, lcfg.seed)
        for dtype in lcfg.dtypes:
            for codec in lcfg.codecs:
                store = root / f"{dtype}-{codec}-{chunk}.zarr"
                layout = {**base, "dtype": dtype, "codec": codec, "chunk_windows": chunk,
                          **_write_one(template, store, x, dtype, codec),
                          **_error_fields(err if dtype == "float16" else None)}
                deliveries = ["float32"] + (["float16"] if dtype == "float16" and f16_delivery
                                            else [])
                records += [{**layout, **_read_one(store, lcfg, delivery)}
                            for delivery in deliveries]
                shutil.rmtree(store)
        shutil.rmtree(template)
    _mark_sizes(records)
    return records, {"best_layout": best_layout(records), "float16_error": err.to_dict(),
                     "float16_delivery": f16_delivery}


def _write_one(template: Path, store: Path, x: np.ndarray, dtype: str, codec: str
               ) -> dict[str, Any]:
    """Write one layout; its bytes on disk, write time and compression ratio."""
    write_s = write_layout(template, store, x, dtype=dtype, compressors=layout_codecs(codec))
    n_bytes = bytes_on_disk(store / "eeg")
    return {"bytes_on_disk": n_bytes, "write_s": write_s,
            "compression_ratio": x.shape[0] * WINDOW_BYTES / n_bytes}


def _read_one(store: Path, lcfg: LayoutConfig, delivery: str) -> dict[str, Any]:
    """The read fields of one layout and delivery (status ``failed`` with the reason)."""
    rec: dict[str, Any] = {"delivery": delivery, "variant": f"{store.stem}/{delivery}"}
    try:
        rec.update(read_rate(store, batch_size=lcfg.batch_size, time_s=lcfg.read_time_s,
                             seed=lcfg.seed, dtype=None if delivery == "float32" else delivery),
                   status="ok", reason="")
    except Exception as exc:  # one layout failing must not end the sweep
        rec.update(status="failed", reason=f"{type(exc).__name__}: {exc}", windows_per_s=None,
                   first_batch_s=None)
    return rec


def _error_fields(err: Float16Error | None) -> dict[str, float]:
    """The float16 error fields of a record (zeros for a float32 layout: it is exact)."""
    d = err.to_dict() if err is not None else dict.fromkeys(
        ("max_abs_uv", "rms_uv", "max_rel_std", "rms_rel_std", "channel_max_rel_std",
         "channel_rms_rel_std"), 0.0)
    return {f"error_{k}": v for k, v in d.items() if k != "std_uv"}
