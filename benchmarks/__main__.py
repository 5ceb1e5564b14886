"""``python -m benchmarks run [--quick] [--sizes GB ...] [--workers N] [--out DIR]``.

Measures eegstore's loader against HDF5, full-load and braindecode baselines
(warm and cold page cache, 1x/2x/4x store sizes), the parallel build, a codec
sweep, the store-layout sweep (dtype x codec x chunk size, ``--suites layout``) and
(with CUDA) the GPU feed (``--suites gpu``), and writes ``results.json``,
``results.md`` and PNG plots into ``DIR``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.runner import SUITES, RunConfig, run_benchmarks
from eegstore.cli import ArgumentParser, run_cli


def _build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    run = sub.add_parser("run", help="run the benchmark suites",
                         description="run the benchmark suites and write the report")
    run.add_argument("--quick", action="store_true",
                     help="tiny sizes and short time limits (a smoke check, ~1 minute)")
    run.add_argument("--sizes", nargs="+", type=float, metavar="GB",
                     help="store sizes in GB; one value means 1x, 2x and 4x of it "
                          "(default 0.5 1 2; quick: 0.004 0.008 0.016)")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="DataLoader workers of every loader (default 2; quick: 1)")
    run.add_argument("--out", type=Path, default=Path("benchmarks/results"), metavar="DIR",
                     help="output directory (default benchmarks/results)")
    run.add_argument("--suites", nargs="+", choices=SUITES, metavar="SUITE",
                     help=f"suites to run, among {', '.join(SUITES)} (default all)")
    run.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                     help="where to write the benchmark data (kept and reused); default a "
                          "temporary directory removed afterwards")
    run.add_argument("--build-tasks", nargs="+", metavar="TASK",
                     help="tasks of the synthetic release the build suite builds (default "
                          "all ten HBN tasks, as in a real release; quick: RestingState)")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    cfg = RunConfig.make(args.out, quick=args.quick, sizes_gb=args.sizes, workers=args.workers,
                         suites=args.suites, data_dir=args.data_dir,
                         keep_data=args.data_dir is not None, build_tasks=args.build_tasks)
    result = run_benchmarks(cfg)
    for t in result["targets"]:
        mark = {True: "PASS", False: "MISS", None: "n/a "}[t["passed"]]
        print(f"[{mark}] {t['name']}: {t['measured']} ({t['detail']})")
    print(f"wrote {cfg.out / 'results.json'}, {cfg.out / 'results.md'} and plots "
          f"in {result['duration_s']:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    return run_cli("python -m benchmarks", _build_parser(), _dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
