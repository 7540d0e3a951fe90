"""Convolution and pooling on the time-folded batch: the stateless layers of the CNN experiments.

Like ``layers.dense_forward``, a convolution runs on all T steps and B samples at once: the
(T, B, C, H, W) input is folded to N = T*B images, unrolled by ``im2col`` into a matrix and
multiplied by the weight; the backward is two more products and a ``col2im``. The time-folded
batch is cut into blocks of whole time steps whose unrolled columns take at most BLOCK_BYTES
(8 MB; at least one step per block), one product per block, so that the columns are written and
read again while they are still in cache, in buffers reused from block to block (``Workspace``).
On the MNIST network this cut the convolutions' forward from 52 + 66 ms to 27 + 40 ms (2 cores;
the unrolled columns of a whole layer are 55 and 92 MB). The blocking depends on the shapes
only; each output element of the forward and of dx is computed by the same operations whatever
it is, and dW, db are sums over the blocks in a fixed order. Only the LIF recurrence (lif.py)
loops over t. PyTorch layouts and semantics:
weight (O, C, k, k), bias (O,), cross-correlation (no kernel flip), zero padding, no dilation,
square kernels. No autograd framework is imported here.

Convolution, for every t and b (n = (t, b)), with x zero-padded by p on each side:

    (C1) out[n, o, i, j] = b[o] + sum_{c, u, v} W[o, c, u, v] x_pad[n, c, s i + u, s j + v]
         Ho = floor((H + 2p - k) / s) + 1,  Wo = floor((W + 2p - k) / s) + 1

With the unrolled input cols[(c, u, v), (n, i, j)] = x_pad[n, c, s i + u, s j + v] (``im2col``,
rows in torch's (c, kh, kw) flattening order of the weight, columns in (n, i, j) order):

    (C2) out2d = W2d @ cols            W2d = W.reshape(O, C*k*k), out2d: (O, N*Ho*Wo)
    (C3) dW2d  = dout2d @ cols^T       (summed over n, i, j: the time-folded batch)
    (C4) db    = dout2d summed over (n, i, j)
    (C5) dx    = col2im(W2d^T @ dout2d)   col2im = im2col^T: overlapping patches are summed

Why cols is (C*k*k, N*Ho*Wo) and not its transpose: (C2) then writes out2d in (O, N, Ho*Wo)
order, and both the transposition to (N, O, Ho, Wo) and ``col2im``'s k*k strided adds move
contiguous rows of Wo values; the (N*Ho*Wo, C*k*k) layout made the forward 1.4-2.4x and the
backward about 2x slower on the MNIST network's two conv shapes (OpenBLAS, 2 threads).

Two orders of the columns, the same matrix products. Narrow outputs (Wo < BATCH_LAST_BELOW)
use the (t, i, j, b) order of ``im2col_batch_last``: the input is first transposed to
(T, C, H, W, B), so every copy of ``im2col`` and every add of ``col2im`` moves runs of Wo*B
contiguous values instead of Wo (MNIST network, second conv, Wo = 8, one thread: im2col 31 ->
12 ms, col2im 53 -> 21 ms), at the price of transposing out2d (O, T, Ho*Wo, B) back to
(T, B, O, Ho, Wo), which is cheap when Ho*Wo is small and costs more than it saves when it is
large (first conv, Wo = 24). Wide outputs keep the (n, i, j) order of ``im2col`` above.

Pooling on (T, B, C, H, W) traces, window k, stride s (default s = k), no padding, floor mode
(torch's defaults: rows and columns beyond the last full window are dropped and receive zero
gradient), for every window R(i, j) = {(s i + u, s j + v): 0 <= u, v < k}:

    (P1) average: out[..., i, j] = 1/k^2 sum_{R(i, j)} x        (torch.nn.functional.avg_pool2d)
                  dx[..., s i + u, s j + v] += dout[..., i, j] / k^2
    (P2) sum:     out[..., i, j] = w sum_{R(i, j)} x            (fixed weight w; TSSL-BP: w = 1.1)
                  dx[..., s i + u, s j + v] += w dout[..., i, j]
    (P3) max:     out[..., i, j] = x[..., s i + u*, s j + v*],  (u*, v*) the FIRST maximum of the
                  window in row-major order;  dx[..., s i + u*, s j + v*] += dout[..., i, j]

Tie rule of (P3), checked against torch 2.13.0+cpu (torch.nn.functional.max_pool2d with
return_indices, contiguous and channels_last float64 inputs, windows 2/2, 3/2, 3/3, 3/1): the
CPU kernel behaves as a row-major scan of the window that replaces the running maximum only
on a strictly larger value, so an all-equal window sends its gradient to the top-left element
and [[0, 1], [1, 1]] to the (0, 1) element; ``np.argmax`` makes the same choice. One
difference, for NaN only: torch also replaces on every NaN, so with two or more NaNs in a
window it picks the last NaN and np.argmax the first (the value is NaN in both).

The copies and adds (im2col, col2im, pooling, the transpositions around the products) run on
contiguous chunks of the batch or time axis in parallel threads (parallel.py): each output
element is computed by the same operations whatever the chunking, so results do not depend on
the number of threads. Every forward returns ``(out, cache)`` with a NamedTuple cache and every
backward takes ``(dout, cache)``; no values are kept between calls (memory.py's pool keeps
only the memory of large arrays for reuse). ``conv2d_forward_slow`` and
``pool_forward_slow`` are the loop oracles the tests hold the fast versions equal to.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import memory
from .errors import RefsnnError
from .parallel import for_each_chunk

POOL_MODES = ("avg", "sum", "max")
BATCH_LAST_BELOW = 16        # output width below which the convolution uses the (t, i, j, b) column order
BLOCK_BYTES = 8 << 20        # the unrolled columns of one block of time steps stay about this small (cache-sized)


# ----------------------------------------------------------------------------- validation

def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise RefsnnError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise RefsnnError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_ndim(name: str, value: Any, ndim: int, shape_text: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise RefsnnError(f"{name} must be a numpy array of shape {shape_text}, got {type(value).__name__}")
    if value.ndim != ndim:
        raise RefsnnError(f"{name} must have shape {shape_text}, got {value.shape}")
    return value


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """floor((size + 2 padding - kernel) / stride) + 1, torch's output size (no dilation)."""
    return (size + 2 * padding - kernel) // stride + 1


