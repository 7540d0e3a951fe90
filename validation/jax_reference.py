"""An independent JAX implementation of refsnn's equations, for validation only (dense layers).

Like validation/torch_reference.py, this module writes only the *forward* of the network of
``refsnn/lif.py`` (eq. 1-3, 6) and lets an autodiff system produce every gradient; it shares no
code with either refsnn or the torch reference. The only hand-written derivative is the surrogate
derivative of the hard spike (a ``jax.custom_vjp``), which is the definition of a surrogate,
not a BPTT step. Everything runs in float64: importing this module turns on
``jax_enable_x64`` for the whole process (JAX's default is float32).

Per dense LIF layer, time-major (T, B, n), U_0 = S_0 = a_0 = 0, t = 1..T:

    (1)  U_t = beta * U_{t-1} * (1 - S_{t-1}) + W a_in_t + b,    beta = 1 - 1/tau_m
    (3)  S_t = H(U_t - theta), H(x) = 1 if x > 0 else 0, surrogate backward   ("hard")
         S_t = relaxed(U_t - theta), plain autodiff                            ("smooth")
    (2)  a_t = (1 - 1/tau_s) a_{t-1} + S_t / tau_s          (the next layer reads a)
    (6)  L = 1/2 sum_t sum_b sum_n (f(d)_t - f(S)_t)^2, f the filter of (2) with the loss tau

The reset modes live in the forward graph (``jax.lax.stop_gradient``), so autodiff sees exactly
what each one means: "full" keeps S_{t-1} in the graph; "detached" uses stop_gradient(S_{t-1});
"ignored" writes (1) as beta U_{t-1} - stop_gradient(beta U_{t-1} S_{t-1}) + I_t, whose backward
sees dU_t/dU_{t-1} = beta. One ``jax.lax.scan`` over t runs every layer and the loss kernel.

dL/dU_t is obtained without a hand-written adjoint: a zero "probe" is added to every layer's
input current (U_t depends on I_t with coefficient 1), and dL/dprobe_t = dL/dU_t.

Specs are parsed with ``refsnn.parse_spec`` (sizes and constants only; no refsnn arithmetic).
Nothing under refsnn/ imports this module.
"""

from __future__ import annotations

import math
import os
from functools import partial
from typing import Any, Callable, Mapping, NamedTuple

# The graphs here are tiny and each distinct (structure, shapes) is compiled once: compile time
# dominates, and XLA's optimisation passes buy nothing (they do not change IEEE float64 results
# beyond the order of a few operations). Only applies if XLA is not configured already.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                                   "--xla_llvm_disable_expensive_passes=true")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)   # float64 everywhere (must precede any array creation)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from refsnn import parse_spec  # noqa: E402

DTYPE = jnp.float64


# ----------------------------------------------------------------------------- surrogates
# sigma'(x) of each surrogate, x = U - theta, and the relaxed function whose exact derivative
# it is; ``parameter`` is the surrogate's single field (T, slope, alpha or width).

def _sigmoid_grad(x, T):
    # sigma(z) sigma(-z) / T, z = x / T: the form without the cancellation of 1 - sigma(z)
    return jax.nn.sigmoid(x / T) * jax.nn.sigmoid(-x / T) / T


def _fast_sigmoid_grad(x, slope):
    return 1.0 / (1.0 + slope * jnp.abs(x)) ** 2


def _atan_grad(x, alpha):
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)


def _triangle_grad(x, alpha):
    return alpha * jnp.maximum(0.0, 1.0 - alpha * jnp.abs(x))


def _rectangle_grad(x, width):
    return jnp.where(jnp.abs(x) < width / 2.0, 1.0 / width, 0.0).astype(x.dtype)


def _exponential_grad(x, alpha):
    return alpha / 2.0 * jnp.exp(-alpha * jnp.abs(x))


