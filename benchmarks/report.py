"""Targets, Markdown tables and plots from the measured records (nothing hard-coded)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.peers import PEER_NOTES, PEERS

__all__ = ["REQUIRED_FIELDS", "backends_lines", "build_pairs", "evaluate_targets", "gpu_lines",
           "layout_lines", "plot_results", "speedup_factors", "speedup_factors_note",
           "write_markdown"]

#: Fields every record of results.json carries (None where not applicable).
REQUIRED_FIELDS = ("suite", "strategy", "cache", "store_gb", "workers", "windows_per_s",
                   "peak_rss_mb", "first_batch_s", "bytes_on_disk", "status")


def _ok(records: Sequence[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok" and r.get("windows_per_s")
            and all(r.get(k) == v for k, v in match.items())]


def _one(records: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    found = _ok(records, **match)
    return max(found, key=lambda r: r["windows_per_s"]) if found else None


def _target(name: str, measured: float | None, threshold: float, detail: str,
            higher_is_better: bool = True) -> dict[str, Any]:
    if measured is None:
        passed = None
    else:
        passed = measured >= threshold if higher_is_better else measured <= threshold
    return {"name": name, "measured": None if measured is None else round(measured, 3),
            "threshold": threshold, "passed": passed, "detail": detail}


def build_pairs(builds: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pair each 2-worker build with the 1-worker build of the same repeat.

    Parameters
    ----------
    builds : list of dict
        Successful full builds (``workers`` 1 or 2, optional ``repeat``, default 0).

    Returns
    -------
    list of (dict, dict)
        ``(1-worker, 2-worker)`` records, by repeat.
    """
    by_rep: dict[int, dict[int, dict[str, Any]]] = {}
    for r in builds:
        by_rep.setdefault(int(r.get("repeat") or 0), {})[int(r["workers"])] = r
    return [(p[1], p[2]) for _, p in sorted(by_rep.items()) if 1 in p and 2 in p]


def speedup_factors(one: dict[str, Any], two: dict[str, Any]) -> dict[str, float] | None:
    """Split a pair's speed-up into the build's parallelism and its CPU cost.

    ``one.elapsed / two.elapsed`` = ``cpu_time`` x ``parallelism``, where
    ``cpu_time`` = CPU seconds of the 1-worker build / those of the 2-worker build
    (below 1 when the same work cost more CPU time with both cores busy) and
    ``parallelism`` = CPU seconds per wall second of the 2-worker build / those of the
    1-worker build (how much more of the machine the build kept busy).

    Returns
    -------
    dict or None
        ``cpu_time`` and ``parallelism``; None without CPU times.
    """
    c1, c2 = one.get("cpu_s"), two.get("cpu_s")
    if not c1 or not c2 or not one.get("elapsed_s") or not two.get("elapsed_s"):
        return None
    return {"cpu_time": float(c1) / float(c2),
            "parallelism": (float(c2) / two["elapsed_s"]) / (float(c1) / one["elapsed_s"])}


def speedup_factors_note(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
                         records: Sequence[dict[str, Any]]) -> str:
    """The build speed-up target's explanation: parallelism, CPU time, machine scaling."""
    parts = []
    for one, two in pairs:
        f = speedup_factors(one, two)
        if f is None:
            continue
        rep = one.get("repeat") or 0
        probes = [float(r["speedup"]) for r in records if r.get("strategy") == "cpu_scaling"
                  and (r.get("repeat") or 0) == rep and r.get("speedup")]
        probe = f", CPU-bound loop {min(probes):.2f}-{max(probes):.2f}x" if probes else ""
        parts.append(f"parallelism {f['parallelism']:.2f} x CPU time {f['cpu_time']:.2f}"
                     + probe)
    if not parts:
        return ""
    return ("; factors (parallelism = CPU s per wall s, 2 workers / 1 worker; CPU time = CPU "
            "s of the 1-worker build / of the 2-worker build; CPU-bound loop = 2-process "
            "speed-up of a pure CPU loop measured before and after the pair): "
            + "; ".join(parts))


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None,
           key: str = "windows_per_s") -> float | None:
    if a is None or b is None or not a.get(key) or not b.get(key):
        return None
    return float(a[key]) / float(b[key])


