"""An independent PyTorch-autograd implementation of refsnn's equations, for validation only.

refsnn differentiates by hand; this module writes the *forward* of the same network in torch
and lets autograd produce every gradient, so that tests can hold the two against each other in
float64. It is written from the equations of ``refsnn/lif.py`` (eq. 1-3, 6), the layer formulas
of ``refsnn/conv.py`` (C1, P1-P3) and the loss formulas of ``refsnn/losses.py``, not from
refsnn's backward: the only hand-written derivatives here are the surrogate derivatives of the
hard forward, which are the definition of a surrogate, not a BPTT step.

Per LIF layer, time-major (T, B, ...), U_0 = S_0 = a_0 = 0:

    (1)  U_t = beta * U_{t-1} * (1 - S_{t-1}) + I_t,    beta = 1 - 1/tau_m
         I_t = W a_in_t + b                           (dense: a_in flattened in (C, H, W) order)
         I_t = conv2d(a_in_t, W, b, stride, padding)  (torch.nn.functional.conv2d)
    (3)  S_t = H(U_t - theta) with a surrogate backward   ("hard": a torch.autograd.Function)
         S_t = relaxed(U_t - theta), plain autograd        ("smooth")
    (2)  a_t = (1 - 1/tau_s) a_{t-1} + S_t / tau_s          (the next layer reads a)
    pooling of a ("P2"): avg  torch.nn.functional.avg_pool2d(a, k)
                         sum  w * avg_pool2d(a, k, divisor_override=1)   (window sum times w)
                         max  torch.nn.functional.max_pool2d(a, k)
    (6)  L = 1/2 sum_t sum_b sum_n (f(d)_t - f(S)_t)^2, f the filter of (2) with the loss tau
    classification losses (labels y, counts c_bn = sum_t S_tbn, means over the batch B):
         count_mse         L = 1/(2B) sum_bn (c_bn - c*_bn)^2, c* = true_rate T on the label,
                           false_rate T elsewhere
         rate_ce           L = 1/B sum_b (logsumexp_n c_bn - c_b,y_b)
         van_rossum_class  L = 1/B * (6) against d: the label's neuron spikes at t = true_period,
                           2 true_period, ..., the others every false_period steps (0: never)

The stateless layers (conv, pooling, dense) run on the time-folded batch (T*B, ...); only the
LIF recurrence and the traces loop over t.

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
import torch.nn.functional as F

from refsnn import parse_spec
from refsnn.network import Dense, Pool

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


def pool(a: torch.Tensor, layer: Pool) -> torch.Tensor:
    """Pooling of traces (T, B, C, H, W) -> (T, B, C, Ho, Wo): window and stride layer.size, floor mode."""
    T, B = a.shape[:2]
    folded = a.reshape(T * B, *a.shape[2:])              # (T, B, C, H, W) -> (T*B, C, H, W)
    k = layer.size
    if layer.kind == "avg":
        out = F.avg_pool2d(folded, k)
    elif layer.kind == "sum":
        out = layer.weight * F.avg_pool2d(folded, k, divisor_override=1)   # w * window sum
    elif layer.kind == "max":
        out = F.max_pool2d(folded, k)
    else:
        raise ValueError(f"pooling kind must be 'avg', 'sum' or 'max', got {layer.kind!r}")
    return out.reshape(T, B, *out.shape[1:])             # (T*B, C, Ho, Wo) -> (T, B, C, Ho, Wo)


def weighted_current(a: torch.Tensor, layer, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """I_t = W a_t + b (dense, a flattened in (C, H, W) order) or conv2d(a_t) for all t at once."""
    T, B = a.shape[:2]
    if isinstance(layer, Dense):
        return a.reshape(T, B, -1) @ weight.T + bias      # (T, B, ...) -> (T, B, n_in) -> (T, B, out)
    folded = a.reshape(T * B, *a.shape[2:])              # (T, B, C, H, W) -> (T*B, C, H, W)
    out = F.conv2d(folded, weight, bias, stride=layer.stride, padding=layer.padding)
    return out.reshape(T, B, *out.shape[1:])             # (T*B, O, Ho, Wo) -> (T, B, O, Ho, Wo)


def class_pattern(T: int, labels: torch.Tensor, n_out: int, true_period: int, false_period: int) -> torch.Tensor:
    """The van_rossum_class target d (T, B, n_out): spikes at t = period, 2 period, ... (t from 1)."""
    t = torch.arange(1, T + 1)
    true_train = (t % true_period == 0).to(DTYPE)
    false_train = (t % false_period == 0).to(DTYPE) if false_period else torch.zeros(T, dtype=DTYPE)
    is_label = torch.nn.functional.one_hot(labels, n_out).to(torch.bool)          # (B, n_out)
    return torch.where(is_label[None], true_train[:, None, None], false_train[:, None, None])


def loss_of(loss_spec, S: torch.Tensor, target: np.ndarray) -> torch.Tensor:
    """The loss of the output spikes S (T, B, n_out), from the formulas of refsnn/losses.py."""
    T, B, n_out = S.shape
    name = loss_spec.name
    if name == "van_rossum":
        d = torch.tensor(np.asarray(target, dtype=np.float64), dtype=DTYPE)
        error = trace(S, loss_spec.tau) - trace(d, loss_spec.tau)
        return 0.5 * (error * error).sum()               # eq. (6)
    labels = torch.tensor(np.asarray(target).astype(np.int64))
    counts = S.sum(dim=0)                                # c_bn = sum_t S_tbn, (B, n_out)
    if name == "count_mse":
        wanted = torch.full((B, n_out), loss_spec.false_rate * T, dtype=DTYPE)
        wanted[torch.arange(B), labels] = loss_spec.true_rate * T
        return ((counts - wanted) ** 2).sum() / (2 * B)
    if name == "rate_ce":
        return (torch.logsumexp(counts, dim=1) - counts[torch.arange(B), labels]).sum() / B
    if name == "van_rossum_class":
        d = class_pattern(T, labels, n_out, loss_spec.true_period, loss_spec.false_period)
        error = trace(S, loss_spec.tau) - trace(d, loss_spec.tau)
        return 0.5 * (error * error).sum() / B
    raise ValueError(f"unknown loss {name!r}")


def _run(spec: Any, x: np.ndarray, target: np.ndarray, params: Mapping[str, np.ndarray]):
    """Forward in torch and backward by autograd; returns (loss, weights, U lists, S lists)."""
    spec = parse_spec(spec)
    spike = spike_fn(spec.surrogate.to_spec(), spec.forward)
    beta = 1.0 - 1.0 / spec.neuron.tau_m
    weights = {name: torch.tensor(np.asarray(value, dtype=np.float64), dtype=DTYPE, requires_grad=True)
               for name, value in params.items()}
    a = torch.tensor(np.asarray(x, dtype=np.float64), dtype=DTYPE)   # (T, B, *input_shape)
    if spec.input_trace:
        a = trace(a, spec.neuron.tau_s)
    U_layers, S_layers = [], []
    n_weighted = len(spec.weighted)
    for layer in spec.layers:
        if isinstance(layer, Pool):
            a = pool(a, layer)
            continue
        i = len(S_layers)
        current = weighted_current(a, layer, weights[f"layers.{i}.weight"], weights[f"layers.{i}.bias"])
        U_list, S_list = lif_layer(current, beta, spec.neuron.theta, spike, spec.reset_grad)
        for U in U_list:
            U.retain_grad()
        S = torch.stack(S_list)                          # T x (B, ...) -> (T, B, ...)
        U_layers.append(U_list)
        S_layers.append(S)
        if len(S_layers) < n_weighted:
            a = trace(S, spec.neuron.tau_s)
    loss = loss_of(spec.loss, S_layers[-1], target)
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
