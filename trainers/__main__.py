"""``python -m trainers``: fit, evaluate and export challenge submissions.

::

    python -m trainers fit --store STORE --trainer challenge1 --model eegnex --epochs N --out RUN
    python -m trainers fit --out RUN --resume            # continue a stopped run (mid-epoch;
                                                         # run-control options are not inherited)
    python -m trainers evaluate --store STORE --run RUN  # metrics of a trained run
    python -m trainers export-submission --challenge1 RUN1 --challenge2 RUN2 --out sub.zip
    python -m trainers cv --store STORE --trainer challenge1 --folds 5 --controls --out CV1
    python -m trainers cv-combine CV1 CV2                # 0.3 * C1 + 0.7 * C2 with its interval

Runs under ``torchrun --nproc_per_node=N -m trainers fit ...`` (DDP; gloo on CPU).

``--max-minutes`` stops training after that much time (checkpoint saved), then
evaluates and writes weights/metrics with ``status: time_limit`` (exit 0);
``--resume`` continues it.

Exit codes: 0 success, 2 misuse (one line), 3 internal error (traceback in a log
file), 75 the memory guard stopped the run (a checkpoint was saved; rerun with
``--resume``), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eegstore.cli import ArgumentParser, run_cli
from eegstore.errors import ConfigError, MemoryGuardTriggered
from trainers.config import LOSSES, OPTIMIZERS, RUN_CONTROL_FIELDS, SCHEDULES, SPLITS, TrainConfig
from trainers.cv_plan import CV_GROUPS
from trainers.memory import EXIT_MEMORY

__all__ = ["build_parser", "main"]

#: CLI option -> TrainConfig field (options default to None = "not given").
_FIELDS: dict[str, str] = {
    "model": "model", "model_kwargs": "model_kwargs", "epochs": "epochs",
    "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
    "optimizer": "optimizer", "schedule": "schedule", "loss": "loss",
    "huber_delta": "huber_delta", "l1": "l1", "l2": "l2", "grad_clip": "grad_clip",
    "patience": "patience", "split": "split", "valid_fraction": "valid_fraction",
    "test_fraction": "test_fraction", "valid_release": "valid_releases",
    "test_release": "test_releases", "split_seed": "split_seed",
    "permute_targets": "permute_targets", "target": "target", "crop_samples": "crop_samples",
    "eval_crops": "eval_crops", "eval_crop_stride": "eval_crop_stride", "seed": "seed",
    "num_workers": "num_workers", "buffer_chunks": "buffer_chunks",
    "ram_budget_mb": "ram_budget_mb", "device": "device", "amp": "amp",
    "max_minutes": "max_minutes", "max_rss_mb": "max_rss_mb",
    "min_available_mb": "min_available_mb", "memory_check_every": "memory_check_every",
    "log_indices": "log_indices", "progress": "progress",
}


def _add_fit_options(p: argparse.ArgumentParser, *, cv: bool = False) -> None:
    """Training options; ``cv``: without the run, split, seed and control options."""
    a = p.add_argument
    if not cv:
        a("--store", help="store to train on (default on --resume: the run's store)")
        a("--trainer", help="registered trainer: challenge1 | challenge2 (default on --resume: "
          "the run's)")
        a("--out", required=True, help="run directory (metrics.json, checkpoint.pt, weights.pt)")
        a("--resume", action="store_true", help="continue the checkpoint in --out (mid-epoch)")
    a("--model", help="tinycnn or a braindecode model name (default eegnex)")
    a("--model-kwargs", type=json.loads, help="JSON dict of extra model keyword arguments")
    a("--epochs", type=int)
    a("--batch-size", type=int)
    a("--lr", type=float, help="peak learning rate")
    a("--weight-decay", type=float)
    a("--optimizer", choices=OPTIMIZERS)
    a("--schedule", choices=SCHEDULES, help="per-batch cosine decay or constant")
    a("--loss", choices=LOSSES)
    a("--huber-delta", type=float)
    a("--l1", type=float, help="L1 (elastic-net) penalty weight on weight tensors")
    a("--l2", type=float, help="L2 (elastic-net) penalty weight on weight tensors")
    a("--grad-clip", type=float, help="clip the gradient norm to this value")
    a("--patience", type=int, help="early stopping: epochs without a better valid NRMSE")
    if not cv:
        a("--split", choices=SPLITS, help="subject-disjoint random split or by release")
        a("--valid-fraction", type=float, help="fraction of subjects for validation")
        a("--test-fraction", type=float, help="fraction of subjects for test")
        a("--valid-release", action="append", help="validation release (with --split release)")
        a("--test-release", action="append", help="test release (with --split release)")
        a("--split-seed", type=int)
        a("--permute-targets", action="store_true", default=None,
          help="control: train on targets permuted across training windows (scores ~1)")
    a("--target", help="per-window coordinate to regress (default: target)")
    a("--crop-samples", type=int, help="random training crop length (challenge2: 2 s)")
    a("--eval-crops", choices=("center", "all"), help="evaluation crops (challenge2)")
    a("--eval-crop-stride", type=int)
    if not cv:
        a("--seed", type=int)
    a("--num-workers", type=int, help="DataLoader workers")
    a("--buffer-chunks", type=int, help="shuffle buffer of the stream, in chunks")
    a("--ram-budget-mb", type=float, help="RAM budget of the stream")
    a("--device", help="auto | cpu | cuda | cuda:N")
    a("--amp", action=argparse.BooleanOptionalAction, default=None,
      help="bfloat16 autocast (default: on for CUDA)")
    a("--max-minutes", type=float, help="stop with a checkpoint after this much training")
    a("--max-rss-mb", type=float, help=f"memory guard: largest RSS (exit {EXIT_MEMORY})")
    a("--min-available-mb", type=float,
      help=f"memory guard: smallest available system memory (default 256; exit {EXIT_MEMORY})")
    a("--memory-check-every", type=int, help="batches between memory checks")
    a("--log-indices", action="store_true", default=None,
      help="write the window indices each rank trained on to indices_rank{R}.json")
    a("--no-progress", dest="progress", action="store_false", default=None,
      help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``python -m trainers`` parser."""
    parser = ArgumentParser(prog="python -m trainers", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    fit = sub.add_parser("fit", help="train a model on a store")
    _add_fit_options(fit)
    ev = sub.add_parser("evaluate", help="score a trained run on a store")
    ev.add_argument("--store", help="store to score (default: the run's)")
    ev.add_argument("--run", required=True, help="run directory")
    ev.add_argument("--split", default=None,
                    help="valid | test | train | all (default: valid+test of the run's "
                         "store, all windows of another store)")
    ev.add_argument("--out", help="also write the metrics to this JSON file")
    ex = sub.add_parser("export-submission", help="write the challenge submission zip")
    ex.add_argument("--challenge1", required=True, help="challenge1 run directory")
    ex.add_argument("--challenge2", required=True, help="challenge2 run directory")
    ex.add_argument("--out", required=True, help="zip file to write")
    _add_cv_parsers(sub)
    return parser


def _add_cv_parsers(sub: Any) -> None:
    cv = sub.add_parser(
        "cv", help="K-fold cross-validation grouped by subject (or release)",
        description="K-fold cross-validation grouped by subject (or leave-one-release-out): "
        "every subject is tested once per repeat, each fold is an ordinary fit run on the "
        "other subjects (inner validation split from them for early stopping), scored out of "
        "fold with pooled NRMSE, mean ± sd over folds and a 95 % bootstrap interval over "
        "subjects, beside the training-mean baseline (and permuted targets with --controls). "
        "Writes OUT/cv.json, OUT/cv.md, OUT/cv.png; run the same command again to finish an "
        "interrupted run (remaining folds only).")
    a = cv.add_argument
    a("--store", required=True, help="store to cross-validate on")
    a("--trainer", required=True, help="registered trainer: challenge1 | challenge2")
    a("--out", required=True, help="output directory (cv.json, cv.md, cv.png, fold runs)")
    a("--folds", type=int, default=None,
      help="folds per repeat (default 5; --group release: the number of releases)")
    a("--group", choices=CV_GROUPS, default="subject",
      help="hold out groups of subjects, or one release per fold")
    a("--repeats", type=int, default=1, help="repeats with a new subject assignment each")
    a("--seed", type=int, default=0,
      help="seed of the folds, the inner validation draw and each fold's training seed")
    a("--inner-valid-fraction", type=float, default=0.2,
      help="fraction of each fold's training subjects for validation (default 0.2)")
    a("--controls", action="store_true",
      help="also train every fold on permuted targets (a control that must score ~1)")
    a("--plan", help="reuse the folds of an earlier cv.json (or its directory)")
    a("--bootstrap", type=int, default=2000, help="bootstrap draws over subjects (default 2000)")
    _add_fit_options(cv, cv=True)
    comb = sub.add_parser("cv-combine",
                          help="challenge score 0.3 * C1 + 0.7 * C2 of two cv directories")
    comb.add_argument("c1", help="challenge1 cv output directory")
    comb.add_argument("c2", help="challenge2 cv output directory")
    comb.add_argument("--bootstrap", type=int, default=2000, help="bootstrap draws")
    comb.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    comb.add_argument("--out", help="also write the scores to this JSON file")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    return {field: getattr(args, opt) for opt, field in _FIELDS.items()
            if getattr(args, opt, None) is not None}


def _fit(args: argparse.Namespace) -> int:
    from trainers.base import get_trainer

    out = Path(args.out)
    given = _given(args)
    if args.resume:
        saved_path = out / "config.json"
        if not saved_path.is_file():
            raise FileNotFoundError(f"expected a run to resume in {out} (config.json), got "
                                    "nothing; start it without --resume")
        saved = json.loads(saved_path.read_text())
        store = args.store or saved.pop("store")
        trainer_name = args.trainer or saved.pop("trainer")
        saved.pop("store", None)
        saved.pop("trainer", None)
        changed = sorted(k for k, v in given.items()
                         if k not in RUN_CONTROL_FIELDS and saved.get(k) != v)
        if changed:
            raise ConfigError(f"expected only run-control options ({', '.join(RUN_CONTROL_FIELDS)})"
                              f" with --resume, got changes to {changed}; start a new --out")
        # run-control options (memory thresholds, time limit, workers...) are not inherited:
        # a run stopped by the memory guard or --max-minutes resumes without those limits
        # unless they are given again.
        learnt = {k: v for k, v in saved.items() if k not in RUN_CONTROL_FIELDS}
        config = TrainConfig.from_dict({**learnt, **given})
    else:
        if not args.store or not args.trainer:
            raise ConfigError("expected --store and --trainer, got "
                              f"{'no --store' if not args.store else 'no --trainer'}; "
                              "both are required unless --resume")
        store, trainer_name = args.store, args.trainer
        cls = get_trainer(trainer_name)
        config = cls.default_config().replace(**given)
    if not Path(store).exists() and "://" not in store:
        raise FileNotFoundError(f"expected a store at {store}, got nothing")
    cls = get_trainer(trainer_name)
    trainer = cls(store, config, run_dir=out)
    try:
        result = trainer.fit(resume=args.resume)
    except MemoryGuardTriggered as exc:
        sys.stderr.write(f"python -m trainers: {exc} (exit {EXIT_MEMORY})\n")
        return EXIT_MEMORY
    if int(os.environ.get("RANK", "0")) == 0:
        m = result.metrics

        def fmt(v: Any) -> str:
            return "n/a" if v is None else f"{v:.4f}"

        print(f"{trainer_name} {m.get('model')}: {result.status}, valid_nrmse="
              f"{fmt(m.get('valid_nrmse'))}, test_nrmse={fmt(m.get('test_nrmse'))} -> {out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from trainers.base import get_trainer

    run = Path(args.run)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"expected a run directory with config.json at {run}, got "
                                "nothing")
    saved = json.loads(cfg_path.read_text())
    run_store = saved.pop("store")
    trainer_name = saved.pop("trainer")
    store = args.store or run_store
    same = Path(store).resolve() == Path(run_store).resolve() if "://" not in store else \
        store == run_store
    splits = (args.split.split(",") if args.split else (["valid", "test"] if same else ["all"]))
    trainer = get_trainer(trainer_name)(store, TrainConfig.from_dict(saved), run_dir=run)
    out: dict[str, Any] = {"store": store, "run": str(run)}
    for split in splits:
        if split != "all" and split not in trainer.splits():
            continue
        mask = trainer.split_mask(split)
        out[split] = trainer.evaluate(mask) if mask.any() else None
    text = json.dumps(out, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _export(args: argparse.Namespace) -> int:
    from trainers.submission import export_submission

    path = export_submission(args.challenge1, args.challenge2, args.out)
    print(f"wrote {path}")
    return 0


def _cv(args: argparse.Namespace) -> int:
    from trainers.base import get_trainer
    from trainers.cv import cross_validate

    if not Path(args.store).exists() and "://" not in args.store:
        raise FileNotFoundError(f"expected a store at {args.store}, got nothing")
    n_folds = args.folds if args.folds is not None or args.group == "release" else 5
    config = get_trainer(args.trainer).default_config().replace(**_given(args))
    try:
        result = cross_validate(args.store, args.trainer, config, out=args.out, n_folds=n_folds,
                                group=args.group, repeats=args.repeats, seed=args.seed,
                                valid_fraction=args.inner_valid_fraction,
                                controls=args.controls, plan=args.plan,
                                n_bootstrap=args.bootstrap, progress=config.progress)
    except MemoryGuardTriggered as exc:
        sys.stderr.write(f"python -m trainers: {exc}; run the same command again to continue "
                         f"(exit {EXIT_MEMORY})\n")
        return EXIT_MEMORY
    print(result.summary())
    if result.complete:
        print(f"-> {Path(args.out) / 'cv.md'}")
    return 0


def _cv_combine(args: argparse.Namespace) -> int:
    from trainers.cv import combine_cv

    scores = combine_cv(args.c1, args.c2, n_bootstrap=args.bootstrap, seed=args.seed)
    for key, s in scores.items():
        print(f"{key}: 0.3 * {s['challenge1']:.3f} + 0.7 * {s['challenge2']:.3f} = "
              f"{s['combined']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]")
    if args.out:
        Path(args.out).write_text(json.dumps(scores, indent=2) + "\n")
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    return {"fit": _fit, "evaluate": _evaluate, "export-submission": _export, "cv": _cv,
            "cv-combine": _cv_combine}[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m trainers``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code.
    """
    return run_cli("python -m trainers", build_parser(), _dispatch, argv)


if __name__ == "__main__":
    sys.exit(main())
