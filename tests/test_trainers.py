"""Trainers: metrics, models, fit/evaluate/predict, resume, memory guard, DDP, submission."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from eegstore.errors import ConfigError
from eegstore.testing import make_store
from trainers import (
    EXIT_MEMORY,
    StopAfterBatches,
    TrainConfig,
    get_trainer,
    load_model,
    mae,
    nrmse,
    pearson_r,
    regression_metrics,
    rmse,
    trainer_names,
)
from trainers.__main__ import main
from trainers.challenge2 import crop_starts
from trainers.checkpoint import load_checkpoint
from trainers.memory import MemoryGuard
from trainers.models import build_model, resolve_model_name

REPO = Path(__file__).resolve().parents[1]

FAST = {"model": "tinycnn", "batch_size": 16, "lr": 3e-3, "progress": False,
        "valid_fraction": 0.2, "test_fraction": 0.2}


@pytest.fixture(scope="module")
def c1_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 windows, 4 channels x 50 samples, 12 subjects, planted target."""
    return make_store(tmp_path_factory.mktemp("trainers") / "c1.zarr", n_windows=96,
                      n_channels=4, n_times=50, chunk_windows=8, n_subjects=12, seed=1)


@pytest.fixture(scope="module")
def c2_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s windows at 25 Hz (100 samples): challenge2 crops 2 s = 50 samples."""
    return make_store(tmp_path_factory.mktemp("trainers") / "c2.zarr", n_windows=96,
                      n_channels=4, n_times=100, chunk_windows=8, n_subjects=12, sfreq=25.0,
                      seed=2)


def _cfg(**kw: object) -> TrainConfig:
    return TrainConfig(**{**FAST, **kw})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- metrics
def test_nrmse_is_rmse_over_population_std_of_truth() -> None:
    y = np.array([1.0, 2.0, 4.0, 7.0])
    p = np.array([1.5, 1.0, 5.0, 6.0])
    expected = np.sqrt(np.mean((y - p) ** 2)) / np.std(y, ddof=0)
    assert nrmse(y, p) == pytest.approx(expected, rel=1e-12)
    assert nrmse(y, p) != pytest.approx(rmse(y, p) / np.std(y, ddof=1))
    assert nrmse(y, np.full(4, y.mean())) == pytest.approx(1.0)
    assert rmse(y, p) == pytest.approx(np.sqrt(np.mean((y - p) ** 2)))
    assert mae(y, p) == pytest.approx(np.mean(np.abs(y - p)))
    assert pearson_r(y, p) == pytest.approx(np.corrcoef(y, p)[0, 1])
    assert np.isnan(nrmse([1.0, 1.0], [1.0, 2.0]))
    with pytest.raises(ConfigError, match="equal length"):
        nrmse([1.0, 2.0], [1.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=30),
       st.floats(0.1, 100), st.floats(-100, 100), st.integers(0, 2**31 - 1))
def test_nrmse_invariant_to_affine_rescaling(values: list[float], scale: float, shift: float,
                                             seed: int) -> None:
    y = np.asarray(values)
    if np.std(y) < 1e-3:
        return
    p = y + np.random.default_rng(seed).standard_normal(y.size)
    m = regression_metrics(y, p)
    assert m["nrmse"] == pytest.approx(nrmse(y * scale + shift, p * scale + shift), rel=1e-6)
    assert m["nrmse"] >= 0 and m["n"] == y.size


# --------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", ["tinycnn", "eegnex", "eegnetv4", "shallowfbcspnet"])
def test_models_by_name_map_windows_to_one_output(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, n_chans=8, n_outputs=1, n_times=200, sfreq=100.0).eval()
    with torch.inference_mode():
        assert model(torch.randn(3, 8, 200)).shape == (3, 1)


def test_unknown_model_and_bad_settings_are_rejected() -> None:
    with pytest.raises(ConfigError, match="expected a model name"):
        resolve_model_name("nosuchnet")
    with pytest.raises(ConfigError, match="loss"):
        TrainConfig(loss="hinge")
    with pytest.raises(ConfigError, match="valid_fraction"):
        TrainConfig(valid_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigError, match="trainer"):
        get_trainer("challenge9")
    assert {"challenge1", "challenge2"} <= set(trainer_names())


def test_crop_starts() -> None:
    assert crop_starts(400, 200, "center") == [100]
    assert crop_starts(400, 200, "all") == [0, 100, 200]
    assert crop_starts(410, 200, "all", stride=100) == [0, 100, 200, 210]
    with pytest.raises(ConfigError, match="crop_samples"):
        crop_starts(100, 200, "center")


def test_memory_guard_thresholds() -> None:
    assert MemoryGuard().check().rss_bytes > 0
    with pytest.raises(RuntimeError, match="RSS"):
        MemoryGuard(max_rss_mb=1).check()
    with pytest.raises(RuntimeError, match="available"):
        MemoryGuard(min_available_mb=1e12).check()
    guard = MemoryGuard(max_rss_mb=1, every_batches=3)
    with pytest.raises(RuntimeError):
        guard.step()  # first call checks
    assert guard.step() is None and guard.step() is None


# --------------------------------------------------------------------------- fit
def test_challenge1_fit_evaluate_predict(c1_store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = get_trainer("challenge1")(c1_store, _cfg(epochs=4), run_dir=run)
    result = trainer.fit()
    assert result.status == "completed"
    for name in ("metrics.json", "metrics.csv", "checkpoint.pt", "weights.pt", "model.json",
                 "config.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]) == 4 and metrics["history"][-1]["epoch"] == 4
    assert metrics["valid_nrmse"] == pytest.approx(trainer.evaluate("valid")["nrmse"])
    assert metrics["test_nrmse"] is not None
    pred = trainer.predict("test")
    masks = trainer.splits()
    assert np.array_equal(np.sort(pred["index"]), np.flatnonzero(masks["test"]))
    assert nrmse(pred["y_true"], pred["y_pred"]) == pytest.approx(metrics["test_nrmse"])
    # the planted target is learnt: predictions correlate with it on held-out subjects
    assert trainer.evaluate("all")["pearson_r"] > 0.5
    # subject-disjoint splits
    subj = trainer.subjects()
    assert not set(subj[masks["train"]]) & set(subj[masks["valid"] | masks["test"]])
    # a fresh trainer scores the saved run identically
    again = get_trainer("challenge1")(c1_store, trainer.config, run_dir=run)
    assert again.evaluate("test")["nrmse"] == pytest.approx(metrics["test_nrmse"])
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["complete"] and ckpt["epoch"] == 4
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "valid_nrmse" in header and "train_loss" in header


def test_challenge2_crops_and_subject_score(c2_store: Path, tmp_path: Path) -> None:
    cfg = _cfg(epochs=2, eval_crops="all", loss="huber", optimizer="adamax", l1=1e-5,
               l2=1e-4, grad_clip=1.0, schedule="none")
    trainer = get_trainer("challenge2")(c2_store, cfg, run_dir=tmp_path / "run")
    assert trainer.model_n_times() == 50
    result = trainer.fit()
    assert json.loads((tmp_path / "run" / "model.json").read_text())["n_times"] == 50
    valid = result.metrics["valid"]
    assert {"nrmse", "subject_nrmse", "subject_pearson_r"} <= set(valid)
    assert valid["subject_n"] == result.metrics["n_subjects"]["valid"]
    lrs = [h["lr"] for h in result.history]
    assert lrs == [cfg.lr, cfg.lr]
    with pytest.raises(ConfigError, match="crop_samples"):
        get_trainer("challenge2")(c2_store, _cfg(crop_samples=500)).train_crop_samples()


def test_permuted_targets_control_scores_about_one(c1_store: Path) -> None:
    trainer = get_trainer("challenge1")(c1_store, _cfg(epochs=3, permute_targets=True))
    result = trainer.fit()
    assert result.metrics["permute_targets"] is True
    assert result.metrics["valid_nrmse"] > 0.9


# --------------------------------------------------------------------------- resume
def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "weights.pt", weights_only=True)


def test_resume_mid_epoch_gives_identical_weights(c1_store: Path, tmp_path: Path) -> None:
    cfg = _cfg(epochs=2, batch_size=8)
    full = get_trainer("challenge1")(c1_store, cfg, run_dir=tmp_path / "full")
    full.fit()
    part = get_trainer("challenge1")(c1_store, cfg, run_dir=tmp_path / "part",
                                     callbacks=[StopAfterBatches(3)])
    stopped = part.fit()
    assert stopped.status == "stopped"
    ckpt = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["complete"]) == (0, 3, False)
    with pytest.raises(ConfigError, match="checkpoint"):
        get_trainer("challenge1")(c1_store, cfg, run_dir=tmp_path / "part").fit()
    with pytest.raises(ConfigError, match="lr"):
        get_trainer("challenge1")(c1_store, cfg.replace(lr=1.0),
                                  run_dir=tmp_path / "part").fit(resume=True)
    resumed = get_trainer("challenge1")(c1_store, cfg, run_dir=tmp_path / "part")
    assert resumed.fit(resume=True).status == "completed"
    for key, value in full.final_state.items():
        assert torch.equal(value, resumed.final_state[key]), key
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    hist = [json.loads((tmp_path / r / "metrics.json").read_text())["history"]
            for r in ("full", "part")]
    drop = {"seconds", "train_loss"}  # the resumed epoch's loss covers only its own batches
    assert [{k: v for k, v in h.items() if k not in drop} for h in hist[0]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in hist[1]]


def test_memory_guard_stops_with_checkpoint_then_resume_completes(c1_store: Path,
                                                                   tmp_path: Path,
                                                                   capsys) -> None:
    run = tmp_path / "run"
    args = ["fit", "--store", str(c1_store), "--trainer", "challenge1", "--model", "tinycnn",
            "--epochs", "2", "--batch-size", "16", "--out", str(run), "--no-progress"]
    assert main([*args, "--max-rss-mb", "1", "--memory-check-every", "2"]) == EXIT_MEMORY
    err = capsys.readouterr().err
    assert "memory guard" in err and "--resume" in err and len(err.strip().splitlines()) == 1
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert (ckpt["epoch"], ckpt["batch"], ckpt["complete"]) == (0, 1, False)
    assert not (run / "weights.pt").exists()
    assert main(["fit", "--out", str(run), "--resume", "--no-progress"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and len(metrics["history"]) == 2
    assert load_checkpoint(run / "checkpoint.pt")["complete"]


def test_cli_misuse_and_evaluate(c1_store: Path, tmp_path: Path, capsys) -> None:
    assert main(["fit", "--out", str(tmp_path / "x")]) == 2
    assert "--store" in capsys.readouterr().err
    assert main(["fit", "--store", str(c1_store), "--trainer", "challenge1", "--model", "nope",
                 "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    assert "model name" in capsys.readouterr().err
    assert main(["fit", "--store", str(tmp_path / "missing.zarr"), "--trainer", "challenge1",
                 "--out", str(tmp_path / "z")]) == 2
    run = tmp_path / "run"
    assert main(["fit", "--store", str(c1_store), "--trainer", "challenge1", "--model",
                 "tinycnn", "--epochs", "1", "--batch-size", "16", "--out", str(run),
                 "--no-progress", "--max-minutes", "1e-9"]) == 0
    assert "time_limit" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "time_limit" and metrics["history"] == []
    assert metrics["test_nrmse"] is not None  # the stopped model is still evaluated
    assert load_checkpoint(run / "checkpoint.pt")["batch"] == 1
    assert main(["fit", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert "completed" in capsys.readouterr().out
    assert main(["fit", "--out", str(run), "--resume", "--lr", "9"]) == 2
    assert "run-control" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(run), "--out", str(tmp_path / "ev.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((run / "metrics.json").read_text())
    assert printed["test"]["nrmse"] == pytest.approx(metrics["test_nrmse"])
    assert json.loads((tmp_path / "ev.json").read_text()) == printed


# --------------------------------------------------------------------------- DDP
def test_torchrun_two_ranks_see_disjoint_halves(tmp_path: Path) -> None:
    store = make_store(tmp_path / "ddp.zarr", n_windows=64, n_channels=4, n_times=50,
                       chunk_windows=8, n_subjects=8)
    run = tmp_path / "run"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "trainers", "fit",
           "--store", str(store), "--trainer", "challenge1", "--model", "tinycnn",
           "--epochs", "1", "--batch-size", "8", "--valid-fraction", "0",
           "--test-fraction", "0", "--out", str(run), "--log-indices", "--no-progress",
           "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((run / f"indices_rank{r}.json").read_text())["0"] for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 32
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(64))
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"


# --------------------------------------------------------------------------- submission
def test_export_submission_runs_in_fresh_process(tmp_path: Path) -> None:
    c1 = make_store(tmp_path / "c1.zarr", n_windows=24, n_channels=129, n_times=200,
                    chunk_windows=8, n_subjects=6)
    c2 = make_store(tmp_path / "c2.zarr", n_windows=24, n_channels=129, n_times=400,
                    chunk_windows=8, n_subjects=6)
    # one built-in model (embedded source) and one braindecode model (rebuilt by name)
    for name, store, model in (("challenge1", c1, "tinycnn"),
                               ("challenge2", c2, "shallowfbcspnet")):
        get_trainer(name)(store, _cfg(epochs=1, batch_size=8, model=model),
                          run_dir=tmp_path / name).fit()
    zip_path = tmp_path / "out" / "submission.zip"
    assert main(["export-submission", "--challenge1", str(tmp_path / "challenge1"),
                 "--challenge2", str(tmp_path / "challenge2"), "--out", str(zip_path)]) == 0
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == ["submission.py", "weights_challenge_1.pt",
                                         "weights_challenge_2.pt"]
        unpacked = tmp_path / "unpacked"
        zf.extractall(unpacked)
    x = torch.randn(4, 129, 200, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "x.npy", x.numpy())
    script = (
        "import sys, numpy as np, torch\n"
        f"sys.path.insert(0, {str(unpacked)!r})\n"
        "from submission import Submission\n"
        "sub = Submission(100, 'cpu')\n"
        f"x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "outs = []\n"
        "with torch.inference_mode():\n"
        "    for m in (sub.get_model_challenge_1(), sub.get_model_challenge_2()):\n"
        "        assert not m.training\n"
        "        y = m(x)\n"
        "        assert y.shape == (4, 1) and y.dtype == torch.float32, y.shape\n"
        "        outs.append(y.numpy())\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.stack(outs))\n")
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=empty, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    y = np.load(tmp_path / "y.npy")
    # the submission takes volts (as the challenge feeds); the runs learnt the stores' unit
    with torch.inference_mode():
        for k, (name, store) in enumerate((("challenge1", c1), ("challenge2", c2))):
            per_volt = {"V": 1.0, "uV": 1e6}[xr.open_zarr(store)["eeg"].attrs["units"]]
            expected = load_model(tmp_path / name)(x * per_volt).numpy()
            np.testing.assert_allclose(y[k], expected, rtol=1e-4, atol=1e-5)


def test_export_rejects_models_not_taking_challenge_input(tmp_path: Path) -> None:
    from trainers.submission import export_submission

    small = make_store(tmp_path / "small.zarr", n_windows=16, n_subjects=4)
    get_trainer("challenge1")(small, _cfg(epochs=1), run_dir=tmp_path / "small").fit()
    with pytest.raises(ConfigError, match="129"):
        export_submission(tmp_path / "small", tmp_path / "small", tmp_path / "bad.zip")
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        export_submission(tmp_path / "nothing", tmp_path / "small", tmp_path / "bad.zip")
