"""Process-tree memory sampling, child-process runs and page-cache control.

Every measurement of the suite runs in its own subprocess; :class:`TreeSampler`
polls that process and all of its descendants (DataLoader workers, Dask
workers) from a thread of the parent and keeps the peak of the *summed* RSS
and of the summed PSS (proportional set size: shared pages divided between
the processes sharing them, so forked workers are not counted twice).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "ChildResult",
    "TreeSampler",
    "evict_from_page_cache",
    "files_under",
    "machine_cpu_shares",
    "read_files",
    "run_child",
    "tree_memory",
]

MB = 1024.0 * 1024.0


def _status_memory(p: psutil.Process) -> tuple[float, float]:
    """(RSS, high-water-mark RSS) of a process in bytes, from ``/proc/PID/status`` on Linux.

    The kernel keeps each process's peak RSS (``VmHWM``), so a sampler that reads it
    cannot miss a short peak; elsewhere the current RSS stands in for both.
    """
    try:
        with open(f"/proc/{p.pid}/status", "rb") as fh:
            text = fh.read()
    except OSError:
        rss = float(p.memory_info().rss)
        return rss, rss
    rss = hwm = 0.0
    for line in text.splitlines():
        if line.startswith(b"VmRSS:"):
            rss = float(line.split()[1]) * 1024.0
        elif line.startswith(b"VmHWM:"):
            hwm = float(line.split()[1]) * 1024.0
    return rss, max(hwm, rss)


def tree_memory(proc: psutil.Process, *, pss: bool = False,
                cpu: dict[int, float] | None = None,
                procs: Sequence[psutil.Process] | None = None,
                hwm: dict[int, float] | None = None) -> tuple[float, float, int]:
    """Return (summed RSS bytes, summed PSS bytes or 0, number of processes) of a tree.

    With ``cpu``, each process's CPU seconds (user + system) so far are stored under its
    pid; with ``hwm``, its peak RSS so far.  ``procs`` saves listing the tree again.
    """
    if procs is None:
        try:
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return 0.0, 0.0, 0
    rss = 0.0
    pss_total = 0.0
    n = 0
    for p in procs:
        try:
            if cpu is not None:
                t = p.cpu_times()
                cpu[p.pid] = max(cpu.get(p.pid, 0.0), t.user + t.system)
            now, peak = _status_memory(p)
            if pss:
                pss_total += getattr(p.memory_full_info(), "pss", 0.0)
            if hwm is not None:
                hwm[p.pid] = max(hwm.get(p.pid, 0.0), peak)
            rss += now
            n += 1
        except (psutil.Error, ValueError):
            continue
    return rss, pss_total, n


class TreeSampler:
    """Poll a process tree's memory in a background thread and keep the peaks.

    Two peaks are kept: the largest *summed* RSS seen in one sample (processes that
    coexisted), and the sum of each process's own high-water mark (``VmHWM``; an
    upper bound that no short peak escapes, whatever the sampling interval).  The
    sampler is cheap on purpose: it shares the machine with what it measures, so
    the process tree is listed every few samples and PSS (``smaps_rollup``) read
    rarely; listing the tree and reading PSS every 20 ms took a sizeable share of one
    of the 2 cores a 2-worker build runs on, and even every 50 ms it took CPU time
    that only a measurement using both cores pays for (a 1-worker build leaves a
    core idle for it).  Peaks between samples are not lost: ``VmHWM`` keeps them.

    Parameters
    ----------
    pid : int
        Root of the tree.
    interval_s : float
        Seconds between RSS samples.
    pss_every : int
        Read PSS (more expensive: ``smaps_rollup``) and CPU times every this many samples.
    list_every : int
        List the tree's processes again every this many samples.
    """

    def __init__(self, pid: int, *, interval_s: float = 0.1, pss_every: int = 20,
                 list_every: int = 5) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.pss_every = max(1, pss_every)
        self.list_every = max(1, list_every)
        self.peak_rss = 0.0
        self.peak_pss = 0.0
        self.max_procs = 0
        self.samples = 0
        self.cpu_by_pid: dict[int, float] = {}
        self.hwm_by_pid: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the tree (last sample of each process; a lower bound)."""
        return float(sum(self.cpu_by_pid.values()))

    @property
    def peak_hwm_sum(self) -> float:
        """Sum over the tree's processes of each one's peak RSS (bytes)."""
        return float(sum(self.hwm_by_pid.values()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        try:
            proc = psutil.Process(self.pid)
        except psutil.Error:
            return
        i = 0
        procs: list[psutil.Process] = []
        while not self._stop.is_set():
            if i % self.list_every == 0:
                try:
                    procs = [proc, *proc.children(recursive=True)]
                except psutil.Error:
                    procs = []
            slow = i % self.pss_every == 0
            rss, pss, n = tree_memory(proc, pss=slow, cpu=self.cpu_by_pid if slow else None,
                                      procs=procs, hwm=self.hwm_by_pid)
            if n == 0 and not proc.is_running():
                break
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.max_procs = max(self.max_procs, n)
            self.samples += 1
            i += 1
            self._stop.wait(self.interval_s)


@dataclass
class ChildResult:
    """What a measured child process returned, plus the parent's memory peaks."""

    returncode: int
    payload: dict[str, Any] | None
    peak_rss_mb: float
    peak_pss_mb: float
    max_procs: int
    peak_hwm_sum_mb: float
    wall_s: float
    stderr_tail: str = ""
    #: CPU seconds of the child and the descendants it waited for (``getrusage``).
    cpu_s: float = 0.0
    #: Share of the whole machine's CPU time (all cores) spent idle, waiting for I/O and
    #: stolen by the hypervisor while the child ran (``psutil.cpu_times``; Linux fields).
    machine_cpu: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def run_child(argv: Sequence[str], *, timeout_s: float, result_path: Path | None = None,
              env: dict[str, str] | None = None, cwd: str | Path | None = None) -> ChildResult:
    """Run ``argv`` as a subprocess while sampling the memory of its whole process tree.

    Parameters
    ----------
    argv : sequence of str
        The command.
    timeout_s : float
        Kill the tree after this many seconds.
    result_path : Path, optional
        JSON file the child writes its payload to (read after it exits).
    env : dict, optional
        Environment of the child (default: inherited).
    cwd : path, optional
        Working directory of the child.

    Returns
    -------
    ChildResult
        Exit code, payload, peaks of summed RSS/PSS (MB), wall time.
    """
    t0 = time.perf_counter()
    machine0 = psutil.cpu_times()
    children0 = _children_cpu_s()
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, cwd=cwd, text=True)
    sampler = TreeSampler(proc.pid)
    stderr = ""
    with sampler:
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(proc.pid)
            _, stderr = proc.communicate()
            stderr = (stderr or "") + f"\n[benchmarks] killed after {timeout_s:.0f} s"
    wall = time.perf_counter() - t0
    machine = machine_cpu_shares(machine0, psutil.cpu_times())
    # the kernel's account of the child and every descendant it waited for (its Dask or
    # DataLoader workers): exact, where the sampler's last reading of each process is not
    cpu_s = max(_children_cpu_s() - children0, sampler.cpu_s)
    payload = None
    if result_path is not None and result_path.exists():
        try:
            payload = json.loads(result_path.read_text())
        except json.JSONDecodeError:
            payload = None
    return ChildResult(returncode=proc.returncode, payload=payload,
                       peak_rss_mb=sampler.peak_rss / MB, peak_pss_mb=sampler.peak_pss / MB,
                       max_procs=sampler.max_procs, peak_hwm_sum_mb=sampler.peak_hwm_sum / MB,
                       wall_s=wall,
                       stderr_tail=(stderr or "")[-2000:], cpu_s=cpu_s,
                       machine_cpu=machine)


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's waited-for children (and theirs)."""
    try:
        import resource
    except ImportError:  # not on Windows: the sampler's lower bound stands
        return 0.0
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return float(r.ru_utime + r.ru_stime)


def machine_cpu_shares(before: Any, after: Any) -> dict[str, float]:
    """Shares of the machine's CPU time between two ``psutil.cpu_times()`` readings.

    Parameters
    ----------
    before, after : psutil scputimes
        System-wide CPU times (all cores).

    Returns
    -------
    dict
        ``idle``, ``iowait`` and ``steal`` (time the hypervisor ran something else on
        this VM's cores) as fractions of the total, for the fields this OS reports.
    """
    fields = [f for f in after._fields if f not in ("guest", "guest_nice")]  # in user
    delta = {f: max(0.0, getattr(after, f) - getattr(before, f)) for f in fields}
    total = sum(delta.values())
    if total <= 0:
        return {}
    return {f: delta[f] / total for f in ("idle", "iowait", "steal") if f in delta}


def _kill_tree(pid: int) -> None:
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def files_under(paths: Iterable[str | Path]) -> list[Path]:
    """Every regular file under the given files/directories."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file()))
    return out


def evict_from_page_cache(paths: Iterable[str | Path]) -> int:
    """Flush and drop every file under ``paths`` from the page cache; return bytes covered.

    Uses ``fsync`` (dirty pages cannot be dropped) then
    ``posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`` on each file, so a
    following read comes from the disk without needing root to drop all caches.
    """
    total = 0
    for f in files_under(paths):
        fd = os.open(f, os.O_RDONLY)
        try:
            try:
                os.fsync(fd)
            except OSError:
                pass
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            total += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return total


def read_files(paths: Iterable[str | Path], block: int = 8 * 1024 * 1024) -> tuple[int, float]:
    """Read every file under ``paths`` sequentially; return (bytes, seconds).

    Used to warm the page cache and to measure sequential read bandwidth.
    """
    buf = bytearray(block)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    for f in files_under(paths):
        with open(f, "rb", buffering=0) as fh:
            while True:
                n = fh.readinto(view)
                if not n:
                    break
                total += n
    return total, time.perf_counter() - t0


def python_argv(module: str, *args: str) -> list[str]:
    """``[sys.executable, -m, module, *args]``."""
    return [sys.executable, "-m", module, *args]
