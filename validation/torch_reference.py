"""An independent PyTorch-autograd implementation of refsnn's equations, for validation only.

refsnn differentiates by hand; this module writes the *forward* of the same network in torch
and lets autograd produce every gradient, so that tests can hold the two against each other in
float64. It is written from the equations of ``refsnn/lif.py`` (eq. 1-3, 6), not from refsnn's
backward: the only hand-written derivatives here are the surrogate derivatives of the hard
forward, which are the definition of a surrogate, not a BPTT step.

Per dense LIF layer, time-major (T, B, n), U_0 = S_0 = a_0 = 0:

    (1)  U_t = beta * U_{t-1} * (1 - S_{t-1}) + W a_in_t + b,    beta = 1 - 1/tau_m
    (3)  S_t = H(U_t - theta) with a surrogate backward   ("hard": a torch.autograd.Function)
         S_t = relaxed(U_t - theta), plain autograd        ("smooth")
    (2)  a_t = (1 - 1/tau_s) a_{t-1} + S_t / tau_s          (the next layer reads a)
    (6)  L = 1/2 sum_t sum_b sum_n (f(d)_t - f(S)_t)^2, f the filter of (2) with the loss tau

The reset modes are expressed in the forward graph, so autograd sees exactly what each means:
"full" keeps S_{t-1} in the graph (gradient flows through the reset), "detached" uses
S_{t-1}.detach() in (1), "ignored" writes (1) as beta U_{t-1} - (beta U_{t-1} S_{t-1}).detach()
+ I_t, whose backward sees dU_t/dU_{t-1} = beta.

torch is imported here and in the tests only; nothing under refsnn/ imports it. Specs are parsed
with ``refsnn.parse_spec`` (sizes and constants only; no refsnn arithmetic is used).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import torch

from refsnn import parse_spec

DTYPE = torch.float64


# ----------------------------------------------------------------------------- surrogates
# Surrogate derivatives sigma'(x), x = U - theta, and the relaxed functions whose exact
# derivative they are; the parameter is the surrogate's single field (T, slope, alpha, width).

def _sigmoid_grad(x, T):
    # s (1 - s) / T with s = sigmoid(x / T); 1 - s is evaluated as sigmoid(-x / T), which is the
    # same number without the cancellation of 1 - s for x >> T (relative accuracy in both tails)
    return torch.sigmoid(x / T) * torch.sigmoid(-x / T) / T


def _fast_sigmoid_grad(x, slope):
    return 1.0 / (1.0 + slope * x.abs()) ** 2


def _atan_grad(x, alpha):
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)


def _triangle_grad(x, alpha):
    return alpha * torch.clamp(1.0 - alpha * x.abs(), min=0.0)


def _rectangle_grad(x, width):
    return (x.abs() < width / 2.0).to(x.dtype) / width


def _exponential_grad(x, alpha):
    return alpha / 2.0 * torch.exp(-alpha * x.abs())


def _sigmoid_relaxed(x, T):
    # sigmoid(x / T) in the two forms whose autograd derivatives do not cancel: 1 / (1 + e^-z)
    # for z >= 0 (derivative e^-z / (1 + e^-z)^2), e^z / (1 + e^z) for z < 0. torch.sigmoid's own
    # backward, y (1 - y), has only absolute accuracy eps for z >> 1, too coarse for comparing
    # gradients that come from the tails. Each branch sees its own half-line (clamped), so the
    # branch torch.where discards never overflows (0 * inf in its backward would be NaN).
    z = x / T
    upper = 1.0 / (1.0 + torch.exp(-z.clamp(min=0.0)))
    e = torch.exp(z.clamp(max=0.0))
    lower = e / (1.0 + e)
    return torch.where(z >= 0, upper, lower)


def _fast_sigmoid_relaxed(x, slope):
    return 0.5 + x / (1.0 + slope * x.abs())


def _atan_relaxed(x, alpha):
    return 0.5 + torch.atan(math.pi / 2.0 * alpha * x) / math.pi


def _triangle_relaxed(x, alpha):
    inside = 0.5 + alpha * x - 0.5 * alpha * alpha * x * x.abs()
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    return torch.where(x < -1.0 / alpha, zero, torch.where(x > 1.0 / alpha, one, inside))


def _rectangle_relaxed(x, width):
    return torch.clamp(x / width + 0.5, 0.0, 1.0)


def _exponential_relaxed(x, alpha):
    # Each branch only sees its own half-line (clamped), so the branch that torch.where discards
    # never overflows: exp(alpha x) of a large positive x would make its zero gradient 0 * inf.
    upper = 1.0 - 0.5 * torch.exp(-alpha * x.clamp(min=0.0))
    lower = 0.5 * torch.exp(alpha * x.clamp(max=0.0))
    return torch.where(x > 0, upper, lower)


def _spike_function(name: str, derivative: Callable) -> type[torch.autograd.Function]:
    """A torch.autograd.Function: forward H(x) = (x > 0) (strict), backward grad * sigma'(x)."""

    def forward(ctx, x, parameter):
        ctx.save_for_backward(x)
        ctx.parameter = parameter
        return (x > 0).to(x.dtype)

    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * derivative(x, ctx.parameter), None   # no gradient for the parameter

    return type(f"{name.title().replace('_', '')}Spike", (torch.autograd.Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward),
                 "__doc__": f"Heaviside forward, {name} surrogate backward."})


