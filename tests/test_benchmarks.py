"""Tests of the benchmark suite: a --quick smoke run plus its building blocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.__main__ import main as bench_main
from benchmarks.build import codec_sweep, pick_best_codec
from benchmarks.datasets import prepare_loading_data, windows_for_gb
from benchmarks.loaders import run_spec
from benchmarks.machine import cpu_scaling
from benchmarks.procmon import (
    TreeSampler,
    evict_from_page_cache,
    files_under,
    machine_cpu_shares,
    read_files,
    run_child,
)
from benchmarks.report import REQUIRED_FIELDS, evaluate_targets, speedup_factors

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    out = tmp_path_factory.mktemp("bench-quick")
    env = dict(os.environ, EEGSTORE_BENCH_TMP=str(out.parent))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--quick", "--out",
                           str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=400)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), wall


def test_quick_run_writes_every_report_file(quick_run: tuple[Path, dict, float]) -> None:
    out, result, _ = quick_run
    for name in ("results.json", "results.md", "rss_vs_size.png", "throughput.png"):
        assert (out / name).is_file(), name
    for png in ("rss_vs_size.png", "throughput.png"):
        head = (out / png).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert "**Machine**" in md and "## Targets" in md and "## Loading" in md
    assert result["machine"]["cpu_model"] in md


def test_quick_run_records_have_the_documented_fields(quick_run: tuple[Path, dict, float]
                                                      ) -> None:
    _, result, _ = quick_run
    machine = result["machine"]
    for key in ("cpu_model", "logical_cores", "ram_gb", "disk", "versions"):
        assert machine[key], key
    assert machine["versions"]["torch"] and machine["versions"]["zarr"]
    records = result["records"]
    assert records
    for rec in records:
        missing = [k for k in REQUIRED_FIELDS if k not in rec]
        assert not missing, (rec, missing)
        assert rec["status"] in ("ok", "skipped", "failed")
        if rec["suite"] in ("loading", "loading_bids"):
            assert rec["cache"] in ("warm", "cold")
        if rec["status"] != "ok":
            assert rec["reason"], rec
    loading = [r for r in records if r["suite"] == "loading"]
    by_strategy = {r["strategy"] for r in loading}
    assert {"eegstore", "full_load", "hdf5_tuned", "hdf5_seed"} <= by_strategy
    for r in loading:
        if r["strategy"] in ("full_load", "hdf5_tuned", "hdf5_seed"):
            assert r["status"] == "ok", r
        if r["status"] == "ok":
            assert r["windows_per_s"] > 0 and r["peak_rss_mb"] > 0
            assert r["first_batch_s"] > 0 and r["bytes_on_disk"] > 0
            assert r["windows_read"] > 0 and r["store_gb"] > 0
    sizes = {r["store_gb"] for r in loading if r["strategy"] == "full_load"}
    assert len(sizes) == 3
    assert {r["cache"] for r in loading} == {"warm", "cold"}
    assert {r["suite"] for r in records} >= {"loading", "build", "codec", "gpu"}
    assert [t["name"] for t in result["targets"]]
    # the synthetic release the build suite built: what it holds, from its sidecars
    synth = [r for r in records if r["strategy"] == "eegstore_synth"]
    assert len(synth) == 1 and synth[0]["status"] == "ok", synth
    assert synth[0]["tasks"] == ["RestingState"] and synth[0]["n_subjects"] == 1
    assert synth[0]["n_recordings"] >= 1 and synth[0]["recording_hours"] > 0


def test_quick_run_stays_quick(quick_run: tuple[Path, dict, float]) -> None:
    # the budget is documented for --quick; the run itself reports its duration
    _, result, wall = quick_run
    assert result["duration_s"] <= wall


def test_cli_misuse_is_one_line_exit_2(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    assert bench_main([]) == 2
    assert bench_main(["run", "--workers", "-1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "expected --workers >= 0, got -1" in err
    assert bench_main(["run", "--sizes", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected positive sizes" in err[0]
    assert bench_main(["run", "--suites", "nope"]) == 2


def test_build_suite_builds_a_whole_release_unless_told_tasks(tmp_path: Path) -> None:
    from benchmarks.runner import RunConfig

    assert RunConfig.make(tmp_path, quick=False).build_tasks is None  # every task
    assert RunConfig.make(tmp_path, quick=True).build_tasks == ["RestingState"]
    cfg = RunConfig.make(tmp_path, quick=False, build_tasks=["RestingState", "DespicableMe"])
    assert cfg.build_tasks == ["RestingState", "DespicableMe"]


def test_tree_sampler_sums_children() -> None:
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', "
            "'import time; b = bytearray(80 * 2**20); time.sleep(1.5)']); "
            "b = bytearray(40 * 2**20); p.wait()")
    proc = subprocess.Popen([sys.executable, "-c", code])
    with TreeSampler(proc.pid, interval_s=0.02) as sampler:
        proc.wait(timeout=30)
    assert sampler.max_procs == 2
    assert sampler.peak_rss >= 120 * 2**20


def test_tree_sampler_high_water_marks_catch_a_peak_between_samples() -> None:
    # 200 MB touched for ~30 ms, then freed; the sampler looks only every 2 s
    code = ("import time, numpy as np; time.sleep(0.5); a = np.ones(25 * 2**20); del a; "
            "time.sleep(2.5)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    with TreeSampler(proc.pid, interval_s=2.0, list_every=1) as sampler:
        proc.wait(timeout=30)
    assert sampler.peak_hwm_sum >= 200 * 2**20
    assert sampler.peak_rss < 150 * 2**20  # the sampled totals missed it


def test_build_rss_doubling_target_prefers_high_water_marks() -> None:
    def build(workers: int, rss: float, hwm: float, variant: str = "challenge2") -> dict:
        return {"suite": "build", "strategy": "eegstore_build", "workers": workers,
                "status": "ok", "elapsed_s": 10.0, "peak_rss_mb": rss, "variant": variant,
                "peak_hwm_sum_mb": hwm, "n_windows": 100}

    records = [build(1, 500.0, 520.0), build(2, 700.0, 900.0),
               build(2, 700.0, 750.0, "challenge2-30-subjects")]
    got = {t["name"]: t for t in evaluate_targets(records)}
    growth = got["build peak RSS within 10% when recordings double (growth)"]
    assert growth["measured"] == pytest.approx(900.0 / 750.0 - 1.0, abs=1e-3)
    assert growth["passed"] is False
    # repeated builds of both sizes: the largest of each is compared
    records += [build(2, 700.0, 860.0, "challenge2-30-subjects"), build(2, 690.0, 880.0)]
    got = {t["name"]: t for t in evaluate_targets(records)}
    growth = got["build peak RSS within 10% when recordings double (growth)"]
    assert growth["measured"] == pytest.approx(900.0 / 860.0 - 1.0, abs=1e-3)
    assert growth["passed"] is True
    assert "largest of 2 and 2 builds" in growth["detail"]


def test_page_cache_helpers(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.bin").write_bytes(b"x" * 5000)
    (tmp_path / "b.bin").write_bytes(b"y" * 3000)
    assert len(files_under([tmp_path])) == 2
    assert evict_from_page_cache([tmp_path]) == 8000
    n, s = read_files([tmp_path])
    assert n == 8000 and s >= 0


def test_loaders_deliver_the_same_windows(tmp_path: Path) -> None:
    data = prepare_loading_data(tmp_path / "d", 0.003, chunk_windows=8, hdf5=True)
    assert data.n_windows == windows_for_gb(0.003)
    x = np.load(data.npy)
    import h5py

    for layout, path in data.hdf5.items():
        with h5py.File(path, "r") as fh:
            assert np.array_equal(fh["X"][:], x), layout
    assert data.hdf5_chunks["chunk1"] == [1, 129, 200]
    base = {"batch_size": 8, "workers": 0, "time_limit_s": 60.0, "single_epoch": True}
    full = run_spec({**base, "strategy": "full_load", "npy": data.npy,
                     "targets": data.targets})
    h5 = run_spec({**base, "strategy": "hdf5_tuned", "hdf5": data.hdf5["contiguous"]})
    for payload in (full, h5):
        assert payload["windows"] == data.n_windows and payload["epochs"] == 1
        assert payload["window_shape"] == [129, 200]
    with pytest.raises(ValueError, match="expected a strategy"):
        run_spec({**base, "strategy": "nope"})


def test_codec_sweep_and_choice(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((16, 4, 64), dtype=np.float32), axis=-1)
    recs = codec_sweep(x, tmp_path / "c", chunk_windows=4, source="test")
    names = {r["variant"] for r in recs}
    assert {"none", "zstd-3", "float16"} <= names
    for r in recs:
        assert r["lossless"] == (not r["variant"].startswith("float16"))
        assert r["compression_ratio"] > 0 and r["read_cold_mb_per_s"] > 0
    f16 = next(r for r in recs if r["variant"] == "float16")
    assert 1.5 < f16["compression_ratio"] and f16["max_abs_error"] > 0
    best = pick_best_codec(recs)
    assert best["lossless"] in names and not best["lossless"].startswith("float16")


def test_pick_best_codec_rule() -> None:
    def rec(name: str, cold: float, ratio: float, lossless: bool = True) -> dict:
        return {"suite": "codec", "cache": "cold", "status": "ok", "variant": name,
                "read_cold_mb_per_s": cold, "compression_ratio": ratio, "lossless": lossless}

    recs = [rec("a", 100, 1.0), rec("b", 300, 1.2), rec("c", 300, 1.5), rec("h", 900, 2, False)]
    assert pick_best_codec(recs) == {**pick_best_codec(recs), "lossless": "c", "any": "h"}


def test_evaluate_targets_computes_ratios() -> None:
    def rec(strategy: str, cache: str, wps: float, variant: str = "v", gb: float = 1.0,
            rss: float = 500.0) -> dict:
        return {"suite": "loading", "strategy": strategy, "variant": variant, "cache": cache,
                "size_factor": 1 if gb == 1.0 else int(gb), "store_gb": gb, "status": "ok",
                "windows_per_s": wps, "peak_rss_mb": rss}

    records = [rec("eegstore", "warm", 6000), rec("full_load", "warm", 10000),
               rec("hdf5_tuned", "warm", 5000, "contiguous"),
               rec("hdf5_tuned", "warm", 1000, "chunk1"), rec("hdf5_seed", "warm", 4),
               rec("eegstore", "cold", 3000), rec("hdf5_tuned", "cold", 2000),
               rec("eegstore", "warm", 6000, gb=4.0, rss=530),
               rec("full_load", "warm", 10000, gb=4.0, rss=2500),
               {"suite": "build", "strategy": "eegstore_build", "workers": 1, "status": "ok",
                "elapsed_s": 30.0},
               {"suite": "build", "strategy": "eegstore_build", "workers": 2, "status": "ok",
                "elapsed_s": 20.0}]
    got = {t["name"]: t for t in evaluate_targets(records)}
    assert got["eegstore warm >= 0.5x full_load warm"]["measured"] == pytest.approx(0.6)
    assert got["eegstore warm >= 1x hdf5_tuned warm"]["measured"] == pytest.approx(1.2)
    assert got["eegstore warm >= 1000x hdf5_seed warm"]["measured"] == pytest.approx(1500)
    assert got["eegstore cold >= 2x hdf5_tuned cold"]["passed"] is False
    spread = got["eegstore peak RSS within 10% across sizes (spread)"]
    assert spread["measured"] == pytest.approx(0.06) and spread["passed"] is True
    assert got["Dask build speed-up with 2 workers >= 1.6x"]["measured"] == pytest.approx(1.5)
    assert got["Dask build speed-up with 2 workers >= 1.6x"]["passed"] is False
    assert all(t["passed"] is None for t in evaluate_targets([]))


def test_gpu_feed_loop_runs_on_cpu(tmp_path: Path) -> None:
    # the GPU suite only runs with CUDA; its training loop is exercised here on the CPU
    from benchmarks.gpu import run_feed

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((12, 129, 200), dtype=np.float32))
    np.save(tmp_path / "y.npy", rng.standard_normal(12).astype(np.float32))
    out = run_feed({"mode": "gpu_tensor", "batch_size": 4, "workers": 0, "steps": 2,
                    "warmup": 1, "device": "cpu", "n_chans": 129, "n_times": 200,
                    "npy": str(tmp_path / "x.npy"), "targets": str(tmp_path / "y.npy")})
    assert out["status"] == "ok" and out["steps"] == 2 and out["device"] == "cpu"
    assert out["windows_per_s"] > 0 and 0 <= out["data_wait_fraction"] <= 1


def test_build_rss_doubling_target_compares_subset_with_full_build() -> None:
    def build(workers: int, rss: float, variant: str = "challenge2") -> dict:
        return {"suite": "build", "strategy": "eegstore_build", "workers": workers,
                "status": "ok", "elapsed_s": 10.0, "peak_rss_mb": rss, "variant": variant,
                "n_windows": 100}

    records = [build(1, 500.0), build(2, 720.0), build(2, 700.0, "challenge2-30-subjects")]
    got = {t["name"]: t for t in evaluate_targets(records)}
    growth = got["build peak RSS within 10% when recordings double (growth)"]
    assert growth["measured"] == pytest.approx(720.0 / 700.0 - 1.0, abs=1e-3)
    assert growth["passed"] is True
    assert got["Dask build speed-up with 2 workers >= 1.6x"]["measured"] == pytest.approx(1.0)


def test_build_speedup_target_is_the_median_of_alternating_pairs() -> None:
    def build(workers: int, elapsed: float, repeat: int) -> dict:
        return {"suite": "build", "strategy": "eegstore_build", "workers": workers,
                "status": "ok", "elapsed_s": elapsed, "peak_rss_mb": 500.0,
                "variant": "challenge2", "repeat": repeat}

    # pairs 30/20 = 1.5x, 34/20 = 1.7x, 33/20 = 1.65x; unpaired builds count for nothing
    records = [build(1, 30.0, 0), build(2, 20.0, 0), build(1, 34.0, 1), build(2, 20.0, 1),
               build(2, 20.0, 2), build(1, 33.0, 2), build(1, 90.0, 3)]
    target = {t["name"]: t for t in evaluate_targets(records)}[
        "Dask build speed-up with 2 workers >= 1.6x"]
    assert target["measured"] == pytest.approx(1.65)
    assert target["passed"] is True
    assert "median of 3 alternating pair(s)" in target["detail"]
    records[3]["elapsed_s"] = 40.0  # the median pair falls to 1.5x
    target = {t["name"]: t for t in evaluate_targets(records)}[
        "Dask build speed-up with 2 workers >= 1.6x"]
    assert target["measured"] == pytest.approx(1.5) and target["passed"] is False


def test_build_speedup_splits_into_parallelism_and_cpu_time() -> None:
    # 1 worker: 30 s wall, 33 CPU s (1.1 per s); 2 workers: 20 s wall, 36 CPU s (1.8 per s)
    one = {"workers": 1, "elapsed_s": 30.0, "cpu_s": 33.0, "repeat": 0}
    two = {"workers": 2, "elapsed_s": 20.0, "cpu_s": 36.0, "repeat": 0}
    f = speedup_factors(one, two)
    assert f is not None
    assert f["parallelism"] == pytest.approx(1.8 / 1.1)
    assert f["cpu_time"] == pytest.approx(33.0 / 36.0)
    assert f["parallelism"] * f["cpu_time"] == pytest.approx(30.0 / 20.0)
    assert speedup_factors({**one, "cpu_s": None}, two) is None
    records = [{"suite": "build", "strategy": "eegstore_build", "variant": "challenge2",
                "status": "ok", "peak_rss_mb": 1.0, **r} for r in (one, two)]
    records += [{"suite": "build", "strategy": "cpu_scaling", "repeat": 0, "speedup": x}
                for x in (1.5, 1.9)]
    target = {t["name"]: t for t in evaluate_targets(records)}[
        "Dask build speed-up with 2 workers >= 1.6x"]
    assert target["measured"] == pytest.approx(1.5)
    assert "parallelism 1.64 x CPU time 0.92, CPU-bound loop 1.50-1.90x" in target["detail"]


def test_cpu_scaling_times_one_and_two_processes() -> None:
    sc = cpu_scaling(2, loops=200_000, rounds=2)
    assert len(sc["alone_all_s"]) == len(sc["together_all_s"]) == 2
    assert sc["alone_s"] > 0 and sc["together_s"] > 0
    assert sc["speedup"] == pytest.approx(2 * sc["alone_s"] / sc["together_s"])


def test_machine_cpu_shares_split_idle_iowait_and_steal() -> None:
    from collections import namedtuple

    Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")
    before = Times(10, 0, 5, 100, 1, 0, 0, 2, 3, 0)
    # 20 s of CPU time: 8 user (guest time is inside user), 2 system, 6 idle, 1 iowait, 3 steal
    after = Times(18, 0, 7, 106, 2, 0, 0, 5, 7, 0)
    shares = machine_cpu_shares(before, after)
    assert shares == pytest.approx({"idle": 0.3, "iowait": 0.05, "steal": 0.15})
    assert machine_cpu_shares(after, after) == {}
    # a real child: the shares are fractions of the machine's time while it ran
    res = run_child([sys.executable, "-c", "import time; time.sleep(0.3)"], timeout_s=30)
    assert res.returncode == 0 and set(res.machine_cpu) >= {"idle"}
    assert all(0.0 <= v <= 1.0 for v in res.machine_cpu.values())


def test_run_child_counts_the_cpu_time_of_the_childs_own_children() -> None:
    # the CPU is burnt in a grandchild that ends before the sampler's next CPU reading
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.6: pass'"
            "], check=True)")
    res = run_child([sys.executable, "-c", code], timeout_s=60)
    assert res.returncode == 0
    assert res.cpu_s >= 0.6
