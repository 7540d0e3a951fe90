"""snnTorch 1.0.0 driven as refsnn's LIF neuron: which configuration computes eq. (1)-(3).

What snnTorch's ``Leaky`` computes (read in snntorch/_neurons/leaky.py and neurons.py, 1.0.0),
with ``mem`` the state it returns and receives, ``H`` the forward of ``spike_grad``:

    reset  = H(mem - threshold).detach()             # the previous spike, recomputed, detached
    mem    = (1 - reset) * mem                       # reset_mechanism="zero"  (_base_zero)
    U_t    = beta.clamp(0, 1) * mem + I_t
    S_t    = spike_grad(U_t - threshold) * graded_spikes_factor
    if not reset_delay:                              # reset at once, reset stays in the graph
        mem = U_t - (S_t - reset) * U_t              #   ("- reset" avoids a double reset)

- ``Leaky(beta, reset_mechanism="zero")`` (default ``reset_delay=True``): mem = U_{t-1}, reset =
  S_{t-1} with no gradient, so U_t = beta (1 - S_{t-1}) U_{t-1} + I_t with S_{t-1} a constant:
  eq. (1) with the **detached** reset.
- ``reset_delay=False``: for theta > 0, ``reset`` is always 0 (after a spike mem = 0 < theta,
  without one mem = U_{t-1} <= theta), so mem = U_{t-1} - S_{t-1} U_{t-1} with S_{t-1} *in* the
  graph: eq. (1) with the **full** reset term (eq. 8). For theta <= 0 the guard is H(0 - theta) = 1
  on a reset membrane and the reset gradient goes the detached way again (measured on an
  always-spiking case: the detached gradient to 1e-16, 0.1 away from the full one).
- "ignored" (dU_t/dU_{t-1} = beta) has no snnTorch option.
- The default ``reset_mechanism="subtract"`` is U_t = beta U_{t-1} + I_t - threshold S_{t-1}
  (reset by subtraction, its reset spike detached): not eq. (1) at all.

Precision: snnTorch's built-in surrogates (``surrogate.atan``, ``sigmoid``, ``fast_sigmoid``, ...)
return ``(x > 0).float()``, float32 spikes, whatever the membrane's dtype, so every gradient that
flows through a spike is rounded to float32; and ``beta``/``threshold`` given as Python floats
become float32 buffers. The float64 configuration here therefore passes beta and threshold as
float64 tensors and a spike function returning ``(x > 0).to(x.dtype)``; for sigmoid,
fast_sigmoid and atan it keeps snnTorch's own backward (a subclass of its autograd Function that
only changes the forward's dtype), the other refsnn surrogates have no snnTorch counterpart
(``surrogate.triangular`` is a different function) and are supplied from
validation/torch_reference.py. Smooth forward: ``spike_grad`` may be any callable, so the
relaxed function can be the spike; it works with ``reset_delay=True`` (detached) only, because
the double-reset guard of ``reset_delay=False`` assumes 0/1 spikes.

Parameter mapping: ``beta = 1 - 1/tau_m``, ``threshold = theta``; ``surrogate.sigmoid(slope)``
is refsnn sigmoid with T = 1/slope, ``fast_sigmoid(slope)`` and ``atan(alpha)`` keep their names.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import snntorch
import torch
from snntorch import surrogate as snn_surrogate

import refsnn
from validation import torch_reference

from .common import (Default, Setup, Unsupported, check_dense_van_rossum, dense, run_network,
                     surrogate_parameter)

FRAMEWORK = "snnTorch"
VERSION = snntorch.__version__


# ----------------------------------------------------------------------------- float64 spikes

def _float64_forward(parameter_name: str):
    """The forward of snnTorch's surrogate Functions with the spike in the membrane's dtype."""

    def forward(ctx, input_, parameter):
        ctx.save_for_backward(input_)
        setattr(ctx, parameter_name, parameter)     # what snnTorch's backward reads
        return (input_ > 0).to(input_.dtype)

    return staticmethod(forward)


class Sigmoid64(snn_surrogate.Sigmoid):
    """snntorch.surrogate.Sigmoid's backward, float64-preserving forward."""
    forward = _float64_forward("slope")


class FastSigmoid64(snn_surrogate.FastSigmoid):
    """snntorch.surrogate.FastSigmoid's backward, float64-preserving forward."""
    forward = _float64_forward("slope")


