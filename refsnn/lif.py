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

Pure functions: every forward returns ``(out, cache)`` with a NamedTuple cache and every
backward takes ``(upstream, cache)``; nothing is kept between calls. Only elementwise work sits
in the loops over t. No autograd framework is imported here.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import check_choice
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
    S: np.ndarray        # (T, B, ...) spikes S_t (0/1 for "hard", relaxed values for "smooth")
    beta: float          # 1 - 1/tau_m
    theta: float
    surrogate: Surrogate


class LIFGrads(NamedTuple):
    """dL/dU_t of one layer, and its three parts (spatial + leak + reset == dL_dU)."""

    dL_dU: np.ndarray
    spatial: np.ndarray
    leak: np.ndarray
    reset: np.ndarray


def trace_forward(S: np.ndarray, tau: float) -> np.ndarray:
    """eq. (2), also the van Rossum kernel of eq. (6): f_t = (1 - 1/tau) f_{t-1} + S_t / tau.

    S: (T, B, ...) -> f: (T, B, ...), f_0 = 0.
    """
    decay = 1.0 - 1.0 / tau
    f = np.empty_like(S, dtype=np.result_type(S.dtype, np.float32))
    np.multiply(S[0], 1.0 / tau, out=f[0])
    for t in range(1, S.shape[0]):
        np.multiply(f[t - 1], decay, out=f[t])
        f[t] += S[t] / tau
    return f


def trace_backward(df: np.ndarray, tau: float) -> np.ndarray:
    """Adjoint of ``trace_forward`` (eq. 2 backwards in time).

    df: (T, B, ...) dL/df_t as consumed directly -> dS: (T, B, ...) with
    dS_t = (1/tau) * sum_{k >= t} (1 - 1/tau)^{k-t} df_k   (a "left tail" on each error).
    """
    decay = 1.0 - 1.0 / tau
    df_total = np.empty_like(df, dtype=np.result_type(df.dtype, np.float32))     # total dL/df_t, carried backwards
    df_total[-1] = df[-1]
    for t in range(df.shape[0] - 2, -1, -1):
        np.multiply(df_total[t + 1], decay, out=df_total[t])
        df_total[t] += df[t]
    df_total *= 1.0 / tau                               # dS_t = dL/df_t * df_t/dS_t
    return df_total


def lif_forward(current: np.ndarray, params: NeuronParams, surrogate: Surrogate,
                forward: str = "hard") -> tuple[np.ndarray, LIFCache]:
    """Run eq. (1) and (3) over all steps.

    current: (T, B, ...) the input current I_t = W a_in_t + b of every step.
    Returns S: (T, B, ...) and the cache for ``lif_backward``.
    """
    check_choice("forward", forward, FORWARDS)
    beta = 1.0 - 1.0 / params.tau_m
    spike = surrogate.spike if forward == "hard" else surrogate.relaxed
    U = np.empty_like(current)                          # float64 (or float32 when asked)
    S = np.empty_like(current)
    U[0] = current[0]                                   # eq. (1) with U_0 = S_0 = 0
    S[0] = spike(U[0] - params.theta)                   # eq. (3)
    keep = np.empty_like(U[0])                          # beta * (1 - S_{t-1}), reused
    for t in range(1, current.shape[0]):
        np.subtract(1.0, S[t - 1], out=keep)
        keep *= beta
        np.multiply(U[t - 1], keep, out=U[t])           # eq. (1): leak and reset
        U[t] += current[t]                              # eq. (1): input current
        S[t] = spike(U[t] - params.theta)               # eq. (3)
    return S, LIFCache(U=U, S=S, beta=beta, theta=params.theta, surrogate=surrogate)


def lif_backward(dL_dS: np.ndarray, cache: LIFCache, reset_grad: str = "full",
                 parts: bool = False) -> LIFGrads | np.ndarray:
    """BPTT of eq. (1)-(3): from dL/dS_t (spatial, through a_t) to dL/dU_t = dL/dI_t.

    dL_dS: (T, B, ...) the gradient reaching S_t through this layer's output (the trace a_t, or
    the loss for the output layer); the reset path S_t -> U_{t+1} is added here.
    Returns dL_dU (T, B, ...), or with ``parts`` the LIFGrads split of eq. (7)-(8).
    """
    check_choice("reset_grad", reset_grad, RESET_GRADS)
    U, S, beta = cache.U, cache.S, cache.beta
    sigma_prime = cache.surrogate.grad(U - cache.theta)          # eq. (10) at every step
    spatial = dL_dS * sigma_prime                                # eq. (7), spatial term
    if reset_grad == "ignored":
        leak_coef = np.full_like(U, beta)                        # dU_{t+1}/dU_t = beta
        reset_coef = None
    else:
        leak_coef = beta * (1.0 - S)                             # eq. (8), first term
        reset_coef = -beta * U * sigma_prime if reset_grad == "full" else None  # eq. (8), reset
    carry = leak_coef if reset_coef is None else leak_coef + reset_coef  # dU_{t+1}/dU_t

    dL_dU = np.empty_like(spatial)
    dL_dU[-1] = spatial[-1]                                      # dL/dU_{T+1} = 0
    for t in range(U.shape[0] - 2, -1, -1):
        np.multiply(dL_dU[t + 1], carry[t], out=dL_dU[t])        # eq. (7), temporal term
        dL_dU[t] += spatial[t]                                   # eq. (7), spatial term
    if not parts:
        return dL_dU

    dU_next = np.zeros_like(dL_dU)                               # dL/dU_{t+1} at step t
    dU_next[:-1] = dL_dU[1:]
    leak = dU_next * leak_coef
    reset = dU_next * reset_coef if reset_coef is not None else np.zeros_like(dL_dU)
    return LIFGrads(dL_dU=dL_dU, spatial=spatial, leak=leak, reset=reset)
