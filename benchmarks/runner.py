"""Run the suites and write results.json, results.md and the plots."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.datasets import (
    N_CHANNELS,
    N_TIMES,
    prepare_loading_data,
    product_chunk_windows,
)
from benchmarks.loading import LoadingConfig, run_loading_suite
from benchmarks.machine import machine_info
from benchmarks.procmon import evict_from_page_cache, read_files
from benchmarks.report import REQUIRED_FIELDS, evaluate_targets, plot_results, write_markdown
from eegstore.errors import ConfigError

__all__ = ["SUITES", "RunConfig", "run_benchmarks"]

SUITES = ("loading", "build", "codec", "layout", "gpu", "backends")
DEFAULT_SIZES_GB = (0.5, 1.0, 2.0)
QUICK_SIZES_GB = (0.004, 0.008, 0.016)


@dataclass
class RunConfig:
    """Everything a run depends on; ``quick`` picks tiny sizes and short limits."""

    out: Path
    quick: bool = False
    sizes_gb: list[float] = field(default_factory=lambda: list(DEFAULT_SIZES_GB))
    workers: int = 2
    batch_size: int = 64
    chunk_windows: int = 64
    time_limit_s: float = 6.0
    cold_time_limit_s: float = 30.0
    seed_time_limit_s: float = 20.0
    suites: list[str] = field(default_factory=lambda: list(SUITES))
    data_dir: Path | None = None
    keep_data: bool = False
    synth_subjects: int = 60
    #: Tasks of the synthetic release the build suite builds; ``None``: all of them, as in a
    #: real release (and the challenge2 recipe's default).
    build_tasks: list[str] | None = None
    #: Alternating 1-worker / 2-worker build pairs; the speed-up is the median pair's ratio.
    build_repeats: int = 5
    #: Steps of the CPU-bound loop timed in 1 and 2 processes beside each build pair.
    cpu_scaling_loops: int = 8_000_000
    codec_windows: int = 1000
    seed: int = 0

    @classmethod
    def make(cls, out: Path, *, quick: bool, sizes_gb: list[float] | None = None,
             workers: int | None = None, suites: list[str] | None = None,
             data_dir: Path | None = None, keep_data: bool = False,
             build_tasks: list[str] | None = None) -> RunConfig:
        """Defaults of a full or quick run, overridden by the given options."""
        if quick:
            cfg = cls(out=out, quick=True, sizes_gb=list(QUICK_SIZES_GB), workers=1,
                      batch_size=8, chunk_windows=8, time_limit_s=0.6, cold_time_limit_s=3.0,
                      seed_time_limit_s=0.6, synth_subjects=1, build_tasks=["RestingState"],
                      build_repeats=1, cpu_scaling_loops=500_000,
                      codec_windows=64)
        else:
            cfg = cls(out=out, chunk_windows=product_chunk_windows())
        if sizes_gb:
            if any(s <= 0 for s in sizes_gb):
                raise ConfigError(f"expected positive sizes in GB, got {sizes_gb}")
            cfg.sizes_gb = ([sizes_gb[0], 2 * sizes_gb[0], 4 * sizes_gb[0]]
                            if len(sizes_gb) == 1 else sorted(sizes_gb))
        if workers is not None:
            if workers < 0:
                raise ConfigError(f"expected --workers >= 0, got {workers}")
            cfg.workers = workers
        if suites:
            bad = [s for s in suites if s not in SUITES]
            if bad:
                raise ConfigError(f"expected suites among {list(SUITES)}, got {bad}")
            cfg.suites = list(suites)
        if build_tasks:
            cfg.build_tasks = list(build_tasks)
        cfg.data_dir = data_dir
        cfg.keep_data = keep_data
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        d["window_shape"] = [N_CHANNELS, N_TIMES]
        return d


def _disk_bandwidth(cfg: RunConfig, data_root: Path) -> dict[str, float]:
    """Measured sequential read of the smallest size's .npy: cold (evicted) and page cache."""
    data = prepare_loading_data(data_root / "size0", cfg.sizes_gb[0],
                                chunk_windows=cfg.chunk_windows, hdf5=True, seed=cfg.seed)
    evict_from_page_cache([data.npy])
    n, s = read_files([data.npy])
    cold = n / s / 1e9 if s > 0 else 0.0
    n, s = read_files([data.npy])
    warm = n / s / 1e9 if s > 0 else 0.0
    return {"disk_read_cold_gb_per_s": round(cold, 3), "page_cache_read_gb_per_s": round(warm, 3)}


def _normalise(rec: dict[str, Any]) -> dict[str, Any]:
    for k in REQUIRED_FIELDS:
        rec.setdefault(k, None)
    for k, v in list(rec.items()):
        if isinstance(v, float):
            rec[k] = round(v, 4)
    return rec


def run_benchmarks(cfg: RunConfig) -> dict[str, Any]:
    """Run the configured suites and write the report files into ``cfg.out``.

    Returns
    -------
    dict
        The content of results.json.
    """
    cfg.out.mkdir(parents=True, exist_ok=True)
    tmp_root = None
    if cfg.data_dir is None:
        tmp_root = Path(tempfile.mkdtemp(prefix="eegstore-bench-data-",
                                         dir=os.environ.get("EEGSTORE_BENCH_TMP")))
        data_root = tmp_root
    else:
        data_root = cfg.data_dir
        data_root.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.UTC)
    t0 = time.perf_counter()
    machine = machine_info(data_root)
    records: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    try:
        if "loading" in cfg.suites:
            machine.update(_disk_bandwidth(cfg, data_root))
            lcfg = LoadingConfig(sizes_gb=cfg.sizes_gb, workers=cfg.workers,
                                 batch_size=cfg.batch_size, chunk_windows=cfg.chunk_windows,
                                 time_limit_s=cfg.time_limit_s,
                                 cold_time_limit_s=cfg.cold_time_limit_s,
                                 seed_time_limit_s=cfg.seed_time_limit_s,
                                 cold_all_sizes=not cfg.quick, in_process_too=not cfg.quick,
                                 cold_variants=not cfg.quick)
            records += run_loading_suite(lcfg, data_root, seed=cfg.seed)
        if "build" in cfg.suites or "codec" in cfg.suites:
            from benchmarks.build import run_build_suite

            recs, info = run_build_suite(cfg, data_root)
            records += recs
            extra.update(info)
        if "layout" in cfg.suites:
            from benchmarks.layout import run_layout_suite

            recs, info = run_layout_suite(cfg, data_root)
            records += recs
            extra.update(info)
        if "gpu" in cfg.suites:
            from benchmarks.gpu import run_gpu_suite

            records += run_gpu_suite(cfg, data_root)
        if "backends" in cfg.suites:
            from benchmarks.backends import run_backends_suite

            recs, info = run_backends_suite(cfg, data_root)
            records += recs
            extra.update(info)
    finally:
        if tmp_root is not None and not cfg.keep_data:
            shutil.rmtree(tmp_root, ignore_errors=True)
    records = [_normalise(r) for r in records]
    finished = _dt.datetime.now(_dt.UTC)
    result: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 1),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "machine": machine,
        "config": cfg.to_dict(),
        "records": records,
        "targets": evaluate_targets(records, workers=cfg.workers,
                                    disk_read_gb_per_s=machine.get("disk_read_cold_gb_per_s")),
        **extra,
    }
    (cfg.out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    write_markdown(cfg.out / "results.md", result)
    plot_results(cfg.out, records, workers=cfg.workers)
    return result
