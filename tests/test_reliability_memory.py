"""Memory pressure: the trainer's memory guard exits with its code and resumes; a stream's
RAM budget holds (RSS growth measured in a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from eegstore.testing import make_store
from trainers.checkpoint import load_checkpoint
from trainers.memory import EXIT_MEMORY

PY = sys.executable
pytestmark = pytest.mark.timeout(300)


def _trainers(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "trainers", *args], capture_output=True, text=True,
                          timeout=240)


def test_memory_guard_exits_with_its_code_and_resume_finishes(tmp_path):
    store = make_store(tmp_path / "m.zarr", n_windows=96, n_channels=4, n_times=50,
                       chunk_windows=8, n_subjects=12, seed=4)
    run = tmp_path / "run"
    fit = ["fit", "--store", str(store), "--trainer", "challenge1", "--model", "tinycnn",
           "--epochs", "2", "--batch-size", "16", "--out", str(run), "--no-progress"]
    stopped = _trainers(*fit, "--max-rss-mb", "1", "--memory-check-every", "3")
    assert stopped.returncode == EXIT_MEMORY == 75, stopped.stderr[-3000:]
    lines = [ln for ln in stopped.stderr.splitlines() if ln.startswith("python -m trainers")]
    assert len(lines) == 1 and "memory guard" in lines[0] and "--resume" in lines[0]
    assert "Traceback" not in stopped.stderr
    ckpt = load_checkpoint(run / "checkpoint.pt")  # weights_only=True
    assert ckpt["complete"] is False and not (run / "weights.pt").exists()
    resumed = _trainers("fit", "--out", str(run), "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and len(metrics["history"]) == 2
    assert (run / "weights.pt").exists() and load_checkpoint(run / "checkpoint.pt")["complete"]


_RSS_PROBE = r"""
import gc, json, sys
import psutil
from eegstore.torch import WindowStream

store, budget = sys.argv[1], int(sys.argv[2])
proc = psutil.Process()
stream = WindowStream(store, batch_size=32, shuffle=True, seed=0, ram_budget=budget)
for _ in zip(range(2), stream):  # warm up the imports and allocator (one iterator)
    pass
gc.collect()
base = proc.memory_info().rss
peak, n = base, 0
for epoch in range(2):
    stream.set_epoch(epoch)
    for x, y, index in stream:
        n += len(index)
        peak = max(peak, proc.memory_info().rss)
print(json.dumps({"base": base, "peak": peak, "n": n,
                  "cache_chunks": stream.cache_chunks(0)}))
"""


def test_stream_ram_budget_bounds_rss_growth(tmp_path):
    # 2560 windows x 64 ch x 200 samples float32 = 131 MB on disk (chunks of 3.3 MB)
    store = make_store(tmp_path / "big.zarr", n_windows=2560, n_channels=64, n_times=200,
                       chunk_windows=64, n_subjects=8, seed=5)
    budget = 24 * 2**20
    script = tmp_path / "probe.py"
    script.write_text(_RSS_PROBE)
    out = subprocess.run([PY, str(script), str(store), str(budget)], capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    growth = r["peak"] - r["base"]
    print(f"RSS growth {growth / 2**20:.1f} MiB with ram_budget {budget / 2**20:.0f} MiB "
          f"over a {2560 * 64 * 200 * 4 / 2**20:.0f} MiB store "
          f"({r['cache_chunks']} cached chunks)")
    assert r["n"] == 2 * 2560
    assert growth <= budget, f"RSS grew by {growth / 2**20:.1f} MiB, budget {budget / 2**20} MiB"
