"""The discrete LIF neuron and its hand-written BPTT: the one place where the equations live.

Equations (Yang 2020, arXiv 2011.09964, with the paper's U[t+1] written U_t: no propagation
delay between layers). Per layer, time-major arrays (T, B, n), t = 1..T, U_0 = S_0 = a_0 = 0:

    (1)  U_t = beta * U_{t-1} * (1 - S_{t-1}) + I_t,     beta = 1 - 1/tau_m,
         I_t = W a_in_t + b                             (computed outside, see layers.py)
    (3)  S_t = H(U_t - theta),  H(x) = 1 if x > 0 else 0        ("hard" forward)
         S_t = relaxed(U_t - theta)                             ("smooth" forward)
    (2)  a_t = (1 - 1/tau_s) * a_{t-1} + S_t / tau_s            (trace_forward)

BPTT (eq. 7-8), sigma'_t = surrogate.grad(U_t - theta), dL/dU_{T+1} = 0:

    (7s) spatial:  dL/dU_t += dL/dS_t * sigma'_t      dL/dS_t through S_t's consumer only: for a
                   hidden layer its trace a_t, dL/dS_t = dL/da_t / tau_s with the total
                   dL/da_t = g_t + (1 - 1/tau_s) dL/da_{t+1} (eq. 2 backwards); for the
                   output layer the loss kernel of eq. (6) (losses.py)
    (7l) leak:     dL/dU_t += dL/dU_{t+1} * beta * (1 - S_t)
    (8)  reset:    dL/dU_t += dL/dU_{t+1} * beta * (-U_t * sigma'_t)

reset_grad selects the backward seen through the reset (the forward is always eq. 1):
"full" keeps (8) (the paper); "detached" drops (8), S_{t-1} in eq. 1 being a constant (snnTorch's
and SpyTorch's default); "ignored" sees no reset at all, dU_t/dU_{t-1} = beta (lava-dl): (7l)
becomes dL/dU_{t+1} * beta and (8) is dropped.

Why the smooth forward makes "full" exact: with S_t = relaxed(U_t - theta) the network is a
composition of differentiable maps and dS_t/dU_t = relaxed'(U_t - theta) = sigma'_t exactly, so
(7s) + (7l) + (8) is the chain rule of eq. (1)-(3), term for term; dropping (8) is then an
error as large as the term itself. See docs/derivation.md.

``lif_backward`` sums (7s) + (7l) + (8) in one update per step, beta dL/dU_{t+1} factored out;
with ``parts=True`` it keeps the three terms apart (the same sum, up to rounding).
``trace_lif_backward`` runs eq. (2) backwards inside the same loop, for a hidden layer whose
dL/da_t is given (bit for bit ``lif_backward(trace_backward(...))``, without storing dL/dS_t).

Pure functions: every forward returns ``(out, cache)`` with a NamedTuple cache and every
backward takes ``(upstream, cache)``; no values are kept between calls (memory.py's pool
keeps only the memory of large arrays for reuse). Only elementwise work sits
in the loops over t, on one (B, ...) step at a time (small enough to stay in cache), written in
place (``out=``). Samples are independent, so each loop runs on contiguous chunks of the batch
in parallel threads (parallel.py; the results do not depend on the chunking). No autograd
framework is imported here.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import memory
from .errors import RefsnnError, check_choice
from .conv import TiledPool
from .parallel import for_each_chunk
from .surrogates import Surrogate

RESET_GRADS = ("full", "detached", "ignored")
FORWARDS = ("hard", "smooth")


class NeuronParams(NamedTuple):
    """The constants of one LIF layer (validated in network.py)."""

    tau_m: float
    tau_s: float
    theta: float


class LIFCache(NamedTuple):
    """What the BPTT of one LIF layer needs: the membrane and the spikes of every step."""

    U: np.ndarray        # (T, B, ...) membrane potential U_t, after the input, before the reset
    S: np.ndarray        # (T, B, ...) spikes S_t: bool for "hard" (1/8 of the memory of a float
                         # array, and exact: S_t is 0 or 1), relaxed float values for "smooth"
    beta: float          # 1 - 1/tau_m
    theta: float
    surrogate: Surrogate


class LIFGrads(NamedTuple):
    """dL/dU_t of one layer, and its three parts (spatial + leak + reset == dL_dU up to rounding)."""

    dL_dU: np.ndarray
    spatial: np.ndarray
    leak: np.ndarray
    reset: np.ndarray


def trace_forward(S: np.ndarray, tau: float) -> np.ndarray:
    """eq. (2), also the van Rossum kernel of eq. (6): f_t = (1 - 1/tau) f_{t-1} + S_t / tau.

    S: (T, B, ...) -> f: (T, B, ...), f_0 = 0 (a single train (T,) too).
    """
    if S.ndim == 1:
        return trace_forward(S[:, None], tau)[:, 0]        # (T,) -> (T, 1) -> (T,)
    decay = 1.0 - 1.0 / tau
    f = memory.empty_like(S, np.result_type(S.dtype, np.float32))

    def steps(b: slice) -> None:                        # all t for the samples b
        S_b, f_b = S[:, b], f[:, b]
        np.multiply(S_b[0], 1.0 / tau, out=f_b[0])
        S_scaled = memory.empty_like(f_b[0])            # S_t / tau, one buffer for all t
        for t in range(1, S.shape[0]):
            np.multiply(f_b[t - 1], decay, out=f_b[t])
            np.divide(S_b[t], tau, out=S_scaled)
            f_b[t] += S_scaled

    _over_batch(steps, S)
    return f


def trace_backward(df: np.ndarray, tau: float) -> np.ndarray:
    """Adjoint of ``trace_forward`` (eq. 2 backwards in time).

    df: (T, B, ...) dL/df_t as consumed directly -> dS: (T, B, ...) with
    dS_t = (1/tau) * sum_{k >= t} (1 - 1/tau)^{k-t} df_k   (a "left tail" on each error).
    """
    if df.ndim == 1:
        return trace_backward(df[:, None], tau)[:, 0]      # (T,) -> (T, 1) -> (T,)
    decay = 1.0 - 1.0 / tau
    df_total = memory.empty_like(df, np.result_type(df.dtype, np.float32))     # total dL/df_t, carried backwards

    def steps(b: slice) -> None:                        # all t for the samples b
        df_b, total_b = df[:, b], df_total[:, b]
        total_b[-1] = df_b[-1]
        for t in range(df.shape[0] - 2, -1, -1):
            np.multiply(total_b[t + 1], decay, out=total_b[t])
            total_b[t] += df_b[t]
            total_b[t + 1] *= 1.0 / tau                 # dS_{t+1} = dL/df_{t+1} * df_{t+1}/dS_{t+1}, used above
        total_b[0] *= 1.0 / tau                         # dS_1

    _over_batch(steps, df)
    return df_total


def _over_batch(steps, array: np.ndarray) -> None:
    """steps(b) for chunks b of the batch axis (axis 1) of a (T, B, ...) array, in parallel."""
    for_each_chunk(steps, array.shape[1], array.size)


def lif_forward(current: np.ndarray, params: NeuronParams, surrogate: Surrogate,
                forward: str = "hard", trace_tau: float | None = None,
                pool: TiledPool | None = None) -> tuple[np.ndarray, LIFCache]:
    """Run eq. (1) and (3) over all steps; for a hidden layer, eq. (2) and pooling in the same loop.

    current: (T, B, ...) the input current I_t = W a_in_t + b of every step.
    Returns S: (T, B, ...) (float, current's dtype) and the cache for ``lif_backward``; with
    ``trace_tau``, the trace a: (T, B, ...) of eq. (2) instead of S (``trace_forward(S, trace_tau)``
    bit for bit; the hard forward then keeps S as booleans only); with ``pool`` too (average or sum pooling whose
    windows tile the input, conv.TiledPool), the pooled trace (T, B, C, H//k, W//k) (bit for bit
    ``pool.forward(trace_forward(S, trace_tau))``): a_t then lives for one step only.
    Only elementwise work on one (B, ...) step sits in the loop, written in place (``out=``).
    """
    check_choice("forward", forward, FORWARDS)
    if pool is not None and trace_tau is None:
        raise RefsnnError("pool needs trace_tau: pooling acts on the trace a_t of eq. (2)")
    beta = 1.0 - 1.0 / params.tau_m
    theta = params.theta
    hard = forward == "hard"
    T = current.shape[0]
    U = memory.empty_like(current)                      # float64 (or float32 when asked)
    # hard: H(U_t - theta) is U_t > theta exactly (U - theta rounds to 0 only when U == theta),
    # so the spikes are computed as booleans and kept as such (cast to 0.0 / 1.0 where S is returned)
    spiked = memory.empty(current.shape, bool) if hard else None
    S = memory.empty_like(current) if not hard or trace_tau is None else None
    if trace_tau is None:
        out = S
    elif pool is None:
        out = memory.empty_like(current)                # a, (T, B, ...)
    else:
        out = memory.empty(pool.output_shape(current.shape), current.dtype)   # pooled a, (T, B, C, H//k, W//k)

    def steps(b: slice) -> None:                        # all t for the samples b
        I_b, U_b = current[:, b], U[:, b]
        spikes = spiked[:, b] if hard else S[:, b]      # S_t as bool (hard) or relaxed floats (smooth)
        keep = memory.empty_like(U_b[0])                # beta * (1 - S_{t-1}), reused
        if trace_tau is not None:
            decay = 1.0 - 1.0 / trace_tau
            scaled = memory.empty_like(U_b[0])          # S_t / tau
            if pool is not None:                        # a_{t-1}, a_t: two buffers, swapped each step
                traces = [memory.empty_like(U_b[0]), memory.empty_like(U_b[0])]
                column_sums = memory.empty(pool.column_sums_shape(U_b[0].shape), U.dtype)
        for t in range(T):
            if t == 0:
                U_b[0] = I_b[0]                         # eq. (1) with U_0 = S_0 = 0
            else:
                np.subtract(1.0, spikes[t - 1], out=keep, dtype=keep.dtype)
                keep *= beta
                np.multiply(U_b[t - 1], keep, out=U_b[t])   # eq. (1): leak and reset
                U_b[t] += I_b[t]                        # eq. (1): input current
            if hard:
                np.greater(U_b[t], theta, out=spikes[t])    # eq. (3), strict: U_t == theta does not spike
                if trace_tau is None:
                    np.copyto(S[t, b], spikes[t])       # bool -> 0.0 / 1.0
            else:
                spikes[t] = surrogate.relaxed(U_b[t] - theta)   # eq. (3), smooth forward
            if trace_tau is None:
                continue
            a_t = out[t, b] if pool is None else traces[t % 2]
            if t == 0:                                  # eq. (2), a_0 = 0
                np.multiply(spikes[0], 1.0 / trace_tau, out=a_t, dtype=a_t.dtype)
            else:                                       # eq. (2): a_t = (1 - 1/tau) a_{t-1} + S_t / tau
                np.multiply(out[t - 1, b] if pool is None else traces[(t - 1) % 2], decay, out=a_t)
                np.divide(spikes[t], trace_tau, out=scaled, dtype=scaled.dtype)
                a_t += scaled
            if pool is not None:
                pool.forward_into(a_t, out[t, b], column_sums)   # eq. (P1) / (P2) of conv.py

    _over_batch(steps, current)
    return out, LIFCache(U=U, S=spiked if hard else S, beta=beta, theta=theta, surrogate=surrogate)


def lif_backward(dL_dS: np.ndarray, cache: LIFCache, reset_grad: str = "full",
                 parts: bool = False) -> LIFGrads | np.ndarray:
    """BPTT of eq. (1)-(3): from dL/dS_t (spatial, through a_t) to dL/dU_t = dL/dI_t.

    dL_dS: (T, B, ...) the gradient reaching S_t through this layer's output (the trace a_t, or
    the loss for the output layer); the reset path S_t -> U_{t+1} is added here.
    Returns dL_dU (T, B, ...), or with ``parts`` the LIFGrads split of eq. (7)-(8).

    One loop backwards over t; each step is elementwise work on (B, ...) arrays that stay in
    cache (the surrogate of eq. 10 too), with the carry dL/dU_{t+1} read from the step before.
    """
    check_choice("reset_grad", reset_grad, RESET_GRADS)
    if parts:
        return _bptt_parts(dL_dS, cache, reset_grad)
    return _bptt(dL_dS, cache, reset_grad, trace_tau=None)


def trace_lif_backward(dL_da: np.ndarray, cache: LIFCache, tau_s: float,
                       reset_grad: str = "full", pool: TiledPool | None = None) -> np.ndarray:
    """``lif_backward(trace_backward(dL_da, tau_s), cache, reset_grad)`` in one loop over t.

    dL_da: (T, B, ...) the gradient reaching this layer's trace a_t (eq. 2) from the layer above.
    Both recurrences run backwards in time, so eq. (2) backwards is applied step by step inside
    the BPTT loop: dL/dS_t is never stored, and the result is bit for bit the same as the two
    calls (the same operations in the same order on every element). With ``pool`` (the layer's
    trace was pooled in ``lif_forward``), dL_da is the gradient of the pooled trace
    (T, B, C, H//k, W//k) and the pooling adjoint runs in the loop too: bit for bit
    ``trace_lif_backward(avg_pool_backward(dL_da, ...), ...)`` (or sum pooling's), while eq. (2)
    backwards runs on the k*k times smaller pooled grid.
    """
    check_choice("reset_grad", reset_grad, RESET_GRADS)
    return _bptt(dL_da, cache, reset_grad, trace_tau=float(tau_s), pool=pool)


def _bptt(upstream: np.ndarray, cache: LIFCache, reset_grad: str, trace_tau: float | None,
          pool: TiledPool | None = None) -> np.ndarray:
    """eq. (7)-(8) written as one update per step (the fast path of lif_backward):

        dL/dU_t = dL/dS_t sigma'_t + beta dL/dU_{t+1} [(1 - S_t) - U_t sigma'_t]     ("full")
        dL/dU_t = dL/dS_t sigma'_t + beta dL/dU_{t+1} (1 - S_t)                       ("detached")
        dL/dU_t = dL/dS_t sigma'_t + beta dL/dU_{t+1}                                 ("ignored")

    the sum (7s) + (7l) + (8) with beta dL/dU_{t+1} factored out (``_bptt_parts`` keeps the three
    terms apart). With ``trace_tau``, upstream is dL/da_t and dL/dS_t comes from eq. (2) backwards
    as in ``trace_backward``: g_t = dL/da_t + (1 - 1/tau) g_{t+1}, dL/dS_t = g_t / tau. With
    ``pool`` as well, upstream is dL/d(pooled a_t): the pooling adjoint (conv.py, P1/P2 backwards)
    gives every covered pixel scale * its window's value and the rest 0; as it only replicates,
    g_t and dL/dS_t are computed once per window and replicated in the spatial product.
    """
    U, S, beta, theta = cache.U, cache.S, cache.beta, cache.theta
    T = U.shape[0]
    if pool is not None and (trace_tau is None or upstream.shape != pool.output_shape(U.shape)):
        raise RefsnnError(f"with pool, upstream must be dL/d(pooled trace) of shape {pool.output_shape(U.shape)} "
                          f"and trace_tau given; got shape {upstream.shape}, trace_tau {trace_tau}")
    dL_dU = memory.empty(U.shape, np.result_type(upstream.dtype, U.dtype))
    hard = S.dtype == bool

    def steps(b: slice) -> None:                        # all t, backwards, for the samples b
        U_b, S_b, up_b, dU_b = U[:, b], S[:, b], upstream[:, b], dL_dU[:, b]
        term = memory.empty_like(dU_b[0])               # beta dL/dU_{t+1} [...] of step t
        silent = memory.empty(S_b.shape[1:], bool) if hard else memory.empty_like(dU_b[0])   # 1 - S_t
        sigma_prime = memory.empty_like(U_b[0])         # sigma'_t, computed in place each step
        scratch = memory.empty_like(U_b[0])             # the surrogate's second buffer
        if trace_tau is not None:
            decay, inv_tau = 1.0 - 1.0 / trace_tau, 1.0 / trace_tau
            g = memory.empty(up_b.shape[1:], dU_b.dtype)    # g_t, the total dL/da_t (eq. 2 backwards)
            dS = memory.empty_like(g)                       # dL/dS_t = g_t / tau
        if pool is not None:
            da = memory.empty_like(g)                       # scale * dL/d(pooled a_t): dL/da_t of a window
            dS_full = memory.zeros(U_b.shape[1:], dU_b.dtype)   # dL/dS_t of every pixel; uncovered ones stay 0
            rows = memory.empty((*g.shape[:-1], g.shape[-1] * pool.kernel), dU_b.dtype)   # spread_into's scratch
        for t in range(T - 1, -1, -1):
            np.subtract(U_b[t], theta, out=sigma_prime)
            cache.surrogate.grad_inplace(sigma_prime, scratch)     # eq. (10)
            if trace_tau is None:
                dS = up_b[t]
            else:                                                   # eq. (2) backwards
                if pool is None:
                    da = up_b[t]
                else:                                               # pooling adjoint (P1 / P2)
                    np.multiply(up_b[t], pool.scale, out=da, dtype=da.dtype)
                if t == T - 1:
                    np.copyto(g, da)
                else:
                    g *= decay
                    g += da
                np.multiply(g, inv_tau, out=dS)
            if pool is not None:                                    # the window's dL/dS_t on its every pixel
                pool.spread_into(dS, dS_full, rows)
            np.multiply(dS if pool is None else dS_full, sigma_prime, out=dU_b[t])   # eq. (7), spatial term
            if t == T - 1:                                          # dL/dU_{T+1} = 0
                continue
            if reset_grad == "ignored":                             # dU_{t+1}/dU_t = beta
                np.multiply(dU_b[t + 1], beta, out=term)
                dU_b[t] += term
                continue
            if hard:
                np.logical_not(S_b[t], out=silent)
            else:
                np.subtract(1.0, S_b[t], out=silent)
            if reset_grad == "full":                                # eq. (7l) + (8): (1 - S_t) - U_t sigma'_t
                np.multiply(U_b[t], sigma_prime, out=term)
                np.subtract(silent, term, out=term)
                term *= dU_b[t + 1]
            else:                                                   # "detached": eq. (7l) only, 1 - S_t
                np.multiply(dU_b[t + 1], silent, out=term)
            term *= beta
            dU_b[t] += term

    _over_batch(steps, U)
    return dL_dU


def _bptt_parts(dL_dS: np.ndarray, cache: LIFCache, reset_grad: str) -> LIFGrads:
    """dL/dU_t from ``_bptt`` (so that it does not depend on ``parts``, bit for bit), and its three
    terms of eq. (7)-(8) evaluated from it over all steps at once:

        spatial_t = dL/dS_t sigma'_t,  leak_t = beta dL/dU_{t+1} (1 - S_t)  (beta dL/dU_{t+1} if
        "ignored"),  reset_t = -beta dL/dU_{t+1} U_t sigma'_t  (0 unless "full"),  dL/dU_{T+1} = 0.

    Their sum equals dL/dU_t up to rounding (tests/test_lif.py).
    """
    dL_dU = _bptt(dL_dS, cache, reset_grad, trace_tau=None)
    U, beta = cache.U, cache.beta
    sigma_prime = cache.surrogate.grad(U - cache.theta)                        # eq. (10), (T, B, ...)
    spatial = dL_dS * sigma_prime                                              # eq. (7), spatial
    beta_dU_next = np.zeros_like(dL_dU)
    np.multiply(dL_dU[1:], beta, out=beta_dU_next[:-1])                        # beta dL/dU_{t+1}, 0 at t = T
    silent = 1.0 - cache.S.astype(dL_dU.dtype)                                 # 1 - S_t (bool S -> 0.0 / 1.0)
    leak = beta_dU_next if reset_grad == "ignored" else beta_dU_next * silent  # eq. (7), leak
    reset = -(beta_dU_next * U * sigma_prime) if reset_grad == "full" else np.zeros_like(dL_dU)  # eq. (8)
    return LIFGrads(dL_dU=dL_dU, spatial=spatial, leak=leak, reset=reset)
