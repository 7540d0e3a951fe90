"""SpikingJelly 2.0.0 driven as refsnn's LIF neuron: which configuration computes eq. (1)-(3).

What ``neuron.LIFNode`` computes (read in spikingjelly/_ops/lif/reference.py, _ops/reset.py and
activation_based/functional/neuron.py, 2.0.0), per step, with v the state after the reset:

    h_t = v_{t-1} - (v_{t-1} - v_reset) / tau + x_t           decay_input=False
    h_t = v_{t-1} + (x_t - (v_{t-1} - v_reset)) / tau         decay_input=True (the default)
    S_t = surrogate_function(h_t - v_threshold)               forward: (x >= 0), backward: sg'
    v_t = S_t * v_reset + (1 - S_t) * h_t                     (S_t.detach() if detach_reset)

With v_reset = 0 and tau = tau_m this is eq. (1) with U_t = h_t and beta = 1 - 1/tau:
``decay_input=False`` feeds the input as it is; ``decay_input=True`` divides it by tau (eq. 1 on
the input tau * I_t). ``detach_reset=False`` (the default) keeps S_t in the graph of the reset:
the **full** reset term (eq. 8); ``detach_reset=True`` is the **detached** reset. There is no
option for "ignored". ``tau`` must be a float > 1 (so tau_m = 1, beta = 0, is out of reach).
The spike is ``x >= 0``, refsnn's is ``x > 0``: they differ only for a membrane exactly at
threshold, which the comparisons keep away from.

Two paths sit behind ``LIFNode``: for float32/float16/bfloat16 inputs with a built-in surrogate,
the registered operator ``torch.ops.sj_lif.forward`` (surrogate derivatives from
spikingjelly/_ops/surrogate.py); for any other dtype (float64) or a custom surrogate callable,
the Torch reference step with the surrogate module of activation_based/surrogate.py. On CPU in
eager mode both are differentiated by autograd (the hand-written backward of _ops/lif/cpu.py is
not called: see ``probes``). The float64 configurations here take the reference path; the
float32 default rows of the conformance report take the operator.

Surrogates (activation_based/surrogate.py): ``Sigmoid(alpha)`` is refsnn sigmoid with T =
1/alpha, ``ATan(alpha)``, ``PiecewiseQuadratic(alpha)`` (= refsnn triangle), ``PiecewiseExp(alpha)``
(= exponential) and ``Rect(alpha)`` (= rectangle with width = 1/alpha) are native;
refsnn fast_sigmoid(slope) is ``SuperSpike(alpha=1)`` for slope 1 and ``SoftSign(alpha=2)`` for
slope 2 (SoftSign(a) = a/2 * fast_sigmoid(slope=a), SuperSpike(a) = a * fast_sigmoid(slope=1));
other slopes are supplied as a callable (the reference path accepts any). ``spiking=False`` makes
a native surrogate's forward its primitive function: refsnn's smooth forward.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Callable, Mapping

import numpy as np
import torch
from spikingjelly.activation_based import neuron, surrogate as sj_surrogate

import refsnn
from validation import torch_reference

from .common import (Default, Setup, Unsupported, check_dense_van_rossum, dense, run_network,
                     surrogate_parameter)

FRAMEWORK = "SpikingJelly"
VERSION = metadata.version("spikingjelly")     # the package has no __version__

SURROGATE_MAP = {
    "sigmoid": "native: surrogate.Sigmoid(alpha=1/T)",
    "fast_sigmoid": "native for slope 1 (SuperSpike(alpha=1)) and 2 (SoftSign(alpha=2)); else supplied",
    "atan": "native: surrogate.ATan(alpha)",
    "triangle": "native: surrogate.PiecewiseQuadratic(alpha)",
    "rectangle": "native: surrogate.Rect(alpha=1/width)",
    "exponential": "native: surrogate.PiecewiseExp(alpha)",
}


def native_surrogate(name: str, parameter: float, spiking: bool = True):
    """The SpikingJelly surrogate module equal to refsnn's (name, parameter), or None."""
    if name == "sigmoid":
        return sj_surrogate.Sigmoid(alpha=1.0 / parameter, spiking=spiking), "Sigmoid(alpha=1/T)"
    if name == "atan":
        return sj_surrogate.ATan(alpha=parameter, spiking=spiking), "ATan(alpha)"
    if name == "triangle":
        return sj_surrogate.PiecewiseQuadratic(alpha=parameter, spiking=spiking), "PiecewiseQuadratic(alpha)"
    if name == "exponential":
        return sj_surrogate.PiecewiseExp(alpha=parameter, spiking=spiking), "PiecewiseExp(alpha)"
    if name == "rectangle":
        return sj_surrogate.Rect(alpha=1.0 / parameter, spiking=spiking), "Rect(alpha=1/width)"
    if name == "fast_sigmoid" and parameter == 2.0:
        return sj_surrogate.SoftSign(alpha=2.0, spiking=spiking), "SoftSign(alpha=2)"
    if name == "fast_sigmoid" and parameter == 1.0 and spiking:   # SuperSpike has no primitive
        return sj_surrogate.SuperSpike(alpha=1.0, spiking=spiking), "SuperSpike(alpha=1)"
    return None, None


