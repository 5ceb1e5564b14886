"""Tests of the layout suite: the --quick sweep, the float16 error bound, the size rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from benchmarks.layout import (
    LAYOUT_CODECS,
    LAYOUT_DTYPES,
    LayoutConfig,
    best_layout,
    build_chunk_windows,
    float16_error,
    layout_codecs,
    stream_has_dtype,
    write_layout,
)
from benchmarks.report import evaluate_targets, layout_lines
from eegstore.errors import ConfigError
from eegstore.testing import make_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def layout_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench-layout")
    env = dict(os.environ, EEGSTORE_BENCH_TMP=str(out.parent))
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--quick", "--suites",
                           "layout", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_quick_layout_run_measures_every_combination(layout_run: tuple[Path, dict]) -> None:
    out, result = layout_run
    recs = [r for r in result["records"] if r["suite"] == "layout"]
    quick = LayoutConfig.for_run(quick=True, batch_size=8)
    f16 = stream_has_dtype()
    want = {(d, c, w, dl) for d in LAYOUT_DTYPES for c in LAYOUT_CODECS
            for w in quick.chunk_windows
            for dl in (("float32", "float16") if d == "float16" and f16 else ("float32",))}
    assert {(r["dtype"], r["codec"], r["chunk_windows"], r["delivery"]) for r in recs} == want
    assert len(recs) == len(want)
    for r in recs:
        assert r["status"] == "ok", r
        assert r["units"] == "uV" and r["workers"] == 0 and r["cache"] == "warm"
        assert r["bytes_on_disk"] > 0 and r["write_s"] > 0 and r["compression_ratio"] > 0
        assert r["windows_per_s"] > 0 and r["first_batch_s"] > 0
        assert r["delivered_dtype"] == r["delivery"]
        assert isinstance(r["within_size_target"], bool) and r["size_vs_reference"] > 0
        if r["dtype"] == "float32":
            assert r["error_max_rel_std"] == 0 and r["error_rms_rel_std"] == 0
        else:  # half precision: a small, non-zero error
            assert 0 < r["error_rms_rel_std"] <= r["error_max_rel_std"] < 0.01
            assert 0 < r["error_channel_max_rel_std"] < 0.01
    ref = [r for r in recs if (r["dtype"], r["codec"]) == ("float32", "zstd-1")]
    assert all(r["size_vs_reference"] == 1.0 and r["within_size_target"] for r in ref)
    # float16 halves the bytes whatever the codec: every float16 layout meets the size rule
    assert all(r["within_size_target"] for r in recs if r["dtype"] == "float16")
    # EEG amplitudes in µV: tens of µV, far inside float16's range
    assert 5 < recs[0]["signal_std_uv"] < 200
    assert result["best_layout"]["size_vs_reference"] <= 1.1
    md = (out / "results.md").read_text()
    assert "## Store layout" in md and "float16 error bound" in md and "**yes**" in md


def test_float16_error_is_zero_on_values_float16_holds() -> None:
    x = np.array([[[0.0, 1.0, -2.5, 1024.0], [0.5, -0.25, 3.0, 2048.0]]], dtype=np.float32)
    err = float16_error(x)
    assert err.max_abs_uv == 0 and err.rms_uv == 0 and err.max_rel_std == 0
    assert err.channel_max_rel_std == 0 and err.std_uv == pytest.approx(float(x.std()))


def test_float16_error_of_a_known_value() -> None:
    # 1 + 2**-12 lies between the float16 neighbours 1 and 1 + 2**-10: it rounds to 1
    v = 1.0 + 2.0**-12
    x = np.array([[[v, -v, 1.0, -1.0]], [[0.0, 0.0, 0.0, 0.0]]], dtype=np.float32)
    x = x.reshape(2, 1, 4).transpose(1, 0, 2)  # (window, channel, time): channel 1 is flat
    err = float16_error(x)
    assert err.max_abs_uv == 2.0**-12
    assert err.rms_uv == pytest.approx(2.0**-12 * np.sqrt(2 / 8))
    std = float(x.astype(np.float64).std())
    assert err.max_rel_std == pytest.approx(2.0**-12 / std)
    ch_std = float(x[:, 0].astype(np.float64).std())
    # the flat channel (std 0) is left out of the per-channel figures
    assert err.channel_max_rel_std == pytest.approx(2.0**-12 / ch_std)
    assert err.channel_rms_rel_std == pytest.approx(2.0**-12 * np.sqrt(0.5) / ch_std)


@pytest.mark.parametrize(("dtype", "codec"), [("float32", "lz4"), ("float16", "blosc-zstd"),
                                              ("float16", "none")])
def test_write_layout_stores_the_windows_in_the_layout(tmp_path: Path, dtype: str,
                                                       codec: str) -> None:
    template = make_store(tmp_path / "t.zarr", n_windows=12, n_channels=129, n_times=200,
                          chunk_windows=5, compressor="none")
    rng = np.random.default_rng(0)
    x = (30 * rng.standard_normal((12, 129, 200))).astype(np.float32)
    secs = write_layout(template, tmp_path / "s.zarr", x, dtype=dtype,
                        compressors=layout_codecs(codec))
    assert secs > 0
    ds = xr.open_zarr(tmp_path / "s.zarr")
    assert ds["eeg"].dtype == np.dtype(dtype) and ds["eeg"].attrs["units"] == "uV"
    assert ds["eeg"].encoding["chunks"] == (5, 129, 200)
    np.testing.assert_array_equal(ds["eeg"].values, x.astype(dtype))
    np.testing.assert_array_equal(ds["target"].values, xr.open_zarr(template)["target"].values)


def test_layout_config_rejects_unknown_codecs_and_sizes() -> None:
    with pytest.raises(ConfigError, match="expected dtypes among"):
        LayoutConfig(codecs=("zstd-9",))
    with pytest.raises(ConfigError, match="expected positive n_windows"):
        LayoutConfig(chunk_windows=(0,))
    with pytest.raises(ConfigError, match="expected a codec in"):
        layout_codecs("brotli")


def test_best_layout_is_the_fastest_within_ten_percent_and_the_report_marks_it() -> None:
    def rec(dtype: str, codec: str, size: float, wps: float) -> dict:
        return {"suite": "layout", "status": "ok", "dtype": dtype, "codec": codec,
                "chunk_windows": 81, "delivery": dtype, "windows_per_s": wps,
                "size_vs_reference": size, "within_size_target": size <= 1.1,
                "bytes_on_disk": int(size * 1e6)}

    recs = [rec("float32", "zstd-1", 1.0, 10_000), rec("float32", "none", 1.8, 90_000),
            rec("float16", "lz4", 0.55, 60_000), rec("float16", "zstd-1", 0.5, 40_000)]
    best = best_layout(recs)
    assert best is not None and (best["dtype"], best["codec"]) == ("float16", "lz4")
    assert best_layout([recs[1]]) is None
    lines = layout_lines({"records": recs, "best_layout": best})
    rows = [ln for ln in lines if ln.startswith("| float")]
    assert [("**yes**" in ln) for ln in rows] == [True, False, True, True]
    assert any("float16 / lz4 / 81" in ln for ln in lines)


def test_size_target_reads_the_layout_the_build_writes_by_default() -> None:
    from eegstore.build import DEFAULT_COMPRESSOR, DEFAULT_DTYPE

    codec = "zstd-1" if DEFAULT_COMPRESSOR == "zstd" else DEFAULT_COMPRESSOR
    chunk = build_chunk_windows()[DEFAULT_DTYPE]
    assert build_chunk_windows() == {"float32": 81, "float16": 162}  # 8 MiB chunks
    name = "default layout on disk <= 1.1x float32 + zstd-1 (layout suite)"

    def rec(chunk_windows: int, size: float, dtype: str = DEFAULT_DTYPE) -> dict:
        return {"suite": "layout", "dtype": dtype, "codec": codec, "status": "ok",
                "chunk_windows": chunk_windows, "size_vs_reference": size,
                "bytes_on_disk": int(size * 1e6)}

    # the build's chunk size counts, not the smallest file nor another dtype
    recs = [rec(32, 0.9), rec(chunk, 1.2), rec(chunk, 0.5, dtype="float64")]
    target = {t["name"]: t for t in evaluate_targets(recs)}[name]
    assert target["measured"] == pytest.approx(1.2) and target["passed"] is False
    target = {t["name"]: t for t in evaluate_targets([rec(chunk - 1, 1.05)])}[name]
    assert target["passed"] is True
    assert {t["name"]: t for t in evaluate_targets([])}[name]["passed"] is None
