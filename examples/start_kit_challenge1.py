"""The EEG 2025 challenge start kit's Challenge 1 training loop, fed by an eegstore store.

The start kit builds a braindecode windows dataset in memory (eegdash download,
``preprocess``, ``create_windows_from_events``, a subject split) and then trains
EEGNeX with a plain torch loop.  Here the dataset lines are replaced by views of a
store built with ``eegstore build SOURCE STORE --recipe challenge1``; everything
after them (DataLoaders, model, loss, optimiser, cosine schedule, early stopping)
is the start kit's loop.  The views keep ``buffer_chunks`` decoded chunks per
process, so RAM stays bounded whatever the size of the store.

Run::

    python examples/start_kit_challenge1.py STORE --epochs 100

For chunk-aware shuffling (about one read per chunk per epoch, instead of up to
one per window), pass ``sampler=train_set.sampler(seed)`` to the training
DataLoader instead of ``shuffle=True``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from braindecode.models import EEGNeX
from torch.nn import Module
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from eegstore.braindecode import StoreWindows
from eegstore.splits import subject_split


def train_one_epoch(dataloader: DataLoader, model: Module, loss_fn: Module,
                    optimizer: torch.optim.Optimizer, scheduler: LRScheduler | None,
                    device: str) -> tuple[float, float]:
    """One pass over ``dataloader``: the start kit's ``train_one_epoch``."""
    model.train()
    total_loss, sum_sq_err, n_samples = 0.0, 0.0, 0
    for batch in dataloader:
        X, y = batch[0], batch[1]  # items are (X, y, crop_inds)
        X, y = X.to(device).float(), y.to(device).float()
        optimizer.zero_grad(set_to_none=True)
        preds = model(X)
        loss = loss_fn(preds, y)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
        sum_sq_err += torch.sum((preds.detach().view(-1) - y.view(-1)) ** 2).item()
        n_samples += y.numel()
    if scheduler is not None:
        scheduler.step()
    return total_loss / max(len(dataloader), 1), (sum_sq_err / max(n_samples, 1)) ** 0.5


@torch.no_grad()
def valid_model(dataloader: DataLoader, model: Module, loss_fn: Module,
                device: str) -> tuple[float, float]:
    """Loss and RMSE over ``dataloader``: the start kit's ``valid_model``."""
    model.eval()
    total_loss, sum_sq_err, n_samples = 0.0, 0.0, 0
    for batch in dataloader:
        X, y = batch[0], batch[1]
        X, y = X.to(device).float(), y.to(device).float()
        preds = model(X)
        total_loss += loss_fn(preds, y).item()
        sum_sq_err += torch.sum((preds.view(-1) - y.view(-1)) ** 2).item()
        n_samples += y.numel()
    n_batches = len(dataloader)
    avg_loss = total_loss / n_batches if n_batches else float("nan")
    return avg_loss, (sum_sq_err / max(n_samples, 1)) ** 0.5


def main(argv: list[str] | None = None) -> float:
    """Train EEGNeX on a Challenge 1 store; return the best validation RMSE."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="a store built with --recipe challenge1")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("weights_challenge_1.pt"))
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(2025)

    # ---- the dataset lines: views of the store instead of an in-memory windows dataset
    parts = subject_split(args.store, valid=0.1, test=0.1, seed=2025)
    train_set, valid_set, test_set = (StoreWindows(args.store, where=parts[name])
                                      for name in ("train", "valid", "test"))
    print(f"Train:\t{len(train_set)}\nValid:\t{len(valid_set)}\nTest:\t{len(test_set)}")

    # ---- from here on: the start kit's loop
    batch_size, num_workers = args.batch_size, args.num_workers
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True,
                              num_workers=num_workers)
    valid_loader = DataLoader(valid_set, batch_size=batch_size, shuffle=False,
                              num_workers=num_workers)
    test_loader = DataLoader(test_set, batch_size=batch_size, shuffle=False,
                             num_workers=num_workers)

    n_chans, n_times = train_set[0][0].shape
    model = EEGNeX(n_chans=n_chans, n_outputs=1, n_times=n_times, sfreq=train_set.sfreq)
    model.to(device)

    n_epochs = args.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(n_epochs - 1, 1))
    loss_fn = torch.nn.MSELoss()

    patience, min_delta = 5, 1e-4
    best_rmse, epochs_no_improve = float("inf"), 0
    best_state = None
    for epoch in range(1, n_epochs + 1):
        train_loss, train_rmse = train_one_epoch(train_loader, model, loss_fn, optimizer,
                                                 scheduler, device)
        val_loss, val_rmse = valid_model(valid_loader, model, loss_fn, device)
        print(f"Epoch {epoch}/{n_epochs}: Train RMSE: {train_rmse:.6f}, "
              f"Average Train Loss: {train_loss:.6f}, Val RMSE: {val_rmse:.6f}, "
              f"Average Val Loss: {val_loss:.6f}")
        if val_rmse < best_rmse - min_delta:
            best_rmse, epochs_no_improve = val_rmse, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            epochs_no_improve += 1
            if epochs_no_improve >= patience:
                print(f"Early stopping at epoch {epoch}. Best Val RMSE: {best_rmse:.6f}")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    test_loss, test_rmse = valid_model(test_loader, model, loss_fn, device)
    print(f"Test RMSE: {test_rmse:.6f}, Test Loss: {test_loss:.6f}")
    torch.save(model.state_dict(), args.out)
    print(f"Model saved as '{args.out}'")
    return best_rmse


if __name__ == "__main__":
    main()
