"""Threads for the elementwise and copying work of the time-folded batch.

NumPy releases the GIL inside ufunc loops and copies, so independent slices of an array can be
processed on all cores from plain Python threads. The LIF recurrence, the traces, pooling and
the im2col/col2im copies are independent across samples (or time steps), so refsnn splits them
into contiguous chunks, one per thread; BLAS parallelises the matrix products on its own.

Results do not depend on the number of threads, bit for bit: every element is computed by the
same operations in the same order whatever the chunking, and no sum runs across a chunk
boundary. ``REFSNN_NUM_THREADS`` sets the number of threads (default: the cores this process
may use); 1 runs everything in the calling thread. Nested calls (from inside a chunk) run
serially, so a chunk never waits for a pool it occupies. No autograd framework is imported here.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable

MIN_CHUNK_ELEMENTS = 1 << 15       # below this many elements per chunk, a thread costs more than it saves

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_inside = threading.local()


def num_threads() -> int:
    """REFSNN_NUM_THREADS if set (>= 1), else the number of cores this process may run on."""
    value = os.environ.get("REFSNN_NUM_THREADS", "")
    if value.strip().isdigit() and int(value) >= 1:
        return int(value)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refsnn")
        return _pool


def chunks(n: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices covering range(n), sizes differing by at most one."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def for_each_chunk(work: Callable[[slice], None], n: int, elements: int) -> None:
    """Call work(s) for contiguous slices s covering range(n), in parallel threads.

    n: the length of the axis to split (batch or time); elements: the total size of the work,
    which decides how many threads are worth starting (MIN_CHUNK_ELEMENTS each at least).
    ``work`` must write only to the part of its outputs that its slice selects.
    """
    parts = min(num_threads(), n, max(1, elements // MIN_CHUNK_ELEMENTS))
    if parts <= 1 or getattr(_inside, "active", False):
        work(slice(0, n))
        return

    def run(part: slice) -> None:
        _inside.active = True
        try:
            work(part)
        finally:
            _inside.active = False

    slices = chunks(n, parts)
    futures = [_executor(parts - 1).submit(run, part) for part in slices[1:]]
    try:
        run(slices[0])                              # the calling thread takes the first chunk
    finally:
        wait(futures)                               # no chunk outlives the call, even on an error
    for future in futures:
        future.result()                             # re-raises an exception of a chunk