class ATan64(snn_surrogate.ATan):
    """snntorch.surrogate.ATan's backward, float64-preserving forward."""
    forward = _float64_forward("alpha")


#: refsnn surrogate -> (snnTorch Function, snnTorch's parameter from refsnn's, how it is named)
NATIVE = {
    "sigmoid": (Sigmoid64, lambda T: 1.0 / T, "surrogate.sigmoid(slope=1/T)"),
    "fast_sigmoid": (FastSigmoid64, lambda slope: slope, "surrogate.fast_sigmoid(slope)"),
    "atan": (ATan64, lambda alpha: alpha, "surrogate.atan(alpha)"),
}
SURROGATE_MAP = {
    "sigmoid": "native: surrogate.sigmoid(slope=1/T)",
    "fast_sigmoid": "native: surrogate.fast_sigmoid(slope)",
    "atan": "native: surrogate.atan(alpha)",
    "triangle": "none (surrogate.triangular is another function): supplied",
    "rectangle": "none: supplied",
    "exponential": "none: supplied",
}


def spike_function(spec) -> tuple[Callable, str]:
    """A float64 ``spike_grad`` for the spec's surrogate and forward, and how it is provided."""
    name, parameter = spec.surrogate.name, surrogate_parameter(spec)
    if spec.forward == "smooth":
        relaxed = torch_reference.RELAXED[torch_reference.ALIASES.get(name, name)]
        return (lambda x: relaxed(x, parameter)), f"supplied relaxed {name} (smooth forward)"
    if name in NATIVE:
        function, convert, text = NATIVE[name]
        value = convert(parameter)
        return (lambda x: function.apply(x, value)), f"native backward {text}, float64 forward"
    function = torch_reference.SPIKE_FUNCTIONS[name]
    return (lambda x: function.apply(x, parameter)), f"supplied {name} (no snnTorch counterpart)"


# ----------------------------------------------------------------------------- the neuron

def leaky_layer(make_leaky: Callable[[], Any]) -> Callable:
    """A LIF layer for run_network: one fresh snnTorch neuron, stepped over t."""

    def layer(i, a_in, weight, bias):
        leaky = make_leaky()
        current = dense(a_in, weight, bias)              # (T, B, out)
        mem = torch.zeros_like(current[0])
        spikes = []
        for t in range(current.shape[0]):
            spk, mem = leaky(current[t], mem)
            spikes.append(spk)
        return torch.stack(spikes)                       # T x (B, out) -> (T, B, out)

    return layer


def configure(spec: Any) -> Setup:
    """The snnTorch configuration that reproduces ``spec`` (eq. 1-3), or Unsupported(why)."""
    spec = refsnn.parse_spec(spec)
    check_dense_van_rossum(spec)
    if spec.reset_grad == "ignored":
        raise Unsupported("snnTorch has no option for a backward that ignores the reset "
                          "(dU_t/dU_{t-1} = beta): Leaky's reset is detached or kept")
    if spec.reset_grad == "full" and spec.forward == "smooth":
        raise Unsupported("reset_delay=False (the only way to keep the reset gradient) subtracts "
                          "H(mem - threshold) of the already reset membrane; with relaxed (non 0/1) "
                          "spikes that guard is not 0 and the forward is not eq. (1)")
    if spec.reset_grad == "full" and not spec.neuron.theta > 0:
        raise Unsupported(f"reset_delay=False keeps the reset gradient only for theta > 0 (its guard "
                          f"H(0 - theta) must be 0), got theta = {spec.neuron.theta}")
    spike, provided = spike_function(spec)
    beta = torch.tensor(1.0 - 1.0 / spec.neuron.tau_m, dtype=torch.float64)
    threshold = torch.tensor(spec.neuron.theta, dtype=torch.float64)
    reset_delay = spec.reset_grad == "detached"

    def make_leaky():
        return snntorch.Leaky(beta=beta, threshold=threshold, spike_grad=spike,
                              reset_mechanism="zero", reset_delay=reset_delay)

    call = (f"snntorch.Leaky(beta=torch.tensor(1 - 1/tau_m, dtype=float64), threshold=torch.tensor(theta, "
            f"dtype=float64), spike_grad=<float64 spike>, reset_mechanism='zero', reset_delay={reset_delay})")
    return Setup(framework=FRAMEWORK, call=call, reset_grad=spec.reset_grad, surrogate=provided,
                 run=lambda x, target, params: run_network(spec, x, target, params, leaky_layer(make_leaky)))


