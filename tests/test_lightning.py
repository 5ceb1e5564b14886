"""Lightning: a real Trainer on CPU, interrupted mid-epoch, resumes exactly-once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

lightning = pytest.importorskip("lightning")

from eegstore.errors import ConfigError  # noqa: E402
from eegstore.lightning import StoreDataModule  # noqa: E402
from eegstore.loader import StreamLoader  # noqa: E402
from eegstore.splits import subject_split  # noqa: E402
from eegstore.testing import make_store  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::lightning.fabric.utilities.warnings"
                                         ".PossibleUserWarning")]

N_CH, N_T, EPOCHS, BATCH = 2, 16, 2, 8


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("lightning") / "s.zarr", n_windows=96,
                      n_channels=N_CH, n_times=N_T, chunk_windows=16, n_subjects=8)


@pytest.fixture(scope="module")
def splits(store) -> dict[str, np.ndarray]:
    return subject_split(store, valid=0.25, test=0.0, seed=1)


class Recorder(lightning.LightningModule):
    """A linear regressor that records which windows each epoch trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(N_CH * N_T, 1)
        self.seen: dict[int, list[np.ndarray]] = {}
        self.val_windows = 0

    def training_step(self, batch, batch_idx):
        x, y, index = batch
        self.seen.setdefault(self.current_epoch, []).append(index.numpy().copy())
        return torch.nn.functional.mse_loss(self.net(x.flatten(1)).squeeze(1), y)

    def validation_step(self, batch, batch_idx):
        self.val_windows += len(batch[2])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class CrashAfter(lightning.Callback):
    """Save a checkpoint after ``step`` optimizer steps, then fail like a killed job."""

    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            raise RuntimeError("simulated crash")


def trainer(callbacks=()) -> lightning.Trainer:
    return lightning.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0,
                             callbacks=list(callbacks))


def datamodule(store, splits, num_workers: int) -> StoreDataModule:
    return StoreDataModule(store, BATCH, splits=splits, num_workers=num_workers, seed=4,
                           normalize="window", buffer_chunks=2)


@pytest.fixture(scope="module")
def uninterrupted(store, splits) -> tuple[Recorder, int]:
    model = Recorder()
    t = trainer()
    t.fit(model, datamodule=datamodule(store, splits, 0))
    return model, t.global_step


@pytest.mark.parametrize(("crash_step", "workers", "resume_workers"),
                         [(3, 2, 0), (9, 1, 2), (13, 0, 1)])
def test_fit_interrupted_mid_epoch_resumes_every_window_once_with_same_steps(
        store, splits, uninterrupted, tmp_path, crash_step, workers, resume_workers):
    reference, reference_steps = uninterrupted
    train = np.flatnonzero(splits["train"])
    steps_per_epoch = -(-len(train) // BATCH)
    assert reference_steps == EPOCHS * steps_per_epoch
    ckpt = tmp_path / "crash.ckpt"
    first = Recorder()
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer([CrashAfter(crash_step, ckpt)]).fit(
            first, datamodule=datamodule(store, splits, workers))
    state = torch.load(ckpt, weights_only=False)["loops"]["fit_loop"]["state_dict"]
    stream_state = state["combined_loader"][0]
    epoch, steps_into_epoch = divmod(crash_step, steps_per_epoch)
    assert stream_state["epoch"] == epoch
    assert sum(b - a for a, b in stream_state["consumed"]) == steps_into_epoch * BATCH
    second = Recorder()
    resumed = trainer()
    resumed.fit(second, datamodule=datamodule(store, splits, resume_workers), ckpt_path=ckpt)
    assert resumed.global_step == reference_steps
    for epoch in range(EPOCHS):
        got = np.concatenate(first.seen.get(epoch, []) + second.seen.get(epoch, []))
        assert np.array_equal(np.sort(got), train), f"epoch {epoch}"
        assert np.array_equal(np.sort(np.concatenate(reference.seen[epoch])), train)
    assert reference.val_windows == EPOCHS * int(splits["valid"].sum())


def test_datamodule_streams_follow_the_trainer_rank_and_world_size(store, splits):
    dm = datamodule(store, splits, 0)
    dm.trainer = lightning.Trainer(accelerator="cpu", devices=1, logger=False)
    loader = dm.train_dataloader()
    assert isinstance(loader, StreamLoader)
    assert (loader.stream.rank, loader.stream.world_size) == (0, 1)
    assert loader.stream.plan.n_selected == int(splits["train"].sum())
    assert dm.test_dataloader() == []  # the split holds no test subject


def test_under_ddp_each_rank_streams_its_own_equal_share(store, splits, monkeypatch):
    shares = []
    for rank in range(2):  # what torchrun sets for the second process, then the first
        for name, value in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": 2,
                            "NODE_RANK": 0}.items():
            monkeypatch.setenv(name, str(value))
        dm = datamodule(store, splits, 0)
        dm.trainer = lightning.Trainer(accelerator="cpu", devices=2, strategy="ddp",
                                       logger=False)
        loader = dm.train_dataloader()
        assert (loader.stream.rank, loader.stream.world_size) == (rank, 2)
        shares.append(np.concatenate([i.numpy() for _, _, i in loader]))
    assert len(shares[0]) == len(shares[1])  # equal steps per rank (equalize="pad")
    assert np.array_equal(np.union1d(*shares), np.flatnonzero(splits["train"]))


def test_stream_settings_reach_every_stream_float16_included(store, splits):
    dm = StoreDataModule(store, BATCH, splits=splits, crop_samples=10, dtype="float16")
    x, y, _ = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float16 and x.shape == (BATCH, N_CH, 10) and y.dtype == torch.float32
    x, _, _ = next(iter(dm.val_dataloader()))
    assert x.dtype == torch.float16 and x.shape[2] == 10


def test_default_splits_are_the_subject_split(store):
    dm = StoreDataModule(store, 4, split_seed=2)
    for part, mask in subject_split(store, seed=2).items():
        assert np.array_equal(dm.splits[part], mask)


@pytest.mark.parametrize(("splits", "match"), [
    ({"valid": None}, "including 'train'"),
    ({"train": None, "holdout": None}, "keys among"),
])
def test_invalid_splits_are_rejected(store, splits, match):
    with pytest.raises(ConfigError, match=match):
        StoreDataModule(store, 4, splits=splits)


def test_an_empty_part_cannot_be_streamed(store, splits):
    with pytest.raises(ConfigError, match="expected windows in the 'test' split"):
        datamodule(store, splits, 0).stream("test")