def _check_geometry(H: int, W: int, kernel: Any, stride: Any, padding: Any,
                    what: str = "x") -> tuple[int, int, int, int, int]:
    """Validate kernel/stride/padding for an (H, W) input; return (k, s, p, Ho, Wo)."""
    k = _check_int("kernel", kernel, 1)
    s = _check_int("stride", stride, 1)
    p = _check_int("padding", padding, 0)
    if H + 2 * p < k or W + 2 * p < k:
        raise RefsnnError(f"kernel {k} does not fit in {what} of height {H} and width {W} "
                          f"with padding {p}: need H + 2*padding >= kernel and W + 2*padding >= kernel")
    return k, s, p, conv_output_size(H, k, s, p), conv_output_size(W, k, s, p)


def _window_slices(u: int, v: int, stride: int, Ho: int, Wo: int) -> tuple[slice, slice]:
    """Rows s*i + u (i < Ho) and columns s*j + v (j < Wo): where kernel offset (u, v) lands."""
    return (slice(u, u + stride * (Ho - 1) + 1, stride),
            slice(v, v + stride * (Wo - 1) + 1, stride))


def _float_dtype(a: np.ndarray) -> np.dtype:
    """a's dtype if it is a float type, float64 otherwise (spike trains may come as integers)."""
    return a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)


