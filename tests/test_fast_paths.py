"""The performance paths hold the same results as the plain ones.

- ``im2col_batch_last`` / ``col2im_batch_last`` (the (t, i, j, b) column order used for narrow
  convolution outputs) are ``im2col`` / ``col2im`` with the columns permuted, and adjoint;
- ``conv2d_forward`` / ``conv2d_backward`` give the same numbers in both column orders, and
  whatever the blocking over time steps (``BLOCK_BYTES``): the output bit for bit, dW and db
  (sums over the blocks) to rounding, dx bit for bit;
- the threads of refsnn/parallel.py change nothing, bit for bit: refsnn.grad with 1 thread and
  with 3 (chunks forced down to single samples) returns identical arrays;
- the fused LIF loops (eq. 2 and average / sum pooling inside ``lif_forward`` and
  ``trace_lif_backward``) are bit for bit the separate functions, and whole-network gradients
  are the same with the fused backward (adjoints=False) and with the separate backward
  functions (adjoints=True; the forward is the fused one in both).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import refsnn
from refsnn import conv, parallel
from refsnn.lif import NeuronParams, lif_forward, trace_forward, trace_lif_backward
from refsnn.surrogates import make_surrogate


@st.composite
def geometries(draw):
    kernel = draw(st.integers(1, 4), label="kernel")
    stride = draw(st.integers(1, 3), label="stride")
    padding = draw(st.integers(0, 2), label="padding")
    H = draw(st.integers(max(1, kernel - 2 * padding), 9), label="H")
    W = draw(st.integers(max(1, kernel - 2 * padding), 9), label="W")
    shape = (draw(st.integers(1, 3), label="T"), draw(st.integers(1, 3), label="B"),
             draw(st.integers(1, 3), label="C"), H, W)
    return shape, kernel, stride, padding, draw(st.integers(0, 2**32 - 1), label="seed")


@settings(max_examples=40, deadline=None)
@given(case=geometries())
def test_batch_last_columns_are_a_permutation_and_adjoint(case):
    (T, B, C, H, W), k, s, p, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, C, H, W))
    Ho, Wo = conv.conv_output_size(H, k, s, p), conv.conv_output_size(W, k, s, p)
    plain = conv.im2col(x.reshape(T * B, C, H, W), k, s, p)            # columns (t, b, i, j)
    batch_last = conv.im2col_batch_last(x, k, s, p)                    # columns (t, i, j, b)
    permuted = plain.reshape(-1, T, B, Ho, Wo).transpose(0, 1, 3, 4, 2).reshape(plain.shape)
    np.testing.assert_array_equal(batch_last, permuted)
    cols = rng.standard_normal(batch_last.shape)
    dx = conv.col2im_batch_last(cols, x.shape, k, s, p)
    assert np.sum(batch_last * cols) == pytest.approx(np.sum(x * dx), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("padding, stride", [(0, 1), (1, 1), (2, 2)])
def test_conv_column_orders_agree(monkeypatch, rng, padding, stride):
    x = rng.standard_normal((3, 2, 4, 9, 9))
    weight, bias = rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
    results = {}
    for name, threshold in (("plain", 0), ("batch_last", 10**6)):
        monkeypatch.setattr(conv, "BATCH_LAST_BELOW", threshold)
        out, cache = conv.conv2d_forward(x, weight, bias, stride, padding)
        dout = np.cos(np.arange(out.size)).reshape(out.shape)
        results[name] = (out, *conv.conv2d_backward(dout, cache))
    np.testing.assert_allclose(results["plain"][0], conv.conv2d_forward_slow(x, weight, bias, stride, padding),
                               rtol=1e-12, atol=1e-12)
    for plain, batch_last in zip(results["plain"], results["batch_last"]):
        np.testing.assert_allclose(batch_last, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("batch_last", [0, 10**6])
@pytest.mark.parametrize("padding, stride", [(0, 1), (1, 2)])
def test_conv_blocks_of_time_steps_agree(monkeypatch, rng, batch_last, padding, stride):
    x = rng.standard_normal((5, 3, 2, 7, 8))
    weight, bias = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    monkeypatch.setattr(conv, "BATCH_LAST_BELOW", batch_last)
    Ho, Wo = conv.conv_output_size(7, 3, stride, padding), conv.conv_output_size(8, 3, stride, padding)
    step_bytes = 2 * 3 * 3 * 3 * Ho * Wo * 8                         # C k k B Ho Wo itemsize: one step's columns
    results = {}
    for blocks, block_bytes, steps in (("one", 1 << 40, 5), ("per step", 1, 1), ("two steps", 2 * step_bytes, 2)):
        monkeypatch.setattr(conv, "BLOCK_BYTES", block_bytes)
        assert min(conv._block_steps(x.shape, weight.shape, Ho, Wo, 8), 5) == steps   # the blocking is real
        out, cache = conv.conv2d_forward(x, weight, bias, stride, padding)
        dout = np.sin(np.arange(out.size)).reshape(out.shape)
        results[blocks] = (out, *conv.conv2d_backward(dout, cache))
    np.testing.assert_allclose(results["one"][0], conv.conv2d_forward_slow(x, weight, bias, stride, padding),
                               rtol=1e-12, atol=1e-12)
    for blocks in ("per step", "two steps"):
        out, dW, db, dx = results[blocks]
        np.testing.assert_array_equal(out, results["one"][0])
        np.testing.assert_allclose(dW, results["one"][1], rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(db, results["one"][2], rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(dx, results["one"][3])


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 4), B=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(2, 7), W=st.integers(2, 7),
       k=st.integers(1, 3), kind=st.sampled_from(["avg", "sum"]), forward=st.sampled_from(["hard", "smooth"]),
       reset_grad=st.sampled_from(["full", "detached", "ignored"]), dtype=st.sampled_from(["float64", "float32"]),
       tau_s=st.sampled_from([1.0, 2.0, 3.7]), seed=st.integers(0, 2**32 - 1))
def test_fused_trace_and_pooling_are_the_separate_functions(T, B, C, H, W, k, kind, forward, reset_grad, dtype,
                                                            tau_s, seed):
    k = min(k, H, W)
    rng = np.random.default_rng(seed)
    current = rng.normal(0.8, 1.0, size=(T, B, C, H, W)).astype(dtype)
    neuron, surrogate = NeuronParams(4.0, tau_s, 1.0), make_surrogate({"name": "sigmoid", "T": 0.4})
    pool = conv.TiledPool(kernel=k, scale=1.0 / (k * k) if kind == "avg" else 1.1)
    pool_forward = conv.avg_pool_forward if kind == "avg" else lambda a, k: conv.sum_pool_forward(a, k, 1.1)
    S, cache = lif_forward(current, neuron, surrogate, forward)
    a, cache_a = lif_forward(current, neuron, surrogate, forward, trace_tau=tau_s)
    pooled, cache_p = lif_forward(current, neuron, surrogate, forward, trace_tau=tau_s, pool=pool)
    reference, pool_cache = pool_forward(trace_forward(S, tau_s), k)
    np.testing.assert_array_equal(a, trace_forward(S, tau_s))
    np.testing.assert_array_equal(pooled, reference)
    assert pooled.dtype == np.dtype(dtype)
    for other in (cache_a, cache_p):
        np.testing.assert_array_equal(other.U, cache.U)
        np.testing.assert_array_equal(other.S, cache.S)
    dpooled = rng.standard_normal(pooled.shape).astype(dtype)
    unfused = trace_lif_backward(conv.avg_pool_backward(dpooled, pool_cache), cache, tau_s, reset_grad)
    np.testing.assert_array_equal(trace_lif_backward(dpooled, cache_p, tau_s, reset_grad, pool=pool), unfused)


@pytest.mark.parametrize("scale", [1.1, np.float64(1.1), np.float32(1.1)])
def test_fused_pooling_rounds_as_the_separate_functions_for_any_scale_type(rng, scale):
    # a numpy float64 scale on float32 data must not compute in float64 in one path only
    current = rng.normal(0.8, 1.0, size=(3, 2, 2, 6, 6)).astype(np.float32)
    neuron, surrogate = NeuronParams(4.0, 2.0, 1.0), make_surrogate({"name": "sigmoid", "T": 0.4})
    pool = conv.TiledPool(kernel=2, scale=scale)
    pooled, cache_p = lif_forward(current, neuron, surrogate, trace_tau=2.0, pool=pool)
    S, cache = lif_forward(current, neuron, surrogate)
    reference, pool_cache = conv.sum_pool_forward(trace_forward(S, 2.0), 2, 1.1)
    np.testing.assert_array_equal(pooled, reference)
    dpooled = rng.standard_normal(pooled.shape).astype(np.float32)
    np.testing.assert_array_equal(trace_lif_backward(dpooled, cache_p, 2.0, pool=pool),
                                  trace_lif_backward(conv.sum_pool_backward(dpooled, pool_cache), cache, 2.0))


@pytest.mark.parametrize("architecture, pooling", [("3C3-P2-4C2-5", "avg"), ("3C2-P3-5", "sum"),
                                                   ("3C3-P2-4C2-P2-5", "avg"), ("P2-3C2-P2-5", "sum"),
                                                   ("3C3-P2-P2-5", "avg"), ("3C3-P1-4C2-5", "sum")])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_network_gradients_are_the_same_fused_or_not(rng, architecture, pooling, dtype):
    # adjoints=True runs pooling, eq. (2) backwards and eq. (7)-(8) as separate functions
    spec = {"input_shape": [2, 11, 11], "architecture": architecture, "n_out": 3, "pooling": pooling,
            "neuron": {"tau_m": 4.0, "tau_s": 2.0, "theta": 0.3}, "dtype": dtype, "loss": {"name": "rate_ce"}}
    x = (rng.random((5, 4, 2, 11, 11)) < 0.5).astype(dtype)
    labels = rng.integers(0, 3, size=4)
    params = {k: 3 * v for k, v in refsnn.init_params(refsnn.parse_spec(spec), 5).items()}
    fused = refsnn.grad(spec, x, labels, params)
    separate = refsnn.grad(spec, x, labels, params, adjoints=True)
    assert separate["S/0"].any() and np.abs(fused["grad/layers.0.weight"]).max() > 0
    for key, value in fused.items():
        np.testing.assert_array_equal(separate[key], value, err_msg=key)


@pytest.mark.parametrize("adjoints", [False, True])
@pytest.mark.parametrize("forward", ["hard", "smooth"])
@pytest.mark.parametrize("pooling", ["avg", "sum", "max"])
def test_threads_change_nothing(monkeypatch, rng, pooling, forward, adjoints):
    spec = {"input_shape": [2, 9, 9], "architecture": "3C3-P2-4C2-5", "n_out": 3, "pooling": pooling,
            "forward": forward, "neuron": {"tau_m": 4.0, "tau_s": 2.0, "theta": 0.3},
            "loss": {"name": "rate_ce"}}
    x = (rng.random((5, 4, 2, 9, 9)) < 0.5).astype(float)
    labels = rng.integers(0, 3, size=4)
    params = {k: 3 * v for k, v in refsnn.init_params(refsnn.parse_spec(spec), 5).items()}
    results, splits = {}, []
    real_chunks = parallel.chunks
    monkeypatch.setattr(parallel, "chunks", lambda n, parts: splits.append(parts) or real_chunks(n, parts))
    for threads in ("1", "3"):
        monkeypatch.setenv("REFSNN_NUM_THREADS", threads)
        monkeypatch.setattr(parallel, "MIN_CHUNK_ELEMENTS", 1)     # split even these tiny arrays
        results[threads] = refsnn.grad(spec, x, labels, params, adjoints=adjoints)
    assert splits and min(splits) >= 2 and max(splits) == 3      # "1" runs unsplit; "3" really split
    assert not adjoints or results["1"]["S/0"].any()
    for key, value in results["1"].items():
        np.testing.assert_array_equal(results["3"][key], value, err_msg=key)


def test_chunks_cover_the_axis():
    for n in range(1, 9):
        for parts in range(1, 5):
            slices = parallel.chunks(n, parts)
            assert [i for part in slices for i in range(n)[part]] == list(range(n))
            assert len(slices) == min(n, parts)


def test_an_error_in_a_chunk_is_raised(monkeypatch):
    monkeypatch.setenv("REFSNN_NUM_THREADS", "2")

    def work(part):
        if part.start:
            raise ValueError("chunk failed")

    with pytest.raises(ValueError, match="chunk failed"):
        parallel.for_each_chunk(work, 4, 10 * parallel.MIN_CHUNK_ELEMENTS)


@pytest.mark.parametrize("code, env, expected", [
    ("import refsnn", {}, "4"),                                   # set before numpy loads OpenBLAS
    ("import refsnn", {"OPENBLAS_THREAD_TIMEOUT": "20"}, "20"),   # the user's value is kept
    ("import numpy, refsnn", {}, None)])                          # too late: left alone
def test_openblas_thread_timeout_is_set_only_when_it_can_work(code, env, expected):
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"} | env
    done = subprocess.run([sys.executable, "-c", f"{code}; import json, os; "
                           "print(json.dumps(os.environ.get('OPENBLAS_THREAD_TIMEOUT')))"],
                          capture_output=True, text=True, env=environment, check=True)
    assert json.loads(done.stdout) == expected
