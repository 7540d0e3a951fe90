"""What the framework adapters share: the network around the neuron, cases, and error measures.

An adapter puts a real framework's LIF neuron inside the network of refsnn's spec (dense layers,
eq. 2 traces, the van Rossum loss of eq. 6) and lets torch autograd differentiate it in float64.
Only the neuron (eq. 1 and 3, with its reset and its surrogate) comes from the framework; the
glue around it is ``run_network`` below, written with plain torch like
validation/torch_reference.py (whose ``trace`` it reuses), so a disagreement with refsnn points
at the neuron.

Nothing here imports a framework; each adapter module imports its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

import refsnn
from refsnn.network import Dense
from validation.torch_reference import trace


def grad_keys(spec: Any) -> list[str]:
    """refsnn.grad's keys for the loss and the gradients (every run also returns S/{i})."""
    n = len(refsnn.parse_spec(spec).weighted)
    return ["loss"] + [f"grad/layers.{i}.{p}" for i in range(n) for p in ("weight", "bias")]


class Unsupported(Exception):
    """The framework cannot run this spec as eq. (1)-(3) prescribe; the message says why."""


@dataclass(frozen=True)
class Setup:
    """A framework configured for one spec: how a user would write it, and how to run it."""

    framework: str
    call: str                     # the neuron's constructor, as a user writes it
    reset_grad: str               # the refsnn reset mode this configuration computes
    surrogate: str                # where the surrogate comes from ("native ..." or "supplied ...")
    run: Callable[[np.ndarray, np.ndarray, Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Default:
    """A framework's default configuration, and the refsnn spec whose forward it computes.

    ``overrides`` are the spec entries the default fixes (neuron constants, surrogate, ...);
    the reset mode is *not* among them: finding it is the point (``claimed_reset`` is what the
    tests hold it to; None for a default whose forward is not eq. 1 at all).
    ``run(spec, x, target, params)`` runs the default neuron inside the network of ``spec``.
    """

    framework: str
    call: str
    overrides: dict[str, Any]
    claimed_reset: str | None
    surrogate: str
    note: str
    run: Callable[..., dict[str, np.ndarray]]
    dtype: str = "float64"
    bar: float = 1e-10            # relative error it reaches in its matching reset mode


def check_dense_van_rossum(spec) -> None:
    """The adapters cover dense float64 networks with the van Rossum loss (eq. 6)."""
    if not all(isinstance(layer, Dense) for layer in spec.layers):
        raise Unsupported(f"dense layers only so far (architecture {spec.to_dict()['architecture']!r})")
    if spec.loss.name != "van_rossum":
        raise Unsupported(f"the adapters implement the van Rossum loss (eq. 6) only, got {spec.loss.name!r}")
    if getattr(spec, "dtype", "float64") != "float64":
        raise Unsupported(f"the adapters compare float64 runs, got spec.dtype {spec.dtype!r}")


def surrogate_parameter(spec) -> float:
    """The single parameter of the spec's surrogate (T, slope, alpha or width)."""
    (value,) = [float(v) for k, v in spec.surrogate.to_spec().items() if k != "name"]
    return value


# ----------------------------------------------------------------------------- the network

def dense(a_in: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """I_t = W a_in_t + b for all t: (T, B, in) -> (T, B, out)."""
    return a_in @ weight.T + bias


def run_network(spec: Any, x: np.ndarray, target: np.ndarray, params: Mapping[str, np.ndarray],
                layer: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                dtype: torch.dtype = torch.float64, traces: bool = True) -> dict[str, np.ndarray]:
    """Forward the spec's network with ``layer`` as its LIF layers, backward with autograd.

    ``layer(i, a_in, weight, bias) -> S``: a_in (T, B, in) what layer i reads, S (T, B, out) its
    spikes. With ``traces`` (the usual case) the glue applies eq. (2) between layers (and to the
    input when ``spec.input_trace``); without, the layer receives the raw spikes (or input) and
    must filter them itself (Norse's current-based synapse does).
    Spikes are cast to ``dtype``: snnTorch's built-in surrogates return float32 spikes, and a
    float64 network has to cast them before its next layer, as a user would.
    Returns ``loss``, ``grad/layers.{i}.weight|bias`` and ``S/{i}``, float64 numpy arrays.
    """
    spec = refsnn.parse_spec(spec)
    weights = {name: torch.tensor(np.asarray(params[name]), dtype=dtype, requires_grad=True)
               for name in spec.param_shapes()}
    x_t = torch.tensor(np.asarray(x), dtype=dtype)
    T, B = x_t.shape[:2]
    a = x_t.reshape(T, B, -1)                            # (T, B, *input_shape) -> (T, B, n_in)
    if spec.input_trace and traces:
        a = trace(a, spec.neuron.tau_s)
    spikes = []
    for i in range(len(spec.layers)):
        S = layer(i, a, weights[f"layers.{i}.weight"], weights[f"layers.{i}.bias"]).to(dtype)
        spikes.append(S)
        a = trace(S, spec.neuron.tau_s) if traces else S  # eq. (2): the next layer reads a
    d = torch.tensor(np.asarray(target), dtype=dtype)
    error = trace(spikes[-1], spec.loss.tau) - trace(d, spec.loss.tau)
    loss = 0.5 * (error * error).sum()                   # eq. (6)
    loss.backward()
    out = {"loss": np.asarray(loss.item(), dtype=np.float64)}
    for name, weight in weights.items():
        out[f"grad/{name}"] = weight.grad.detach().numpy().astype(np.float64)
    for i, S in enumerate(spikes):
        out[f"S/{i}"] = S.detach().numpy().astype(np.float64)
    return out


# ----------------------------------------------------------------------------- cases

def make_case(spec: Any, T: int, B: int, rng: np.random.Generator, gain: float = 0.4):
    """Input spikes (p = 1/2), target spikes (p = 1/5) and parameters that make neurons spike.

    Used by tests/test_torch_agreement.py and the adapters: layer i's weights are U(-0.5, 2.5) * gain * theta /
    (n_in * activity), activity the expected mean of its input, so the mean current is about
    gain * theta per step; biases U(-0.1, 0.1) * theta.
    """
    parsed = refsnn.parse_spec(spec)
    theta = parsed.neuron.theta
    ramp = min(1.0, T / (2.0 * parsed.neuron.tau_s))
    x = (rng.random((T, B, *parsed.input_shape)) < 0.5).astype(np.float64)
    target = (rng.random((T, B, parsed.n_out)) < 0.2).astype(np.float64)
    params = {}
    for name, shape in parsed.param_shapes().items():
        i = int(name.split(".")[1])
        if name.endswith(".weight"):
            activity = (0.5 * (ramp if parsed.input_trace else 1.0)) if i == 0 else 0.15 * ramp
            params[name] = rng.uniform(-0.5, 2.5, shape) * gain * theta / (shape[1] * activity)
        else:
            params[name] = rng.uniform(-0.1, 0.1, shape) * theta
    return x, target, params


def threshold_margin(result: Mapping[str, np.ndarray], spec: Any) -> float:
    """min |U_t - theta| / max(1, |theta|) over all layers and steps of refsnn's adjoints.

    A membrane within rounding of theta may spike in one implementation and not in another
    (and SpikingJelly spikes at U == theta, refsnn does not): hard forwards are compared only on
    cases whose margin is well above the rounding error of the arithmetic being compared.
    """
    parsed = refsnn.parse_spec(spec)
    theta = parsed.neuron.theta
    margin = min(float(np.min(np.abs(result[f"U/{i}"] - theta))) for i in range(len(parsed.layers)))
    return margin / max(1.0, abs(theta))


def spiking_case(spec: Any, T: int = 12, B: int = 2, seed: int = 0, margin: float = 1e-6,
                 gain: float = 0.4, round_to=None):
    """A case in which every layer spikes and stays silent at some steps (so the reset paths
    are exercised) and no membrane comes within ``margin`` of theta. Tries seeds from ``seed``.
    ``round_to`` (e.g. np.float32) rounds the parameters first, for runs in that precision.
    """
    parsed = refsnn.parse_spec(spec)
    for attempt in range(seed, seed + 1000):
        x, target, params = make_case(spec, T, B, np.random.default_rng(attempt), gain)
        if round_to is not None:
            params = {k: v.astype(round_to).astype(np.float64) for k, v in params.items()}
        result = refsnn.grad(spec, x, target, params, adjoints=True)
        rates = [result[f"S/{i}"].mean() for i in range(len(parsed.layers))]
        if all(0.0 < r < 1.0 for r in rates) and threshold_margin(result, spec) > margin:
            return x, target, params
    raise RuntimeError(f"no spiking case with margin {margin} within 1000 seeds for {spec}")


# ----------------------------------------------------------------------------- errors

def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours - theirs| / max(|ours|, |theirs|) (0 when both are exactly zero)."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    scale = max(np.max(np.abs(ours), initial=0.0), np.max(np.abs(theirs), initial=0.0))
    return float(np.max(np.abs(ours - theirs), initial=0.0) / scale) if scale > 0 else 0.0


def spike_mismatch(ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray], n_layers: int) -> tuple[int, int]:
    """(number of spike entries that differ, total entries) over all layers."""
    differ = sum(int(np.sum(ours[f"S/{i}"] != theirs[f"S/{i}"])) for i in range(n_layers))
    total = sum(int(np.asarray(ours[f"S/{i}"]).size) for i in range(n_layers))
    return differ, total


def errors(ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray], spec: Any) -> dict[str, float]:
    """Relative error of every loss/gradient key and of the spikes of every layer."""
    n = len(refsnn.parse_spec(spec).layers)
    out = {key: relative_error(ours[key], theirs[key]) for key in grad_keys(spec)}
    out["spikes"] = max(relative_error(ours[f"S/{i}"], theirs[f"S/{i}"]) for i in range(n))
    return out