def _pad(x: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad the last two axes by ``padding`` on each side (no copy when padding == 0)."""
    if padding == 0:
        return x
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(padding, padding), (padding, padding)])


# ----------------------------------------------------------------------------- im2col / col2im

class Workspace:
    """Scratch buffers reused across the blocks of one convolution call.

    Why: a fresh buffer per block is page-faulted and zeroed by the kernel again each time
    (measured on the MNIST network's second convolution, 30 blocks of 3 MB: the dx products
    took 98 ms with a new output per block, 26 ms with one reused buffer). ``take`` returns a
    C-contiguous view of a flat buffer that grows when needed; a name is one buffer, so two
    arrays alive at once need two names. The flat buffers come from memory.py's pool, so the
    next call reuses them too.
    """

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: Any, zero: bool = False) -> np.ndarray:
        size = int(np.prod(shape))
        flat = self._flat.get(name)
        if flat is None or flat.size < size or flat.dtype != np.dtype(dtype):
            flat = self._flat[name] = memory.empty(size, dtype)
        view = flat[:size].reshape(shape)
        if zero:
            view.fill(0)
        return view


def _take(work: Workspace | None, name: str, shape: tuple[int, ...], dtype: Any, zero: bool = False) -> np.ndarray:
    if work is None:
        return memory.zeros(shape, dtype) if zero else memory.empty(shape, dtype)
    return work.take(name, shape, dtype, zero)



def im2col(x: np.ndarray, kernel: int, stride: int = 1, padding: int = 0,
           work: Workspace | None = None) -> np.ndarray:
    """Unroll every k x k patch of x into a column (the matrix ``cols`` of eq. C2).

    x: (N, C, H, W) -> cols: (C*k*k, N*Ho*Wo), C-contiguous, with
    cols[(c, u, v), (n, i, j)] = x_pad[n, c, s*i + u, s*j + v]  (row index c*k*k + u*k + v,
    torch's flattening of a (O, C, k, k) weight; column index (n*Ho + i)*Wo + j).
    One gather copy of size C*k*k*N*Ho*Wo (plus a padded copy of x when padding > 0). With
    ``work``, cols is its buffer "cols" (valid until the next take of that name).
    """
    x = _check_ndim("x", x, 4, "(N, C, H, W)")
    N, C, H, W = x.shape
    k, s, p, Ho, Wo = _check_geometry(H, W, kernel, stride, padding)
    x_pad = _pad(x, p)                                            # (N, C, H+2p, W+2p)
    windows = sliding_window_view(x_pad, (k, k), axis=(2, 3))     # (N, C, H+2p-k+1, W+2p-k+1, k, k), a view
    windows = windows[:, :, ::s, ::s]                             # (N, C, Ho, Wo, k, k), a view
    cols = _take(work, "cols", (C, k, k, N, Ho, Wo), x.dtype)

    def gather(n: slice) -> None:
        # (N, C, Ho, Wo, k, k) -> (C, k, k, N, Ho, Wo): the one copy, images n
        np.copyto(cols[:, :, :, n], windows[n].transpose(1, 4, 5, 0, 2, 3))

    for_each_chunk(gather, N, cols.size)
    return cols.reshape(C * k * k, N * Ho * Wo)                   # (C, k, k, N, Ho, Wo) -> (C*k*k, N*Ho*Wo), no copy


def col2im(cols: np.ndarray, x_shape: tuple[int, int, int, int], kernel: int, stride: int = 1,
           padding: int = 0, out: np.ndarray | None = None, work: Workspace | None = None) -> np.ndarray:
    """The adjoint of ``im2col``: <im2col(x), cols> == <x, col2im(cols)> for every x and cols.

    cols: (C*k*k, N*Ho*Wo) -> x: (N, C, H, W) with
    x[n, c, h, w] = sum of cols[(c, u, v), (n, i, j)] over all (u, v, i, j) with
    s*i + u - p == h and s*j + v - p == w (overlapping patches are summed; pixels no patch
    covers, and the padding, get nothing). k*k strided adds over the whole batch. ``out``: a
    C-contiguous (N, C, H, W) array to write x into; ``work``: scratch buffers to reuse.
    """
    cols = _check_ndim("cols", cols, 2, "(C*k*k, N*Ho*Wo)")
    if len(x_shape) != 4:
        raise RefsnnError(f"x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    N, C, H, W = (int(n) for n in x_shape)
    k, s, p, Ho, Wo = _check_geometry(H, W, kernel, stride, padding, what="x_shape")
    if cols.shape != (C * k * k, N * Ho * Wo):
        raise RefsnnError(f"cols must have shape (C*k*k, N*Ho*Wo) = ({C * k * k}, {N * Ho * Wo}) for "
                          f"x_shape {tuple(x_shape)}, kernel {k}, stride {s}, padding {p}; got {cols.shape}")
    patches = cols.reshape(C, k, k, N, Ho, Wo)                    # (C*k*k, N*Ho*Wo) -> (C, k, k, N, Ho, Wo)
    # Accumulate channel-major, (C, N, ...): each add below then reads and writes whole
    # contiguous (N, Ho, Wo) blocks; one transposing copy at the end also drops the padding.
    dx = memory.empty((N, C, H, W), cols.dtype) if out is None else out
    padded = _take(work, "col2im", (C, N, H + 2 * p, W + 2 * p), cols.dtype)

    def accumulate(n: slice) -> None:                             # images n
        dx_pad = padded[:, n]
        dx_pad.fill(0)
        for u in range(k):
            for v in range(k):
                rows, columns = _window_slices(u, v, s, Ho, Wo)
                dx_pad[:, :, rows, columns] += patches[:, u, v, n]  # (C, n, Ho, Wo) onto the grid of offset (u, v)
        np.copyto(dx[n], dx_pad[:, :, p:p + H, p:p + W].transpose(1, 0, 2, 3))  # (C, n, H, W) -> (n, C, H, W)

    for_each_chunk(accumulate, N, cols.size)
    return dx


def im2col_batch_last(x: np.ndarray, kernel: int, stride: int = 1, padding: int = 0,
                      work: Workspace | None = None) -> np.ndarray:
    """``im2col`` with the columns in (t, i, j, b) order, for long contiguous copies.

    x: (T, B, C, H, W) -> cols: (C*k*k, T*Ho*Wo*B), C-contiguous, with
    cols[(c, u, v), (t, i, j, b)] = x_pad[t, b, c, s*i + u, s*j + v] (rows as in ``im2col``;
    column index ((t*Ho + i)*Wo + j)*B + b). x is first copied to (T, C, H+2p, W+2p, B) (the
    padding is written in the same copy), so that for stride 1 each (j, b) run of the gather
    below is Wo*B contiguous values.
    """
    x = _check_ndim("x", x, 5, "(T, B, C, H, W)")
    T, B, C, H, W = x.shape
    k, s, p, Ho, Wo = _check_geometry(H, W, kernel, stride, padding)
    x_last = _take(work, "x_last", (T, C, H + 2 * p, W + 2 * p, B), x.dtype, zero=p > 0)
    windows = sliding_window_view(x_last, (k, k), axis=(2, 3))   # (T, C, H+2p-k+1, W+2p-k+1, B, k, k), a view
    windows = windows[:, :, ::s, ::s]                             # (T, C, Ho, Wo, B, k, k), a view
    cols = _take(work, "cols", (C, k, k, T, Ho, Wo, B), x.dtype)

    def gather(c: slice) -> None:                                 # channels c (a block may be one time step)
        # (T, B, C, H, W) -> (T, C, H, W, B), into the interior of the padded buffer
        np.copyto(x_last[:, c, p:p + H, p:p + W, :], x[:, :, c].transpose(0, 2, 3, 4, 1))
        # (T, C, Ho, Wo, B, k, k) -> (C, k, k, T, Ho, Wo, B): the one gather copy
        np.copyto(cols[c], windows[:, c].transpose(1, 5, 6, 0, 2, 3, 4))

    for_each_chunk(gather, C, cols.size)
    return cols.reshape(C * k * k, T * Ho * Wo * B)               # (C, k, k, T, Ho, Wo, B) -> (C*k*k, T*Ho*Wo*B), no copy


def col2im_batch_last(cols: np.ndarray, x_shape: tuple[int, int, int, int, int], kernel: int,
                      stride: int = 1, padding: int = 0, out: np.ndarray | None = None,
                      work: Workspace | None = None) -> np.ndarray:
    """The adjoint of ``im2col_batch_last``: cols (C*k*k, T*Ho*Wo*B) -> x (T, B, C, H, W).

    x[t, b, c, h, w] = sum of cols[(c, u, v), (t, i, j, b)] over s*i + u - p == h and
    s*j + v - p == w, accumulated in a (C, T, H+2p, W+2p, B) buffer (k*k adds of runs of Wo*B
    values for stride 1), then transposed back in one copy that also drops the padding.
    """
    cols = _check_ndim("cols", cols, 2, "(C*k*k, T*Ho*Wo*B)")
    if len(x_shape) != 5:
        raise RefsnnError(f"x_shape must be (T, B, C, H, W), got {tuple(x_shape)}")
    T, B, C, H, W = (int(n) for n in x_shape)
    k, s, p, Ho, Wo = _check_geometry(H, W, kernel, stride, padding, what="x_shape")
    if cols.shape != (C * k * k, T * Ho * Wo * B):
        raise RefsnnError(f"cols must have shape (C*k*k, T*Ho*Wo*B) = ({C * k * k}, {T * Ho * Wo * B}) for "
                          f"x_shape {tuple(x_shape)}, kernel {k}, stride {s}, padding {p}; got {cols.shape}")
    patches = cols.reshape(C, k, k, T, Ho, Wo, B)                 # (C*k*k, T*Ho*Wo*B) -> (C, k, k, T, Ho, Wo, B)
    dx = memory.empty((T, B, C, H, W), cols.dtype) if out is None else out
    padded = _take(work, "col2im", (C, T, H + 2 * p, W + 2 * p, B), cols.dtype)

    def accumulate(c: slice) -> None:                             # channels c
        dx_last = padded[c]
        dx_last.fill(0)
        for u in range(k):
            for v in range(k):
                rows, columns = _window_slices(u, v, s, Ho, Wo)
                dx_last[:, :, rows, columns, :] += patches[c, u, v]  # (c, T, Ho, Wo, B) onto the grid of offset (u, v)
        # (c, T, H, W, B) -> (T, B, c, H, W), the padding dropped
        np.copyto(dx[:, :, c], dx_last[:, :, p:p + H, p:p + W, :].transpose(1, 4, 0, 2, 3))

    for_each_chunk(accumulate, C, cols.size)
    return dx


# ----------------------------------------------------------------------------- convolution

class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs.

    Memory choice: the input x is kept, not its unrolled ``cols``. x is the previous layer's
    trace, which the network holds anyway, so keeping a reference costs nothing, whereas
    cols is k^2/s^2 times larger (MNIST network, T*B = 480: 55 MB against 3 MB for the first
    layer, 92 MB against 8 MB for the second). The price is one ``im2col`` again in the
    backward (about 10-25 ms on those shapes).
    """

    x: np.ndarray        # (T, B, C, H, W) the input, a reference (not a copy)
    weight: np.ndarray   # (O, C, k, k)
    stride: int
    padding: int


def _check_conv_args(x: Any, weight: Any, bias: Any, stride: Any,
                     padding: Any) -> tuple[int, int, int, int, int]:
    x = _check_ndim("x", x, 5, "(T, B, C, H, W)")
    weight = _check_ndim("weight", weight, 4, "(O, C, k, k)")
    O, C_w, k, k_w = weight.shape
    if k != k_w:
        raise RefsnnError(f"weight must have a square kernel (O, C, k, k), got {weight.shape}")
    if C_w != x.shape[2]:
        raise RefsnnError(f"weight has {C_w} input channels (shape {weight.shape}) but x has "
                          f"{x.shape[2]} (shape {x.shape}, channels on axis 2)")
    bias = _check_ndim("bias", bias, 1, f"(O,) = ({O},)")
    if bias.shape != (O,):
        raise RefsnnError(f"bias must have shape (O,) = ({O},), got {bias.shape}")
    return _check_geometry(x.shape[3], x.shape[4], k, stride, padding)


def _block_steps(x_shape: tuple[int, ...], weight_shape: tuple[int, ...], Ho: int, Wo: int,
                 itemsize: int) -> int:
    """Time steps per block: as many as keep one block's columns within BLOCK_BYTES (at least 1).

    Depends on the shapes only (never on the number of threads), so results do too.
    """
    _, B, C = x_shape[:3]
    k = weight_shape[2]
    return max(1, BLOCK_BYTES // (C * k * k * B * Ho * Wo * itemsize))


def _columns(x_block: np.ndarray, k: int, s: int, p: int, batch_last: bool, work: Workspace) -> np.ndarray:
    """im2col of a (t, B, C, H, W) block in the column order the convolution uses (BATCH_LAST_BELOW)."""
    if batch_last:
        return im2col_batch_last(x_block, k, s, p, work)          # (C*k*k, t*Ho*Wo*B)
    t, B, C, H, W = x_block.shape
    return im2col(x_block.reshape(t * B, C, H, W), k, s, p, work)  # (t, B, C, H, W) -> (t*B, C, H, W) -> (C*k*k, t*B*Ho*Wo)


def _transpose_into(out: np.ndarray, a: np.ndarray, bias: np.ndarray | None = None) -> None:
    """out = a (+ bias): a and out are (t, B, ...) views of different memory layouts (the
    transpositions around the products), copied in parallel threads over the batch axis."""

    def copy(samples: slice) -> None:
        if bias is None:
            np.copyto(out[:, samples], a[:, samples])
        else:
            np.add(a[:, samples], bias, out=out[:, samples])

    for_each_chunk(copy, a.shape[1], a.size)


def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int = 1,
                   padding: int = 0) -> tuple[np.ndarray, Conv2dCache]:
    """eq. (C1) for all T steps and B samples: eq. (C2), one matrix product per block of steps.

    x: (T, B, C, H, W), weight: (O, C, k, k), bias: (O,) -> out: (T, B, O, Ho, Wo), with
    torch.nn.functional.conv2d(x_t, weight, bias, stride, padding) at every t. Every output
    element is one dot product over (c, u, v), whatever the blocking.
    """
    k, s, p, Ho, Wo = _check_conv_args(x, weight, bias, stride, padding)
    T, B, C, H, W = x.shape
    O = weight.shape[0]
    w2d = weight.reshape(O, C * k * k)                            # (O, C, k, k) -> (O, C*k*k)
    out = memory.empty((T, B, O, Ho * Wo), np.result_type(x, weight))
    batch_last = Wo < BATCH_LAST_BELOW
    steps = _block_steps(x.shape, weight.shape, Ho, Wo, out.itemsize)
    work = Workspace()
    for t0 in range(0, T, steps):
        t1 = min(T, t0 + steps)
        cols = _columns(x[t0:t1], k, s, p, batch_last, work)      # (C*k*k, (t1-t0)*B*Ho*Wo)
        out2d = work.take("out2d", (O, cols.shape[1]), out.dtype)
        np.matmul(w2d, cols, out=out2d)                           # eq. (C2): (O, C*k*k) @ (C*k*k, ...) -> (O, ...)
        if batch_last:                                            # (O, t*Ho*Wo*B) -> (t, B, O, Ho*Wo), a view
            out2d = out2d.reshape(O, t1 - t0, Ho * Wo, B).transpose(1, 3, 0, 2)
        else:                                                     # (O, t*B*Ho*Wo) -> (t, B, O, Ho*Wo), a view
            out2d = out2d.reshape(O, t1 - t0, B, Ho * Wo).transpose(1, 2, 0, 3)
        _transpose_into(out[t0:t1], out2d, bias.reshape(O, 1))    # + b[o], in the same pass as the transposition
    out = out.reshape(T, B, O, Ho, Wo)                            # (T, B, O, Ho*Wo) -> (T, B, O, Ho, Wo)
    return out, Conv2dCache(x=x, weight=weight, stride=s, padding=p)


def conv2d_backward(dout: np.ndarray, cache: Conv2dCache, need_input_grad: bool = True):
    """Adjoint of ``conv2d_forward``: dL/dout (T, B, O, Ho, Wo) -> (dW (O, C, k, k), db (O,), dx).

    dx: (T, B, C, H, W), or None when ``need_input_grad`` is false (the first layer). Per block
    of steps (the forward's), one matrix product for dW (eq. C3, accumulated over the blocks in
    order) and one for the unrolled dx (eq. C5), then ``col2im``. dW and db are summed over t
    and b: the weight is shared across time.
    """
    x, weight, s, p = cache
    T, B, C, H, W = x.shape
    O, _, k, _ = weight.shape
    Ho, Wo = conv_output_size(H, k, s, p), conv_output_size(W, k, s, p)
    dout = _check_ndim("dout", dout, 5, f"(T, B, O, Ho, Wo) = {(T, B, O, Ho, Wo)}")
    if dout.shape != (T, B, O, Ho, Wo):
        raise RefsnnError(f"dout must have the forward output's shape (T, B, O, Ho, Wo) = "
                          f"{(T, B, O, Ho, Wo)}, got {dout.shape}")
    dtype = np.result_type(x, weight, dout)
    batch_last = Wo < BATCH_LAST_BELOW
    dout_tb = dout.reshape(T, B, O, Ho * Wo)                      # (T, B, O, Ho, Wo) -> (T, B, O, Ho*Wo)
    # (O, C, k, k) -> (O, C*k*k) -> (C*k*k, O), a transposed view
    w2d_t = weight.reshape(O, C * k * k).T.astype(dtype, copy=False)
    dW = np.zeros((O, C * k * k), dtype=dtype)
    db = np.zeros(O, dtype=dtype)
    dx = memory.empty((T, B, C, H, W), dtype) if need_input_grad else None
    steps = _block_steps(x.shape, weight.shape, Ho, Wo, np.dtype(dtype).itemsize)
    work = Workspace()
    for t0 in range(0, T, steps):
        t1 = min(T, t0 + steps)
        n = t1 - t0
        cols = _columns(x[t0:t1].astype(dtype, copy=False), k, s, p, batch_last, work)  # recomputed: see Conv2dCache
        if batch_last:
            dout2d = work.take("dout2d", (O, n, Ho * Wo, B), dtype)
            _transpose_into(dout2d.transpose(1, 3, 0, 2), dout_tb[t0:t1])   # (t, B, O, Ho*Wo) -> (O, t, Ho*Wo, B)
        else:
            dout2d = work.take("dout2d", (O, n, B, Ho * Wo), dtype)
            _transpose_into(dout2d.transpose(1, 2, 0, 3), dout_tb[t0:t1])   # (t, B, O, Ho*Wo) -> (O, t, B, Ho*Wo)
        dout2d = dout2d.reshape(O, -1)                            # -> (O, t*B*Ho*Wo) in the columns' order, no copy
        db += dout2d.sum(axis=1)                                  # eq. (C4)
        dW += dout2d @ cols.T                                     # eq. (C3): (O, ...) @ (..., C*k*k) -> (O, C*k*k)
        if need_input_grad:
            dcols = np.matmul(w2d_t, dout2d, out=cols)            # eq. (C5): (C*k*k, O) @ (O, ...), over cols
            if batch_last:
                col2im_batch_last(dcols, (n, B, C, H, W), k, s, p, out=dx[t0:t1], work=work)
            else:                                                 # dx[t0:t1] as (n*B, C, H, W), a view
                col2im(dcols, (n * B, C, H, W), k, s, p, out=dx[t0:t1].reshape(n * B, C, H, W), work=work)
    return dW.reshape(O, C, k, k), db, dx


def conv2d_forward_slow(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int = 1,
                        padding: int = 0) -> np.ndarray:
    """eq. (C1) by nested loops over (t, b, o, i, j): the oracle for ``conv2d_forward``. Returns out only."""
    k, s, p, Ho, Wo = _check_conv_args(x, weight, bias, stride, padding)
    T, B = x.shape[:2]
    O = weight.shape[0]
    x_pad = _pad(x, p)
    out = np.zeros((T, B, O, Ho, Wo), dtype=np.result_type(x, weight, bias))
    for t in range(T):
        for b in range(B):
            for o in range(O):
                for i in range(Ho):
                    for j in range(Wo):
                        patch = x_pad[t, b, :, s * i:s * i + k, s * j:s * j + k]   # (C, k, k)
                        out[t, b, o, i, j] = np.sum(patch * weight[o]) + bias[o]
    return out


# ----------------------------------------------------------------------------- pooling

class PoolCache(NamedTuple):
    """What an average or sum pooling backward needs: only the geometry and the scale."""

    x_shape: tuple[int, ...]   # (T, B, C, H, W)
    kernel: int
    stride: int
    scale: float               # 1/k^2 (average) or w (sum)


class MaxPoolCache(NamedTuple):
    """What ``max_pool_backward`` needs: the winner of every window."""

    argmax: np.ndarray         # (T, B, C, Ho, Wo) row-major index u*k + v of the first maximum
    x_shape: tuple[int, ...]   # (T, B, C, H, W)
    kernel: int
    stride: int


def _pool_geometry(x: Any, kernel: Any, stride: Any) -> tuple[int, int, int, int]:
    x = _check_ndim("x", x, 5, "(T, B, C, H, W)")
    k = _check_int("kernel", kernel, 1)
    s = k if stride is None else stride
    k, s, _, Ho, Wo = _check_geometry(x.shape[3], x.shape[4], k, s, 0)
    return k, s, Ho, Wo


def _windows(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """The pooling windows of x as a view: (T, B, C, H, W) -> (T, B, C, Ho, Wo, k, k)."""
    windows = sliding_window_view(x, (k, k), axis=(3, 4))        # (T, B, C, H-k+1, W-k+1, k, k), a view
    return windows[:, :, :, ::s, ::s]                             # (T, B, C, Ho, Wo, k, k), floor mode


def _window_sums(x: np.ndarray, k: int, s: int, scale: float, out: np.ndarray,
                 column_sums: np.ndarray) -> None:
    """out = scale * (the k x k window sums of x, stride s) over the last two axes (eq. P1 / P2).

    x: (..., H, W) -> out: (..., Ho, Wo); column_sums: a (..., H, Wo) scratch array. The window
    sum is separable: first the k columns of every window, then the k rows of those sums; 2k - 2
    adds on strided views, each written in place, instead of k*k adds of (..., Ho, Wo) grids.
    """
    Ho, Wo = out.shape[-2:]
    columns = [_window_slices(0, v, s, Ho, Wo)[1] for v in range(k)]
    rows = [_window_slices(u, 0, s, Ho, Wo)[0] for u in range(k)]
    np.copyto(column_sums, x[..., columns[0]])                   # (..., H, Wo)
    for v in columns[1:]:
        column_sums += x[..., v]                                  # element v of every window's rows
    np.copyto(out, column_sums[..., rows[0], :])                  # (..., Ho, Wo)
    for u in rows[1:]:
        out += column_sums[..., u, :]                             # row u of every window
    np.multiply(out, scale, out=out, dtype=out.dtype)             # in out's dtype, whatever the type of scale


def _scaled_pool_forward(x, kernel, stride, scale_of_k) -> tuple[np.ndarray, PoolCache]:
    k, s, Ho, Wo = _pool_geometry(x, kernel, stride)
    scale = scale_of_k(k)
    dtype = _float_dtype(x)
    out = memory.empty(x.shape[:3] + (Ho, Wo), dtype)

    def window_sums(b: slice) -> None:                            # samples b
        x_b = x[:, b]
        column_sums = memory.empty(x_b.shape[:-1] + (Wo,), dtype)  # (T, b, C, H, Wo)
        _window_sums(x_b, k, s, scale, out[:, b], column_sums)

    for_each_chunk(window_sums, x.shape[1], x.size)
    return out, PoolCache(x_shape=x.shape, kernel=k, stride=s, scale=scale)


class TiledPool(NamedTuple):
    """Average (scale 1/k^2, eq. P1) or sum (scale w, eq. P2) pooling with stride k, the form the
    LIF loops of lif.py fuse with the trace of eq. (2), one (B, C, H, W) step at a time.

    Forward: ``forward_into`` is the window sum of ``_scaled_pool_forward`` (the same operations,
    so the same bits). Backward: every pixel of the (H//k * k, W//k * k) corner gets scale times
    its window's gradient (rows and columns beyond it, dropped by the floor mode, get 0); the
    fused BPTT loop spreads a step's per-window values with ``spread_into``.
    """

    kernel: int
    scale: float

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        k = self.kernel
        return (*shape[:-2], shape[-2] // k, shape[-1] // k)

    def column_sums_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:-1], shape[-1] // self.kernel)

    def forward_into(self, x: np.ndarray, out: np.ndarray, column_sums: np.ndarray) -> None:
        """out = the pooled x: (..., H, W) -> (..., H//k, W//k)."""
        _window_sums(x, self.kernel, self.kernel, self.scale, out, column_sums)

    def spread_into(self, x: np.ndarray, out: np.ndarray, rows: np.ndarray) -> None:
        """out[..., k i + u, k j + v] = x[..., i, j] for every pixel of every window (the covered
        corner; the rows and columns beyond it, which no window covers, are left as they are).

        x: (..., Ho, Wo) -> out: (..., H, W); rows: a (..., Ho, Wo*k) scratch array. Two rounds
        of k strided copies: every column of a window, then every row (a broadcasting multiply
        through a (..., Ho, k, Wo, k) view runs its inner loop over k = 2 values and was 4-20x
        slower than these copies plus a flat multiply).
        """
        k = self.kernel
        Ho, Wo = x.shape[-2:]
        for v in range(k):
            np.copyto(rows[..., v::k], x)                         # column v of every window
        for u in range(k):
            np.copyto(out[..., u:Ho * k:k, :Wo * k], rows)        # row u of every window


def _scaled_pool_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    T, B, C, H, W = cache.x_shape
    k, s = cache.kernel, cache.stride
    Ho, Wo = conv_output_size(H, k, s), conv_output_size(W, k, s)
    _check_dout(dout, (T, B, C, Ho, Wo))
    dtype = _float_dtype(dout)
    if s == k:
        # windows tile the (Ho*k, Wo*k) corner: every pixel there receives scale * its window's dout
        covered = Ho * k == H and Wo * k == W
        dx = memory.empty(cache.x_shape, dtype) if covered else \
            memory.zeros(cache.x_shape, dtype)                    # dropped rows/columns keep 0
        pool = TiledPool(kernel=k, scale=cache.scale)

        def spread(b: slice) -> None:                             # samples b; d out / d x = scale in the window
            scaled = np.multiply(dout[:, b], cache.scale, dtype=dtype)   # (T, b, C, Ho, Wo)
            rows = memory.empty((*scaled.shape[:-1], Wo * k), dtype)
            pool.spread_into(scaled, dx[:, b], rows)

        for_each_chunk(spread, B, dx.size)
        return dx
    dout_scaled = dout * cache.scale                              # d out / d x = scale inside the window
    dx = np.zeros(cache.x_shape, dtype=dout_scaled.dtype)         # dropped rows/columns keep 0
    for u in range(k):
        for v in range(k):
            rows, columns = _window_slices(u, v, s, Ho, Wo)
            _scatter(dx[..., rows, columns], dout_scaled, overlapping=s < k)  # onto offset (u, v) of every window
    return dx


def _scatter(target: np.ndarray, values: np.ndarray, overlapping: bool) -> None:
    """target += values; a plain copy when windows do not overlap (each pixel is written once)."""
    if overlapping:
        target += values
    else:
        target[...] = values


def _check_dout(dout: Any, shape: tuple[int, ...]) -> None:
    _check_ndim("dout", dout, 5, f"(T, B, C, Ho, Wo) = {shape}")
    if dout.shape != shape:
        raise RefsnnError(f"dout must have the forward output's shape (T, B, C, Ho, Wo) = {shape}, got {dout.shape}")


def avg_pool_forward(x: np.ndarray, kernel: int, stride: int | None = None) -> tuple[np.ndarray, PoolCache]:
    """eq. (P1): x (T, B, C, H, W) -> (T, B, C, Ho, Wo), Ho = floor((H - k)/s) + 1, s = k by default."""
    return _scaled_pool_forward(x, kernel, stride, lambda k: 1.0 / (k * k))


def avg_pool_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Adjoint of eq. (P1): dout (T, B, C, Ho, Wo) -> dx (T, B, C, H, W)."""
    return _scaled_pool_backward(dout, cache)


def sum_pool_forward(x: np.ndarray, kernel: int, weight: float,
                     stride: int | None = None) -> tuple[np.ndarray, PoolCache]:
    """eq. (P2): w times the window sum (fixed, not trained; the TSSL-BP code uses w = 1.1).

    x (T, B, C, H, W) -> (T, B, C, Ho, Wo). ``weight`` has no default on purpose: the layer's
    gain is a modelling choice the caller states.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)) \
            or not np.isfinite(weight):
        raise RefsnnError(f"weight of sum pooling must be a finite number, got {weight!r}")
    return _scaled_pool_forward(x, kernel, stride, lambda k: float(weight))


def sum_pool_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """Adjoint of eq. (P2): dout (T, B, C, Ho, Wo) -> dx (T, B, C, H, W)."""
    return _scaled_pool_backward(dout, cache)


def max_pool_forward(x: np.ndarray, kernel: int, stride: int | None = None) -> tuple[np.ndarray, MaxPoolCache]:
    """eq. (P3): x (T, B, C, H, W) -> (T, B, C, Ho, Wo); ties go to the first maximum (row-major)."""
    k, s, Ho, Wo = _pool_geometry(x, kernel, stride)
    T, B, C = x.shape[:3]
    # (T, B, C, Ho, Wo, k, k) -> (T, B, C, Ho, Wo, k*k), row-major index u*k + v (a copy)
    flat = _windows(x, k, s).reshape(T, B, C, Ho, Wo, k * k)
    argmax = flat.argmax(axis=-1)                                 # first maximum: the tie rule of eq. (P3)
    out = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]  # (T, B, C, Ho, Wo, 1) -> (T, B, C, Ho, Wo)
    index_type = np.min_scalar_type(k * k - 1)                    # uint8 up to 16x16 windows
    return out, MaxPoolCache(argmax=argmax.astype(index_type), x_shape=x.shape, kernel=k, stride=s)


