"""Adam and AdamW as pure update functions on dicts of parameters (float64 unless the params are not).

    state = adam_init(params)
    params, state = adam_update(params, grads, state, lr=1e-3)                     # Adam (L2 in the gradient)
    params, state = adamw_update(params, grads, state, lr=1e-3, weight_decay=1e-2)  # AdamW (decoupled)

For each parameter p with gradient g, at step k = state.step + 1 (Kingma & Ba 2015; AdamW:
Loshchilov & Hutter 2019; the same arithmetic as torch.optim.Adam / AdamW with amsgrad=False):

    Adam:   g <- g + weight_decay * p                     (L2 penalty folded into the gradient)
    AdamW:  p <- p * (1 - lr * weight_decay)              (decoupled decay, before the step)
    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g^2
    p <- p - (lr / (1 - beta1^k)) * m / (sqrt(v) / sqrt(1 - beta2^k) + eps)

Pure: nothing passed in is modified; new dicts of new arrays come out, and the state is an
immutable NamedTuple (step count and the first/second moments). Nothing here knows about
spiking networks.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import numpy as np

from .errors import RefsnnError, check_number


class AdamState(NamedTuple):
    """Adam's state: the number of steps taken and the moment estimates, keyed like the params."""

    step: int
    m: dict[str, np.ndarray]      # first moment (mean of g)
    v: dict[str, np.ndarray]      # second moment (mean of g^2), uncentred


def adam_init(params: Mapping[str, np.ndarray]) -> AdamState:
    """Zero moments shaped like ``params``, step 0."""
    return AdamState(step=0, m={name: np.zeros_like(p) for name, p in params.items()},
                     v={name: np.zeros_like(p) for name, p in params.items()})


def _check(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], state: AdamState,
           lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    check_number("lr", lr, minimum=0.0)
    check_number("eps", eps, minimum=0.0)
    check_number("weight_decay", weight_decay, minimum=0.0)
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= check_number(name, beta) < 1.0:
            raise RefsnnError(f"{name} must lie in [0, 1), got {beta}")
    if set(grads) != set(params) or set(state.m) != set(params):
        raise RefsnnError(f"params, grads and the optimiser state must have the same keys; got params "
                          f"{sorted(params)}, grads {sorted(grads)}, state {sorted(state.m)}")
    for name, p in params.items():
        if np.shape(grads[name]) != p.shape:
            raise RefsnnError(f"grads[{name!r}] has shape {np.shape(grads[name])}, the parameter {p.shape}")


def _step(params, grads, state, lr, beta1, beta2, eps, weight_decay, decoupled):
    _check(params, grads, state, lr, beta1, beta2, eps, weight_decay)
    step = state.step + 1
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    step_size = lr / bias_correction1
    new_params, new_m, new_v = {}, {}, {}
    for name, p in params.items():
        g = np.asarray(grads[name], dtype=p.dtype)
        if weight_decay and not decoupled:
            g = g + weight_decay * p                           # Adam: L2 term in the gradient
        if weight_decay and decoupled:
            p = p * (1.0 - lr * weight_decay)                  # AdamW: decay the weight itself
        m = beta1 * state.m[name] + (1.0 - beta1) * g
        v = beta2 * state.v[name] + (1.0 - beta2) * (g * g)
        denominator = np.sqrt(v) / math.sqrt(bias_correction2) + eps
        new_params[name] = p - step_size * m / denominator
        new_m[name], new_v[name] = m, v
    return new_params, AdamState(step=step, m=new_m, v=new_v)


def adam_update(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], state: AdamState, *,
                lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0) -> tuple[dict[str, np.ndarray], AdamState]:
    """One Adam step (module docstring); returns (new params, new state). Inputs are not modified."""
    return _step(params, grads, state, lr, beta1, beta2, eps, weight_decay, decoupled=False)


def adamw_update(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], state: AdamState, *,
                 lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> tuple[dict[str, np.ndarray], AdamState]:
    """One AdamW step (decoupled weight decay, module docstring); returns (new params, new state)."""
    return _step(params, grads, state, lr, beta1, beta2, eps, weight_decay, decoupled=True)


OPTIMIZERS = {"adam": adam_update, "adamw": adamw_update}
