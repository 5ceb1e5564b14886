"""braindecode / skorch: a store as a windows dataset, a real EEGRegressor, the start-kit loop."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader, RandomSampler

braindecode = pytest.importorskip("braindecode")

from braindecode import EEGRegressor  # noqa: E402
from braindecode.models import ShallowFBCSPNet  # noqa: E402

from eegstore.braindecode import ChunkSampler, StoreWindows  # noqa: E402
from eegstore.errors import ConfigError  # noqa: E402
from eegstore.testing import make_store  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ccd_store(synth_mini_ccd, tmp_path_factory) -> Path:
    """A challenge1 store built from the synthetic mini release (2 subjects), chunks of 16."""
    from eegstore.build import build_store

    root = next(p.parent for p in sorted(synth_mini_ccd.rglob("participants.tsv")))
    store = tmp_path_factory.mktemp("bd_ccd") / "ccd.zarr"
    build_store(str(root), store, "challenge1", subjects=2, workers=1, chunk_windows=16,
                progress=False)
    return store


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("bd_small") / "s.zarr", n_windows=100,
                      n_channels=3, n_times=20, chunk_windows=8, n_subjects=5)


def count_chunk_reads(view: StoreWindows, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every chunk the view's reader decodes (in this process)."""
    reads: list[int] = []
    reader_type = type(view.windows._reader)
    original = reader_type.read_chunk

    def counting(self, chunk, *args, **kwargs):
        reads.append(int(chunk))
        return original(self, chunk, *args, **kwargs)

    monkeypatch.setattr(reader_type, "read_chunk", counting)
    return reads


def test_items_follow_braindecode_conventions(small_store):
    view = StoreWindows(small_store, where={"subject": ["S001", "S003"]})
    ds = xr.open_zarr(small_store)
    meta = view.get_metadata()
    assert isinstance(meta, pd.DataFrame) and len(meta) == len(view)
    assert {"subject", "target", "i_window_in_trial", "i_start_in_trial",
            "i_stop_in_trial"} <= set(meta.columns)
    assert set(meta["subject"]) == {"S001", "S003"}
    assert list(view.description["subject"]) == ["S001", "S003"]  # one row per recording
    X, y, crop_inds = view[2]
    index = int(np.flatnonzero(np.isin(ds["subject"].values, ["S001", "S003"]))[2])
    np.testing.assert_array_equal(X.numpy(), ds["eeg"].values[index].astype(np.float32))
    assert y.shape == (1,) and y.dtype == torch.float32
    assert y.item() == pytest.approx(float(ds["target"].values[index]))
    assert crop_inds == meta.loc[2, ["i_window_in_trial", "i_start_in_trial",
                                     "i_stop_in_trial"]].tolist()
    assert crop_inds[2] - crop_inds[1] == 20
    X2, y2 = StoreWindows(small_store, where={"subject": ["S001", "S003"]},
                          return_crop_inds=False)[2]
    assert torch.equal(X2, X) and torch.equal(y2, y)


def test_dataset_settings_are_passed_on_float16_included(small_store):
    X, y, _ = StoreWindows(small_store, dtype="float16", normalize="window")[5]
    assert X.dtype == torch.float16 and y.dtype == torch.float32
    assert abs(float(X.float().mean())) < 1e-2


def test_cropped_items_report_the_delivered_crop(small_store):
    view = StoreWindows(small_store, crop_samples=12, seed=3)
    ds = xr.open_zarr(small_store)
    for i in (0, 17, 99):
        X, _, (_, start, stop) = view[i]
        offset = start - int(view.get_metadata().loc[i, "i_start_in_trial"])
        assert stop - start == 12 and X.shape == (3, 12)
        np.testing.assert_array_equal(
            X.numpy(), ds["eeg"].values[i, :, offset:offset + 12].astype(np.float32))