def max_pool_backward(dout: np.ndarray, cache: MaxPoolCache) -> np.ndarray:
    """Adjoint of eq. (P3): each dout goes to its window's winner. dout (T, B, C, Ho, Wo) -> dx (T, B, C, H, W)."""
    T, B, C, H, W = cache.x_shape
    k, s = cache.kernel, cache.stride
    Ho, Wo = conv_output_size(H, k, s), conv_output_size(W, k, s)
    _check_dout(dout, (T, B, C, Ho, Wo))
    dx = memory.zeros(cache.x_shape, _float_dtype(dout))         # dropped rows/columns keep 0
    for u in range(k):
        for v in range(k):
            rows, columns = _window_slices(u, v, s, Ho, Wo)
            winners = np.where(cache.argmax == u * k + v, dout, 0.0)  # windows won by their (u, v) element
            _scatter(dx[..., rows, columns], winners, overlapping=s < k)
    return dx


def pool_forward_slow(x: np.ndarray, mode: str, kernel: int, stride: int | None = None,
                      weight: float = 1.0) -> np.ndarray:
    """eq. (P1)-(P3) by loops over every window: the oracle for the pooling forwards.

    mode: "avg", "sum" (times ``weight``) or "max". Returns out only (T, B, C, Ho, Wo).
    """
    if mode not in POOL_MODES:
        raise RefsnnError(f"mode must be one of {', '.join(map(repr, POOL_MODES))}, got {mode!r}")
    k, s, Ho, Wo = _pool_geometry(x, kernel, stride)
    T, B, C = x.shape[:3]
    out = np.zeros((T, B, C, Ho, Wo), dtype=_float_dtype(x))
    for index in np.ndindex(T, B, C, Ho, Wo):
        t, b, c, i, j = index
        window = x[t, b, c, s * i:s * i + k, s * j:s * j + k]     # (k, k)
        if mode == "avg":
            out[index] = window.sum() / (k * k)
        elif mode == "sum":
            out[index] = weight * window.sum()
        else:
            out[index] = window.max()
    return out
