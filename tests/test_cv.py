"""Cross-validation: fold plans, out-of-fold scores and intervals, runs, resume, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eegstore.errors import ConfigError
from eegstore.testing import make_store
from trainers import StopAfterBatches, TrainConfig, Trainer, cross_validate, get_trainer, nrmse
from trainers.__main__ import main
from trainers.cv import CVResult, combine_cv, load_fold_predictions
from trainers.cv_plan import CVPlan, load_plan, plan_folds, plan_store_folds
from trainers.cv_report import FoldPredictions, combined_score, score_folds

FAST: dict[str, Any] = {"model": "tinycnn", "epochs": 1, "batch_size": 16, "lr": 3e-3,
                        "progress": False}
CLI_FAST = ["--model", "tinycnn", "--epochs", "1", "--batch-size", "16", "--lr", "3e-3",
            "--no-progress"]


@pytest.fixture(scope="module")
def c1_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """72 windows of 9 subjects over 3 releases, planted target."""
    return make_store(tmp_path_factory.mktemp("cv") / "c1.zarr", n_windows=72, n_channels=4,
                      n_times=50, chunk_windows=8, n_subjects=9, seed=3,
                      releases=("R1", "R2", "R3"))


@pytest.fixture(scope="module")
def c1_cv(c1_store: Path, tmp_path_factory: pytest.TempPathFactory) -> CVResult:
    """3-fold subject cross-validation of the challenge1 store, with controls."""
    return cross_validate(c1_store, "challenge1", TrainConfig(**FAST),
                          out=tmp_path_factory.mktemp("cv") / "c1", n_folds=3, controls=True,
                          n_bootstrap=200, progress=False)


def _subjects(n_subjects: int, per_subject: int) -> np.ndarray:
    return np.repeat([f"S{i:03d}" for i in range(n_subjects)], per_subject)


# --------------------------------------------------------------------------- plans
@settings(max_examples=60, deadline=None)
@given(n_subjects=st.integers(4, 30), per_subject=st.integers(1, 4), data=st.data(),
       repeats=st.integers(1, 3), valid_fraction=st.sampled_from([0.0, 0.1, 0.2, 0.5]),
       seed=st.integers(0, 2**31 - 1))
def test_subject_folds_test_every_subject_once_with_disjoint_inner_validation(
        n_subjects: int, per_subject: int, data: st.DataObject, repeats: int,
        valid_fraction: float, seed: int) -> None:
    n_folds = data.draw(st.integers(2, n_subjects // 2))
    subject = _subjects(n_subjects, per_subject)
    plan = plan_folds(subject, n_folds=n_folds, repeats=repeats, seed=seed,
                      valid_fraction=valid_fraction)
    everyone = set(subject.tolist())
    assert len(plan.folds) == n_folds * repeats
    for repeat in range(repeats):
        folds = [f for f in plan.folds if f.repeat == repeat]
        tested = [s for f in folds for s in f.test]
        assert sorted(tested) == sorted(everyone)  # every subject tested exactly once
        sizes = [len(f.test) for f in folds]
        assert max(sizes) - min(sizes) <= 1
        for f in folds:
            test, valid, train = set(f.test), set(f.valid), set(f.train)
            assert not test & valid and not test & train and not valid & train
            assert test | valid | train == everyone
            assert (len(valid) > 0) == (valid_fraction > 0)
            masks = f.masks(subject)
            assert not (masks["test"] & (masks["train"] | masks["valid"])).any()
    again = plan_folds(subject, n_folds=n_folds, repeats=repeats, seed=seed,
                       valid_fraction=valid_fraction)
    assert again == plan  # same seed, same folds
    assert CVPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_different_seeds_and_repeats_give_different_assignments() -> None:
    subject = _subjects(20, 2)
    plan = plan_folds(subject, n_folds=5, repeats=2, seed=0)
    by_repeat = [{f.test for f in plan.folds if f.repeat == r} for r in range(2)]
    assert by_repeat[0] != by_repeat[1]
    assert plan_folds(subject, n_folds=5, seed=1).folds[0].test != plan.folds[0].test
    assert len({f.seed for f in plan.folds}) == len(plan.folds)


def test_leave_one_release_out_holds_out_each_release() -> None:
    subject = _subjects(9, 2)
    release = np.array([f"R{int(s[1:]) % 3 + 1}" for s in subject])
    plan = plan_folds(subject, release, n_folds=None, group="release")
    assert [f.label for f in plan.folds] == ["R1", "R2", "R3"]
    for f in plan.folds:
        assert set(release[np.isin(subject, f.test)]) == {f.label}
        assert f.label not in set(release[np.isin(subject, f.train + f.valid)])


@pytest.mark.parametrize(("n_subjects", "kwargs", "match"), [
    (6, {"n_folds": 1}, "n_folds as an integer >= 2"),
    (6, {"n_folds": 7}, "at most one fold per subject"),
    (6, {"n_folds": 2, "repeats": 0}, "repeats as an integer >= 1"),
    (6, {"n_folds": 2, "valid_fraction": 1.0}, "valid_fraction in"),
    (2, {"n_folds": 2, "valid_fraction": 0.5}, "inner validation"),
    (6, {"n_folds": None, "group": "release"}, "at least two releases"),
    (6, {"n_folds": 2, "group": "session"}, "group in"),
])
def test_bad_plans_are_rejected(n_subjects: int, kwargs: dict[str, Any], match: str) -> None:
    subject = _subjects(n_subjects, 2)
    with pytest.raises(ConfigError, match=match):
        plan_folds(subject, np.full(subject.size, "R5"), **kwargs)


def test_folds_come_from_coordinates_without_reading_the_signal(c1_store: Path,
                                                                  tmp_path: Path) -> None:
    copy = tmp_path / "no_signal.zarr"
    shutil.copytree(c1_store, copy)
    chunks = copy / "eeg" / "c"
    assert chunks.is_dir()
    shutil.rmtree(chunks)  # any signal read would now fail or return fill values
    plan = plan_store_folds(copy, n_folds=3, seed=0)
    assert plan == plan_store_folds(c1_store, n_folds=3, seed=0)
    assert len(plan.subjects) == 9
    leave_out = plan_store_folds(copy, n_folds=None, group="release")
    assert [f.label for f in leave_out.folds] == ["R1", "R2", "R3"]


# --------------------------------------------------------------------------- scores
def _fold(name: str, subjects: list[str], y: np.ndarray, **preds: np.ndarray
          ) -> FoldPredictions:
    return FoldPredictions(name, 0, np.repeat(subjects, y.size // len(subjects)), y, preds)


def test_pooled_scores_and_interval_of_known_predictions() -> None:
    rng = np.random.default_rng(0)
    folds = []
    for i in range(4):
        y = rng.normal(size=30)
        folds.append(_fold(f"r0-f{i}", [f"S{i}a", f"S{i}b", f"S{i}c"], y,
                           model=y + 0.3 * rng.normal(size=30), train_mean=np.zeros(30)))
    scores = score_folds(folds, ("window", "subject"), n_bootstrap=500, seed=0)
    y_all = np.concatenate([f.y_true for f in folds])
    model_all = np.concatenate([f.y_pred["model"] for f in folds])
    window = scores["window"]["model"]
    assert window.pooled == pytest.approx(nrmse(y_all, model_all))
    assert window.per_fold == pytest.approx([nrmse(f.y_true, f.y_pred["model"]) for f in folds])
    assert window.fold_mean == pytest.approx(np.mean(window.per_fold))
    assert window.fold_sd == pytest.approx(np.std(window.per_fold, ddof=1))
    assert window.ci_low < window.pooled < window.ci_high < 1
    base = scores["window"]["train_mean"]
    assert base.ci_low < 1.05 and base.ci_high > window.ci_high
    assert (base.vs_mean, base.vs_mean_low, base.vs_mean_high) == (0.0, 0.0, 0.0)
    assert window.vs_mean == pytest.approx(window.pooled - base.pooled)
    assert window.vs_mean_low < window.vs_mean < window.vs_mean_high < 0
    assert score_folds(folds, n_bootstrap=500, seed=0) == {"window": scores["window"]}
    assert score_folds(folds, n_bootstrap=500, seed=1)["window"]["model"].ci_low != \
        window.ci_low
    assert len(scores["subject"]["model"].per_fold) == 4


def test_combined_score_weights_the_challenges() -> None:
    rng = np.random.default_rng(1)
    y1, y2 = rng.normal(size=40), rng.normal(size=40)
    c1 = [_fold("r0-f0", ["A", "B", "C", "D"], y1, model=y1 + 0.5 * rng.normal(size=40))]
    c2 = [_fold("r0-f0", ["B", "C", "D", "E"], y2, model=y2 + rng.normal(size=40))]
    out = combined_score(c1, c2, n_bootstrap=300)["model"]
    assert out["challenge1"] == pytest.approx(nrmse(y1, c1[0].y_pred["model"]))
    assert out["combined"] == pytest.approx(0.3 * out["challenge1"] + 0.7 * out["challenge2"])
    assert out["ci_low"] < out["combined"] < out["ci_high"]


# --------------------------------------------------------------------------- runs
def test_cross_validation_tests_each_subject_once_and_reports_baselines(
        c1_store: Path, c1_cv: CVResult, tmp_path: Path) -> None:
    result, out = c1_cv, c1_cv.out
    assert result.complete and result.figure is not None
    saved = json.loads((out / "cv.json").read_text())
    assert saved["status"] == "complete"
    assert set(saved["scores"]["window"]) == {"model", "train_mean", "permuted"}
    plan = load_plan(out)
    assert plan == result.plan
    preds = load_fold_predictions(out)
    tested = np.concatenate([p.subject for p in preds])
    assert sorted(set(tested.tolist())) == list(plan.subjects)
    for fold, p in zip(plan.folds, preds, strict=True):
        assert set(p.subject.tolist()) == set(fold.test)
        assert np.unique(p.y_pred["train_mean"]).size == 1
        run = json.loads((out / "folds" / fold.name / "metrics.json").read_text())
        n_subjects = len(fold.train), len(fold.valid), len(fold.test)
        assert (run["n_subjects"]["train"], run["n_subjects"]["valid"],
                run["n_subjects"]["test"]) == n_subjects
        assert run["settings"]["seed"] == fold.seed
        assert json.loads((out / "folds" / fold.name / "fold.json").read_text()) == \
            fold.to_dict()
        control = json.loads((out / "controls" / fold.name / "metrics.json").read_text())
        assert control["permute_targets"]
    md = (out / "cv.md").read_text()
    assert "| model |" in md and "| training mean |" in md and "| permuted targets |" in md
    assert (out / "cv.png").stat().st_size > 0
    # another model on identical folds
    other = cross_validate(c1_store, "challenge1", TrainConfig(**{**FAST, "lr": 1e-3}),
                           out=tmp_path / "cv_other", plan=out / "cv.json", n_bootstrap=200,
                           progress=False)
    assert other.plan == plan


def test_challenge2_cross_validation_scores_subjects(tmp_path: Path) -> None:
    store = make_store(tmp_path / "c2.zarr", n_windows=48, n_channels=4, n_times=100,
                       chunk_windows=8, n_subjects=6, sfreq=25.0, seed=4)
    result = cross_validate(store, "challenge2", TrainConfig(**FAST), out=tmp_path / "cv",
                            n_folds=2, n_bootstrap=200, progress=False)
    assert set(result.scores) == {"window", "subject"}
    assert "subject level" in (tmp_path / "cv" / "cv.md").read_text()


def test_interrupted_cv_resumed_with_the_same_command_finishes_remaining_folds_only(
        c1_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cv"
    config = get_trainer("challenge1").default_config().replace(**FAST)
    # 6 training subjects x 8 windows / 16 per batch = 3 batches per fit: stop inside fold 2
    first = cross_validate(c1_store, "challenge1", config, out=out, n_folds=3, seed=0,
                           callbacks=[StopAfterBatches(4)], progress=False)
    assert not first.complete
    assert json.loads((out / "cv.json").read_text())["stopped_in"] == "r0-f1"
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["r0-f0.npz"]
    done_mtime = (out / "predictions" / "r0-f0.npz").stat().st_mtime_ns
    calls: list[tuple[str, bool]] = []
    original = Trainer.fit

    def recording_fit(self: Trainer, *, resume: bool = False) -> Any:
        assert self.run_dir is not None
        calls.append((self.run_dir.name, resume))
        return original(self, resume=resume)

    monkeypatch.setattr(Trainer, "fit", recording_fit)
    command = ["cv", "--store", str(c1_store), "--trainer", "challenge1", "--folds", "3",
               "--out", str(out), "--bootstrap", "200", *CLI_FAST]
    assert main(command) == 0
    assert calls == [("r0-f1", True), ("r0-f2", False)]
    assert (out / "predictions" / "r0-f0.npz").stat().st_mtime_ns == done_mtime
    assert json.loads((out / "cv.json").read_text())["status"] == "complete"
    assert "pooled NRMSE" in capsys.readouterr().out
    calls.clear()
    assert main(command) == 0  # finished: reports again, trains nothing
    assert calls == []
    assert main([*command[:-len(CLI_FAST)], *CLI_FAST, "--lr", "1e-2"]) == 2
    assert "config.lr" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "match"), [
    (["--folds", "1"], "n_folds as an integer >= 2"),
    (["--group", "release", "--folds", "2"], "--folds 3"),
    (["--trainer", "challenge9"], "trainer"),
    (["--bootstrap", "5"], "n_bootstrap"),
])
def test_cv_cli_misuse_is_one_line_exit_2(c1_store: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          extra: list[str], match: str) -> None:
    args = ["cv", "--store", str(c1_store), "--trainer", "challenge1", "--out",
            str(tmp_path / "cv"), *CLI_FAST, *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err


def test_cv_combine_cli_requires_both_challenges(c1_cv: CVResult,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    c1 = c1_cv.out
    assert main(["cv-combine", str(c1), str(c1)]) == 2
    assert "challenge2 cross-validation" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="challenge2"):
        combine_cv(c1, c1)
