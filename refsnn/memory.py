"""Large arrays reused from call to call instead of fresh from the operating system.

Why: a training step allocates the same large arrays every time (membranes, traces, the
convolutions' columns, the gradients), and fresh memory is slow. glibc serves every allocation
above its mmap threshold (which grows with the largest block freed, up to 32 MiB) with a new
mapping, and the kernel zeroes every page of it at its first touch. Measured on a 2-core VM
(numpy 2.4, THP in "madvise" mode): writing and reading two fresh 6.9 MB float64 arrays took
6.8 ms with numpy's huge-page advice and 18 ms without, against about 1 ms for memory already
mapped; the N-MNIST network's forward+backward fell from 180 to 120 ms with glibc told to keep
its memory (MALLOC_MMAP_THRESHOLD_), MNIST's from 519 to 329 ms.

How: ``empty(shape, dtype)`` hands out a view of a pooled flat buffer. The pool keeps every buffer
it made; a buffer is free again when no array refers to it any more, and CPython's reference
count says exactly that: every array derived from a pooled one (views, reshapes, slices, and
through their own bases strided views such as sliding_window_view) keeps a reference to the
buffer's owning array, so while any of them lives, the buffer's count stays above the pool's own
references and it is never handed out twice. Without ``sys.getrefcount`` (not CPython) the pool
stays off. The arrays behave like
``np.empty``'s (uninitialised, C-contiguous, 64-byte aligned); they may be returned to callers
and kept for as long as wanted. Small arrays (< MIN_BYTES) go to numpy directly: malloc reuses
those without new pages. The pool keeps its buffers after a call (that is the point: the next
step reuses them); when it has to make a new buffer and the free ones add up to more than
MAX_FREE_BYTES, it drops free ones (other sizes first), so a change of batch size does not keep
the old set forever; ``clear()`` drops all free buffers now (a program that is done with refsnn
and wants the memory back calls it).

Results never depend on the pool (an ``np.empty`` in its place gives the same bits: nothing
reads a pooled array before writing it). No autograd framework is imported here.
"""

from __future__ import annotations

import math
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

MIN_BYTES = 1 << 16          # smaller arrays come from numpy: malloc serves them from memory it already has
MAX_FREE_BYTES = 1 << 30     # free buffers beyond this are given back (oldest sizes first)
ALIGN = 64                   # byte alignment of every pooled array (a cache line, an AVX-512 vector)


class _Buffer:
    """One pooled buffer: ``raw`` owns the memory (every array handed out has it as its base)."""

    __slots__ = ("raw", "start", "nbytes")

    def __init__(self, nbytes: int) -> None:
        self.raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
        self.start = (-self.raw.ctypes.data) % ALIGN
        self.nbytes = nbytes

    def references(self) -> int:
        """References to ``raw``: this record's, the call's argument, and one per live array on it."""
        return sys.getrefcount(self.raw)

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        # numpy sets the base of a view of a view to the array owning the memory: raw
        return self.raw[self.start:self.start + self.nbytes].view(dtype).reshape(shape)


_FREE = _Buffer(ALIGN).references() if hasattr(sys, "getrefcount") else 0   # a buffer no array refers to: 2 on CPython


class BufferPool:
    """Flat buffers by size, handed out while no array refers to them; see the module docstring."""

    def __init__(self) -> None:
        self._buffers: dict[int, list[_Buffer]] = {}       # nbytes -> buffers of that size (in use or free)
        self._lock = threading.Lock()
        self.enabled = hasattr(sys, "getrefcount")

    def empty(self, shape: Any, dtype: Any = np.float64) -> np.ndarray:
        """Like ``np.empty(shape, dtype)`` (C order), from the pool when the array is large."""
        dtype = np.dtype(dtype)
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if not self.enabled or nbytes < MIN_BYTES:
            return np.empty(shape, dtype=dtype)
        with self._lock:
            buffers = self._buffers.setdefault(nbytes, [])
            free = next((buffer for buffer in buffers if buffer.references() == _FREE), None)
            if free is None:
                self._trim(keep=nbytes)
                free = _Buffer(nbytes)
                buffers.append(free)
            return free.array(shape, dtype)

    def zeros(self, shape: Any, dtype: Any = np.float64) -> np.ndarray:
        """Like ``np.zeros(shape, dtype)``, from the pool when the array is large."""
        array = self.empty(shape, dtype)
        array.fill(0)
        return array

    def _trim(self, keep: int) -> None:
        """Drop free buffers, other sizes than ``keep`` first, while they exceed MAX_FREE_BYTES."""
        free = [buffer for buffers in self._buffers.values() for buffer in buffers if buffer.references() == _FREE]
        total = sum(buffer.nbytes for buffer in free)
        for buffer in sorted(free, key=lambda buffer: buffer.nbytes == keep):
            if total <= MAX_FREE_BYTES:
                break
            self._buffers[buffer.nbytes].remove(buffer)
            total -= buffer.nbytes

    def clear(self) -> None:
        """Drop every free buffer (a buffer still referenced stays until its arrays die)."""
        with self._lock:
            for nbytes in list(self._buffers):
                kept = [buffer for buffer in self._buffers[nbytes] if buffer.references() != _FREE]
                if kept:
                    self._buffers[nbytes] = kept
                else:
                    del self._buffers[nbytes]

    def held_bytes(self) -> int:
        """Bytes of all pooled buffers, in use or free."""
        with self._lock:
            return sum(buffer.nbytes for buffers in self._buffers.values() for buffer in buffers)


POOL = BufferPool()


def empty(shape: Any, dtype: Any = np.float64) -> np.ndarray:
    """``np.empty(shape, dtype)`` from the pool when large (see the module docstring)."""
    return POOL.empty(shape, dtype)


def zeros(shape: Any, dtype: Any = np.float64) -> np.ndarray:
    """``np.zeros(shape, dtype)`` from the pool when large."""
    return POOL.zeros(shape, dtype)


def empty_like(a: np.ndarray, dtype: Any = None) -> np.ndarray:
    """``np.empty_like(a, dtype)`` in C order, from the pool when large."""
    return POOL.empty(a.shape, a.dtype if dtype is None else dtype)


def clear() -> None:
    """Drop every free buffer of the pool (see ``BufferPool.clear``)."""
    POOL.clear()


@contextmanager
def disabled() -> Iterator[None]:
    """Every array fresh from numpy inside the block (the tests compare the two)."""
    previous, POOL.enabled = POOL.enabled, False
    try:
        yield
    finally:
        POOL.enabled = previous
