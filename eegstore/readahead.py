"""Execute a read schedule ahead of its consumer, on a pool of threads.

:func:`run_schedule` takes the :class:`~eegstore.plan.ReadPart` steps of
:func:`eegstore.plan.schedule_reads` and two callables -- ``load(chunk, slot)``
(read a chunk into a cache slot) and ``gather(part, out)`` (copy a step's rows
into its batch) -- and yields finished batches in schedule order.  Chunk reads
and gathers run on ``threads`` pool threads while the consumer works on earlier
batches: chunk reads as soon as their slot is free, gathers as soon as their
chunks are in.  Reading, decoding (numcodecs) and gathering (torch) release the
GIL, so ``threads`` pool threads use as many cores with no process and no IPC.

Nothing here decides *what* is read: results are identical for any number of
threads, including ``threads=0`` (everything runs in the consumer's thread).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from eegstore.errors import ConfigError
from eegstore.schedule import ReadPart

__all__ = ["check_threads", "run_schedule"]

T = TypeVar("T")


class _Inline:
    """An executor that runs each task at once in the calling thread."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # handed to the consumer through the future
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


def _one_openmp_thread() -> None:
    """Run torch's kernels single-threaded in this pool thread (OpenMP limits are per thread).

    The pool parallelises over chunks and batches already; nested OpenMP teams
    would oversubscribe the cores, and their spin-waits stall when another
    process holds a core.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="openmp")


def check_threads(threads: int) -> int:
    """Return ``threads`` if it is an integer >= 0, else raise :class:`ConfigError`."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"expected threads as an integer >= 0, got {threads!r}")
    return threads


def run_schedule(parts: Iterable[ReadPart], *, load: Callable[[int, int], None],
                 new_batch: Callable[[int], T], gather: Callable[[ReadPart, T], None],
                 finish: Callable[[int, T], Any], threads: int,
                 batches_ahead: int) -> Iterator[Any]:
    """Yield ``finish(batch, out)`` for each batch of ``parts``, reading ahead.

    Parameters
    ----------
    parts : iterable of ReadPart
        The steps of :func:`eegstore.plan.schedule_reads`, in order.
    load : callable
        ``load(chunk, slot)`` reads a chunk into a cache slot.
    new_batch : callable
        ``new_batch(batch) -> out`` allocates a batch before its first gather.
    gather : callable
        ``gather(part, out)`` copies a step's rows into its batch ``out``.
    finish : callable
        ``finish(batch, out) -> item`` completes a batch (in the consumer's thread).
    threads : int
        Pool threads; 0 runs every task in the consumer's thread.
    batches_ahead : int
        Batches allocated ahead of the one the consumer is waiting for (bounds
        the memory of read-ahead together with the cache's slots).
    """
    threads = check_threads(threads)
    pool: Any = ThreadPoolExecutor(threads, thread_name_prefix="eegstore-read",
                                   initializer=_one_openmp_thread) if threads else _Inline()
    source = iter(parts)
    planned: deque[tuple[int, ReadPart]] = deque()  # steps not yet gathered, in order
    reads: dict[int, list[Future[Any]]] = {}  # step -> its chunk reads
    gathers: dict[int, Future[Any]] = {}  # step -> its gather
    outs: dict[int, Any] = {}  # batch being built -> its buffer
    # every step <= done_upto is gathered; next_alloc is the next batch to get a buffer
    state = {"done_upto": -1, "next_step": 0, "next_alloc": 0}
    max_building = max(0, int(batches_ahead)) + 1

    def plan_more() -> None:
        batches = {part.batch for _, part in planned}
        while len(batches) <= max_building:
            part = next(source, None)
            if part is None:
                return
            planned.append((state["next_step"], part))
            batches.add(part.batch)
            state["next_step"] += 1

    def submit_ready() -> int:
        """Submit every read and gather that may start; return how many were submitted."""
        submitted = 0
        chunks_in = True  # every read of the steps so far is done
        for step, part in planned:
            if step not in reads:
                if any(after > state["done_upto"] for _, _, after in part.loads):
                    return submitted  # reads go in order: later ones wait for these slots
                reads[step] = [pool.submit(load, c, s) for c, s, _ in part.loads]
                submitted += len(part.loads)
            # a step gathers from chunks earlier steps read too
            chunks_in = chunks_in and all(f.done() for f in reads[step])
            if step in gathers or not chunks_in:
                continue
            for f in reads[step]:
                f.result()  # a read error surfaces here
            if part.batch not in outs:
                if part.batch != state["next_alloc"] or len(outs) >= max_building:
                    continue  # buffers are made in batch order, within the bound
                outs[part.batch] = new_batch(part.batch)
                state["next_alloc"] += 1
            gathers[step] = pool.submit(gather, part, outs[part.batch])
            submitted += 1
        return submitted

    idle_passes = 0  # passes that found nothing running and the head step not gathered
    try:
        while True:
            plan_more()
            if not planned:
                return
            if submit_ready():
                idle_passes = 0
            step, part = planned[0]
            fut = gathers.get(step)
            if fut is None or not fut.done():
                pending = [f for fs in reads.values() for f in fs if not f.done()]
                pending += [f for f in gathers.values() if not f.done()]
                if pending:
                    idle_passes = 0
                    wait(pending, return_when=FIRST_COMPLETED)
                elif idle_passes:  # a whole pass after everything finished changed nothing
                    raise RuntimeError("read schedule stalled; this is a bug in eegstore")
                else:  # what was running finished after submit_ready looked: look again
                    idle_passes = 1
                continue
            fut.result()
            planned.popleft()
            reads.pop(step, None)
            gathers.pop(step)
            state["done_upto"] = step
            if part.last:
                out = outs.pop(part.batch)
                plan_more()
                submit_ready()  # keep the pool busy while the consumer works
                yield finish(part.batch, out)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
