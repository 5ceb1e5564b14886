"""Loading suite: every strategy over the same windows, warm and cold cache, 1x/2x/4x sizes.

Records carry ``strategy`` and ``variant`` (the layout or delivered dtype: ``float32``,
``float16``, ``contiguous``, ``chunk1``, ``seed``), ``workers``, ``cache``,
``bytes_on_disk`` (of the files the strategy reads), ``compression_ratio`` (delivered
float32 bytes / those bytes) and, for the peers, ``conversion_s`` and
``conversion_peak_rss_mb`` (writing their format from the store; 0 s for xbatcher,
which reads the store itself).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.datasets import (
    N_CHANNELS,
    N_TIMES,
    WINDOW_BYTES,
    LoadingData,
    bytes_on_disk,
    prepare_loading_data,
)
from benchmarks.peers import CONVERTED_PEERS, PEERS
from benchmarks.procmon import evict_from_page_cache, python_argv, read_files, run_child

__all__ = ["LoadingConfig", "Run", "convert_peers", "loading_plan", "measure_loader",
           "run_loading_suite"]

GB = 1e9


@dataclass
class LoadingConfig:
    """Parameters of the loading suite."""

    sizes_gb: list[float]
    workers: int
    batch_size: int
    chunk_windows: int
    time_limit_s: float
    cold_time_limit_s: float
    seed_time_limit_s: float
    cold_all_sizes: bool = True
    in_process_too: bool = False
    #: Measure eegstore's float16 delivery and the peers cold as well as warm.
    cold_variants: bool = True
    child_timeout_s: float = 300.0


def measure_loader(spec: dict[str, Any], *, files: list[str], cache: str,
                   timeout_s: float) -> dict[str, Any]:
    """Run one strategy in its own process after warming or evicting ``files``.

    Returns a partial record: throughput, first batch, peak RSS/PSS of the tree, status.
    """
    cache_bytes = 0
    cache_s = 0.0
    if cache == "warm":
        cache_bytes, cache_s = read_files(files)
    else:
        cache_bytes = evict_from_page_cache(files)
    with tempfile.TemporaryDirectory(prefix="eegstore-bench-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        out_path = Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec))
        res = run_child(python_argv("benchmarks.loaders", str(spec_path), str(out_path)),
                        timeout_s=timeout_s, result_path=out_path)
    payload = res.payload or {}
    status = payload.get("status", "failed")
    reason = payload.get("reason", "")
    if res.payload is None:
        tail = [ln for ln in res.stderr_tail.strip().splitlines() if ln.strip()]
        reason = (f"child exited {res.returncode} without a result: "
                  f"{tail[-1][:300] if tail else 'no message'}")
    rec: dict[str, Any] = {
        "status": status,
        "reason": reason,
        "windows_per_s": payload.get("windows_per_s"),
        "windows_per_s_total": payload.get("windows_per_s_total"),
        "first_batch_s": payload.get("first_batch_s"),
        "windows_read": payload.get("windows"),
        "epochs": payload.get("epochs"),
        "elapsed_s": payload.get("elapsed_s"),
        "baseline_rss_mb": payload.get("baseline_rss_mb"),
        "dtype": payload.get("dtype"),
        "window_shape": payload.get("window_shape"),
        "peak_rss_mb": res.peak_rss_mb,
        "peak_pss_mb": res.peak_pss_mb,
        "processes": res.max_procs,
        "wall_s": res.wall_s,
        "cpu_s": res.cpu_s,
        "cpu_per_wall": res.cpu_s / res.wall_s if res.wall_s > 0 else None,
        "cache_prep_bytes": cache_bytes,
    }
    if cache == "warm" and cache_s > 0:
        rec["warm_read_gb_per_s"] = cache_bytes / cache_s / GB
    return rec


def _base(strategy: str, variant: str, cache: str, data: LoadingData, factor: int,
          cfg: LoadingConfig) -> dict[str, Any]:
    return {"suite": "loading", "strategy": strategy, "variant": variant, "cache": cache,
            "store_gb": round(data.n_windows * WINDOW_BYTES / GB, 4), "size_factor": factor,
            "n_windows": data.n_windows, "workers": cfg.workers, "batch_size": cfg.batch_size,
            "chunk_windows": data.chunk_windows}


def _skip(rec: dict[str, Any], reason: str) -> dict[str, Any]:
    rec.update(status="skipped", reason=reason, windows_per_s=None, first_batch_s=None,
               peak_rss_mb=None, bytes_on_disk=None)
    return rec


@dataclass(frozen=True)
class Run:
    """One measurement of the plan: a strategy's variant at a worker count and cache state."""

    strategy: str
    variant: str
    cache: str
    size_index: int
    workers: int


