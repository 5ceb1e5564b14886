"""Machine description written into every report."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path
from typing import Any

import psutil

__all__ = ["LIBRARIES", "machine_info"]

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
