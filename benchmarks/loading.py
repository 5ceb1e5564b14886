"""Loading suite: every strategy over the same windows, warm and cold cache, 1x/2x/4x sizes."""

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
from benchmarks.procmon import evict_from_page_cache, python_argv, read_files, run_child

__all__ = ["LoadingConfig", "measure_loader", "run_loading_suite"]

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


def run_loading_suite(cfg: LoadingConfig, data_root: Path, *, seed: int = 0) -> list[dict]:
    """Prepare the data of every size and measure every strategy; return the records."""
    records: list[dict] = []
    sizes = [cfg.sizes_gb[0] * f for f in (1, 2, 4)] if len(cfg.sizes_gb) == 1 else cfg.sizes_gb
    datas: list[tuple[int, LoadingData]] = []
    for i, size in enumerate(tqdm(sizes, desc="bench: writing data", leave=False)):
        factor = round(size / sizes[0]) if sizes[0] > 0 else i + 1
        datas.append((factor, prepare_loading_data(
            data_root / f"size{i}", size, chunk_windows=cfg.chunk_windows, hdf5=(i == 0),
            seed=seed)))

    plan: list[tuple[str, str, str, LoadingData, int, int]] = []
    w = cfg.workers
    for i, (factor, data) in enumerate(datas):
        for cache in ("warm", "cold"):
            if cache == "cold" and i > 0 and not cfg.cold_all_sizes:
                continue
            plan.append(("eegstore", "zarr", cache, data, factor, w))
            if cache == "warm" or cfg.cold_all_sizes:  # full_load cold = a warm run + its read
                plan.append(("full_load", "numpy", cache, data, factor, w))
    factor0, data0 = datas[0]
    for cache in ("warm", "cold"):
        for strategy, variant in (("hdf5_tuned", "contiguous"), ("hdf5_tuned", "chunk1"),
                                  ("hdf5_seed", "seed")):
            if cache == "cold" and variant != "contiguous" and not cfg.cold_all_sizes:
                continue
            plan.append((strategy, variant, cache, data0, factor0, w))
    if cfg.in_process_too and w != 0:
        # the loaders' own speed, without DataLoader worker processes and their IPC
        for strategy, variant in (("eegstore", "zarr"), ("full_load", "numpy"),
                                  ("hdf5_tuned", "contiguous")):
            plan.append((strategy, variant, "warm", data0, factor0, 0))
        plan.append(("zarr_chunks", "zarr", "warm", data0, factor0, 0))
        plan.append(("dataloader_ceiling", "ram", "warm", data0, factor0, w))

    common = {"batch_size": cfg.batch_size, "seed": seed}
    for strategy, variant, cache, data, factor, workers in tqdm(plan, desc="bench: loading",
                                                                leave=False):
        rec = _base(strategy, variant, cache, data, factor, cfg)
        rec["workers"] = workers
        limit = cfg.time_limit_s if cache == "warm" else cfg.cold_time_limit_s
        spec: dict[str, Any] = {**common, "workers": workers, "strategy": strategy,
                                "time_limit_s": limit,
                                "single_epoch": cache == "cold"}
        if strategy == "dataloader_ceiling":
            files = []
            spec.update(n_windows=data.n_windows, window_shape=[N_CHANNELS, N_TIMES])
        elif strategy == "zarr_chunks":
            files = [data.zarr]
            spec["zarr"] = data.zarr
        elif strategy == "eegstore":
            files = [data.zarr]
            spec["zarr"] = data.zarr
        elif strategy == "full_load":
            files = [data.npy, data.targets]
            spec.update(npy=data.npy, targets=data.targets)
        else:
            files = [data.hdf5[variant]]
            spec["hdf5"] = data.hdf5[variant]
            if strategy == "hdf5_seed":
                # ~4 windows/s: one batch per worker (read in parallel) is the sample
                spec["time_limit_s"] = cfg.seed_time_limit_s
                spec["max_windows"] = cfg.batch_size * max(1, workers)
                rec["hdf5_chunks"] = data.hdf5_chunks.get("seed")
        rec["bytes_on_disk"] = sum(bytes_on_disk(f) for f in files)
        rec.update(measure_loader(spec, files=files, cache=cache,
                                  timeout_s=spec["time_limit_s"] + cfg.child_timeout_s))
        records.append(rec)
    return records
