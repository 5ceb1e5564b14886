"""Scores of a cross-validation: per fold, pooled, bootstrap intervals, baselines, report files.

Every figure is the challenge's NRMSE (:func:`trainers.metrics.nrmse`).  For each
predictor (the model, the training-mean baseline, the permuted-target control):

* ``per_fold``: NRMSE of each fold's test windows;
* ``fold_mean``, ``fold_sd``: mean and sample standard deviation of ``per_fold``;
* ``pooled``: NRMSE of every out-of-fold prediction at once (all repeats together);
* ``ci_low``, ``ci_high``: 95 % percentile interval of ``pooled`` by bootstrap over
  subjects (a drawn subject brings all its windows, from every repeat); all predictors
  share the same draws;
* ``vs_mean``, ``vs_mean_low``, ``vs_mean_high``: ``pooled`` minus the training-mean
  baseline's, with its paired 95 % interval (same draws): below 0 means better than
  predicting the training mean.  Out of fold the training mean scores a little above 1
  (each fold's training mean misses its test subjects' mean), so a predictor that learnt
  nothing, like the permuted-target control, is judged against it rather than against 1.

The ``subject`` level (challenge2) scores the mean prediction of each subject against
the subject's target instead of single windows.  :func:`combined_score` gives the
challenge's ``0.3 * C1 + 0.7 * C2`` with a paired bootstrap over the union of subjects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eegstore.errors import ConfigError
from trainers.metrics import nrmse, subject_means

__all__ = ["PREDICTORS", "FoldPredictions", "ScoreSummary", "check_n_bootstrap",
           "combined_score", "markdown_report", "plot_folds", "score_folds"]

#: Predictor key -> label in reports.
PREDICTORS: dict[str, str] = {"model": "model", "train_mean": "training mean",
                              "permuted": "permuted targets"}
#: Challenge weights of the combined score.
CHALLENGE_WEIGHTS = {"challenge1": 0.3, "challenge2": 0.7}


@dataclass(frozen=True)
class FoldPredictions:
    """Out-of-fold predictions of one fold.

    Attributes
    ----------
    name : str
        Fold name (``r0-f2``).
    repeat : int
        Repeat of the fold.
    subject : numpy.ndarray
        Subject of every test window.
    y_true : numpy.ndarray
        Targets of the test windows.
    y_pred : dict of str to numpy.ndarray
        Predictor key (:data:`PREDICTORS`) -> predictions of the test windows.
    """

    name: str
    repeat: int
    subject: np.ndarray
    y_true: np.ndarray
    y_pred: Mapping[str, np.ndarray]

    def level(self, level: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Return ``(units, y_true, y_pred)`` at ``window`` or ``subject`` level."""
        if level == "window":
            return self.subject, self.y_true, dict(self.y_pred)
        keys = list(self.y_pred)
        labels, means = subject_means(self.subject, self.y_true,
                                      *(self.y_pred[k] for k in keys))
        return labels, means[0], dict(zip(keys, means[1:], strict=True))


@dataclass(frozen=True)
class ScoreSummary:
    """NRMSE figures of one predictor at one level (see the module docstring)."""

    per_fold: tuple[float, ...]
    fold_mean: float
    fold_sd: float
    pooled: float
    ci_low: float
    ci_high: float
    vs_mean: float = math.nan
    vs_mean_low: float = math.nan
    vs_mean_high: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (NaN -> None)."""
        def clean(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None
        return {"per_fold": [clean(v) for v in self.per_fold], "fold_mean": clean(self.fold_mean),
                "fold_sd": clean(self.fold_sd), "pooled": clean(self.pooled),
                "ci_low": clean(self.ci_low), "ci_high": clean(self.ci_high),
                "vs_mean": clean(self.vs_mean), "vs_mean_low": clean(self.vs_mean_low),
                "vs_mean_high": clean(self.vs_mean_high)}


@dataclass(frozen=True)
class _UnitStats:
    """Sufficient statistics of NRMSE per bootstrap unit (subject)."""

    labels: np.ndarray
    n: np.ndarray
    sum_y: np.ndarray
    sum_y2: np.ndarray
    sse: dict[str, np.ndarray]

    def on(self, labels: np.ndarray) -> _UnitStats:
        """Re-index onto ``labels`` (units absent here contribute nothing)."""
        pos = np.searchsorted(self.labels, labels)
        pos = np.clip(pos, 0, max(self.labels.size - 1, 0))
        hit = (self.labels[pos] == labels) if self.labels.size else np.zeros(labels.size, bool)

        def take(a: np.ndarray) -> np.ndarray:
            return np.where(hit, a[pos] if a.size else 0.0, 0.0)
        return _UnitStats(labels, take(self.n), take(self.sum_y), take(self.sum_y2),
                          {k: take(v) for k, v in self.sse.items()})

    def nrmse(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """NRMSE of every predictor for each row of unit ``counts`` (B, units)."""
        n = counts @ self.n
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = (counts @ self.sum_y) / n
            var = (counts @ self.sum_y2) / n - mean**2
            scale = np.sqrt(np.where(var > 1e-12 * np.maximum(1.0, mean**2), var, np.nan))
            return {k: np.sqrt((counts @ v) / n) / scale for k, v in self.sse.items()}


def _unit_stats(units: np.ndarray, y_true: np.ndarray, y_pred: Mapping[str, np.ndarray]
                ) -> _UnitStats:
    labels, inverse = np.unique(np.asarray(units).astype(str), return_inverse=True)

    def total(w: np.ndarray) -> np.ndarray:
        return np.bincount(inverse, weights=w, minlength=labels.size)
    return _UnitStats(labels, total(np.ones(y_true.size)), total(y_true), total(y_true**2),
                      {k: total((y_true - p) ** 2) for k, p in y_pred.items()})


def _pooled(folds: Sequence[FoldPredictions], level: str
            ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    parts = [f.level(level) for f in folds]
    keys = list(parts[0][2])
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            {k: np.concatenate([p[2][k] for p in parts]) for k in keys})


def _draws(n_units: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """Bootstrap count matrix (n_bootstrap, n_units): how often each unit is drawn."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_units, size=(n_bootstrap, n_units))
    counts = np.zeros((n_bootstrap, n_units))
    np.add.at(counts, (np.repeat(np.arange(n_bootstrap), n_units), picks.reshape(-1)), 1.0)
    return counts


