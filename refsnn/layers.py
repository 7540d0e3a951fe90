"""Stateless weighted layers, run once on the time-folded batch (one matrix product per layer).

``dense_forward`` computes the input current of eq. (1), I_t = W a_in_t + b, for all T steps
and B samples in one GEMM; ``dense_backward`` is its exact adjoint (one GEMM each for dW and
da_in). PyTorch layouts: weight (out, in), bias (out,). No autograd framework is imported here.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import memory


class DenseCache(NamedTuple):
    a_in: np.ndarray     # (T, B, in) the presynaptic traces
    weight: np.ndarray   # (out, in)


def dense_forward(a_in: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, DenseCache]:
    """I_t = W a_in_t + b for every t (eq. 1, input term). a_in: (T, B, in) -> I: (T, B, out)."""
    T, B, n_in = a_in.shape
    current = memory.empty((T * B, weight.shape[0]), np.result_type(a_in, weight))
    np.matmul(a_in.reshape(T * B, n_in), weight.T, out=current)   # (T*B, in) @ (in, out) -> (T*B, out)
    current += bias
    return current.reshape(T, B, -1), DenseCache(a_in=a_in, weight=weight)


def dense_backward(dL_dI: np.ndarray, cache: DenseCache, need_input_grad: bool = True):
    """Adjoint of ``dense_forward``: dL/dI (T, B, out) -> (dW (out, in), db (out,), da_in (T, B, in))."""
    T, B, n_out = dL_dI.shape
    dI = dL_dI.reshape(T * B, n_out)                    # (T, B, out) -> (T*B, out)
    a_in = cache.a_in.reshape(T * B, -1)                # (T, B, in) -> (T*B, in)
    dW = dI.T @ a_in                                    # sum over t and b of dI_t a_in_t^T
    db = dI.sum(axis=0)
    da_in = None
    if need_input_grad:
        da_in = memory.empty((T * B, cache.weight.shape[1]), np.result_type(dI, cache.weight))
        np.matmul(dI, cache.weight, out=da_in)          # (T*B, out) @ (out, in) -> (T*B, in)
        da_in = da_in.reshape(T, B, -1)
    return dW, db, da_in