def _desc(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "windows_per_s",
          unit: str = "windows/s") -> str:
    if a is None or b is None:
        return "not measured: " + ", ".join(
            n for n, r in (("eegstore", a), ("baseline", b)) if r is None)
    return (f"{a[key]:.0f} vs {b[key]:.0f} {unit} ({a['strategy']}/{a.get('variant')} vs "
            f"{b['strategy']}/{b.get('variant')}, {b.get('workers')} workers)")


def _cold_bound_target(eeg: dict[str, Any] | None,
                       disk_read_gb_per_s: float | None) -> dict[str, Any]:
    """eegstore cold vs the disk's sequential read rate x the store's compression ratio.

    The bound in windows/s is the disk rate divided by the stored bytes per window
    (``bytes_on_disk / n_windows``), i.e. disk rate x compression ratio (delivered
    float32 bytes / stored bytes) / float32 bytes per window.
    """
    name = "eegstore cold >= 0.8x (disk sequential read x compression ratio)"
    if eeg is None or not disk_read_gb_per_s or not eeg.get("bytes_on_disk"):
        return _target(name, None, 0.8, "not measured: " + ("eegstore cold" if eeg is None
                                                             else "disk read rate"))
    stored_per_window = float(eeg["bytes_on_disk"]) / float(eeg["n_windows"])
    bound = disk_read_gb_per_s * 1e9 / stored_per_window
    ratio = eeg.get("compression_ratio") or 0.0
    return _target(name, eeg["windows_per_s"] / bound, 0.8,
                   f"{eeg['windows_per_s']:.0f} windows/s ({eeg.get('variant')}, "
                   f"{eeg.get('workers')} workers) vs {bound:.0f} = {disk_read_gb_per_s:g} GB/s "
                   f"x compression ratio {ratio:.2f} / {stored_per_window * ratio:.0f} B per "
                   f"float32 window")


def _loading_targets(records: Sequence[dict[str, Any]], workers: int | None,
                     disk_read_gb_per_s: float | None) -> list[dict[str, Any]]:
    """Targets of the loading suite: the smallest (1x) size, ``eegstore`` float32 unless named."""
    out: list[dict[str, Any]] = []
    base: dict[str, Any] = {"suite": "loading", "size_factor": 1}
    at_n: dict[str, Any] = {} if workers is None else {"workers": workers}
    at_0: dict[str, Any] = {"workers": 0}
    n_label = "the run's workers" if workers is None else f"{workers} workers"

    def one(strategy: str, cache: str = "warm", variant: str | None = None,
            **match: Any) -> dict[str, Any] | None:
        if variant is not None:
            match["variant"] = variant
        return _one(records, strategy=strategy, cache=cache, **base, **match)

    full0 = one("full_load", variant="float32", workers=0)
    for variant, thr in (("float32", 0.5), ("float16", 1.0)):
        a = one("eegstore", variant=variant, workers=0)
        out.append(_target(f"eegstore {variant} in-process warm >= {thr:g}x full_load float32",
                           _ratio(a, full0), thr, _desc(a, full0)))
    for label, match in (("0 workers", at_0), (n_label, at_n)):
        a = one("eegstore", variant="float32", **match)
        b = one("hdf5_tuned", variant="contiguous", **match)
        out.append(_target(f"eegstore warm >= 1x hdf5_tuned contiguous ({label})",
                           _ratio(a, b), 1.0, _desc(a, b)))
    for peer in PEERS:
        for label, match in (("0 workers", at_0), (n_label, at_n)):
            a = one("eegstore", variant="float32", **match)
            b = one(peer, **match)
            out.append(_target(f"eegstore warm >= 5x {peer} ({label})", _ratio(a, b), 5.0,
                               _desc(a, b)))
            out.append(_target(f"eegstore peak RSS <= {peer}'s ({label}, ratio)",
                               _ratio(a, b, "peak_rss_mb"), 1.0,
                               _desc(a, b, "peak_rss_mb", "MB"), higher_is_better=False))
    cold = [r for r in _ok(records, strategy="eegstore", cache="cold", variant="float32",
                           **base) if workers is None or r.get("workers") in (0, workers)]
    out.append(_cold_bound_target(max(cold, key=lambda r: r["windows_per_s"], default=None),
                                  disk_read_gb_per_s))
    for name, thr, cache, strat in (
            ("eegstore warm >= 1000x hdf5_seed warm", 1000.0, "warm", "hdf5_seed"),
            ("eegstore cold >= 2x hdf5_tuned cold", 2.0, "cold", "hdf5_tuned")):
        a = one("eegstore", cache, "float32", **at_n)
        b = one(strat, cache, **at_n)
        out.append(_target(f"{name} ({n_label})", _ratio(a, b), thr, _desc(a, b)))

    def rss_by_size(strategy: str) -> list[tuple[float, float]]:
        rows = [(r["store_gb"], r["peak_rss_mb"])
                for r in _ok(records, suite="loading", strategy=strategy, cache="warm",
                             variant="float32", **at_n) if r.get("peak_rss_mb")]
        return sorted(rows)

    eeg_rss = rss_by_size("eegstore")
    full_rss = rss_by_size("full_load")
    if len(eeg_rss) >= 2:
        vals = [v for _, v in eeg_rss]
        spread = max(vals) / min(vals) - 1.0
        detail = "peak RSS MB by size: " + ", ".join(f"{g:g} GB: {v:.0f}" for g, v in eeg_rss)
        out.append(_target("eegstore peak RSS within 10% across sizes (spread)", spread, 0.10,
                           detail, higher_is_better=False))
    else:
        out.append(_target("eegstore peak RSS within 10% across sizes (spread)", None, 0.10,
                           "fewer than two sizes measured", higher_is_better=False))
    if len(full_rss) >= 2:
        growth = full_rss[-1][1] / full_rss[0][1]
        size_growth = full_rss[-1][0] / full_rss[0][0]
        out.append(_target("full_load peak RSS grows with size (largest/smallest)", growth, 1.5,
                           f"store grew {size_growth:.1f}x; peak RSS MB " + ", ".join(
                               f"{g:g} GB: {v:.0f}" for g, v in full_rss)))
    return out