def grad(spec: Any, x: np.ndarray, target: np.ndarray, params: Mapping[str, np.ndarray]) -> dict:
    """Loss, gradients (refsnn.grad's keys) and spikes S/{i} from snnTorch configured for ``spec``."""
    return configure(spec).run(x, target, params)


# ----------------------------------------------------------------------------- defaults

DEFAULT_BETA = 0.8          # Leaky has no default beta; any value in (0, 1) shows the same


def _beta_as_snntorch_stores_it(beta: float) -> float:
    return float(torch.as_tensor(beta))                 # a Python float becomes a float32 buffer


def _default_run(reset_mechanism: str):
    def run(spec, x, target, params):
        def make_leaky():
            return snntorch.Leaky(beta=DEFAULT_BETA, reset_mechanism=reset_mechanism)
        return run_network(spec, x, target, params, leaky_layer(make_leaky))
    return run


_BETA32 = _beta_as_snntorch_stores_it(DEFAULT_BETA)
DEFAULTS = (
    Default(framework=FRAMEWORK, call="snntorch.Leaky(beta=0.8, reset_mechanism='zero')",
            overrides={"neuron": {"tau_m": 1.0 / (1.0 - _BETA32), "theta": 1.0},
                       "surrogate": {"name": "atan", "alpha": 2.0}},
            claimed_reset="detached", surrogate="surrogate.atan(alpha=2) = refsnn atan(alpha=2)",
            note="defaults otherwise (reset_delay=True, threshold=1, spike_grad=atan()); beta=0.8 is "
                 "stored as float32 (tau_m = 1/(1 - float32(0.8))) and atan() returns float32 spikes, "
                 "cast to float64 by the network: gradients through spikes are float32-accurate",
            run=_default_run("zero"), bar=1e-6),
    Default(framework=FRAMEWORK, call="snntorch.Leaky(beta=0.8)",
            overrides={"neuron": {"tau_m": 1.0 / (1.0 - _BETA32), "theta": 1.0},
                       "surrogate": {"name": "atan", "alpha": 2.0}},
            claimed_reset=None, surrogate="surrogate.atan(alpha=2) = refsnn atan(alpha=2)",
            note="the default reset_mechanism='subtract' resets by subtraction, U_t = beta U_{t-1} + "
                 "I_t - threshold S_{t-1}: a different forward from eq. (1), so no reset mode matches",
            run=_default_run("subtract")),
)

LIMITATIONS = (
    ("reset_grad='ignored'", "no option: Leaky keeps the reset in the graph (reset_delay=False) or "
                             "detaches it (reset_delay=True)"),
    ("reset_grad='full' with theta <= 0", "reset_delay=False's double-reset guard H(mem - threshold) "
                                          "fires on the reset membrane 0 when theta <= 0, and the reset "
                                          "gradient is detached again"),
    ("reset_grad='full' with the smooth forward", "the guard of reset_delay=False assumes 0/1 spikes"),
    ("reset_mechanism='subtract' (the default)", "reset by subtraction is not eq. (1)"),
    ("built-in surrogates in float64", "they return float32 spikes: gradients through spikes are "
                                       "rounded to float32 (~1e-7 relative)"),
    ("refsnn triangle, rectangle, exponential", "no snnTorch surrogate computes them "
                                                "(surrogate.triangular's derivative changes sign at 0)"),
)


def probes() -> list[tuple[str, str]]:
    """Facts about snnTorch 1.0.0 that this adapter relies on, measured now (for the report)."""
    x = torch.tensor([-3.6, 0.5], dtype=torch.float64)
    spikes = snn_surrogate.atan()(x)
    x32 = torch.tensor([-1.0, -3.6], dtype=torch.float32, requires_grad=True)
    snn_surrogate.sigmoid(slope=25)(x32).sum().backward()
    beta = snntorch.Leaky(beta=0.8).beta
    return [
        ("dtype of surrogate.atan()(x) for a float64 x", str(spikes.dtype)),
        ("dtype of Leaky(beta=0.8).beta", str(beta.dtype)),
        ("surrogate.sigmoid(slope=25) gradient at U - threshold = -1.0 and -3.6 (float32)",
         ", ".join(f"{v:.3g}" for v in x32.grad.tolist())
         + " (exp(-slope x) overflows: inf / inf for slope |x| > 88.7; in float64 for slope |x| > 709.8)"),
    ]