def loading_plan(cfg: LoadingConfig, n_sizes: int) -> list[Run]:
    """The loading suite's measurements, in order.

    Every size: ``eegstore`` float32 and ``full_load`` at ``cfg.workers``, warm (and cold:
    the smallest size, every size with ``cold_all_sizes``).  The smallest size also, at
    0 and ``cfg.workers`` workers (0 only with ``in_process_too``): ``eegstore``
    float32/float16, ``full_load``, ``hdf5_tuned`` contiguous and the peers, warm and
    cold (float16 and the peers cold only with ``cold_variants``); ``hdf5_tuned`` chunk1
    and ``hdf5_seed`` warm (cold too with ``cold_all_sizes``, ``hdf5_seed`` at
    ``cfg.workers`` only); with ``in_process_too``, ``zarr_chunks`` (0 workers) and
    ``dataloader_ceiling``.
    """
    w = cfg.workers
    worker_counts = sorted({0, w}) if cfg.in_process_too else [w]
    plan: list[Run] = []
    for i in range(n_sizes):
        for cache in ("warm", "cold"):
            if cache == "cold" and i > 0 and not cfg.cold_all_sizes:
                continue
            plan.append(Run("eegstore", "float32", cache, i, w))
            if cache == "warm" or cfg.cold_all_sizes:
                plan.append(Run("full_load", "float32", cache, i, w))
    for workers in worker_counts:
        for cache in ("warm", "cold"):
            main = [("eegstore", "float32"), ("full_load", "float32")] if workers != w else []
            main += [("hdf5_tuned", "contiguous")]
            if cache == "warm" or cfg.cold_variants:
                main += [("eegstore", "float16"), *((peer, "float32") for peer in PEERS)]
            if cache == "warm" or cfg.cold_all_sizes:
                main.append(("hdf5_tuned", "chunk1"))
            if cache == "warm" or (cfg.cold_all_sizes and workers == w):
                main.append(("hdf5_seed", "seed"))
            plan += [Run(strategy, variant, cache, 0, workers) for strategy, variant in main]
    if cfg.in_process_too and w != 0:
        plan.append(Run("zarr_chunks", "raw", "warm", 0, 0))  # chunks as stored
        plan.append(Run("dataloader_ceiling", "float32", "warm", 0, w))
    return plan


def convert_peers(data: LoadingData, *, workers: int,
                  timeout_s: float) -> dict[str, dict[str, Any]]:
    """Write the peers' formats from ``data``'s store, each in its own measured process.

    Returns
    -------
    dict
        Per peer: ``path``, ``conversion_s``, ``conversion_peak_rss_mb``, ``status``,
        ``reason``.  xbatcher reads the eegstore store itself (no conversion).
    """
    out: dict[str, dict[str, Any]] = {"xbatcher": {"path": data.zarr, "conversion_s": 0.0,
                                         "conversion_peak_rss_mb": None, "status": "ok",
                                         "reason": ""}}
    for peer in CONVERTED_PEERS:
        target = Path(data.root) / peer
        with tempfile.TemporaryDirectory(prefix="eegstore-bench-") as tmp:
            spec_path = Path(tmp) / "spec.json"
            out_path = Path(tmp) / "out.json"
            spec_path.write_text(json.dumps({"peer": peer, "zarr": data.zarr,
                                             "out_dir": str(target), "workers": workers}))
            res = run_child(python_argv("benchmarks.peers", str(spec_path), str(out_path)),
                            timeout_s=timeout_s, result_path=out_path)
        payload = res.payload or {"status": "failed",
                                  "reason": f"conversion exited {res.returncode}: "
                                            f"{res.stderr_tail.strip()[-300:]}"}
        out[peer] = {"path": str(target), "conversion_s": payload.get("conversion_s"),
                     "conversion_peak_rss_mb": res.peak_rss_mb,
                     "status": payload["status"], "reason": payload.get("reason", "")}
    return out