def surrogate_function(spec) -> tuple[Callable, str]:
    """The surrogate_function for LIFNode: native where SpikingJelly has it, else supplied."""
    name, parameter = spec.surrogate.name, surrogate_parameter(spec)
    module, text = native_surrogate(name, parameter, spiking=spec.forward == "hard")
    if module is not None:
        return module, f"native surrogate.{text}" + (", spiking=False" if spec.forward == "smooth" else "")
    base = torch_reference.ALIASES.get(name, name)
    if spec.forward == "smooth":
        relaxed = torch_reference.RELAXED[base]
        return (lambda x: relaxed(x, parameter)), f"supplied relaxed {name} (smooth forward)"
    function = torch_reference.SPIKE_FUNCTIONS[base]
    return (lambda x: function.apply(x, parameter)), f"supplied {name} (no native equivalent)"


def lif_layer(make_node: Callable[[], Any], input_scale: float = 1.0, step_mode: str = "m") -> Callable:
    """A LIF layer for run_network: one fresh LIFNode; the current is multiplied by
    ``input_scale`` (tau for decay_input=True, which divides its input by tau)."""

    def layer(i, a_in, weight, bias):
        node = make_node()
        current = dense(a_in, weight, bias)              # (T, B, out)
        if input_scale != 1.0:
            current = current * input_scale
        if step_mode == "m":
            return node(current)                          # (T, B, out) -> (T, B, out)
        return torch.stack([node(current[t]) for t in range(current.shape[0])])

    return layer


def configure(spec: Any) -> Setup:
    """The SpikingJelly configuration that reproduces ``spec`` (eq. 1-3), or Unsupported(why)."""
    spec = refsnn.parse_spec(spec)
    check_dense_van_rossum(spec)
    if spec.reset_grad == "ignored":
        raise Unsupported("LIFNode has no option for a backward that ignores the reset "
                          "(dU_t/dU_{t-1} = beta): detach_reset only switches the reset term")
    if not spec.neuron.tau_m > 1.0:
        raise Unsupported(f"LIFNode requires tau > 1 (asserted), got tau_m = {spec.neuron.tau_m} (beta = 0)")
    function, provided = surrogate_function(spec)
    detach_reset = spec.reset_grad == "detached"
    tau, theta = float(spec.neuron.tau_m), float(spec.neuron.theta)

    def make_node():
        return neuron.LIFNode(tau=tau, decay_input=False, v_threshold=theta, v_reset=0.0,
                              surrogate_function=function, detach_reset=detach_reset, step_mode="m")

    call = (f"neuron.LIFNode(tau=tau_m, decay_input=False, v_threshold=theta, v_reset=0.0, "
            f"surrogate_function=..., detach_reset={detach_reset}, step_mode='m')")
    return Setup(framework=FRAMEWORK, call=call, reset_grad=spec.reset_grad, surrogate=provided,
                 run=lambda x, target, params: run_network(spec, x, target, params, lif_layer(make_node)))


def grad(spec: Any, x: np.ndarray, target: np.ndarray, params: Mapping[str, np.ndarray]) -> dict:
    """Loss, gradients (refsnn.grad's keys) and spikes S/{i} from SpikingJelly configured for ``spec``."""
    return configure(spec).run(x, target, params)


# ----------------------------------------------------------------------------- defaults