def _sigmoid_relaxed(x, T):
    # sigmoid(x / T) as 1 / (1 + e^-z) for z >= 0 and e^z / (1 + e^z) for z < 0: autodiff of
    # each form is accurate relatively in its own tail. Each branch sees its own half-line
    # (clipped), so the branch jnp.where discards never overflows (0 * inf would be NaN).
    z = x / T
    upper = 1.0 / (1.0 + jnp.exp(-jnp.maximum(z, 0.0)))
    e = jnp.exp(jnp.minimum(z, 0.0))
    lower = e / (1.0 + e)
    return jnp.where(z >= 0, upper, lower)


def _fast_sigmoid_relaxed(x, slope):
    return 0.5 + x / (1.0 + slope * jnp.abs(x))


def _atan_relaxed(x, alpha):
    return 0.5 + jnp.arctan(math.pi / 2.0 * alpha * x) / math.pi


def _triangle_relaxed(x, alpha):
    inside = 0.5 + alpha * x - 0.5 * alpha * alpha * x * jnp.abs(x)
    return jnp.where(x < -1.0 / alpha, 0.0, jnp.where(x > 1.0 / alpha, 1.0, inside))


def _rectangle_relaxed(x, width):
    return jnp.clip(x / width + 0.5, 0.0, 1.0)


def _exponential_relaxed(x, alpha):
    upper = 1.0 - 0.5 * jnp.exp(-alpha * jnp.maximum(x, 0.0))
    lower = 0.5 * jnp.exp(alpha * jnp.minimum(x, 0.0))
    return jnp.where(x > 0, upper, lower)


SURROGATE_GRADS: dict[str, Callable] = {
    "sigmoid": _sigmoid_grad, "fast_sigmoid": _fast_sigmoid_grad, "atan": _atan_grad,
    "triangle": _triangle_grad, "rectangle": _rectangle_grad, "exponential": _exponential_grad,
}
RELAXED: dict[str, Callable] = {
    "sigmoid": _sigmoid_relaxed, "fast_sigmoid": _fast_sigmoid_relaxed, "atan": _atan_relaxed,
    "triangle": _triangle_relaxed, "rectangle": _rectangle_relaxed,
    "exponential": _exponential_relaxed,
}
ALIASES = {"superspike": "fast_sigmoid"}


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def hard_spike(name: str, x, parameter):
    """eq. (3): H(x) = 1 if x > 0 else 0 (strict), with the surrogate ``name`` as its derivative.

    ``parameter`` (T, slope, alpha or width) is an array argument so that one compiled function
    serves every value; it gets a zero cotangent (it is a constant of the spec, not trained).
    """
    return (x > 0).astype(x.dtype)


def _hard_spike_fwd(name, x, parameter):
    return hard_spike(name, x, parameter), (x, parameter)


def _hard_spike_bwd(name, residuals, upstream):
    x, parameter = residuals
    return upstream * SURROGATE_GRADS[name](x, parameter), jnp.zeros_like(parameter)  # dS/dx := sigma'(x)


hard_spike.defvjp(_hard_spike_fwd, _hard_spike_bwd)


def spike_fn(name: str, forward: str, parameter) -> Callable:
    """x = U - theta -> S for surrogate ``name`` with its ``parameter`` and a forward mode."""
    name = ALIASES.get(name, name)
    if forward == "hard":
        return lambda x: hard_spike(name, x, parameter)
    if forward == "smooth":
        relaxed = RELAXED[name]
        return lambda x: relaxed(x, parameter)
    raise ValueError(f"forward must be 'hard' or 'smooth', got {forward!r}")


# ----------------------------------------------------------------------------- network