def _spec_files(run: Run, data: LoadingData, peers: dict[str, dict[str, Any]],
                spec: dict[str, Any], rec: dict[str, Any]) -> list[str]:
    """Fill the spec's paths for ``run``; return the files its cache state applies to."""
    if run.strategy == "dataloader_ceiling":
        spec.update(n_windows=data.n_windows, window_shape=[N_CHANNELS, N_TIMES])
        return []
    if run.strategy in ("eegstore", "zarr_chunks"):
        spec["zarr"] = data.zarr
        if run.strategy == "eegstore" and run.variant != "float32":
            spec["stream_kwargs"] = {"dtype": run.variant}
        return [data.zarr]
    if run.strategy == "full_load":
        spec.update(npy=data.npy, targets=data.targets)
        return [data.npy, data.targets]
    if run.strategy in PEERS:
        conv = peers[run.strategy]
        spec["zarr" if run.strategy == "xbatcher" else run.strategy] = conv["path"]
        rec.update(conversion_s=conv["conversion_s"],
                   conversion_peak_rss_mb=conv["conversion_peak_rss_mb"])
        return [conv["path"]]
    spec["hdf5"] = data.hdf5[run.variant]
    return [data.hdf5[run.variant]]


def run_loading_suite(cfg: LoadingConfig, data_root: Path, *,
                      seed: int = 0) -> list[dict[str, Any]]:
    """Prepare the data of every size and measure every strategy; return the records."""
    records: list[dict[str, Any]] = []
    sizes = [cfg.sizes_gb[0] * f for f in (1, 2, 4)] if len(cfg.sizes_gb) == 1 else cfg.sizes_gb
    datas: list[tuple[int, LoadingData]] = []
    for i, size in enumerate(tqdm(sizes, desc="bench: writing data", leave=False)):
        factor = round(size / sizes[0]) if sizes[0] > 0 else i + 1
        datas.append((factor, prepare_loading_data(
            data_root / f"size{i}", size, chunk_windows=cfg.chunk_windows, hdf5=(i == 0),
            seed=seed)))
    peers = convert_peers(datas[0][1], workers=max(1, cfg.workers),
                          timeout_s=cfg.child_timeout_s)

    common = {"batch_size": cfg.batch_size, "seed": seed}
    for run in tqdm(loading_plan(cfg, len(datas)), desc="bench: loading", leave=False):
        factor, data = datas[run.size_index]
        rec = _base(run.strategy, run.variant, run.cache, data, factor, cfg)
        rec["workers"] = run.workers
        limit = cfg.time_limit_s if run.cache == "warm" else cfg.cold_time_limit_s
        spec: dict[str, Any] = {**common, "workers": run.workers, "strategy": run.strategy,
                                "time_limit_s": limit, "single_epoch": run.cache == "cold"}
        if run.strategy in ("eegstore", "full_load", *PEERS):
            spec["expect_dtype"] = run.variant  # the delivered dtype, checked
        files = _spec_files(run, data, peers, spec, rec)
        if run.strategy == "hdf5_seed":
            # ~4 windows/s: one batch per worker (read in parallel) is the sample
            spec["time_limit_s"] = cfg.seed_time_limit_s
            spec["max_windows"] = cfg.batch_size * max(1, run.workers)
            rec["hdf5_chunks"] = data.hdf5_chunks.get("seed")
        rec["bytes_on_disk"] = sum(bytes_on_disk(f) for f in files)
        if rec["bytes_on_disk"]:
            # delivered float32 bytes per stored byte
            rec["compression_ratio"] = data.n_windows * WINDOW_BYTES / rec["bytes_on_disk"]
        conv = peers.get(run.strategy)
        if conv is not None and conv["status"] != "ok":
            records.append(_skip(rec, f"conversion failed: {conv['reason']}"))
            continue
        rec.update(measure_loader(spec, files=files, cache=run.cache,
                                  timeout_s=spec["time_limit_s"] + cfg.child_timeout_s))
        records.append(rec)
    return records
