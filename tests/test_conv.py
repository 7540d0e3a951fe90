"""Tests of refsnn.conv: im2col/col2im, conv2d and pooling on time-folded (T, B, C, H, W) arrays.

Three kinds of evidence, as for the dense layer:
- the fast versions equal the loop oracles (conv2d_forward_slow, pool_forward_slow) and
  col2im is the exact adjoint of im2col, over Hypothesis-drawn geometry;
- every backward matches central finite differences (refsnn.gradcheck): conv2d, average and
  sum pooling are linear in each argument, max pooling is checked away from ties;
- forward and backward agree with torch.nn.functional (conv2d, avg_pool2d, max_pool2d) in
  float64, including torch's max-pool tie rule on inputs full of ties.
torch is optional locally (those tests are skipped) but required in CI (CI=true): a missing
torch must fail there, not skip silently.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require
from refsnn.conv import (
    avg_pool_backward, avg_pool_forward, col2im, conv2d_backward, conv2d_forward,
    conv2d_forward_slow, conv_output_size, im2col, max_pool_backward, max_pool_forward,
    pool_forward_slow, sum_pool_backward, sum_pool_forward,
)
from refsnn.errors import RefsnnError
from refsnn.gradcheck import gradcheck

#: relative tolerance (to the largest reference entry) for comparisons that differ only by the
#: order of floating-point sums, keyed by dtype.
EXACT_RTOL = {np.dtype(np.float64): 1e-12}

SMALL = settings(deadline=None, max_examples=30)
TSSL_BP_SUM_POOL_WEIGHT = 1.1


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture(scope="module")
def torch():
    return require("torch")               # in CI a missing torch is an error, not a skip


def assert_close(actual: np.ndarray, expected: np.ndarray, name: str) -> None:
    """max |actual - expected| <= rtol * max |expected|; the message names the worst entry."""
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != expected {expected.shape}"
    rtol = EXACT_RTOL[np.dtype(expected.dtype)]
    diff = np.abs(actual - expected)
    scale = float(np.max(np.abs(expected), initial=0.0))
    if diff.size and diff.max() > rtol * max(scale, np.finfo(np.float64).tiny):
        worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
        pytest.fail(f"{name}: relative error {diff.max() / max(scale, 1e-300):.3e} > {rtol:g} at index "
                    f"{tuple(int(i) for i in worst)}: got {actual[worst]!r}, expected {expected[worst]!r}")


# ----------------------------------------------------------------------------- strategies

class ConvGeometry(NamedTuple):
    T: int
    B: int
    C: int
    O: int
    H: int
    W: int
    kernel: int
    stride: int
    padding: int

    @property
    def x_shape(self):
        return (self.T, self.B, self.C, self.H, self.W)

    @property
    def weight_shape(self):
        return (self.O, self.C, self.kernel, self.kernel)


@st.composite
def conv_geometries(draw, max_extent: int = 6):
    """Valid conv geometry: H + 2p >= k and W + 2p >= k; strides may skip pixels (s > k)."""
    kernel = draw(st.integers(1, 4), label="kernel")
    stride = draw(st.integers(1, 3), label="stride")
    padding = draw(st.integers(0, 2), label="padding")
    smallest = max(1, kernel - 2 * padding)
    return ConvGeometry(T=draw(st.integers(1, 3), label="T"), B=draw(st.integers(1, 2), label="B"),
                        C=draw(st.integers(1, 3), label="C"), O=draw(st.integers(1, 3), label="O"),
                        H=draw(st.integers(smallest, kernel + max_extent), label="H"),
                        W=draw(st.integers(smallest, kernel + max_extent), label="W"),
                        kernel=kernel, stride=stride, padding=padding)


class PoolGeometry(NamedTuple):
    x_shape: tuple
    kernel: int
    stride: int | None      # None: stride = kernel (the CNN experiments' P2)


@st.composite
def pool_geometries(draw):
    """Pool windows 1..3, stride = kernel or 1..3 (overlapping or gapped); H, W need not divide."""
    kernel = draw(st.integers(1, 3), label="kernel")
    stride = draw(st.one_of(st.none(), st.integers(1, 3)), label="stride")
    shape = (draw(st.integers(1, 2), label="T"), draw(st.integers(1, 2), label="B"),
             draw(st.integers(1, 2), label="C"), draw(st.integers(kernel, kernel + 5), label="H"),
             draw(st.integers(kernel, kernel + 5), label="W"))
    return PoolGeometry(shape, kernel, stride)


seeds = st.integers(0, 2**32 - 1)


def random_conv_args(geometry: ConvGeometry, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(geometry.x_shape), rng.standard_normal(geometry.weight_shape),
            rng.standard_normal(geometry.O))


def distinct_values(shape, rng) -> np.ndarray:
    """A random array whose entries differ pairwise by >= 1/size: no max-pool ties near eps."""
    size = int(np.prod(shape))
    return (rng.permutation(size) / size).reshape(shape)


# ----------------------------------------------------------------------------- im2col / col2im

def test_im2col_layout_is_torch_weight_order_by_patch_columns(rng):
    N, C, H, W, k, s, p = 2, 2, 5, 4, 2, 2, 1
    x = rng.standard_normal((N, C, H, W))
    cols = im2col(x, k, s, p)
    Ho, Wo = conv_output_size(H, k, s, p), conv_output_size(W, k, s, p)
    assert cols.shape == (C * k * k, N * Ho * Wo) and cols.flags.c_contiguous
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    for c, u, v, n, i, j in np.ndindex(C, k, k, N, Ho, Wo):
        assert cols[(c * k + u) * k + v, (n * Ho + i) * Wo + j] == x_pad[n, c, s * i + u, s * j + v]


@SMALL
@given(geometry=conv_geometries(), seed=seeds)
def test_col2im_is_the_adjoint_of_im2col(geometry, seed):
    rng = np.random.default_rng(seed)
    g = geometry
    x = rng.standard_normal((g.T * g.B, g.C, g.H, g.W))
    cols_shape = im2col(x, g.kernel, g.stride, g.padding).shape
    cols = rng.standard_normal(cols_shape)
    unrolled = im2col(x, g.kernel, g.stride, g.padding)
    left = np.vdot(unrolled, cols)
    right = np.vdot(x, col2im(cols, x.shape, g.kernel, g.stride, g.padding))
    rounding = np.vdot(np.abs(unrolled), np.abs(cols))            # bounds the rounding of either sum
    assert abs(left - right) <= 1e-12 * max(rounding, 1e-300), (left, right)


def test_col2im_sums_overlaps_and_leaves_skipped_pixels_at_zero():
    # 2 x 5 image, kernel 2, stride 3: the patches cover columns {0, 1} and {3, 4}, column 2 none.
    ones = np.ones((4, 2))                                        # (C*k*k, N*Ho*Wo) with Ho = 1, Wo = 2
    assert np.array_equal(col2im(ones, (1, 1, 2, 5), 2, 3, 0),
                          np.array([[[[1, 1, 0, 1, 1], [1, 1, 0, 1, 1]]]], dtype=float))
    # 2 x 3 image, kernel 2, stride 1: the middle column is in both patches.
    assert np.array_equal(col2im(ones, (1, 1, 2, 3), 2, 1, 0),
                          np.array([[[[1, 2, 1], [1, 2, 1]]]], dtype=float))


# ----------------------------------------------------------------------------- convolution

@SMALL
@given(geometry=conv_geometries(), seed=seeds)
def test_conv2d_forward_equals_the_loop_oracle(geometry, seed):
    x, weight, bias = random_conv_args(geometry, seed)
    out, _ = conv2d_forward(x, weight, bias, geometry.stride, geometry.padding)
    assert_close(out, conv2d_forward_slow(x, weight, bias, geometry.stride, geometry.padding), "out")


def conv_gradcheck(geometry: ConvGeometry, seed: int, mode: str):
    x, weight, bias = random_conv_args(geometry, seed)
    out, cache = conv2d_forward(x, weight, bias, geometry.stride, geometry.padding)
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
    dW, db, dx = conv2d_backward(dout, cache)

    def loss(p):                                                  # L = <dout, conv(x)>: linear in each argument
        return float(np.vdot(dout, conv2d_forward(p["x"], p["weight"], p["bias"],
                                                  geometry.stride, geometry.padding)[0]))

    return gradcheck(loss, {"x": x, "weight": weight, "bias": bias},
                     {"x": dx, "weight": dW, "bias": db}, mode=mode, n_directions=4, seed=seed)


@settings(deadline=None, max_examples=25)
@given(geometry=conv_geometries(max_extent=4), seed=seeds)
def test_conv2d_backward_matches_finite_differences(geometry, seed):
    conv_gradcheck(geometry, seed, mode="random")                 # raises GradientMismatch, naming the argument


@pytest.mark.parametrize("geometry", [
    ConvGeometry(T=2, B=1, C=2, O=3, H=5, W=4, kernel=3, stride=1, padding=1),
    ConvGeometry(T=1, B=2, C=1, O=2, H=6, W=5, kernel=2, stride=3, padding=0),   # gaps between patches
    ConvGeometry(T=2, B=2, C=2, O=2, H=3, W=3, kernel=3, stride=2, padding=2),   # padding ring wider than k/2
])
def test_conv2d_backward_every_entry_by_finite_differences(geometry):
    conv_gradcheck(geometry, seed=7, mode="full")


def test_conv2d_backward_without_input_grad(rng):
    g = ConvGeometry(T=2, B=3, C=2, O=4, H=6, W=6, kernel=3, stride=1, padding=0)
    x, weight, bias = random_conv_args(g, 3)
    out, cache = conv2d_forward(x, weight, bias)
    dout = rng.standard_normal(out.shape)
    dW, db, dx = conv2d_backward(dout, cache)
    dW_only, db_only, none = conv2d_backward(dout, cache, need_input_grad=False)
    assert none is None
    assert np.array_equal(dW, dW_only) and np.array_equal(db, db_only)
    assert dx.shape == x.shape


def test_conv2d_cache_keeps_x_by_reference_not_cols(rng):
    x = rng.standard_normal((2, 1, 1, 8, 8))
    _, cache = conv2d_forward(x, rng.standard_normal((2, 1, 3, 3)), np.zeros(2))
    assert cache.x is x


def test_conv2d_golden_sum_kernel():
    # A 3x3 all-ones kernel with bias 0.5 on a 4x4 ramp, stride 1: each output is its patch sum + 0.5.
    x = np.arange(16.0).reshape(1, 1, 1, 4, 4)
    out, _ = conv2d_forward(x, np.ones((1, 1, 3, 3)), np.array([0.5]))
    assert np.array_equal(out[0, 0, 0], np.array([[45.5, 54.5], [81.5, 90.5]]))


# ----------------------------------------------------------------------------- pooling

POOLS = {
    "avg": (lambda x, k, s: avg_pool_forward(x, k, s), avg_pool_backward),
    "sum": (lambda x, k, s: sum_pool_forward(x, k, TSSL_BP_SUM_POOL_WEIGHT, s), sum_pool_backward),
    "max": (lambda x, k, s: max_pool_forward(x, k, s), max_pool_backward),
}


@SMALL
@given(geometry=pool_geometries(), mode=st.sampled_from(sorted(POOLS)), seed=seeds)
def test_pool_forward_equals_the_loop_oracle(geometry, mode, seed):
    x = np.random.default_rng(seed).standard_normal(geometry.x_shape)
    out, _ = POOLS[mode][0](x, geometry.kernel, geometry.stride)
    expected = pool_forward_slow(x, mode, geometry.kernel, geometry.stride, weight=TSSL_BP_SUM_POOL_WEIGHT)
    assert_close(out, expected, f"{mode} pool out")


@SMALL
@given(geometry=pool_geometries(), mode=st.sampled_from(sorted(POOLS)), seed=seeds)
def test_pool_backward_matches_finite_differences(geometry, mode, seed):
    rng = np.random.default_rng(seed)
    forward, backward = POOLS[mode]
    x = distinct_values(geometry.x_shape, rng)                    # max: no tie within eps = 1e-6
    out, cache = forward(x, geometry.kernel, geometry.stride)
    dout = rng.standard_normal(out.shape)

    def loss(p):
        return float(np.vdot(dout, forward(p["x"], geometry.kernel, geometry.stride)[0]))

    gradcheck(loss, {"x": x}, {"x": backward(dout, cache)}, mode="full")


def test_pooling_floor_mode_gives_dropped_rows_and_columns_zero_gradient(rng):
    x = rng.standard_normal((2, 1, 3, 5, 7))                      # 5 = 2*2 + 1 rows, 7 = 3*2 + 1 columns
    for mode, (forward, backward) in POOLS.items():
        out, cache = forward(x, 2, None)
        assert out.shape == (2, 1, 3, 2, 3), mode
        dx = backward(np.ones_like(out), cache)
        assert np.all(dx[..., 4, :] == 0) and np.all(dx[..., :, 6] == 0), mode
        assert np.all(dx[..., :4, :6] != 0) or mode == "max", mode


def test_sum_pool_is_weighted_window_sum():
    x = np.arange(16.0).reshape(1, 1, 1, 4, 4)
    out, cache = sum_pool_forward(x, 2, weight=1.1)
    assert np.allclose(out[0, 0, 0], 1.1 * np.array([[10.0, 18.0], [42.0, 50.0]]), rtol=1e-15)
    assert np.array_equal(sum_pool_backward(np.ones_like(out), cache), np.full(x.shape, 1.1))


@pytest.mark.parametrize("window, winner", [
    ([[1.0, 1.0], [1.0, 1.0]], (0, 0)),   # all equal: the top-left element
    ([[0.0, 1.0], [1.0, 1.0]], (0, 1)),   # first maximum in row-major order, not the last
    ([[0.0, 0.0], [1.0, 1.0]], (1, 0)),
    ([[0.0, 2.0], [2.0, 1.0]], (0, 1)),
])
def test_max_pool_tie_goes_to_the_first_maximum_in_row_major_order(window, winner):
    # Pinned from torch 2.13.0+cpu: F.max_pool2d(x, 2, return_indices=True) picks these elements.
    x = np.array(window).reshape(1, 1, 1, 2, 2)
    out, cache = max_pool_forward(x, 2)
    dx = max_pool_backward(np.full(out.shape, 3.0), cache)
    expected = np.zeros((2, 2))
    expected[winner] = 3.0
    assert out.item() == np.max(window)
    assert np.array_equal(dx[0, 0, 0], expected)


def test_max_pool_overlapping_windows_accumulate_on_a_shared_winner():
    # kernel 3, stride 1 on a 1 x 5 row of height 3: the centre 9 wins all three windows.
    x = np.zeros((1, 1, 1, 3, 5))
    x[..., 1, 2] = 9.0
    out, cache = max_pool_forward(x, 3, 1)
    dx = max_pool_backward(np.array([1.0, 10.0, 100.0]).reshape(out.shape), cache)
    assert dx[..., 1, 2].item() == 111.0 and dx.sum() == 111.0


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("x_shape, weight_shape, bias_shape, kwargs, words", [
    ((2, 1, 3, 6, 6), (4, 2, 3, 3), (4,), {}, ["weight", "input channels", "3"]),
    ((2, 1, 3, 6, 6), (4, 3, 3, 2), (4,), {}, ["square kernel"]),
    ((2, 1, 3, 6, 6), (4, 3, 3, 3), (3,), {}, ["bias", "(4,)"]),
    ((2, 3, 6, 6), (4, 3, 3, 3), (4,), {}, ["x", "(T, B, C, H, W)"]),
    ((2, 1, 3, 2, 6), (4, 3, 3, 3), (4,), {}, ["kernel 3", "height 2"]),
    ((2, 1, 3, 6, 6), (4, 3, 3, 3), (4,), {"stride": 0}, ["stride", ">= 1"]),
    ((2, 1, 3, 6, 6), (4, 3, 3, 3), (4,), {"padding": -1}, ["padding", ">= 0"]),
])
def test_conv2d_refuses_bad_arguments_with_a_named_error(x_shape, weight_shape, bias_shape, kwargs, words):
    with pytest.raises(RefsnnError) as error:
        conv2d_forward(np.zeros(x_shape), np.zeros(weight_shape), np.zeros(bias_shape), **kwargs)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_backward_refuses_a_dout_of_the_wrong_shape(rng):
    out, cache = conv2d_forward(rng.standard_normal((1, 1, 1, 5, 5)), np.ones((2, 1, 3, 3)), np.zeros(2))
    with pytest.raises(RefsnnError, match="dout"):
        conv2d_backward(np.zeros((1, 1, 2, 2, 2)), cache)
    pooled, pool_cache = max_pool_forward(rng.standard_normal((1, 1, 1, 4, 4)), 2)
    with pytest.raises(RefsnnError, match="dout"):
        max_pool_backward(np.zeros((1, 1, 1, 3, 3)), pool_cache)


def test_pooling_refuses_a_window_larger_than_the_input():
    with pytest.raises(RefsnnError, match="kernel 3"):
        avg_pool_forward(np.zeros((1, 1, 1, 2, 5)), 3)
    with pytest.raises(RefsnnError, match="weight of sum pooling"):
        sum_pool_forward(np.zeros((1, 1, 1, 4, 4)), 2, weight=float("nan"))


# ----------------------------------------------------------------------------- torch agreement

def torch_grads(torch, fn, x, dout, *params):
    """Run fn(x_t, *params_t) under torch autograd, back-propagate dout; return out and grads."""
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, *params)]
    out = fn(*tensors)
    out.backward(torch.tensor(dout.reshape(out.shape), dtype=torch.float64))
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


@SMALL
@given(geometry=conv_geometries(), seed=seeds)
def test_conv2d_agrees_with_torch(torch, geometry, seed):
    g = geometry
    x, weight, bias = random_conv_args(g, seed)
    out, cache = conv2d_forward(x, weight, bias, g.stride, g.padding)
    dout = np.random.default_rng(seed + 1).standard_normal(out.shape)
    dW, db, dx = conv2d_backward(dout, cache)
    out_t, (dx_t, dW_t, db_t) = torch_grads(
        torch, lambda a, w, b: torch.nn.functional.conv2d(a, w, b, stride=g.stride, padding=g.padding),
        x.reshape(g.T * g.B, g.C, g.H, g.W), dout, weight, bias)   # (T, B, C, H, W) -> (T*B, C, H, W)
    assert_close(out.reshape(out_t.shape), out_t, "out")        # (T, B, O, Ho, Wo) -> (T*B, O, Ho, Wo)
    assert_close(dW, dW_t, "dW")
    assert_close(db, db_t, "db")
    assert_close(dx.reshape(dx_t.shape), dx_t, "dx")


@SMALL
@given(geometry=pool_geometries(), mode=st.sampled_from(["avg", "max"]),
       with_ties=st.booleans(), seed=seeds)
def test_pooling_agrees_with_torch(torch, geometry, mode, with_ties, seed):
    rng = np.random.default_rng(seed)
    T, B, C, H, W = geometry.x_shape
    # with_ties: values in {0, 1, 2}, so most max-pool windows hold several maxima.
    if with_ties:
        x = rng.integers(0, 3, geometry.x_shape).astype(np.float64)
    else:
        x = rng.standard_normal(geometry.x_shape)
    forward, backward = POOLS[mode]
    out, cache = forward(x, geometry.kernel, geometry.stride)
    dout = rng.standard_normal(out.shape)
    dx = backward(dout, cache)
    torch_pool = torch.nn.functional.avg_pool2d if mode == "avg" else torch.nn.functional.max_pool2d
    out_t, (dx_t,) = torch_grads(torch, lambda a: torch_pool(a, geometry.kernel, geometry.stride),
                                 x.reshape(T * B, C, H, W), dout)  # (T, B, C, H, W) -> (T*B, C, H, W)
    assert_close(out.reshape(out_t.shape), out_t, f"{mode} pool out")
    assert_close(dx.reshape(dx_t.shape), dx_t, f"{mode} pool dx")
