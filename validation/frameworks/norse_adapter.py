"""Norse 1.1.0 driven as refsnn's LIF neuron: which configuration computes eq. (1)-(3).

What Norse's LIF cells compute (read in norse/torch/functional/lif.py, 1.1.0), one Euler step of
dt, with the current-based synapse i in front of the membrane v (k_m = dt * tau_mem_inv,
k_s = dt * tau_syn_inv):

    i_new = i_{t-1} + input_t                                  (input: a current, or W z_in)
    v_dec = v_{t-1} + k_m * ((v_leak - v_{t-1}) + i_new)
    z_t   = threshold(v_dec - v_th, method, alpha)             Heaviside x > 0, surrogate backward
    v_t   = (1 - z_t) * v_dec + z_t * v_reset                  LIF, LIFCell (lif_feed_forward_step)
    v_t   = (1 - z_t.detach()) * v_dec + z_t.detach() * v_reset    LIFRecurrent(Cell) (lif_step)
    i_t   = i_new - k_s * i_new

With v_leak = v_reset = 0, v_th = theta and k_m = 1/tau_m: U_t = v_dec = beta (1 - S_{t-1}) U_{t-1}
+ k_m * i_new, i.e. eq. (1) for the input tau_m * I_t (the "input scaling": Norse's membrane
equation multiplies its input by k_m). The feed-forward cells (``LIF``, ``LIFCell``) keep z_t in
the graph: the **full** reset term; the recurrent ones (``LIFRecurrent``, ``LIFRecurrentCell``)
detach it with no option: the **detached** reset (they are used here with zero recurrent weights
and identity input weights, so they are the same feed-forward neuron). "ignored" has no option.

The synapse: with k_s = 1 (tau_syn_inv = 1/dt) i_t = 0 and i_new = input_t, a pass-through; the
network glue then applies eq. (2) between layers ("synapse off"). With k_s = 1/tau_s the synapse
*is* eq. (2) applied after the weights: fed W S_t / tau_s, i_new = W a_t. But it filters the bias
too (a constant bias b becomes b (1 - (1 - k_s)^t) / k_s), so eq. (1)'s constant bias needs the
input b at t = 1 and b / tau_s after ("synapse as trace"); and since Norse filters every layer's
input, the first layer reads trace(x) (refsnn's input_trace=True) unless its synapse is off.

Surrogates (norse/torch/functional/threshold.py, superspike.py): ``method="super"`` computes
1 / (1 + |x|)^2 and ignores ``alpha`` (SuperSpike.backward never reads ctx.alpha): refsnn
fast_sigmoid(slope=1) whatever alpha. ``"triangle"`` is alpha * relu(1 - |x|): refsnn
triangle(alpha) only for alpha = 1 (Norse's half-width is fixed at 1). ``"tanh"`` is
1 - tanh(alpha x)^2 = (2 / alpha) * refsnn sigmoid'(T = 1 / (2 alpha)): equal for alpha = 2,
T = 0.25. ``"circ"`` and ``"heavi_erfc"`` have no refsnn counterpart. The method is a string, so no
other surrogate can be supplied, and every method's forward is the Heaviside step: no smooth
forward.

Precision: LIFParameters given as Python floats become float32 tensors (and the defaults are
float32), so k_m = dt * tau_mem_inv is a float32 number even in a float64 network; the float64
configurations pass float64 tensors and dt = 1.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Callable, Mapping

import numpy as np
import torch
from norse.torch import LIF, LIFCell, LIFParameters, LIFRecurrent

import refsnn

from .common import (Default, Setup, Unsupported, check_dense_van_rossum, run_network,
                     surrogate_parameter)

FRAMEWORK = "Norse"
VERSION = metadata.version("norse")
MODULES = ("LIF", "LIFCell", "LIFRecurrent")
SYNAPSES = ("off", "trace")

SURROGATE_MAP = {
    "sigmoid": "T = 0.25 only: method='tanh', alpha=2",
    "fast_sigmoid": "slope = 1 only: method='super' (any alpha: it is ignored)",
    "atan": "none",
    "triangle": "alpha = 1 only: method='triangle', alpha=1",
    "rectangle": "none",
    "exponential": "none",
}


def method_for(spec) -> tuple[str, float]:
    """Norse's (method, alpha) computing the spec's surrogate, or Unsupported(why)."""
    name, parameter = spec.surrogate.name, surrogate_parameter(spec)
    if name == "fast_sigmoid" and parameter == 1.0:
        return "super", 100.0                    # alpha is ignored by SuperSpike in 1.1.0
    if name == "triangle" and parameter == 1.0:
        return "triangle", 1.0
    if name == "sigmoid" and parameter == 0.25:
        return "tanh", 2.0
    raise Unsupported(f"no Norse threshold method computes refsnn {name}({parameter:g}): Norse has "
                      "fast_sigmoid(slope=1) ('super'), triangle(alpha=1) ('triangle') and "
                      "sigmoid(T=0.25) ('tanh', alpha=2), and takes no custom surrogate")


def lif_layer(spec, make_module: Callable[[bool, int], Any], module: str, synapse: str, k_m: float,
              k_s: float) -> Callable:
    """A LIF layer for run_network (called with traces=(synapse == "off")).

    ``make_module(filtered, n)`` builds the Norse module of a layer of n neurons, its synapse
    being eq. (2) if ``filtered`` and a pass-through (tau_syn_inv = 1/dt) otherwise.
    ``k_m``, ``k_s``: dt * tau_mem_inv and dt * tau_syn_inv as Norse computes them. The input is
    scaled by 1/k_m (Norse multiplies it by k_m) and, with the synapse as the trace, the weights
    by k_s and the bias spread over time so that Norse's filter yields W a_t + b exactly.
    """
    tau_m, tau_s = 1.0 / k_m, 1.0 / k_s

    def layer(i, a_in, weight, bias):
        T = a_in.shape[0]
        filtered = synapse == "trace" and (i > 0 or spec.input_trace)   # Norse's synapse is eq. (2)
        if filtered:
            # i_t = (1 - k_s) i_{t-1} + c_t with c_t = W S_t / tau_s + (b at t = 1, b / tau_s after)
            # gives i_t = W a_t + b, a_t the trace of eq. (2)
            bias_seq = torch.cat([bias[None], (bias / tau_s)[None].expand(T - 1, -1)])   # (T, out)
            current = a_in @ weight.T / tau_s + bias_seq[:, None, :]
        else:
            current = a_in @ weight.T + bias               # (T, B, out)
        current = current * tau_m                          # Norse's membrane multiplies by k_m
        cell = make_module(filtered, weight.shape[0])
        if module == "LIFCell":
            state, spikes = None, []
            for t in range(T):
                z, state = cell(current[t], state)
                spikes.append(z)
            return torch.stack(spikes)
        z, _ = cell(current)
        return z

    return layer


def _module(module: str, p: LIFParameters, dt: float, n: int):
    if module == "LIF":
        return LIF(p, dt=dt)
    if module == "LIFCell":
        return LIFCell(p, dt=dt)
    # the recurrent cell as a feed-forward neuron: identity input weights, no recurrence
    return LIFRecurrent(n, n, p=p, dt=dt, input_weights=torch.eye(n, dtype=torch.float64),
                        recurrent_weights=torch.zeros(n, n, dtype=torch.float64))


def configure(spec: Any, synapse: str = "off") -> Setup:
    """The Norse configuration that reproduces ``spec`` (eq. 1-3), or Unsupported(why).

    synapse "off": tau_syn_inv = 1/dt, the glue applies eq. (2); "trace": tau_syn_inv = 1/tau_s,
    Norse's synapse is eq. (2) (the weights and bias are fed as described in the module docstring).
    """
    if synapse not in SYNAPSES:
        raise ValueError(f"synapse must be one of {SYNAPSES}, got {synapse!r}")
    spec = refsnn.parse_spec(spec)
    check_dense_van_rossum(spec)
    if spec.reset_grad == "ignored":
        raise Unsupported("no Norse cell ignores the reset in its backward: LIF/LIFCell keep it, "
                          "LIFRecurrent/LIFRecurrentCell detach it")
    if spec.forward == "smooth":
        raise Unsupported("every Norse threshold method has a Heaviside forward: no relaxed (smooth) forward")
    method, alpha = method_for(spec)
    module = "LIF" if spec.reset_grad == "full" else "LIFRecurrent"
    f64 = lambda v: torch.tensor(float(v), dtype=torch.float64)   # noqa: E731
    tau_m, tau_s = spec.neuron.tau_m, spec.neuron.tau_s

    def make(filtered, n):
        k_s = 1.0 / tau_s if filtered else 1.0
        p = LIFParameters(tau_syn_inv=f64(k_s), tau_mem_inv=f64(1.0 / tau_m), v_leak=f64(0.0),
                          v_th=f64(spec.neuron.theta), v_reset=f64(0.0), method=method, alpha=f64(alpha))
        return _module(module, p, 1.0, n)

    layer = lif_layer(spec, make, module, synapse, k_m=1.0 / tau_m, k_s=1.0 / tau_s)
    call = (f"norse.torch.{module}(LIFParameters(tau_syn_inv={'1' if synapse == 'off' else '1/tau_s'}, "
            f"tau_mem_inv=1/tau_m, v_leak=0, v_th=theta, v_reset=0, method={method!r}, alpha={alpha:g}) "
            f"as float64 tensors, dt=1)" + (", identity input weights, zero recurrent weights"
                                             if module == "LIFRecurrent" else ""))
    return Setup(framework=FRAMEWORK, call=call, reset_grad=spec.reset_grad,
                 surrogate=f"native method={method!r}",
                 run=lambda x, target, params: run_network(spec, x, target, params, layer,
                                                           traces=synapse == "off"))


def grad(spec: Any, x: np.ndarray, target: np.ndarray, params: Mapping[str, np.ndarray],
         synapse: str = "off") -> dict:
    """Loss, gradients (refsnn.grad's keys) and spikes S/{i} from Norse configured for ``spec``."""
    return configure(spec, synapse).run(x, target, params)


# ----------------------------------------------------------------------------- defaults

def _default_constants() -> tuple[float, float]:
    """(k_m, k_s) of LIFParameters() with the default dt = 0.001, computed as Norse does."""
    p, dt = LIFParameters(), 0.001
    return float(dt * torch.as_tensor(p.tau_mem_inv)), float(dt * torch.as_tensor(p.tau_syn_inv))


def _default_run(module: str):
    def run(spec, x, target, params):
        k_m, k_s = _default_constants()

        def make(filtered, n):                          # the default spec filters every layer
            if module == "LIFRecurrent":
                # default parameters; only the weights are fixed so the cell is a feed-forward neuron
                return LIFRecurrent(n, n, input_weights=torch.eye(n, dtype=torch.float64),
                                    recurrent_weights=torch.zeros(n, n, dtype=torch.float64))
            return LIF() if module == "LIF" else LIFCell()

        parsed = refsnn.parse_spec(spec)
        return run_network(spec, x, target, params,
                           lif_layer(parsed, make, module, "trace", k_m=k_m, k_s=k_s), traces=False)
    return run


_K_M, _K_S = _default_constants()
_DEFAULT_SPEC = {"neuron": {"tau_m": 1.0 / _K_M, "tau_s": 1.0 / _K_S, "theta": 1.0},
                 "surrogate": {"name": "fast_sigmoid", "slope": 1.0}, "input_trace": True}
_DEFAULT_NOTE = ("dt = 0.001, tau_mem_inv = 100, tau_syn_inv = 200 (float32): beta = 1 - k_m = 0.9, "
                 "synapse decay 1 - k_s = 0.8, i.e. refsnn tau_m = 1/k_m = 10, tau_s = 1/k_s = 5 (from the "
                 "float32 products) with the synapse as eq. (2) and input_trace=True; method='super', "
                 "alpha=100 (ignored)")
DEFAULTS = (
    Default(framework=FRAMEWORK, call="norse.torch.LIF()", overrides=_DEFAULT_SPEC,
            claimed_reset="full", surrogate="SuperSpike 1/(1+|x|)^2 = refsnn fast_sigmoid(slope=1)",
            note=_DEFAULT_NOTE, run=_default_run("LIF")),
    Default(framework=FRAMEWORK, call="norse.torch.LIFCell()", overrides=_DEFAULT_SPEC,
            claimed_reset="full", surrogate="SuperSpike 1/(1+|x|)^2 = refsnn fast_sigmoid(slope=1)",
            note="the step-by-step cell, same parameters as LIF()", run=_default_run("LIFCell")),
    Default(framework=FRAMEWORK, call="norse.torch.LIFRecurrent(n, n)", overrides=_DEFAULT_SPEC,
            claimed_reset="detached", surrogate="SuperSpike 1/(1+|x|)^2 = refsnn fast_sigmoid(slope=1)",
            note="default parameters; identity input weights and zero recurrent weights make it the "
                 "feed-forward neuron; lif_step detaches the reset, with no option",
            run=_default_run("LIFRecurrent")),
)

LIMITATIONS = (
    ("reset_grad='ignored'", "no cell ignores the reset in its backward"),
    ("the full reset in the recurrent cells", "LIFRecurrent/LIFRecurrentCell always detach the reset"),
    ("the detached reset in the feed-forward cells", "LIF/LIFCell always keep the reset gradient"),
    ("forward='smooth'", "every threshold method has a Heaviside forward"),
    ("surrogates other than fast_sigmoid(1), triangle(1), sigmoid(0.25)",
     "threshold methods are fixed strings; 'super' ignores alpha, 'triangle' fixes the half-width "
     "at 1, 'tanh' is scaled by 2/alpha"),
    ("a constant bias with the synapse as eq. (2)", "Norse's synapse filters the bias as well; exact "
                                                   "only by feeding b at t = 1 and b/tau_s after"),
)


def probes() -> list[tuple[str, str]]:
    """Facts about Norse 1.1.0 that this adapter relies on, measured now (for the report)."""
    from norse.torch.functional.threshold import threshold
    values = []
    for alpha in (1.0, 100.0):
        x = torch.tensor([0.5, -2.0], dtype=torch.float64, requires_grad=True)
        threshold(x, "super", alpha).sum().backward()
        values.append(f"alpha={alpha:g}: " + ", ".join(f"{v:.6g}" for v in x.grad.tolist()))
    return [
        ("SuperSpike ('super') gradient at x = 0.5, -2 (1/(1+|x|)^2 = 0.444444, 0.111111)", "; ".join(values)),
        ("dtype of LIFParameters().tau_mem_inv", str(LIFParameters().tau_mem_inv.dtype)),
        ("k_m, k_s of the defaults (dt * tau_mem_inv, dt * tau_syn_inv)", f"{_K_M!r}, {_K_S!r}"),
    ]