def evaluate_targets(records: Sequence[dict[str, Any]], workers: int | None = None,
                     disk_read_gb_per_s: float | None = None) -> list[dict[str, Any]]:
    """Check the issue's targets against the records of one run.

    Loading targets compare the smallest (1x) size: ``eegstore`` float32 delivery
    (float16 where named) against each baseline's record at the same worker count
    and cache state: 0 workers (in-process) where named, else the run's worker count
    ``workers`` (default: any; then the fastest record of each).  The cold target
    needs the disk's measured sequential read rate ``disk_read_gb_per_s``.  A target
    without the records it needs has ``passed`` None.
    """
    out = _loading_targets(records, workers, disk_read_gb_per_s)
    out.append(_layout_size_target(records))
    all_builds = [r for r in records if r.get("suite") == "build"
                  and r.get("strategy") == "eegstore_build" and r.get("status") == "ok"]
    # a build of a subset of the subjects has a variant ending in "-subjects"
    subset = [str(r.get("variant", "")).endswith("-subjects") for r in all_builds]
    full_builds = [r for r, sub in zip(all_builds, subset, strict=True) if not sub]
    half = [r for r, sub in zip(all_builds, subset, strict=True) if sub and r.get("workers") == 2]
    full2 = [r for r in full_builds if r.get("workers") == 2]
    if half and full2:
        def peak(r: dict[str, Any]) -> float:
            # the sum of per-process high-water marks cannot miss a short peak
            return float(r.get("peak_hwm_sum_mb") or r["peak_rss_mb"])

        # the largest of each size's repeated builds: peaks vary from build to build, so
        # the largest of several full builds against one half build would favour growth
        full, part = max(full2, key=peak), max(half, key=peak)
        growth = peak(full) / peak(part) - 1.0
        out.append(_target("build peak RSS within 10% when recordings double (growth)", growth,
                           0.10, f"{part.get('n_windows')} windows: {peak(part):.0f} MB, "
                           f"{full.get('n_windows')} windows: {peak(full):.0f} MB (sum of "
                           f"each process's peak RSS, largest of {len(half)} and "
                           f"{len(full2)} builds; largest sampled total "
                           f"{part['peak_rss_mb']:.0f} vs {full['peak_rss_mb']:.0f} MB)",
                           higher_is_better=False))
    pairs = build_pairs(full_builds)
    if pairs:
        median = float(statistics.median(one["elapsed_s"] / two["elapsed_s"]
                                         for one, two in pairs))
        out.append(_target("Dask build speed-up with 2 workers >= 1.6x", median, 1.6,
                           f"median of {len(pairs)} alternating pair(s): " + "; ".join(
                               f"{one['elapsed_s']:.1f} s / {two['elapsed_s']:.1f} s = "
                               f"{one['elapsed_s'] / two['elapsed_s']:.3f}x"
                               for one, two in pairs)
                           + speedup_factors_note(pairs, records)))
    else:
        out.append(_target("Dask build speed-up with 2 workers >= 1.6x", None, 1.6,
                           "build suite not measured"))
    return out


