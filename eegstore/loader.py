"""A DataLoader over a :class:`~eegstore.torch.WindowStream` that tracks its own progress.

:class:`StreamLoader` marks every batch consumed at the moment it hands the
batch to the caller, so its :meth:`~StreamLoader.state_dict` is exactly what
the training loop received: batches the workers prefetched but the loop never
saw are not counted, and no ``mark_consumed`` call is needed::

    stream = WindowStream("store.zarr", batch_size=256, ram_budget=2 * 2**30)
    loader = StreamLoader(stream, num_workers=4)
    if resuming:
        loader.load_state_dict(torch.load(path, weights_only=True)["loader"])
    for epoch in range(loader.epoch, n_epochs):
        for x, y, _ in loader:
            ...  # train on (x, y)
            torch.save({"model": ..., "loader": loader.state_dict()}, path)

Epochs advance by themselves: handing out the last batch of an epoch moves the
stream to the next epoch (the saved state then says "next epoch, nothing
consumed yet").  An iteration left early (``break``) is continued by the next
one.  The state is the stream's own (:meth:`WindowStream.state_dict`), so a
resume may use another number of workers, ranks or another batch size.

The loader follows the protocol of torchdata's ``StatefulDataLoader``
(``state_dict`` / ``load_state_dict`` on the loader, ``len`` = batches of a
whole epoch of this rank), which PyTorch Lightning saves into its checkpoints
and restores on ``Trainer.fit(ckpt_path=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

from eegstore.errors import ConfigError
from eegstore.torch import WindowStream

__all__ = ["StreamLoader"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _check_stream(stream: Any) -> WindowStream:
    if not isinstance(stream, WindowStream):
        raise ConfigError(f"expected a WindowStream, got {type(stream).__name__}; build one "
                          "with eegstore.WindowStream(store, batch_size)")
    return stream


def _check_workers(num_workers: Any, persistent_workers: bool) -> int:
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"expected num_workers >= 0, got {num_workers!r}")
    if persistent_workers:
        raise ConfigError("expected persistent_workers=False, got True; workers must receive "
                          "the epoch and progress with each new iterator, or a resumed or "
                          "next epoch would repeat windows")
    return num_workers


class StreamLoader(DataLoader[Batch]):
    """DataLoader of a :class:`~eegstore.torch.WindowStream` with automatic progress.

    Yields the stream's batches ``(x, y, index)`` unchanged (the stream batches;
    the loader adds workers, pinning and progress tracking).

    Parameters
    ----------
    stream : WindowStream
        The batch stream; its ``prefetch_factor`` is the loader's (the RAM
        budget of the stream counts it).
    num_workers : int
        DataLoader worker processes (0: read in the main process).
    pin_memory : bool
        Copy batches into page-locked memory (for CUDA training).
    persistent_workers : bool
        Must be False (rejected otherwise): each epoch's iterator ships the
        current epoch and progress to fresh workers.
    timeout : float
        Seconds to wait for a batch from a worker before raising (0: forever).
    multiprocessing_context : str or context, optional
        Start method of the workers (``"fork"``, ``"forkserver"``, ``"spawn"``).
    worker_init_fn : callable, optional
        Called in each worker with its id.
    """

    def __init__(self, stream: WindowStream, *, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = False, timeout: float = 0.0,
                 multiprocessing_context: Any = None,
                 worker_init_fn: Callable[[int], None] | None = None) -> None:
        stream = _check_stream(stream)
        num_workers = _check_workers(num_workers, persistent_workers)
        super().__init__(stream, batch_size=None, num_workers=num_workers,
                         pin_memory=pin_memory, timeout=timeout,
                         multiprocessing_context=multiprocessing_context,
                         worker_init_fn=worker_init_fn,
                         prefetch_factor=stream.prefetch_factor if num_workers else None)

    @property
    def stream(self) -> WindowStream:
        """The stream this loader iterates."""
        stream: WindowStream = self.dataset  # type: ignore[assignment]
        return stream

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self.stream.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (see :meth:`WindowStream.set_epoch`); rarely needed."""
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Progress: the epoch and every window handed out so far (JSON-serialisable).

        Under an initialised torch.distributed this is a collective call (see
        :meth:`WindowStream.state_dict`): make it on every rank.
        """
        return self.stream.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (workers, ranks, batch size may differ)."""
        self.stream.load_state_dict(state)

    def __len__(self) -> int:
        """Batches of a whole epoch of this rank (what remains after a resume is fewer)."""
        stream = self.stream
        part = stream.plan.partition(stream.epoch, stream.world_size, 0)
        return len(part.rank_batches[stream.rank])

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        stream = self.stream
        if stream.n_consumed and len(stream) == 0:  # the last state was taken at the very end
            stream.set_epoch(stream.epoch + 1)
        return self._tracked(super().__iter__(), len(stream))

    def _tracked(self, batches: Iterator[Batch], n_batches: int) -> Iterator[Batch]:
        stream = self.stream
        epoch, handed = stream.epoch, 0
        for batch in batches:
            stream.mark_consumed(batch[2])
            handed += 1
            if handed == n_batches:
                stream.set_epoch(epoch + 1)
            yield batch
        if handed < n_batches:
            raise ConfigError(f"expected {n_batches} batches from the stream, got {handed}; "
                              "was the stream changed during the epoch?")
        if n_batches == 0:  # this rank's share of the epoch is empty: the epoch is over
            stream.set_epoch(epoch + 1)

    def __repr__(self) -> str:
        return f"StreamLoader({self.stream!r}, num_workers={self.num_workers})"