def check_supported(spec) -> None:
    """This reference covers float64 dense networks with the van Rossum loss (eq. 6); else ValueError."""
    shapes = spec.param_shapes()
    if len(spec.layers) != len(spec.weighted) or any(
            len(shape) != 2 for name, shape in shapes.items() if name.endswith(".weight")):
        raise ValueError(f"jax_reference covers dense layers only, got architecture "
                         f"{spec.to_dict()['architecture']!r}")
    if spec.loss.name != "van_rossum":
        raise ValueError(f"jax_reference implements the van Rossum loss (eq. 6) only, got {spec.loss.name!r}")
    if getattr(spec, "dtype", "float64") != "float64":
        raise ValueError(f"jax_reference runs in float64 only, got spec.dtype {spec.dtype!r}")


def trace_step(f_prev, S_t, tau):
    """One step of eq. (2) / the van Rossum kernel: f_t = (1 - 1/tau) f_{t-1} + S_t / tau."""
    return (1.0 - 1.0 / tau) * f_prev + S_t / tau


def lif_step(U_prev, S_prev, I_t, beta, theta, spike: Callable, reset_grad: str):
    """One step of eq. (1) and (3) for one layer: (U_{t-1}, S_{t-1}, I_t) -> (U_t, S_t)."""
    stop = jax.lax.stop_gradient
    if reset_grad == "full":            # gradient flows through S_{t-1} (eq. 8 kept)
        U = beta * U_prev * (1.0 - S_prev) + I_t
    elif reset_grad == "detached":      # S_{t-1} is a constant for the backward
        U = beta * U_prev * (1.0 - stop(S_prev)) + I_t
    elif reset_grad == "ignored":       # the backward sees dU_t/dU_{t-1} = beta
        U = beta * U_prev - stop(beta * U_prev * S_prev) + I_t
    else:
        raise ValueError(f"reset_grad must be 'full', 'detached' or 'ignored', got {reset_grad!r}")
    return U, spike(U - theta)


class Structure(NamedTuple):
    """What fixes the computation graph (compiled once per Structure and array shapes)."""

    n_layers: int
    surrogate: str         # surrogate name
    forward: str           # "hard" or "smooth"
    reset_grad: str
    input_trace: bool


def _network_loss(structure: Structure, weights, probes, x, target, constants):
    """L of eq. (6) and, as auxiliary output, the U and S of every layer (each (T, B, n_i)).

    One ``jax.lax.scan`` over t runs every layer and the loss kernel at step t (there is no delay
    between layers, so step t of layer i only needs step t of layer i - 1): a single loop keeps
    the XLA computation, and its compile time, small.
    ``probes`` are zero arrays added to each layer's input current: dL/dprobe_i = dL/dU of layer
    i. ``constants`` holds beta, theta, tau_s, loss_tau and the surrogate parameter as 0-d arrays.
    """
    spike = spike_fn(structure.surrogate, structure.forward, constants["parameter"])
    beta, theta, tau_s, loss_tau = (constants[k] for k in ("beta", "theta", "tau_s", "loss_tau"))
    T, B = x.shape[:2]
    inputs = x.reshape(T, B, -1)                         # (T, B, *input_shape) -> (T, B, n_in)
    n = [weights[f"layers.{i}.bias"].shape[0] for i in range(structure.n_layers)]

    def step(carry, per_step):
        x_t, d_t, probes_t = per_step
        x_trace, U_prev, S_prev, a_prev, f_S, f_d = carry
        x_trace = trace_step(x_trace, x_t, tau_s)          # eq. (2) on the input (if input_trace)
        a = x_trace if structure.input_trace else x_t
        U_new, S_new, a_new = [], [], []
        for i in range(structure.n_layers):
            W, b = weights[f"layers.{i}.weight"], weights[f"layers.{i}.bias"]
            I_t = a @ W.T + b + probes_t[i]                 # (B, in) @ (in, out) -> (B, out)
            U, S = lif_step(U_prev[i], S_prev[i], I_t, beta, theta, spike, structure.reset_grad)
            a = trace_step(a_prev[i], S, tau_s)             # eq. (2): the next layer reads a
            U_new.append(U), S_new.append(S), a_new.append(a)
        f_S = trace_step(f_S, S_new[-1], loss_tau)          # eq. (6) kernel on the output spikes
        f_d = trace_step(f_d, d_t, loss_tau)                # and on the desired train
        return (x_trace, U_new, S_new, a_new, f_S, f_d), (U_new, S_new, f_S - f_d)

    zeros = [jnp.zeros((B, n_i), dtype=DTYPE) for n_i in n]
    carry0 = (jnp.zeros_like(inputs[0]), zeros, zeros, zeros,
              jnp.zeros((B, n[-1]), dtype=DTYPE), jnp.zeros((B, n[-1]), dtype=DTYPE))
    _, (U_layers, S_layers, error) = jax.lax.scan(step, carry0, (inputs, target, probes))
    loss = 0.5 * jnp.sum(error * error)                  # eq. (6)
    return loss, (U_layers, S_layers)


