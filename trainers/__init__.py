"""Interchangeable trainers for the EEG Foundation Challenge, fed by eegstore streams.

``python -m trainers fit --store STORE --trainer challenge1 --model eegnex --epochs N
--out RUN_DIR`` trains; ``evaluate`` scores a run on a store; ``export-submission``
writes the challenge's zip; ``cv`` cross-validates grouped by subject
(:func:`cross_validate`).  From Python::

    from trainers import TrainConfig, get_trainer
    trainer = get_trainer("challenge1")("store.zarr", TrainConfig(model="tinycnn"),
                                        run_dir="runs/c1")
    result = trainer.fit()
    print(result.metrics["valid_nrmse"], trainer.evaluate("test"))
"""

from __future__ import annotations

from trainers.base import (
    TRAINERS,
    Callback,
    FitResult,
    StopAfterBatches,
    Trainer,
    get_trainer,
    load_model,
    register_trainer,
    trainer_names,
)
from trainers.challenge1 import Challenge1Trainer
from trainers.challenge2 import Challenge2Trainer
from trainers.config import TrainConfig
from trainers.cv import CVResult, combine_cv, cross_validate
from trainers.cv_plan import CVFold, CVPlan, load_plan, plan_folds
from trainers.memory import EXIT_MEMORY, MemoryGuard
from trainers.metrics import mae, nrmse, pearson_r, regression_metrics, rmse
from trainers.models import ScaledRegressor, TinyCNN, build_model

__all__ = [
    "EXIT_MEMORY",
    "TRAINERS",
    "CVFold",
    "CVPlan",
    "CVResult",
    "Callback",
    "Challenge1Trainer",
    "Challenge2Trainer",
    "FitResult",
    "MemoryGuard",
    "ScaledRegressor",
    "StopAfterBatches",
    "TinyCNN",
    "TrainConfig",
    "Trainer",
    "build_model",
    "combine_cv",
    "cross_validate",
    "get_trainer",
    "load_model",
    "load_plan",
    "mae",
    "nrmse",
    "pearson_r",
    "plan_folds",
    "register_trainer",
    "regression_metrics",
    "rmse",
    "trainer_names",
]
