"""Machine description written into every report."""

from __future__ import annotations

import importlib.metadata as md
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = ["LIBRARIES", "cpu_scaling", "machine_info"]

LIBRARIES = ("eegstore", "numpy", "zarr", "numcodecs", "xarray", "dask", "distributed", "torch",
             "h5py", "braindecode", "mne", "psutil", "matplotlib")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _disk(path: Path) -> dict[str, Any]:
    path = path.resolve()
    best = None
    for part in psutil.disk_partitions(all=False):
        mp = Path(part.mountpoint)
        if (path == mp or mp in path.parents) and (
                best is None or len(str(mp)) > len(str(best.mountpoint))):
            best = part
    usage = psutil.disk_usage(str(path))
    info: dict[str, Any] = {"path": str(path), "total_gb": round(usage.total / 1e9, 1),
                            "free_gb": round(usage.free / 1e9, 1)}
    if best is not None:
        info.update(device=best.device, fstype=best.fstype, mountpoint=best.mountpoint)
        dev = Path(best.device).name
        rot = Path(f"/sys/block/{dev}/queue/rotational")
        if rot.exists():
            info["rotational"] = rot.read_text().strip() == "1"
    return info


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def machine_info(data_dir: str | Path) -> dict[str, Any]:
    """CPU model, cores, RAM, the data disk, load and library versions.

    Parameters
    ----------
    data_dir : path
        Directory the benchmark data lives on (its disk is described).

    Returns
    -------
    dict
        JSON-serialisable description.
    """
    vm = psutil.virtual_memory()
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gb": round(vm.total / 1e9, 1),
        "ram_available_gb": round(vm.available / 1e9, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "disk": _disk(Path(data_dir)),
        "versions": {name: _version(name) for name in LIBRARIES},
    }
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        info["cuda"] = None
    return info


def _spin(loops: int) -> float:
    """Seconds a pure-Python integer loop of ``loops`` steps takes (no memory traffic)."""
    t0 = time.perf_counter()
    acc = 0
    for i in range(loops):
        acc += i * i
    return time.perf_counter() - t0


def cpu_scaling(processes: int = 2, *, loops: int = 4_000_000, rounds: int = 3
                ) -> dict[str, Any]:
    """How much more CPU work ``processes`` busy processes get done than one, right now.

    A fixed CPU-bound loop runs in one process, then in ``processes`` processes at
    once, ``rounds`` times alternately.  On dedicated cores the speed-up equals
    ``processes``; virtual cores that share physical ones (or a busy host) give
    less, and that is the most any parallel job can gain on the machine then.

    Parameters
    ----------
    processes : int
        Processes run at once.
    loops : int
        Steps of the loop (about 0.3 s on one core of a 2020s server).
    rounds : int
        Alternating measurements; medians are reported.

    Returns
    -------
    dict
        ``alone_s`` and ``together_s`` (medians; together: until the last process
        finishes), ``speedup`` = processes x alone / together, and the raw times.
    """
    ctx = multiprocessing.get_context("spawn")
    alone: list[float] = []
    together: list[float] = []
    with ctx.Pool(processes) as pool:
        pool.map(_spin, [1000] * processes, chunksize=1)  # every process started
        for _ in range(rounds):
            alone.append(pool.apply(_spin, (loops,)))
            t0 = time.perf_counter()
            pool.map(_spin, [loops] * processes, chunksize=1)
            together.append(time.perf_counter() - t0)
    a, b = statistics.median(alone), statistics.median(together)
    return {"processes": processes, "loops": loops, "alone_s": a, "together_s": b,
            "speedup": processes * a / b, "alone_all_s": alone, "together_all_s": together}