@partial(jax.jit, static_argnums=(0,))
def _loss_and_grads(structure, weights, probes, x, target, constants):
    """(loss, (U, S)), (dL/dweights, dL/dprobes): one XLA computation per structure and shapes."""
    return jax.value_and_grad(_network_loss, argnums=(1, 2), has_aux=True)(
        structure, weights, probes, x, target, constants)


def jax_adjoints(spec: Any, x: np.ndarray, target: np.ndarray,
                 params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``jax_grad``'s keys plus, per layer i, ``U/{i}``, ``S/{i}`` and ``dL_dU/{i}`` (T, B, n_i),
    the keys refsnn.grad(..., adjoints=True) returns under the same names. All float64 numpy."""
    spec = parse_spec(spec)
    check_supported(spec)
    shapes = spec.param_shapes()
    (parameter,) = [float(v) for k, v in spec.surrogate.to_spec().items() if k != "name"]
    structure = Structure(n_layers=len(spec.layers), surrogate=spec.surrogate.name,
                          forward=spec.forward, reset_grad=spec.reset_grad,
                          input_trace=spec.input_trace)
    constants = {name: jnp.asarray(value, dtype=DTYPE) for name, value in (
        ("beta", 1.0 - 1.0 / spec.neuron.tau_m), ("theta", spec.neuron.theta),
        ("tau_s", spec.neuron.tau_s), ("loss_tau", spec.loss.tau), ("parameter", parameter))}
    weights = {name: jnp.asarray(np.asarray(params[name], dtype=np.float64)) for name in shapes}
    x_j = jnp.asarray(np.asarray(x, dtype=np.float64))
    target_j = jnp.asarray(np.asarray(target, dtype=np.float64))
    T, B = x_j.shape[:2]
    probes = [jnp.zeros((T, B, layer.n_out), dtype=DTYPE) for layer in spec.layers]

    (loss, (U_layers, S_layers)), (d_weights, d_probes) = _loss_and_grads(
        structure, weights, probes, x_j, target_j, constants)

    out = {"loss": np.asarray(float(loss), dtype=np.float64)}
    for name in shapes:
        out[f"grad/{name}"] = np.array(d_weights[name], dtype=np.float64)
    for i in range(len(spec.layers)):
        out[f"U/{i}"] = np.array(U_layers[i], dtype=np.float64)
        out[f"S/{i}"] = np.array(S_layers[i], dtype=np.float64)
        out[f"dL_dU/{i}"] = np.array(d_probes[i], dtype=np.float64)
    return out


def jax_grad(spec: Any, x: np.ndarray, target: np.ndarray,
             params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Loss and autodiff gradients, keyed like refsnn.grad: ``loss`` (0-d),
    ``grad/layers.{i}.weight`` (out, in) and ``grad/layers.{i}.bias`` (out,), all float64."""
    full = jax_adjoints(spec, x, target, params)
    return {key: value for key, value in full.items() if key == "loss" or key.startswith("grad/")}
