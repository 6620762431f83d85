"""An ordered, bounded process-pool map: results come back in input order, few tasks in flight.

At most ``2 x workers`` tasks are submitted ahead of the one being consumed, so memory stays at a
few units however large the input, and the writer sees results in input order (outputs keep the
input's record order). With one worker everything runs in this process: no start-up cost and
plain tracebacks, which is what small inputs and tests want.

Why processes pay here: a unit is pure-Python decoding plus the rule checks, so threads would share
one GIL. Measured on 100 MB of chat (2 cores): one worker spends 2.82 CPU s on the units, two spend
1.59 + 1.45 (8 % overhead) and the main process 0.3 s reading and writing. Imports are paid once, in
the fork server (``preload``; ~0.3 s): each worker still runs the main script (for ``ds``, the CLI),
as the fork server does not, but finds its modules loaded (measured: 0.06 CPU s per worker, against
~0.6 s without ``preload``). On an idle 2-core machine 500 MB of chat took 5.1 s with two workers
against 6.5 s with one (1.27x): pickling units and results and the workers' page faults cost more
than the projection allowed (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    initializer: Callable[[], None] | None = None,
    preload: Sequence[str] = (),
) -> Generator[R, None, None]:
    """``map(fn, items)`` over ``workers`` processes, in order; stopping early cancels pending work.

    ``preload`` names the modules ``fn`` needs: the fork server imports them once and every worker
    starts with them (else the server imports the main script, e.g. the whole ``ds`` CLI).
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    # Imported here: the process pool's modules cost ~20 ms that `ds check` (which only asks
    # ``available_cores``) and one-worker runs never need.
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    # forkserver, not fork: the parent runs pyarrow thread pools, and forking a threaded process can
    # copy a held lock into the child. The server imports ``preload`` once, before any worker forks.
    context = get_context("forkserver")
    if preload:
        context.set_forkserver_preload(list(preload))  # read when the server starts (the first pool)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer)
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
