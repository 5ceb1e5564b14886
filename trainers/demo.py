"""The main job on the embedded dataset, as run by ``make demo``.

synthesize (20 R5 mini subjects, CCD + resting state) → build the challenge1
and challenge2 stores with Dask → stream each into a short training run →
export a submission → print windows, store size, peak RAM, throughput and
held-out NRMSE. Every step is skipped when its output is already complete,
so a second ``make demo`` only re-trains.

Run ``python -m trainers.demo --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DEMO_TASKS", "main", "run_demo"]

#: Which recordings feed each challenge store.
DEMO_TASKS: dict[str, list[str]] = {
    "challenge1": ["contrastChangeDetection"],
    "challenge2": ["RestingState"],
}


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _synth(out: Path, workers: int) -> Path:
    from eegstore.synth import synthesize

    tasks = sorted({t for ts in DEMO_TASKS.values() for t in ts})
    done = out / "synth.json"
    if done.exists():
        root = Path(json.loads(done.read_text())["root"])
        if root.exists():
            print(f"[1/4] synthetic release already at {root}")
            return root
    t0 = time.perf_counter()
    report = synthesize(out / "bids", tasks=tasks, workers=workers)
    root = Path(report.root)
    done.write_text(json.dumps({"root": str(root)}))
    print(f"[1/4] synthesized {report.summary()} in {time.perf_counter() - t0:.0f} s")
    return root


def _build(root: Path, out: Path, workers: int) -> dict[str, Path]:
    from eegstore.build import build_store

    stores = {}
    for challenge, tasks in DEMO_TASKS.items():
        store = out / f"{challenge}.zarr"
        report = build_store(root, store, challenge, tasks=tasks, workers=workers)
        print(f"[2/4] {challenge}: {report}")
        stores[challenge] = store
    return stores


def _train(stores: dict[str, Path], out: Path, epochs_scale: float, *,
           permute_targets: bool = False) -> dict[str, dict[str, Any]]:
    from trainers.base import get_trainer
    from trainers.config import DEMO_SETTINGS

    results: dict[str, dict[str, Any]] = {}
    for challenge, store in stores.items():
        settings = dict(DEMO_SETTINGS[challenge])
        settings["epochs"] = max(1, round(settings["epochs"] * epochs_scale))
        trainer_cls = get_trainer(challenge)
        config = trainer_cls.default_config().replace(**settings,
                                                      permute_targets=permute_targets)
        name = f"{challenge}-permuted" if permute_targets else challenge
        run_dir = out / "runs" / name
        t0 = time.perf_counter()
        result = trainer_cls(store, config, run_dir=run_dir).fit()
        elapsed = time.perf_counter() - t0
        n_train = int(result.metrics["n_windows"]["train"]) * len(result.history)
        results[name] = {"metrics": result.metrics, "train_s": elapsed,
                         "train_windows": n_train, "run_dir": run_dir}
        print(f"[3/4] {name}: {result.status}, valid NRMSE "
              f"{_fmt(result.metrics.get('valid_nrmse'))}, test NRMSE "
              f"{_fmt(result.metrics.get('test_nrmse'))}, {elapsed:.0f} s")
    return results


def run_demo(out: Path, *, workers: int = 2, epochs_scale: float = 1.0,
             controls: bool = False) -> dict[str, Any]:
    """Run the whole demo into ``out`` and return the summary it prints.

    Parameters
    ----------
    out : Path
        Working folder (created).
    workers : int
        Dask workers for synthesis and builds.
    epochs_scale : float
        Multiplies the demo's epoch counts (``0.25`` for a smoke run).
    controls : bool
        Also train both challenges on permuted targets (a leakage control that must
        score about 1.0); doubles the training time.

    Returns
    -------
    dict
        The summary, also written to ``out/summary.json``.
    """
    import psutil

    from benchmarks.procmon import TreeSampler
    from eegstore.store import open_store
    from trainers.submission import export_submission

    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    with TreeSampler(os.getpid(), interval_s=0.1) as sampler:
        root = _synth(out, workers)
        stores = _build(root, out, workers)
        results = _train(stores, out, epochs_scale)
        if controls:
            results.update(_train(stores, out, epochs_scale, permute_targets=True))
        zip_path = out / "submission.zip"
        export_submission(results["challenge1"]["run_dir"], results["challenge2"]["run_dir"],
                          zip_path)
        print(f"[4/4] submission written to {zip_path}")
    summary: dict[str, Any] = {"wall_s": round(time.perf_counter() - t_start, 1),
                               "peak_rss_mb": round(sampler.peak_rss / 2**20, 1),
                               "machine": f"{psutil.cpu_count()} cores, "
                                          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM",
                               "challenges": {}}
    for challenge, store in stores.items():
        ds = open_store(store)
        r = results[challenge]
        m = r["metrics"]
        summary["challenges"][challenge] = {
            "windows": int(ds.sizes["window"]),
            "store_mb": round(_dir_bytes(store) / 2**20, 1),
            "fit_windows_per_s": round(r["train_windows"] / max(r["train_s"], 1e-9), 1),
            "valid_nrmse": m.get("valid_nrmse"),
            "test_nrmse": m.get("test_nrmse"),
        }
        control = results.get(f"{challenge}-permuted")
        if control is not None:
            summary["challenges"][challenge]["permuted_test_nrmse"] = (
                control["metrics"].get("test_nrmse"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(summary)
    return summary


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"\n=== eegstore demo ({summary['machine']}) ===")
    print(f"{'store':<12}{'windows':>9}{'size MB':>10}{'fit win/s':>11}"
          f"{'valid NRMSE':>13}{'test NRMSE':>12}{'permuted':>10}")
    for name, c in summary["challenges"].items():
        print(f"{name:<12}{c['windows']:>9}{c['store_mb']:>10}{c['fit_windows_per_s']:>11}"
              f"{_fmt(c['valid_nrmse']):>13}{_fmt(c['test_nrmse']):>12}"
              f"{_fmt(c.get('permuted_test_nrmse', '-')):>10}")
    print(f"peak RAM (all processes): {summary['peak_rss_mb']:.0f} MB; "
          f"total {summary['wall_s']:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of the demo.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code.
    """
    from eegstore.cli import ArgumentParser, run_cli
    from eegstore.errors import ConfigError

    parser = ArgumentParser(prog="python -m trainers.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".demo"), help="working folder")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (default 2)")
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="multiply the demo's epoch counts (default 1)")
    parser.add_argument("--controls", action="store_true",
                        help="also train on permuted targets (must score about 1.0)")

    def dispatch(args: argparse.Namespace) -> int:
        if args.workers < 1 or args.epochs_scale <= 0:
            raise ConfigError(f"expected --workers >= 1 and --epochs-scale > 0, got "
                              f"{args.workers} and {args.epochs_scale}")
        run_demo(args.out, workers=args.workers, epochs_scale=args.epochs_scale,
                 controls=args.controls)
        return 0

    return run_cli("python -m trainers.demo", parser, dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
