"""Regression metrics of the EEG Foundation Challenge, in one place.

NRMSE is exactly the challenge's definition: the root-mean-square error
divided by the standard deviation of the *true* targets (population
standard deviation, ``ddof=0``).  Every trainer, report and test uses these
functions; nothing else in the package re-implements them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from eegstore.errors import ConfigError

__all__ = ["mae", "nrmse", "pearson_r", "regression_metrics", "rmse", "subject_means"]


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ConfigError(f"expected y_true and y_pred of equal length, got {t.size} and {p.size}")
    if t.size == 0:
        raise ConfigError("expected at least one target, got none; check the split selection")
    return t, p


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root-mean-square error.

    Parameters
    ----------
    y_true, y_pred : array_like
        True and predicted values (flattened).

    Returns
    -------
    float
        ``sqrt(mean((y_true - y_pred) ** 2))``.
    """
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def nrmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Normalised RMSE as the challenge defines it: ``RMSE / std(y_true, ddof=0)``.

    Parameters
    ----------
    y_true, y_pred : array_like
        True and predicted values (flattened).

    Returns
    -------
    float
        The normalised RMSE; ``nan`` when the true targets are constant.
    """
    t, p = _pair(y_true, y_pred)
    std = float(np.std(t, ddof=0))
    # constant targets (up to float rounding, e.g. one subject's externalizing) have no scale
    if std <= 1e-9 * max(1.0, float(np.max(np.abs(t))) if t.size else 1.0):
        return float("nan")
    return rmse(t, p) / std


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error.

    Parameters
    ----------
    y_true, y_pred : array_like
        True and predicted values (flattened).

    Returns
    -------
    float
        ``mean(|y_true - y_pred|)``.
    """
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def pearson_r(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Pearson correlation coefficient.

    Parameters
    ----------
    y_true, y_pred : array_like
        True and predicted values (flattened).

    Returns
    -------
    float
        The correlation; ``nan`` when either side is constant.
    """
    t, p = _pair(y_true, y_pred)
    tc, pc = t - t.mean(), p - p.mean()
    denom = float(np.sqrt(np.sum(tc**2) * np.sum(pc**2)))
    if denom == 0.0:
        return float("nan")
    return float(np.sum(tc * pc) / denom)


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """All metrics at once.

    Parameters
    ----------
    y_true, y_pred : array_like
        True and predicted values (flattened).

    Returns
    -------
    dict
        ``{"nrmse", "rmse", "mae", "pearson_r", "n"}``.
    """
    t, p = _pair(y_true, y_pred)
    return {"nrmse": nrmse(t, p), "rmse": rmse(t, p), "mae": mae(t, p),
            "pearson_r": pearson_r(t, p), "n": float(t.size)}


def subject_means(groups: Sequence[str] | np.ndarray, *values: ArrayLike
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Average each array of ``values`` within each group (for subject-level scores).

    Parameters
    ----------
    groups : sequence of str
        Group label (subject) of every element.
    *values : array_like
        Arrays of the same length as ``groups``.

    Returns
    -------
    labels : ndarray
        Sorted unique group labels.
    means : list of ndarray
        One array of per-group means per input array, in the order of ``labels``.
    """
    labels, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    counts = np.bincount(inverse, minlength=labels.size).astype(np.float64)
    means = []
    for v in values:
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
        if arr.size != inverse.size:
            raise ConfigError(f"expected {inverse.size} values per array, got {arr.size}")
        means.append(np.bincount(inverse, weights=arr, minlength=labels.size) / counts)
    return labels, means