def test_chunk_sampler_visits_every_item_once_in_a_new_order_each_epoch(small_store):
    sampler = StoreWindows(small_store, buffer_chunks=2).sampler(seed=1)
    epochs = [list(sampler), list(sampler)]
    for order in epochs:
        assert sorted(order) == list(range(100))
    assert epochs[0] != epochs[1] and sampler.epoch == 2
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]
    with pytest.raises(ConfigError, match="non-negative integer epoch"):
        sampler.set_epoch(-1)


def test_chunk_sampler_reads_each_chunk_about_once_random_order_does_not(small_store,
                                                                         monkeypatch):
    view = StoreWindows(small_store, buffer_chunks=2)
    reads = count_chunk_reads(view, monkeypatch)
    sampler = view.sampler(seed=0)
    predicted = sampler.read_stats(2, batch_size=10)
    for _ in DataLoader(view, batch_size=10, sampler=sampler):
        pass
    assert len(reads) == predicted.chunks_read == 13  # 100 windows in chunks of 8
    assert predicted.read_amplification == 1.0
    reads.clear()
    for _ in DataLoader(view, batch_size=10,
                        sampler=RandomSampler(view, generator=torch.Generator().manual_seed(0))):
        pass
    assert len(reads) > 5 * 13  # random access: a chunk read for most windows


def test_sampler_read_stats_with_workers_grow_with_the_worker_count(small_store):
    sampler = StoreWindows(small_store, buffer_chunks=4).sampler(seed=0)
    one = sampler.read_stats(4, batch_size=5).read_amplification
    two = sampler.read_stats(4, batch_size=5, num_workers=2).read_amplification
    assert one == 1.0 and 1.0 < two <= 2.0


@pytest.mark.slow
def test_eeg_regressor_fits_an_epoch_on_the_synthetic_release_with_low_read_amplification(
        ccd_store, monkeypatch):
    train = StoreWindows(ccd_store, buffer_chunks=2)  # caches a third of the chunks
    reads = count_chunk_reads(train, monkeypatch)
    sampler = train.sampler(seed=0)
    n_chans, n_times = xr.open_zarr(ccd_store)["eeg"].shape[1:]
    net = EEGRegressor(ShallowFBCSPNet, module__n_chans=n_chans, module__n_outputs=1,
                       module__n_times=n_times, module__sfreq=train.sfreq, max_epochs=1,
                       batch_size=16, lr=1e-3, optimizer=torch.optim.AdamW, train_split=None,
                       iterator_train__shuffle=False, iterator_train__sampler=sampler,
                       iterator_train__drop_last=False, device="cpu")
    net.fit(train, y=None)
    assert len(net.history) == 1 and np.isfinite(net.history[-1]["train_loss"])
    # every chunk read during fit, including braindecode's look at item 0 for the signal shape
    amplification = sum(sampler.plan.chunk_len(c) for c in reads) / len(train)
    print(f"read amplification of EEGRegressor.fit: {amplification:.3f}")
    assert amplification <= 1.2
    assert sampler.read_stats(2, epoch=0, batch_size=16).read_amplification == 1.0
    preds = net.predict(StoreWindows(ccd_store, where=np.arange(10)))
    assert preds.shape == (10, 1) and np.isfinite(preds).all()


def test_start_kit_loop_runs_on_a_store(tmp_path, monkeypatch, capsys):
    store = make_store(tmp_path / "c1.zarr", n_windows=50, n_channels=8, n_times=100,
                       chunk_windows=8, n_subjects=10)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["start_kit_challenge1.py", str(store), "--epochs", "2",
                                      "--batch-size", "16"])
    runpy.run_path(str(REPO / "examples" / "start_kit_challenge1.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "Epoch 2/2: Train RMSE" in out and "Test RMSE" in out
    assert (tmp_path / "weights_challenge_1.pt").exists()


def test_sampler_needs_sorted_selection_positions():
    with pytest.raises(ConfigError):
        ChunkSampler(np.array([3, 1]), n_windows=4, chunk_windows=2)