def _layout_size_target(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The build's default layout at most 10 % larger on disk than float32 + zstd-1."""
    from benchmarks.layout import SIZE_SLACK, default_layout

    name = "default layout on disk <= 1.1x float32 + zstd-1 (layout suite)"
    rec = default_layout(records)
    if rec is None:
        return _target(name, None, 1.0 + SIZE_SLACK, "layout suite not measured",
                       higher_is_better=False)
    return _target(name, rec["size_vs_reference"], 1.0 + SIZE_SLACK,
                   f"{rec['dtype']} / {rec['codec']} / {rec['chunk_windows']} windows per chunk: "
                   f"{rec['bytes_on_disk'] / 1e6:.1f} MB", higher_is_better=False)


# --------------------------------------------------------------------------- markdown
def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 1:
            return f"{v:.{nd}f}"
        return f"{v:.3g}"
    return str(v)


def _machine_cpu(shares: dict[str, float] | None) -> str:
    """``idle / iowait / steal`` in percent of the machine's CPU time ("-" if unknown)."""
    if not shares:
        return "-"
    return " / ".join("-" if k not in shares else f"{100 * shares[k]:.0f}"
                      for k in ("idle", "iowait", "steal"))


def _fmt_measured(v: float | None) -> str:
    """A target's measured value with its three decimals (1.599 must not read as 1.6)."""
    if v is None:
        return "-"
    return _fmt(v) if abs(v) >= 100 else f"{v:.3f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines


def _mb(b: Any) -> Any:
    return None if b is None else b / 1e6


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    """Write ``results.md``: machine, targets, loading/build/codec/GPU tables."""
    m = result["machine"]
    cfg = result["config"]
    recs = result["records"]
    lines = [f"# eegstore benchmark results ({'quick' if cfg.get('quick') else 'full'} run)", ""]
    disk = m.get("disk", {})
    lines += [
        f"Run {result['started']} → {result['finished']} ({result['duration_s']:.0f} s).", "",
        f"**Machine**: {m['cpu_model']}, {m['logical_cores']} logical cores "
        f"({m.get('usable_cores')} usable), {m['ram_gb']} GB RAM, disk {disk.get('device', '?')} "
        f"({disk.get('fstype', '?')}, rotational={disk.get('rotational', '?')}), "
        f"measured sequential read: cold {_fmt(m.get('disk_read_cold_gb_per_s'), 2)} GB/s, "
        f"page cache {_fmt(m.get('page_cache_read_gb_per_s'), 2)} GB/s; {m['os']}, "
        f"Python {m['python']}; GPU: {m.get('cuda') or 'none'}.",
        f"Load average at start {m.get('load_average')} and end "
        f"{result.get('load_average_end')} (the machine may be shared: figures are noisy).",
        "", "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v), "",
        f"Settings: batch size {cfg['batch_size']}, {cfg['workers']} DataLoader workers, "
        f"windows of {cfg['window_shape']} float32, Zarr chunks of {cfg['chunk_windows']} "
        f"windows, warm runs {cfg['time_limit_s']} s, cold runs one epoch (≤ "
        f"{cfg['cold_time_limit_s']} s), hdf5_seed ≤ {cfg['seed_time_limit_s']} s.", "",
        "windows/s is the steady state inside epochs (each epoch's first batch excluded); "
        "first batch is the latency from process start-up of the loader to the first batch "
        "(includes full_load's whole read). Peak RSS is summed over the measuring process and "
        "all its children (DataLoader workers); it counts pages shared by forked workers once "
        "per process, so peak PSS (shared pages split between processes) is shown too. "
        "Rows with 0 workers run the loader in the measuring process (no DataLoader worker "
        "IPC); `zarr_chunks` reads whole Zarr chunks in random order with no gather: the "
        "ceiling of any chunk-wise reader of the same store; `dataloader_ceiling` only copies "
        "an in-RAM batch in each worker and ships it to the main process: the DataLoader's "
        "own transfer ceiling at that worker count. `variant` is the layout or the delivered "
        "dtype (`float16`: eegstore's float16 delivery; every other row delivers float32). "
        "Peers: " + "; ".join(f"`{k}`: {v}" for k, v in PEER_NOTES.items()) + ". "
        "Conversion s is "
        "the time to write a peer's format from the store, in its own process (xbatcher "
        "reads the store: 0). Cold runs evict the files a strategy reads from the page "
        "cache, for the peers too. Targets use the rows named in each target. CPU s / wall s "
        "is the CPU time of the whole process tree over "
        "the wall time: below the number of busy processes it shows CPU starvation (the "
        "machine is shared and has 2 cores).", "",
        "## Targets", ""]
    lines += _table(["target", "measured", "threshold", "passed", "detail"],
                    [[t["name"], _fmt_measured(t["measured"]), t["threshold"],
                      "n/a" if t["passed"] is None else t["passed"], t["detail"]]
                     for t in result["targets"]])
    lines += ["", "## Loading", ""]
    load = [r for r in recs if r["suite"] in ("loading", "loading_bids")]
    lines += _table(
        ["suite", "strategy", "variant", "cache", "store GB", "workers", "windows/s",
         "first batch s", "peak RSS MB", "peak PSS MB", "CPU s / wall s", "on disk MB",
         "conversion s", "status"],
        [[r["suite"], r["strategy"], r.get("variant"), r["cache"], r["store_gb"], r["workers"],
          r.get("windows_per_s"), r.get("first_batch_s"), r.get("peak_rss_mb"),
          r.get("peak_pss_mb"), r.get("cpu_per_wall"), _mb(r.get("bytes_on_disk")),
          r.get("conversion_s"),
          r["status"] + (f" ({r['reason']})" if r.get("reason") else "")] for r in load])
    build = [r for r in recs if r["suite"] == "build" and r["strategy"] != "cpu_scaling"]
    scaling = [r for r in recs if r["suite"] == "build" and r["strategy"] == "cpu_scaling"]
    if build:
        lines += ["", "## Build", ""]
        synth = next((r for r in build if r["strategy"] == "eegstore_synth"
                      and r.get("status") == "ok" and r.get("tasks")), None)
        if synth is not None:
            lines += [f"Synthetic release (`eegstore synth`): {synth.get('n_subjects')} "
                      f"subjects, {synth.get('n_recordings')} recordings, "
                      f"{_fmt(synth.get('recording_hours'))} h of recording, tasks "
                      f"{', '.join(synth['tasks'])}; built with `--recipe challenge2`.", ""]
        lines += _table(
            ["strategy", "workers", "repeat", "windows", "elapsed s", "windows/s", "peak RSS MB",
             "sum of process peaks MB", "peak PSS MB", "processes", "CPU s / wall s",
             "machine idle / iowait / steal %", "on disk MB", "status"],
            [[r["strategy"], r["workers"], r.get("repeat"), r.get("n_windows"),
              r.get("elapsed_s"),
              r.get("windows_per_s"), r.get("peak_rss_mb"), r.get("peak_hwm_sum_mb"),
              r.get("peak_pss_mb"),
              r.get("processes"), r.get("cpu_per_wall"), _machine_cpu(r.get("machine_cpu")),
              _mb(r.get("bytes_on_disk")),
              r["status"] + (f" ({r['reason']})" if r.get("reason") else "")] for r in build])
    if scaling:
        lines += ["", "## CPU scaling beside the builds", "",
                  "A pure-Python CPU loop alone, then in 2 processes at once (medians of 3): "
                  "how much the second core added at the time, the most a parallel build "
                  "could gain.", ""]
        lines += _table(["repeat", "when", "alone s", "2 at once s", "2-process speed-up"],
                        [[r.get("repeat"), r.get("when"), r.get("alone_s"),
                          r.get("together_s"), r.get("speedup")] for r in scaling])
    codec = [r for r in recs if r["suite"] == "codec" and r["cache"] == "warm"]
    if codec:
        src = codec[0].get("source", "?")
        lines += ["", f"## Codec sweep (data: {src})", ""]
        lines += ["Write once (incl. fsync); reads: best of the repeats, whole array.", ""]
        lines += _table(
            ["codec", "ratio", "write MB/s", "read warm MB/s", "read cold MB/s",
             "max abs error", "on disk MB", "status"],
            [[r["variant"], r.get("compression_ratio"), r.get("write_mb_per_s"),
              r.get("read_warm_mb_per_s"), r.get("read_cold_mb_per_s"), r.get("max_abs_error"),
              _mb(r.get("bytes_on_disk")), r["status"]] for r in codec])
        best = result.get("best_codec")
        if best:
            lines += ["", f"Best lossless codec ({best['rule']}): **{best['lossless']}**; "
                          f"best incl. lossy: **{best['any']}**."]
    lines += layout_lines(result)
    lines += gpu_lines(recs)
    lines += backends_lines(result)
    lines += ["", "Plots: `rss_vs_size.png`, `throughput.png`.", ""]
    path.write_text("\n".join(lines))


def _status(r: dict[str, Any]) -> str:
    return str(r["status"]) + (f" ({r['reason']})" if r.get("reason") else "")


def layout_lines(result: dict[str, Any]) -> list[str]:
    """The layout suite's section of ``results.md`` (empty when it did not run)."""
    recs = [r for r in result["records"] if r["suite"] == "layout"]
    if not recs:
        return []
    first = recs[0]
    lines = ["", "## Store layout", "",
             f"{first.get('n_windows')} windows of synthetic EEG in µV (one `eegstore synth` "
             f"subject, signal std {_fmt(first.get('signal_std_uv'))} µV); warm in-process "
             f"reads through `WindowStream` (batch {first.get('batch_size')}, shuffle on, no "
             "DataLoader workers, default threads). \"vs ref\" is the size on disk over "
             "float32 + zstd-1 at the same chunk size (today's default); **yes** marks the "
             "layouts at most 10 % larger. Error columns: float16 against the float32 "
             "original, relative to the signal's std (overall max / RMS, worst channel's "
             "max). `lz4` is a numcodecs codec, outside the Zarr v3 specification.", ""]
    lines += _table(
        ["dtype", "codec", "chunk windows", "delivery", "on disk MB", "vs ref", "≤ +10 %",
         "write s", "windows/s", "first batch s", "max err / std", "RMS err / std",
         "worst channel max err / std", "status"],
        [[r["dtype"], r["codec"], r["chunk_windows"], r.get("delivery"),
          _mb(r.get("bytes_on_disk")),
          None if r.get("size_vs_reference") is None else f"{r['size_vs_reference']:.3f}",
          "**yes**" if r.get("within_size_target") else "no", r.get("write_s"),
          r.get("windows_per_s"), r.get("first_batch_s"), r.get("error_max_rel_std"),
          r.get("error_rms_rel_std"), r.get("error_channel_max_rel_std"), _status(r)]
         for r in recs])
    err = result.get("float16_error")
    if err:
        lines += ["", f"float16 error bound on this EEG (µV): max {err['max_abs_uv']:.3g} µV = "
                      f"{err['max_rel_std']:.3g} std, RMS {err['rms_uv']:.3g} µV = "
                      f"{err['rms_rel_std']:.3g} std; worst channel: max "
                      f"{err['channel_max_rel_std']:.3g}, RMS {err['channel_rms_rel_std']:.3g} "
                      "of its std."]
    best = result.get("best_layout")
    if best:
        lines += ["", f"Fastest layout within the size target: **{best['dtype']} / "
                      f"{best['codec']} / {best['chunk_windows']} windows per chunk** "
                      f"({best['delivery']} delivery, {_fmt(best['windows_per_s'])} windows/s)."]
    if result.get("float16_delivery") is False:
        lines += ["", "WindowStream has no `dtype=` argument here: float16 layouts were read "
                      "with float32 delivery only."]
    return lines


def backends_lines(result: dict[str, Any]) -> list[str]:
    """The backends suite's section of ``results.md`` (empty when it did not run)."""
    recs = [r for r in result["records"] if r["suite"] == "backends"]
    if not recs:
        return []
    first = recs[0]
    lines = ["", "## Read backends", "",
             f"Whole-chunk reads of {first.get('n_windows')} windows ({first.get('chunk_windows')} "
             "per chunk), warm page cache, in one process; threads = calling threads "
             "(zarrs and tensorstore also run their own pools). MB/s of decoded data. Fork "
             f"probe (on the {first.get('fork_probe_layout')} store, each backend in a fresh "
             "interpreter): read two chunks, fork, read two chunks in the child; a child "
             "that does not answer in time is killed (`hang`).", ""]
    lines += _table(
        ["backend", "layout", "threads", "read path", "windows/s", "MB/s", "on disk MB",
         "fork-safe", "status"],
        [[r["backend"], r["layout"], r.get("threads"), r.get("read_path"),
          r.get("windows_per_s"), r.get("mb_per_s"), _mb(r.get("bytes_on_disk")),
          r.get("fork_safe"), _status(r)] for r in recs])
    verdict = result.get("backends_verdict")
    if verdict:
        lines += ["", f"**Verdict**: {verdict['line']}"]
    return lines


def gpu_lines(recs: Sequence[dict[str, Any]]) -> list[str]:
    """The GPU feed suite's section of ``results.md`` (empty when it did not run)."""
    gpu = [r for r in recs if r["suite"] == "gpu"]
    if not gpu:
        return []
    lines = ["", "## GPU feed (EEGNeX, challenge 1)", ""]
    ran = next((r for r in gpu if r.get("gpu_name")), gpu[0])
    lines += [f"GPU: {ran.get('gpu_name') or 'none'}; CUDA {ran.get('cuda_version') or '-'}, "
              f"torch {ran.get('torch_version') or '-'}. Data wait = time from a step's start "
              "until its batch is on the device (iterator, host-to-device copy, float16 to "
              "float32 on the GPU) over the whole step, each step synchronised; warm-up steps and "
              "each epoch's first batch are not counted. Overlapped: the same steps again "
              "without synchronisation (fetching overlaps computing, as in training).", ""]
    lines += _table(
        ["feed", "delivery", "workers", "pinned", "windows/s", "overlapped windows/s",
         "step ms", "data-wait fraction", "steps", "peak RSS MB", "status"],
        [[r.get("variant") or r["strategy"], r.get("delivery"), r.get("workers"),
          r.get("pinned"), r.get("windows_per_s"), r.get("overlapped_windows_per_s"),
          r.get("step_ms"), r.get("data_wait_fraction"), r.get("steps"), r.get("peak_rss_mb"),
          _status(r)] for r in gpu])
    return lines


# --------------------------------------------------------------------------- plots
def plot_results(out_dir: Path, records: Sequence[dict[str, Any]], workers: int | None = None
                 ) -> list[Path]:
    """Write ``rss_vs_size.png`` and ``throughput.png``; return their paths.

    The memory plot shows the runs at ``workers`` DataLoader workers (default: all).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    load = [r for r in records if r["suite"] == "loading" and r.get("status") == "ok"]
    if not load:  # e.g. only the build suite ran
        return paths
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=80)
    names = sorted({(r["strategy"], r.get("variant")) for r in load})
    same_w = [r for r in load if workers is None or r.get("workers") == workers]
    for strategy, variant in names:
        rows = sorted((r["store_gb"], r["peak_rss_mb"], r.get("peak_pss_mb"))
                      for r in same_w if r["strategy"] == strategy
                      and r.get("variant") == variant and r["cache"] == "warm")
        if not rows:
            continue
        label = strategy if variant in (None, "zarr", "numpy", "seed") else f"{strategy}/{variant}"
        line, = ax.plot([g for g, _, _ in rows], [v for _, v, _ in rows], marker="o",
                        label=label)
        if any(p for _, _, p in rows):
            ax.plot([g for g, _, _ in rows], [p or float("nan") for _, _, p in rows],
                    ls=":", color=line.get_color())
    ax.set_xlabel("store size (GB of float32 windows)")
    ax.set_ylabel("peak RSS of process tree (MB)")
    ax.set_title(f"Peak memory vs store size (warm, {workers} workers; dotted: PSS)",
                 fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = out_dir / "rss_vs_size.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(6.5, 4.0), dpi=80)
    bars = [r for r in load if r.get("size_factor") == 1 and r.get("windows_per_s")]
    if not bars:
        return paths
    bars.sort(key=lambda r: (r["cache"], -r["windows_per_s"]))
    labels = [f"{r['strategy']}/{r.get('variant')} ({r['cache']}, {r['workers']}w)"
              for r in bars]
    colors = ["tab:orange" if r["cache"] == "warm" else "tab:blue" for r in bars]
    ax.barh(range(len(bars)), [r["windows_per_s"] for r in bars], color=colors)
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("windows/s (log scale)")
    ax.set_title("Loader throughput, smallest store (orange warm, blue cold)", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    p = out_dir / "throughput.png"
    fig.savefig(p)
    plt.close(fig)
    paths.append(p)
    return paths
