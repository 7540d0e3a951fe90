"""Losses on output spike trains, as forward/backward pairs.

van Rossum distance (eq. 6 of Yang 2020): both trains are filtered by the first-order kernel of
eq. (2) with time constant tau, f(x)_t = (1 - 1/tau) f(x)_{t-1} + x_t / tau, and

    L = 1/2 * sum_t sum_b sum_n (f(d)_t - f(S)_t)^2          (a sum, not a mean)

Backward: dL/df(S)_t = f(S)_t - f(d)_t (the output error, Fig. 2A), then the adjoint of the
kernel gives dL/dS_t (Fig. 2B).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .lif import trace_backward, trace_forward


class VanRossumCache(NamedTuple):
    error: np.ndarray    # (T, B, n) f(S)_t - f(d)_t
    tau: float


def van_rossum_forward(S: np.ndarray, target: np.ndarray, tau: float) -> tuple[float, VanRossumCache]:
    """S, target: (T, B, n) -> L (float), eq. (6)."""
    error = trace_forward(S, tau) - trace_forward(target, tau)
    loss = 0.5 * float(np.sum(error * error))
    return loss, VanRossumCache(error=error, tau=tau)


def van_rossum_backward(cache: VanRossumCache) -> np.ndarray:
    """dL/dS_t (T, B, n): the output error filtered backwards through the kernel."""
    return trace_backward(cache.error, cache.tau)
