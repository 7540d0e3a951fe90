"""The buffer pool of refsnn/memory.py: a buffer is handed out again only when no array uses it.

- every kind of array derived from a pooled one (view, reshape, slice, transpose, dtype view)
  keeps its buffer out of the pool; once all of them are gone it is reused;
- pooled arrays are C-contiguous, 64-byte aligned, of the asked shape and dtype;
- free buffers beyond MAX_FREE_BYTES are dropped, ``clear`` drops every free one;
- refsnn.grad gives the same bits with the pool and without it, and results of an earlier call
  are not touched by a later one (the aliasing a wrong reuse would cause).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import refsnn
from refsnn import memory

LARGE = (64, 1024)          # 512 KiB of float64: pooled


def fresh_pool(monkeypatch) -> memory.BufferPool:
    pool = memory.BufferPool()
    monkeypatch.setattr(memory, "POOL", pool)
    return pool


@pytest.mark.parametrize("derive", [
    lambda a: a, lambda a: a.reshape(-1), lambda a: a[3:7], lambda a: a.T, lambda a: a[:, ::2][1],
    lambda a: a.view(np.uint8), lambda a: np.asarray(a), lambda a: a.reshape(8, 8, 1024)[2, :, 5]])
def test_a_buffer_in_use_is_never_handed_out(derive):
    pool = memory.BufferPool()
    first = pool.empty(LARGE)
    kept = derive(first)
    del first
    second = pool.empty(LARGE)
    assert not np.shares_memory(kept, second)
    del kept
    third = pool.empty(LARGE)                        # the first buffer is free again: reused
    assert not np.shares_memory(second, third)
    assert pool.held_bytes() == 2 * 64 * 1024 * 8


def test_a_free_buffer_is_reused_for_any_shape_of_its_size():
    pool = memory.BufferPool()
    address = pool.empty(LARGE).ctypes.data
    assert pool.empty((1024, 16, 4), np.float64).ctypes.data == address
    assert pool.empty((LARGE[0] * LARGE[1] * 2,), np.float32).ctypes.data == address   # same bytes
    assert pool.empty((LARGE[0] * LARGE[1] + 1,), np.float64).ctypes.data != address   # other size
    assert pool.held_bytes() == 64 * 1024 * 8 + (64 * 1024 + 1) * 8


@pytest.mark.parametrize("shape, dtype", [(LARGE, np.float64), ((3, 5, 7, 211), np.float32),
                                          ((70000,), bool), ((9, 17), np.float64)])
def test_arrays_look_like_np_empty(shape, dtype):
    pool = memory.BufferPool()
    array = pool.empty(shape, dtype)
    assert array.shape == shape and array.dtype == np.dtype(dtype) and array.flags.c_contiguous
    assert array.flags.writeable
    if array.nbytes >= memory.MIN_BYTES:
        assert array.ctypes.data % memory.ALIGN == 0
    else:
        assert pool.held_bytes() == 0                # small arrays come from numpy
    assert np.all(pool.zeros(shape, dtype) == 0)


def test_free_buffers_beyond_the_limit_are_dropped(monkeypatch):
    monkeypatch.setattr(memory, "MAX_FREE_BYTES", 3 * memory.MIN_BYTES)
    pool = memory.BufferPool()
    for n in range(1, 11):                           # ten sizes, each free after its call
        pool.empty((n * memory.MIN_BYTES,), np.uint8)
    assert pool.held_bytes() <= 3 * memory.MIN_BYTES + 10 * memory.MIN_BYTES
    live = pool.empty((20 * memory.MIN_BYTES,), np.uint8)
    assert pool.held_bytes() <= 3 * memory.MIN_BYTES + live.nbytes
    pool.clear()
    assert pool.held_bytes() == live.nbytes          # the live one stays
    del live
    pool.clear()
    assert pool.held_bytes() == 0


def test_threads_never_share_a_buffer():
    pool = memory.BufferPool()
    taken, barrier = [], threading.Barrier(4)

    def take() -> None:
        barrier.wait()
        for _ in range(50):
            array = pool.empty(LARGE)
            array.fill(threading.get_ident() % 1000)
            taken.append(array)                      # kept alive: each must be its own buffer

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    addresses = {array.ctypes.data for array in taken}
    assert len(addresses) == len(taken) == 200


@pytest.mark.parametrize("adjoints", [False, True])
@pytest.mark.parametrize("architecture, pooling", [("4C3-P2-6", "avg"), ("3C3-4C3-P2-5", "max"), ("40-7", "avg")])
def test_grad_is_the_same_with_and_without_the_pool(monkeypatch, rng, architecture, pooling, adjoints):
    monkeypatch.setattr(memory, "MIN_BYTES", 64)     # pool even these small arrays
    fresh_pool(monkeypatch)
    shape = [12] if architecture == "40-7" else [2, 10, 10]
    spec = {"input_shape": shape, "architecture": architecture, "n_out": 3, "pooling": pooling,
            "neuron": {"tau_m": 4.0, "tau_s": 2.0, "theta": 0.3}}
    xs = [rng.random((4, 3, *shape)) for _ in range(3)]          # three different inputs
    target = (rng.random((4, 3, 3)) < 0.3).astype(float)
    pooled = [refsnn.grad(spec, x, target, seed=1, adjoints=adjoints) for x in xs[:2]]
    snapshot = [{k: np.copy(v) for k, v in result.items()} for result in pooled]
    pooled.append(refsnn.grad(spec, xs[2], target, seed=1, adjoints=adjoints))   # reuses what is free
    with memory.disabled():
        plain = [refsnn.grad(spec, x, target, seed=1, adjoints=adjoints) for x in xs]
    for before, after in zip(snapshot, pooled):
        for key in before:                           # a wrong reuse would overwrite an earlier result
            np.testing.assert_array_equal(after[key], before[key], err_msg=f"{key} changed by a later call")
    for result, reference in zip(pooled, plain):
        assert result.keys() == reference.keys()
        for key in reference:
            np.testing.assert_array_equal(result[key], reference[key], err_msg=key)
    assert not np.array_equal(plain[2]["grad/layers.0.weight"], plain[0]["grad/layers.0.weight"])
    assert memory.POOL.held_bytes() > 0
