"""One ordered, bounded parallel map for every multi-core command: ``ds check``, ``ds convert``, ``ds pack``.

Results come back in input order with at most ``2 x workers`` tasks submitted ahead of the one being
consumed, so memory stays at a few units however large the input, and the writer sees results in
input order (outputs keep the input's record order). With one worker everything runs in this
process: no start-up cost and plain tracebacks, which is what small inputs and tests want.

Threads or processes is the caller's measured choice (``kind``):

- ``ds check``: threads. The block reader and the compute kernels release the GIL for most of a
  block's time, and threads share one interpreter, so there is no per-worker start-up (~1 s), no
  copying of blocks between processes and one process's memory (measured on 1 GB with 2 workers:
  processes did 54 MB per CPU-second at ~600 MB peak RSS; threads 81 at ~270 MB).
- ``ds convert``: processes. A unit is pure-Python decoding plus the rule checks, so threads would
  share one GIL. Measured on 100 MB of chat (2 cores): one worker spends 2.82 CPU s on the units, two
  spend 1.59 + 1.45 (8 % overhead) and the main process 0.3 s reading and writing. Imports are paid
  once, in the fork server (``preload``; ~0.3 s): each worker still runs the main script (for ``ds``,
  the CLI), as the fork server does not, but finds its modules loaded (measured: 0.06 CPU s per
  worker, against ~0.6 s without ``preload``). On an idle 2-core machine 500 MB of chat took 5.1 s
  with two workers against 6.5 s with one (1.27x) (benchmarks/RESULTS.md).
- ``ds pack``: processes started with ``spawn`` (Jinja rendering is Python; the parent may already
  run tokenizer threads, which ``fork`` would leave broken).

Written here rather than taken from a library: ``concurrent.futures.Executor.map`` submits every
item up front (unbounded memory on a stream), and ``multiprocessing.Pool.imap`` has no bound on
work in flight either, nor a thread/process choice with the same cancellation on early stop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

T = TypeVar("T")
R = TypeVar("R")

PoolKind = Literal["process", "thread"]


def ordered_map(
    fn: Callable[..., R],
    items: Iterable[T],
    *,
    workers: int,
    kind: PoolKind = "process",
    send: Callable[[T], tuple] | None = None,
    start_method: str = "forkserver",
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    preload: Sequence[str] = (),
) -> Generator[tuple[T, R], None, None]:
    """Yield ``(item, fn(*send(item)))`` for each of ``items``, in order, over ``workers`` workers.

    Stopping early (closing the generator) or failing cancels the pending work.

    Args:
        fn: The task; a module-level function for processes (it is pickled).
        items: The work, consumed lazily; each item stays in this process.
        workers: How many threads or processes; one runs every task here, in order.
        kind: ``"thread"`` or ``"process"`` (see the module docstring for when each pays).
        send: The arguments ``fn`` gets for an item (default: the item alone); what a process pool
            pickles, so an item's bulky fields the results do not need can stay here.
        start_method: The processes' start method (``forkserver`` or ``spawn``).
        initializer: Runs once in each worker process, with ``initargs``.
        initargs: The initializer's arguments.
        preload: The modules ``fn`` needs, for ``forkserver``: the server imports them once and every
            worker starts with them (else the server imports the main script, e.g. the whole CLI).
    """
    args = send or (lambda item: (item,))
    if workers <= 1:
        for item in items:
            yield item, fn(*args(item))
        return
    pool = _pool(kind, workers, start_method, initializer, initargs, preload)
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, *args(item))))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pool(
    kind: PoolKind,
    workers: int,
    start_method: str,
    initializer: Callable[..., None] | None,
    initargs: tuple,
    preload: Sequence[str],
) -> Executor:
    # Imported here: the pools' modules cost ~20 ms that `ds check` of a small file and one-worker
    # runs never need (tests/cli/test_startup.py forbids the process pool's for a local JSONL check).
    if kind == "thread":
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tunekit-worker")
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    # forkserver, not fork: the parent runs pyarrow thread pools, and forking a threaded process can
    # copy a held lock into the child. The server imports ``preload`` once, before any worker forks.
    context = get_context(start_method)
    if preload:
        context.set_forkserver_preload(list(preload))  # read when the server starts (the first pool)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer, initargs=initargs)