def _default_run(detach_reset: bool, dtype: torch.dtype):
    def run(spec, x, target, params):
        def make_node():
            return neuron.LIFNode(detach_reset=detach_reset) if detach_reset else neuron.LIFNode()
        tau = make_node().tau                            # 2.0: decay_input=True divides by it
        return run_network(spec, x, target, params, lif_layer(make_node, input_scale=tau, step_mode="s"),
                           dtype=dtype)
    return run


_DEFAULT_SPEC = {"neuron": {"tau_m": 2.0, "theta": 1.0}, "surrogate": {"name": "sigmoid", "T": 0.25}}
_SCALING = ("decay_input=True divides the input by tau = 2: the network feeds 2 (W a + b), so "
            "refsnn's weights are SpikingJelly's divided by tau")
DEFAULTS = (
    Default(framework=FRAMEWORK, call="neuron.LIFNode()", overrides=_DEFAULT_SPEC,
            claimed_reset="full", surrogate="Sigmoid(alpha=4) = refsnn sigmoid(T=0.25)",
            note=f"tau=2, v_threshold=1, v_reset=0, detach_reset=False, step_mode='s'; {_SCALING}; "
                 "float64 runs the Torch reference through autograd",
            run=_default_run(False, torch.float64)),
    Default(framework=FRAMEWORK, call="neuron.LIFNode(detach_reset=True)", overrides=_DEFAULT_SPEC,
            claimed_reset="detached", surrogate="Sigmoid(alpha=4) = refsnn sigmoid(T=0.25)",
            note=f"as above with the reset detached; {_SCALING}",
            run=_default_run(True, torch.float64)),
    Default(framework=FRAMEWORK, call="neuron.LIFNode()", overrides=_DEFAULT_SPEC,
            claimed_reset="full", surrogate="Sigmoid(alpha=4) = refsnn sigmoid(T=0.25)",
            note="float32, the default dtype: the registered torch.ops.sj_lif operator path, its "
                 "surrogate from _ops/surrogate.py; refsnn runs float64 on the same float32-rounded "
                 "parameters and inputs",
            run=_default_run(False, torch.float32), dtype="float32", bar=1e-5),
    Default(framework=FRAMEWORK, call="neuron.LIFNode(detach_reset=True)", overrides=_DEFAULT_SPEC,
            claimed_reset="detached", surrogate="Sigmoid(alpha=4) = refsnn sigmoid(T=0.25)",
            note="float32 through the registered operator, reset detached",
            run=_default_run(True, torch.float32), dtype="float32", bar=1e-5),
)

LIMITATIONS = (
    ("reset_grad='ignored'", "no option: detach_reset switches between the full and the detached reset"),
    ("tau_m = 1 (beta = 0)", "LIFNode asserts tau > 1"),
    ("a membrane exactly at threshold", "SpikingJelly spikes for U >= theta, eq. (3) for U > theta"),
    ("refsnn fast_sigmoid with slope other than 1 or 2", "no native surrogate (SoftSign and SuperSpike "
                                                        "are scaled variants); runs with a supplied callable"),
)


def probes() -> list[tuple[str, str]]:
    """Facts about SpikingJelly 2.0.0 that this adapter relies on, measured now (for the report)."""
    node = neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0, step_mode="m")
    at_threshold = node(torch.tensor([[1.0]], dtype=torch.float64))          # U_1 = 1.0 = theta
    rejected = "accepted"
    try:
        neuron.LIFNode(tau=1.0)
    except AssertionError:
        rejected = "AssertionError"
    return [
        ("spike of LIFNode for U exactly at threshold (refsnn: 0)", f"{at_threshold.item():g}"),
        ("LIFNode(tau=1.0)", rejected),
        ("operators and autograd nodes of one LIFNode() step, forward and backward, float32",
         ", ".join(_profiled_names(torch.float32))),
        ("the same in float64", ", ".join(_profiled_names(torch.float64)) or "none of those: plain torch ops"),
    ]


def _profiled_names(dtype: torch.dtype) -> list[str]:
    """The sj_lif operators and surrogate autograd Functions a LIFNode() step runs (profiler)."""
    node = neuron.LIFNode()
    x = torch.full((2, 3), 1.5, dtype=dtype, requires_grad=True)
    with torch.profiler.profile() as profile:
        node(x).sum().backward()
    return sorted({event.name for event in profile.events()
                   if event.name.startswith("sj_lif::") or event.name in ("_SurrogateSpike", "_SurrogateSpikeBackward",
                                                                          "sigmoid", "sigmoidBackward")})