SURROGATE_GRADS: dict[str, Callable] = {
    "sigmoid": _sigmoid_grad, "fast_sigmoid": _fast_sigmoid_grad, "atan": _atan_grad,
    "triangle": _triangle_grad, "rectangle": _rectangle_grad, "exponential": _exponential_grad,
}
RELAXED: dict[str, Callable] = {
    "sigmoid": _sigmoid_relaxed, "fast_sigmoid": _fast_sigmoid_relaxed, "atan": _atan_relaxed,
    "triangle": _triangle_relaxed, "rectangle": _rectangle_relaxed,
    "exponential": _exponential_relaxed,
}
SPIKE_FUNCTIONS: dict[str, type[torch.autograd.Function]] = {
    name: _spike_function(name, derivative) for name, derivative in SURROGATE_GRADS.items()}
ALIASES = {"superspike": "fast_sigmoid"}


def spike_fn(surrogate: Mapping[str, Any], forward: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """x = U - theta -> S for a surrogate spec {"name": ..., <param>: ...} and a forward mode."""
    name = ALIASES.get(surrogate["name"], surrogate["name"])
    (parameter,) = [float(v) for k, v in surrogate.items() if k != "name"]
    if forward == "hard":
        function = SPIKE_FUNCTIONS[name]
        return lambda x: function.apply(x, parameter)
    if forward == "smooth":
        relaxed = RELAXED[name]
        return lambda x: relaxed(x, parameter)
    raise ValueError(f"forward must be 'hard' or 'smooth', got {forward!r}")


# ----------------------------------------------------------------------------- network

def trace(S: torch.Tensor, tau: float) -> torch.Tensor:
    """eq. (2) / the van Rossum kernel: f_t = (1 - 1/tau) f_{t-1} + S_t / tau, f_0 = 0. (T, B, n)."""
    decay = 1.0 - 1.0 / tau
    f_prev = torch.zeros_like(S[0])
    out = []
    for t in range(S.shape[0]):
        f_prev = decay * f_prev + S[t] / tau
        out.append(f_prev)
    return torch.stack(out)


def lif_layer(current: torch.Tensor, beta: float, theta: float, spike: Callable,
              reset_grad: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """eq. (1) and (3) over all steps. current: (T, B, n) -> lists of U_t and S_t, each (B, n)."""
    U_prev = torch.zeros_like(current[0])
    S_prev = torch.zeros_like(current[0])
    U_list, S_list = [], []
    for t in range(current.shape[0]):
        if reset_grad == "full":
            U = beta * U_prev * (1.0 - S_prev) + current[t]
        elif reset_grad == "detached":
            U = beta * U_prev * (1.0 - S_prev.detach()) + current[t]
        elif reset_grad == "ignored":
            U = beta * U_prev - (beta * U_prev * S_prev).detach() + current[t]
        else:
            raise ValueError(f"reset_grad must be 'full', 'detached' or 'ignored', got {reset_grad!r}")
        S = spike(U - theta)
        U_list.append(U)
        S_list.append(S)
        U_prev, S_prev = U, S
    return U_list, S_list


def _run(spec: Any, x: np.ndarray, target: np.ndarray, params: Mapping[str, np.ndarray]):
    """Forward in torch and backward by autograd; returns (loss, weights, U lists, S lists)."""
    spec = parse_spec(spec)
    shapes = spec.param_shapes()
    if any(len(shape) != 2 for name, shape in shapes.items() if name.endswith(".weight")):
        raise ValueError(f"torch_reference covers dense layers only, got parameter shapes {shapes}")
    spike = spike_fn(spec.surrogate.to_spec(), spec.forward)
    beta = 1.0 - 1.0 / spec.neuron.tau_m
    weights = {name: torch.tensor(np.asarray(value, dtype=np.float64), dtype=DTYPE, requires_grad=True)
               for name, value in params.items()}
    x_t = torch.tensor(np.asarray(x, dtype=np.float64), dtype=DTYPE)
    T, B = x_t.shape[:2]
    a = x_t.reshape(T, B, -1)                            # (T, B, *input_shape) -> (T, B, n_in)
    if spec.input_trace:
        a = trace(a, spec.neuron.tau_s)
    U_layers, S_layers = [], []
    for i in range(len(spec.layers)):
        current = a @ weights[f"layers.{i}.weight"].T + weights[f"layers.{i}.bias"]  # (T, B, out)
        U_list, S_list = lif_layer(current, beta, spec.neuron.theta, spike, spec.reset_grad)
        for U in U_list:
            U.retain_grad()
        S = torch.stack(S_list)                          # T x (B, out) -> (T, B, out)
        U_layers.append(U_list)
        S_layers.append(S)
        a = trace(S, spec.neuron.tau_s)
    d = torch.tensor(np.asarray(target, dtype=np.float64), dtype=DTYPE)
    error = trace(S_layers[-1], spec.loss.tau) - trace(d, spec.loss.tau)
    loss = 0.5 * (error * error).sum()                   # eq. (6)
    loss.backward()
    return loss, weights, U_layers, S_layers


def torch_adjoints(spec: Any, x: np.ndarray, target: np.ndarray,
                   params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``torch_grad``'s keys plus, per layer i, ``U/{i}``, ``S/{i}`` and ``dL_dU/{i}`` (T, B, n_i).

    dL_dU/{i} is autograd's total derivative of L with respect to each U_t (retain_grad), the
    quantity refsnn.grad(..., adjoints=True) returns under the same key.
    """
    loss, weights, U_layers, S_layers = _run(spec, x, target, params)
    out = {"loss": np.asarray(loss.item(), dtype=np.float64)}
    for name, weight in weights.items():
        out[f"grad/{name}"] = weight.grad.numpy().copy()
    for i, (U_list, S) in enumerate(zip(U_layers, S_layers)):
        out[f"U/{i}"] = torch.stack(U_list).detach().numpy().copy()
        out[f"S/{i}"] = S.detach().numpy().copy()
        out[f"dL_dU/{i}"] = torch.stack([U.grad if U.grad is not None else torch.zeros_like(U)
                                         for U in U_list]).numpy().copy()
    return out


def torch_grad(spec: Any, x: np.ndarray, target: np.ndarray,
               params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Loss and autograd gradients, keyed like refsnn.grad: ``loss`` (0-d),
    ``grad/layers.{i}.weight`` and ``grad/layers.{i}.bias``, all float64."""
    full = torch_adjoints(spec, x, target, params)
    return {key: value for key, value in full.items() if key == "loss" or key.startswith("grad/")}
