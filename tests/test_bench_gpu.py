"""Tests of the GPU feed suite that need no GPU: the skip record, the timing loop, the feeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.gpu import (
    FeedSpec,
    StepTimes,
    feed_specs,
    measure_feeds,
    run_feed,
    time_free_run,
    time_steps,
)
from eegstore.errors import ConfigError
from eegstore.testing import make_store

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip record is written without CUDA")
def test_gpu_suite_without_cuda_writes_a_skip_record_and_exits_0(tmp_path: Path) -> None:
    env = dict(os.environ, EEGSTORE_BENCH_TMP=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--suites", "gpu",
                           "--out", str(tmp_path / "gpu")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu" / "results.json").read_text())
    (rec,) = result["records"]
    assert rec["suite"] == "gpu" and rec["status"] == "skipped"
    assert rec["reason"] == "no CUDA device" and rec["windows_per_s"] is None
    assert rec["torch_version"] == torch.__version__
    assert "skipped (no CUDA device)" in (tmp_path / "gpu" / "results.md").read_text()
    # nothing was synthesized for a suite that cannot run
    assert not any(p.name.startswith("eegstore-bench-data-") for p in tmp_path.iterdir())


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _fake_batches(clock: _Clock, *, wait_s: float, batch: int, per_epoch: int
                  ) -> Iterator[tuple[Any, Any, bool]]:
    i = 0
    while True:
        clock.t += wait_s
        yield np.zeros((batch, 2)), np.zeros(batch), i % per_epoch == 0
        i += 1


def test_time_steps_counts_wait_and_step_time_after_warmup_and_epoch_starts() -> None:
    clock = _Clock()
    synced: list[float] = []

    def step(x: Any, y: Any) -> None:
        clock.t += 0.03

    times = time_steps(_fake_batches(clock, wait_s=0.01, batch=8, per_epoch=5), step, steps=6,
                       warmup=2, sync=lambda: synced.append(clock.t), clock=clock,
                       start=99.0)
    # batches 0-1 warm up; batch 5 opens the second epoch: 9 steps for 6 counted
    assert times.steps == 6 and times.skipped == 3 and times.windows == 48
    assert times.wait_s == pytest.approx(0.06) and times.total_s == pytest.approx(0.24)
    assert times.data_wait_fraction == pytest.approx(0.25)
    assert times.windows_per_s == pytest.approx(200.0)
    assert times.first_batch_s == pytest.approx(1.01)
    assert len(synced) == 2 * 9  # after the batch and after the step, every step
    summary = times.summary()
    assert summary["step_ms"] == pytest.approx(40.0) and summary["skipped_steps"] == 3


def test_time_steps_stops_at_the_time_limit() -> None:
    clock = _Clock()
    times = time_steps(_fake_batches(clock, wait_s=1.0, batch=4, per_epoch=1000),
                       lambda x, y: None, steps=100, warmup=0, clock=clock, time_limit_s=3.5)
    assert times.steps == 3  # 1 s per batch after the first, which opens the epoch
    assert StepTimes(0, 0, 0, 0.0, 0.0, 0.0).windows_per_s is None


def test_time_free_run_counts_every_batch_and_syncs_only_at_the_ends() -> None:
    clock = _Clock()
    synced: list[float] = []

    def step(x: Any, y: Any) -> None:
        clock.t += 0.03

    wps = time_free_run(_fake_batches(clock, wait_s=0.01, batch=8, per_epoch=2), step,
                        steps=3, sync=lambda: synced.append(clock.t), clock=clock)
    assert wps == pytest.approx(24 / 0.12)  # epoch starts included
    assert synced == [100.0, pytest.approx(100.12)]


@pytest.fixture(scope="module")
def feed_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("feed")
    # 8 channels: EEGNeX steps on 129 channels take seconds on a CPU
    store = make_store(root / "s.zarr", n_windows=24, n_channels=8, n_times=200,
                       chunk_windows=8)
    rng = np.random.default_rng(0)
    np.save(root / "x.npy", rng.standard_normal((12, 8, 200), dtype=np.float32))
    np.save(root / "y.npy", rng.standard_normal(12).astype(np.float32))
    return {"store": str(store), "npy": str(root / "x.npy"), "targets": str(root / "y.npy")}


@pytest.mark.parametrize(("mode", "delivery"), [("gpu_tensor", "float16"),
                                                ("stream", "float32")])
def test_feed_trains_eegnex_on_cpu(feed_data: dict[str, str], mode: str, delivery: str) -> None:
    # the suite itself needs CUDA; its training loop and feeds run here on the CPU
    spec = FeedSpec(mode=mode, delivery=delivery, batch_size=4, steps=1, warmup=1,
                    device="cpu", pinned=False, n_chans=8, store=feed_data["store"],
                    npy=feed_data["npy"], targets=feed_data["targets"])
    out = run_feed(spec)
    assert out["status"] == "ok" and out["steps"] == 1 and out["device"] == "cpu"
    assert out["windows_timed"] == 4 and out["windows_per_s"] > 0
    assert 0 < out["data_wait_fraction"] < 1 and out["first_batch_s"] > 0
    assert out["overlapped_windows_per_s"] > 0


def test_feed_specs_cover_ceiling_threads_workers_and_deliveries() -> None:
    specs = feed_specs(workers=2, cores=16, batch_size=64, quick=False, stream_f16=True,
                       store="s.zarr", store_f16="h.zarr", npy="x.npy", targets="y.npy")
    assert [s.name for s in specs] == [
        "gpu_tensor/float32", "gpu_tensor/float16",
        "stream_threads/float32", "stream_threads/float16", "stream_threads/float32/pageable",
        "stream_workers2/float32", "stream_workers2/float16",
        "stream_workers8/float32", "stream_workers8/float16"]
    assert all(s.store == "h.zarr" for s in specs if s.mode == "stream"
               and s.delivery == "float16")
    assert all(s.steps == 300 and s.device == "cuda" for s in specs)
    small = feed_specs(workers=2, cores=2, batch_size=8, quick=True, stream_f16=False,
                       store="s.zarr", store_f16="", npy="x.npy", targets="y.npy")
    assert [s.name for s in small] == [
        "gpu_tensor/float32", "gpu_tensor/float16", "stream_threads/float32",
        "stream_threads/float32/pageable", "stream_workers1/float32",
        "stream_workers2/float32"]
    assert FeedSpec.from_dict(specs[3].to_dict()) == specs[3]


def test_feed_spec_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="expected mode in"):
        FeedSpec(mode="disk", npy="x")
    with pytest.raises(ConfigError, match="expected delivery in"):
        FeedSpec(mode="stream", delivery="bfloat16", store="s")
    with pytest.raises(ConfigError, match="set store"):
        FeedSpec(mode="stream")


def test_measure_feeds_runs_each_feed_in_a_child_within_the_budget(
        feed_data: dict[str, str], tmp_path: Path) -> None:
    spec = FeedSpec(mode="stream", batch_size=4, steps=1, warmup=0, device="cpu",
                    pinned=False, n_chans=8, store=feed_data["store"])
    progress = tmp_path / "gpu-records.json"
    recs = measure_feeds([spec], budget_s=300, base={"suite": "gpu"}, progress=progress)
    assert recs[0]["status"] == "ok", recs[0]
    assert recs[0]["variant"] == "stream_threads/float32/pageable"
    assert recs[0]["peak_rss_mb"] > 0 and recs[0]["windows_per_s"] > 0
    assert json.loads(progress.read_text()) == json.loads(json.dumps(recs))
    # a spent budget starts no child: the feeds left are skipped, with the reason
    spent = measure_feeds([spec, spec], budget_s=0, base={"suite": "gpu"})
    assert [r["status"] for r in spent] == ["skipped", "skipped"]
    assert spent[0]["reason"] == "the suite's time budget is spent"
