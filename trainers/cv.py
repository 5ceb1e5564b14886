"""Subject-level cross-validation: every fold an ordinary ``fit`` run, scored out of fold.

:func:`cross_validate` plans the folds from the store's coordinates
(:mod:`trainers.cv_plan`), trains one run per fold (and one on permuted targets
per fold with ``controls=True``) with the fold's subjects as the run's splits,
predicts the fold's test subjects, and writes::

    OUT/cv.json               settings, the plan (reload: trainers.cv_plan.load_plan), the
                              per-fold runs and every score (trainers.cv_report)
    OUT/cv.md                 the tables
    OUT/cv.png                per-fold NRMSE with pooled values and intervals
    OUT/folds/r0-f0/          the fold's run directory (config, checkpoint, weights, metrics;
                              fold.json: its subjects, which replace the config's split)
    OUT/controls/r0-f0/       the permuted-target run of the fold (controls=True)
    OUT/predictions/r0-f0.npz the fold's out-of-fold predictions (written last: fold done)

Running it again with the same settings finishes what is missing only: finished
folds are read back, a fold whose run stopped (a callback, ``max_minutes``, the
memory guard, an interrupt) resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from eegstore._io import atomic_file, atomic_write
from eegstore.errors import ConfigError
from trainers.base import Callback, Trainer, get_trainer
from trainers.config import RUN_CONTROL_FIELDS, TrainConfig
from trainers.cv_plan import CVFold, CVPlan, load_plan, plan_folds, store_coordinates
from trainers.cv_report import (
    FoldPredictions,
    ScoreSummary,
    check_n_bootstrap,
    combined_score,
    markdown_report,
    plot_folds,
    score_folds,
)

__all__ = ["CVResult", "combine_cv", "cross_validate", "load_fold_predictions"]

CV_FORMAT = 1
#: Entries of cv.json that must match for a run to be continued.
_IDENTITY = ("format", "store", "trainer", "config", "controls", "plan")


@dataclass(frozen=True)
class CVResult:
    """What :func:`cross_validate` returns.

    Attributes
    ----------
    out : Path
        The output directory.
    plan : CVPlan
        The folds.
    complete : bool
        False when a fold's run stopped early (rerun to continue).
    scores : dict
        Level -> predictor -> :class:`~trainers.cv_report.ScoreSummary` (empty unless
        ``complete``).
    figure : matplotlib.figure.Figure or None
        The per-fold figure (None unless ``complete``).
    """

    out: Path
    plan: CVPlan
    complete: bool
    scores: dict[str, dict[str, ScoreSummary]]
    figure: Any = None

    def summary(self) -> str:
        """One line per level and predictor: pooled NRMSE and its interval."""
        if not self.complete:
            return f"cross-validation in {self.out} is not complete; run it again to continue"
        return "\n".join(f"{level} {key}: pooled NRMSE {s.pooled:.3f} "
                         f"[{s.ci_low:.3f}, {s.ci_high:.3f}], folds {s.fold_mean:.3f} ± "
                         f"{s.fold_sd:.3f}" for level, by in self.scores.items()
                         for key, s in by.items())


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, allow_nan=False) + "\n", durable=False)


def _learnt(config: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in RUN_CONTROL_FIELDS}


def _check_same_run(path: Path, identity: dict[str, Any]) -> None:
    saved = json.loads(path.read_text())
    changed = sorted(k for k in _IDENTITY if saved.get(k) != identity[k])
    if "config" in changed:
        old, new = saved.get("config", {}), identity["config"]
        changed.remove("config")
        changed += [f"config.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if changed:
        raise ConfigError(f"expected the settings of the cross-validation in {path.parent} to "
                          f"continue it, got changes to {changed}; use the same command or "
                          "another --out")


def _fit_fold(cls: type[Trainer], store: str, config: TrainConfig, fold: CVFold, run_dir: Path,
              masks: dict[str, np.ndarray], callbacks: Sequence[Callback]) -> Trainer | None:
    """Train (or resume, or reload) one fold's run; None when it stopped early.

    The run's splits are the fold's subjects (``fold.json``), not its config's split settings.
    """
    trainer = cls(store, config, run_dir=run_dir, callbacks=callbacks, splits=masks)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "fold.json", fold.to_dict())
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and (run_dir / "weights.pt").is_file() and \
            json.loads(metrics_path.read_text()).get("status") in ("completed", "early_stopped"):
        return trainer  # predicts with the saved weights
    result = trainer.fit(resume=(run_dir / "checkpoint.pt").is_file())
    return trainer if result.status in ("completed", "early_stopped") else None


def _save_predictions(path: Path, pred: dict[str, np.ndarray], y_pred: dict[str, np.ndarray]
                      ) -> None:
    arrays = {"index": pred["index"], "subject": pred["subject"].astype(str),
              "y_true": pred["y_true"], **{f"y_pred_{k}": v for k, v in y_pred.items()}}
    with atomic_file(path, durable=False) as fh:
        np.savez(fh, allow_pickle=False, **arrays)


def load_fold_predictions(out: str | os.PathLike[str]) -> list[FoldPredictions]:
    """Out-of-fold predictions of a finished cross-validation directory.

    Parameters
    ----------
    out : path-like
        A directory written by :func:`cross_validate`.

    Returns
    -------
    list of FoldPredictions
        One per fold of the plan.
    """
    out = Path(out)
    plan = load_plan(out)
    folds = []
    for fold in plan.folds:
        path = out / "predictions" / f"{fold.name}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"expected the predictions of fold {fold.name} at {path}, "
                                    "got nothing; finish the cross-validation first")
        with np.load(path) as data:
            y_pred = {k.removeprefix("y_pred_"): data[k] for k in data.files
                      if k.startswith("y_pred_")}
            folds.append(FoldPredictions(fold.name, fold.repeat, data["subject"].astype(str),
                                         data["y_true"], y_pred))
    return folds


def _fold_row(fold: CVFold, n_test: int, best_epoch: Any) -> list[Any]:
    return [f"{fold.name} ({fold.label})", ", ".join(fold.test), ", ".join(fold.valid),
            len(fold.train), n_test, best_epoch]


def cross_validate(store: str | os.PathLike[str], trainer: str = "challenge1",
                   config: TrainConfig | None = None, *, out: str | os.PathLike[str],
                   n_folds: int | None = 5, group: str = "subject", repeats: int = 1,
                   seed: int = 0, valid_fraction: float = 0.2, controls: bool = False,
                   plan: CVPlan | str | os.PathLike[str] | None = None,
                   n_bootstrap: int = 2000, callbacks: Iterable[Callback] = (),
                   progress: bool = True) -> CVResult:
    """K-fold cross-validation grouped by subject (or leave-one-release-out).

    Parameters
    ----------
    store : path-like
        The store.
    trainer : str
        Registered trainer (``challenge1``, ``challenge2``).
    config : TrainConfig, optional
        Settings of every fold's run (default: the trainer's); the split settings are
        replaced by the fold's subjects and ``seed`` by the fold's seed.
    out : path-like
        Output directory (see the module docstring).
    n_folds, group, repeats, seed, valid_fraction
        The plan (:func:`trainers.cv_plan.plan_folds`); ignored when ``plan`` is given.
    controls : bool
        Also train every fold on permuted targets.
    plan : CVPlan or path-like, optional
        Folds to reuse (a plan, or an earlier ``cv.json`` / its directory).
    n_bootstrap : int
        Bootstrap draws over subjects for the intervals.
    callbacks : iterable of Callback
        Passed to every fold's trainer.
    progress : bool
        Progress bar over folds.

    Returns
    -------
    CVResult
        Scores, plan and figure.
    """
    cls = get_trainer(trainer)
    check_n_bootstrap(n_bootstrap)
    config = config if config is not None else cls.default_config()
    store_s, out = os.fspath(store), Path(out)
    subject, release, finite = store_coordinates(store_s, config.target)
    if plan is None:
        plan = plan_folds(subject, release, n_folds=n_folds, group=group, repeats=repeats,
                          seed=seed, valid_fraction=valid_fraction, finite=finite)
    elif not isinstance(plan, CVPlan):
        plan = load_plan(plan)
    plan.check_store(subject, finite)
    levels = ("window", "subject") if cls.name == "challenge2" else ("window",)
    identity = {"format": CV_FORMAT, "store": store_s, "trainer": cls.name,
                "config": _learnt(config), "controls": controls, "plan": plan.to_dict()}
    out.mkdir(parents=True, exist_ok=True)
    cv_json = out / "cv.json"
    if cv_json.is_file():
        _check_same_run(cv_json, identity)
    _write_json(cv_json, {**identity, "status": "running"})
    (out / "predictions").mkdir(exist_ok=True)

    t0 = time.monotonic()
    fold_rows: list[list[Any]] = []
    bar = tqdm(plan.folds, desc=f"{cls.name} cv", unit="fold", disable=not progress,
               dynamic_ncols=True)
    for fold in bar:
        bar.set_postfix(fold=fold.name)
        masks = {k: v & finite for k, v in fold.masks(subject).items()}
        fold_config = config.replace(seed=fold.seed)
        pred_path = out / "predictions" / f"{fold.name}.npz"
        model_dir = out / "folds" / fold.name
        if not pred_path.is_file():
            model = _fit_fold(cls, store_s, fold_config, fold, model_dir, masks,
                              list(callbacks))
            control = None
            if model is not None and controls:
                control = _fit_fold(cls, store_s, fold_config.replace(permute_targets=True),
                                    fold, out / "controls" / fold.name, masks, list(callbacks))
            if model is None or (controls and control is None):
                bar.close()
                _write_json(cv_json, {**identity, "status": "stopped",
                                      "stopped_in": fold.name})
                return CVResult(out, plan, False, {})
            pred = model.predict(masks["test"])
            y_all = model.targets()
            y_pred = {"model": pred["y_pred"],
                      "train_mean": np.full(pred["y_pred"].shape, y_all[masks["train"]].mean())}
            if control is not None:
                y_pred["permuted"] = control.predict(masks["test"])["y_pred"]
            _save_predictions(pred_path, pred, y_pred)
        metrics = json.loads((model_dir / "metrics.json").read_text())
        fold_rows.append(_fold_row(fold, int(masks["test"].sum()), metrics.get("best_epoch")))
    bar.close()
    scores = score_folds(load_fold_predictions(out), levels, n_bootstrap=n_bootstrap,
                         seed=plan.seed)
    labels = [f.name if plan.repeats > 1 else str(f.fold + 1) for f in plan.folds]
    model_name = config.model
    title = f"{cls.name} {model_name}, {plan.n_folds}-fold {plan.group} CV"
    tested = sorted(s for f in plan.folds for s in f.test)
    lines = [f"store: `{store_s}`",
             f"folds: {plan.n_folds} grouped by {plan.group}, {plan.repeats} repeat(s), plan "
             f"seed {plan.seed}; inner validation {plan.valid_fraction:g} of each fold's "
             f"training subjects (best epoch kept); fold training seeds in cv.json",
             f"subjects: {len(plan.subjects)}, tests per subject per repeat: "
             f"{len(tested) // (len(plan.subjects) * plan.repeats)} (every subject once)",
             f"model: {model_name}, {config.epochs} epochs, batch {config.batch_size}, "
             f"lr {config.lr:g}",
             f"baselines: training mean of each fold; "
             f"{'permuted-target training per fold' if controls else 'no permuted control'}",
             f"bootstrap: {n_bootstrap} draws over subjects, seed {plan.seed}"]
    md = markdown_report(title, lines, scores, labels, fold_rows)
    (out / "cv.md").write_text(md)
    figure = plot_folds(scores, labels, title, out / "cv.png")
    _write_json(cv_json, {**identity, "status": "complete", "n_bootstrap": n_bootstrap,
                          "elapsed_s": round(time.monotonic() - t0, 1),
                          "scores": {level: {k: s.to_dict() for k, s in by.items()}
                                     for level, by in scores.items()},
                          "folds": [dict(zip(("fold", "test", "valid", "n_train_subjects",
                                              "n_test_windows", "best_epoch"), row, strict=True))
                                    for row in fold_rows]})
    return CVResult(out, plan, True, scores, figure)


def combine_cv(c1: str | os.PathLike[str], c2: str | os.PathLike[str], *,
               n_bootstrap: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Return the challenge's combined score of two finished cross-validations.

    Parameters
    ----------
    c1, c2 : path-like
        Output directories of the challenge1 and challenge2 cross-validations.
    n_bootstrap, seed : int
        Draws of the paired bootstrap over the union of both stores' subjects, and its seed.

    Returns
    -------
    dict
        Predictor -> ``{"combined", "ci_low", "ci_high", "challenge1", "challenge2"}``.
    """
    for path, name in ((c1, "challenge1"), (c2, "challenge2")):
        cv_json = Path(path) / "cv.json"
        trainer = json.loads(cv_json.read_text()).get("trainer") if cv_json.is_file() else None
        if trainer != name:
            raise ConfigError(f"expected a {name} cross-validation directory, got {path} "
                              f"({trainer or 'no cv.json'})")
    return combined_score(load_fold_predictions(c1), load_fold_predictions(c2),
                          n_bootstrap=n_bootstrap, seed=seed)