def _interval(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def check_n_bootstrap(n_bootstrap: int) -> None:
    """Raise :class:`ConfigError` unless ``n_bootstrap`` is an integer >= 100."""
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 100:
        raise ConfigError(f"expected n_bootstrap as an integer >= 100, got {n_bootstrap!r}")


def score_folds(folds: Sequence[FoldPredictions], levels: Sequence[str] = ("window",), *,
                n_bootstrap: int = 2000, seed: int = 0) -> dict[str, dict[str, ScoreSummary]]:
    """Score out-of-fold predictions (see the module docstring).

    Parameters
    ----------
    folds : sequence of FoldPredictions
        Every fold of the plan, all with the same predictors.
    levels : sequence of {"window", "subject"}
        Levels to score.
    n_bootstrap : int
        Bootstrap draws over subjects.
    seed : int
        Seed of the draws.

    Returns
    -------
    dict
        Level -> predictor key -> :class:`ScoreSummary`.
    """
    check_n_bootstrap(n_bootstrap)
    if not folds:
        raise ConfigError("expected at least one fold to score, got none")
    out: dict[str, dict[str, ScoreSummary]] = {}
    for level in levels:
        if level not in ("window", "subject"):
            raise ConfigError(f"expected levels among ('window', 'subject'), got {level!r}")
        per_fold: dict[str, list[float]] = {}
        for f in folds:
            _, y, preds = f.level(level)
            for k, p in preds.items():
                per_fold.setdefault(k, []).append(nrmse(y, p) if y.size >= 2 else math.nan)
        units, y, preds = _pooled(folds, level)
        stats = _unit_stats(units, y, preds)
        boot = stats.nrmse(_draws(stats.labels.size, n_bootstrap, seed))
        out[level] = {}
        base = preds.get("train_mean")
        for k, p in preds.items():
            vs_mean = (nrmse(y, p) - nrmse(y, base), *_interval(boot[k] - boot["train_mean"])) \
                if base is not None else (math.nan, math.nan, math.nan)
            fold_values = np.asarray(per_fold[k])
            finite = fold_values[np.isfinite(fold_values)]
            out[level][k] = ScoreSummary(
                per_fold=tuple(float(v) for v in fold_values),
                fold_mean=float(finite.mean()) if finite.size else math.nan,
                fold_sd=float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                pooled=nrmse(y, p), ci_low=_interval(boot[k])[0], ci_high=_interval(boot[k])[1],
                vs_mean=vs_mean[0], vs_mean_low=vs_mean[1], vs_mean_high=vs_mean[2])
    return out


def combined_score(c1: Sequence[FoldPredictions], c2: Sequence[FoldPredictions], *,
                   n_bootstrap: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Return the challenge's ``0.3 * C1 + 0.7 * C2`` of pooled window-level NRMSEs.

    The interval comes from a paired bootstrap over the union of both stores'
    subjects: a drawn subject brings its windows of both challenges.

    Parameters
    ----------
    c1, c2 : sequence of FoldPredictions
        Out-of-fold predictions of the challenge1 and challenge2 cross-validations.
    n_bootstrap : int
        Bootstrap draws.
    seed : int
        Seed of the draws.

    Returns
    -------
    dict
        Predictor key (present in both) -> ``{"combined", "ci_low", "ci_high",
        "challenge1", "challenge2"}``.
    """
    check_n_bootstrap(n_bootstrap)
    stats = [_unit_stats(*_pooled(folds, "window")) for folds in (c1, c2)]
    keys = [k for k in stats[0].sse if k in stats[1].sse]
    labels = np.union1d(stats[0].labels, stats[1].labels)
    counts = _draws(labels.size, n_bootstrap, seed)
    boots = [s.on(labels).nrmse(counts) for s in stats]
    full = [s.nrmse(np.ones((1, s.labels.size))) for s in stats]
    w1, w2 = CHALLENGE_WEIGHTS["challenge1"], CHALLENGE_WEIGHTS["challenge2"]
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        low, high = _interval(w1 * boots[0][k] + w2 * boots[1][k])
        s1, s2 = float(full[0][k][0]), float(full[1][k][0])
        out[k] = {"combined": w1 * s1 + w2 * s2, "ci_low": low, "ci_high": high,
                  "challenge1": s1, "challenge2": s2}
    return out


def _f(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def markdown_report(title: str, lines: Sequence[str], scores: Mapping[str, Mapping[str,
                    ScoreSummary]], fold_labels: Sequence[str],
                    fold_rows: Sequence[Sequence[Any]]) -> str:
    """Render ``cv.md``: settings, one NRMSE table per level, the folds.

    Parameters
    ----------
    title : str
        First heading.
    lines : sequence of str
        Settings, one bullet each.
    scores : mapping
        Output of :func:`score_folds`.
    fold_labels : sequence of str
        Column label of every fold.
    fold_rows : sequence of sequences
        Rows of the folds table: fold, test subjects, valid subjects, train subjects,
        test windows, best epoch.

    Returns
    -------
    str
        Markdown.
    """
    out = [f"# {title}", "", *(f"- {line}" for line in lines), ""]
    for level, by_predictor in scores.items():
        out += [f"## NRMSE, {level} level", "",
                "| predictor | " + " | ".join(fold_labels) + " | mean ± sd (folds) | pooled "
                "| 95 % CI (bootstrap over subjects) | pooled - training mean [95 % CI] |",
                "|---" * (len(fold_labels) + 5) + "|"]
        for key, s in by_predictor.items():
            cells = [_f(v) for v in s.per_fold]
            out.append(f"| {PREDICTORS[key]} | " + " | ".join(cells) +
                       f" | {_f(s.fold_mean)} ± {_f(s.fold_sd)} | {_f(s.pooled)} | "
                       f"[{_f(s.ci_low)}, {_f(s.ci_high)}] | {_f(s.vs_mean)} "
                       f"[{_f(s.vs_mean_low)}, {_f(s.vs_mean_high)}] |")
        out.append("")
    out += ["## Folds", "", "| fold | test subjects | valid subjects | train subjects | "
            "test windows | best epoch |", "|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in fold_rows]
    return "\n".join(out) + "\n"


def plot_folds(scores: Mapping[str, Mapping[str, ScoreSummary]], fold_labels: Sequence[str],
               title: str, path: str | Path | None = None) -> Any:
    """Per-fold NRMSE of every predictor, with the pooled value and its interval.

    Parameters
    ----------
    scores : mapping
        Output of :func:`score_folds`.
    fold_labels : sequence of str
        X tick label of every fold.
    title : str
        Figure title.
    path : path-like, optional
        Also save the figure there (PNG).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (one panel per level).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0 + 0.6 * len(fold_labels), 3.6 * len(scores)), layout="constrained")
    axes = fig.subplots(len(scores), 1, squeeze=False)[:, 0]
    x = np.arange(len(fold_labels))
    colors = {"model": "tab:blue", "train_mean": "tab:grey", "permuted": "tab:red"}
    for ax, (level, by_predictor) in zip(axes, scores.items(), strict=True):
        for i, (key, s) in enumerate(by_predictor.items()):
            dx = (i - (len(by_predictor) - 1) / 2) * 0.12
            ax.plot(x + dx, s.per_fold, "o", color=colors[key],
                    label=f"{PREDICTORS[key]}: pooled {_f(s.pooled)} "
                          f"[{_f(s.ci_low)}, {_f(s.ci_high)}]")
            if math.isfinite(s.ci_low):
                ax.axhspan(s.ci_low, s.ci_high, color=colors[key], alpha=0.12)
            ax.axhline(s.pooled, color=colors[key], lw=1)
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.set_xticks(x, fold_labels, fontsize=8)
        ax.set(xlabel="fold", ylabel="NRMSE (dimensionless)",
               title=f"{level}-level NRMSE per fold (lines: pooled; bands: 95 % CI)")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
