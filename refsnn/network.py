"""A network spec, its parameters, and the forward/backward of the whole network.

The spec is the JSON document of the oracle interface (docs/oracle.md):

    {"input_shape": [50], "architecture": "300-10",
     "neuron": {"tau_m": 6, "tau_s": 2, "theta": 1},
     "surrogate": {"name": "sigmoid", "T": 0.3},
     "reset_grad": "full", "forward": "hard",
     "loss": {"name": "van_rossum", "tau": 2},
     "input_trace": false}

``architecture`` uses the paper's notation: "300-10" is two dense LIF layers of 300 and 10
neurons. Every weighted layer is followed by the LIF neuron of eq. (1)-(3) and its trace (eq. 2);
the next layer reads the trace a. The network input x_t enters the first layer as given, or
filtered by the trace of eq. (2) when ``input_trace`` is true. A (T, B, *input_shape) input is
flattened in C order, as torch's ``flatten`` does.

Parameters are a flat dict in PyTorch's state_dict naming: ``layers.{i}.weight`` (out, in) and
``layers.{i}.bias`` (out,), i counting weighted layers from 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import numpy as np

from .errors import SpecError, check_array, check_choice, check_number
from .layers import DenseCache, dense_backward, dense_forward
from .lif import (FORWARDS, RESET_GRADS, LIFCache, NeuronParams, lif_backward, lif_forward,
                  trace_backward, trace_forward)
from .losses import VanRossumCache, van_rossum_backward, van_rossum_forward
from .surrogates import Surrogate, make_surrogate

SPEC_KEYS = ("input_shape", "architecture", "neuron", "surrogate", "reset_grad", "forward",
             "loss", "input_trace")
LOSSES = ("van_rossum",)


@dataclass(frozen=True)
class Dense:
    """A dense LIF layer of ``n_out`` neurons (architecture token: a bare number)."""

    n_out: int


@dataclass(frozen=True)
class Spec:
    """A validated network spec (build it with ``parse_spec``)."""

    input_shape: tuple[int, ...]
    layers: tuple[Dense, ...]
    neuron: NeuronParams
    surrogate: Surrogate
    reset_grad: str = "full"
    forward: str = "hard"
    loss_tau: float = 2.0
    input_trace: bool = False

    @property
    def n_in(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_out(self) -> int:
        return self.layers[-1].n_out

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes, n_in = {}, self.n_in
        for i, layer in enumerate(self.layers):
            shapes[f"layers.{i}.weight"] = (layer.n_out, n_in)
            shapes[f"layers.{i}.bias"] = (layer.n_out,)
            n_in = layer.n_out
        return shapes

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this spec (parse_spec(spec.to_dict()) == spec)."""
        return {"input_shape": list(self.input_shape),
                "architecture": "-".join(str(layer.n_out) for layer in self.layers),
                "neuron": self.neuron._asdict(), "surrogate": self.surrogate.to_spec(),
                "reset_grad": self.reset_grad, "forward": self.forward,
                "loss": {"name": "van_rossum", "tau": self.loss_tau},
                "input_trace": self.input_trace}


def parse_architecture(text: Any) -> tuple[Dense, ...]:
    """'300-10' -> (Dense(300), Dense(10)). Unknown tokens are a SpecError naming the token."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"architecture must be a string such as '300-10', got {text!r}")
    layers = []
    for position, token in enumerate(text.strip().split("-")):
        token = token.strip()
        if re.fullmatch(r"[1-9][0-9]*", token):
            layers.append(Dense(int(token)))
        else:
            raise SpecError(f"architecture token {token!r} (position {position} of {text!r}) is not "
                            "supported: expected a positive integer (a dense LIF layer)")
    return tuple(layers)


def parse_spec(spec: Any) -> Spec:
    """Validate a spec dict (see the module docstring) and return a Spec."""
    if isinstance(spec, Spec):
        return spec
    if not isinstance(spec, Mapping):
        raise SpecError(f"spec must be a JSON object (dict), got {type(spec).__name__}")
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise SpecError(f"spec has unknown key(s) {sorted(unknown)}; expected keys among {list(SPEC_KEYS)}")
    for key in ("input_shape", "architecture"):
        if key not in spec:
            raise SpecError(f"spec is missing the required key {key!r}")

    shape = spec["input_shape"]
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = [shape]
    if (not isinstance(shape, (list, tuple)) or not shape
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise SpecError(f"spec.input_shape must be a non-empty list of positive integers, got {shape!r}")

    neuron = spec.get("neuron", {})
    if not isinstance(neuron, Mapping):
        raise SpecError(f"spec.neuron must be an object with tau_m, tau_s, theta, got {neuron!r}")
    unknown = set(neuron) - {"tau_m", "tau_s", "theta"}
    if unknown:
        raise SpecError(f"spec.neuron has unknown key(s) {sorted(unknown)}; expected tau_m, tau_s, theta")
    neuron_params = NeuronParams(
        tau_m=check_number("spec.neuron.tau_m", neuron.get("tau_m", 6.0), minimum=1.0),
        tau_s=check_number("spec.neuron.tau_s", neuron.get("tau_s", 2.0), minimum=1.0),
        theta=check_number("spec.neuron.theta", neuron.get("theta", 1.0)))

    loss = spec.get("loss", {"name": "van_rossum"})
    if not isinstance(loss, Mapping):
        raise SpecError(f"spec.loss must be an object such as {{'name': 'van_rossum', 'tau': 2}}, got {loss!r}")
    check_choice("spec.loss.name", loss.get("name", "van_rossum"), LOSSES)
    unknown = set(loss) - {"name", "tau"}
    if unknown:
        raise SpecError(f"spec.loss has unknown key(s) {sorted(unknown)}; expected name, tau")
    loss_tau = check_number("spec.loss.tau", loss.get("tau", neuron_params.tau_s), minimum=1.0)

    input_trace = spec.get("input_trace", False)
    if not isinstance(input_trace, bool):
        raise SpecError(f"spec.input_trace must be true or false, got {input_trace!r}")

    return Spec(input_shape=tuple(shape), layers=parse_architecture(spec["architecture"]),
                neuron=neuron_params,
                surrogate=make_surrogate(spec.get("surrogate", {"name": "sigmoid", "T": 0.3})),
                reset_grad=check_choice("spec.reset_grad", spec.get("reset_grad", "full"), RESET_GRADS),
                forward=check_choice("spec.forward", spec.get("forward", "hard"), FORWARDS),
                loss_tau=loss_tau, input_trace=input_trace)


def init_params(spec: Spec, seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's nn.Linear distribution: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)), seeded."""
    rng = np.random.default_rng(seed)
    params, bound = {}, 0.0
    for name, shape in spec.param_shapes().items():   # each weight comes before its bias
        if name.endswith(".weight"):
            bound = 1.0 / math.sqrt(math.prod(shape[1:]))  # 1/sqrt(fan_in)
        params[name] = rng.uniform(-bound, bound, size=shape)
    return params


def check_params(spec: Spec, params: Any) -> dict[str, np.ndarray]:
    """Check names, shapes and finiteness of a parameter dict; return float64 copies-or-views."""
    if not isinstance(params, Mapping):
        raise SpecError(f"params must be a dict of arrays named like 'layers.0.weight', got {type(params).__name__}")
    shapes = spec.param_shapes()
    missing = [k for k in shapes if k not in params]
    if missing:
        raise SpecError(f"params is missing {missing} (expected keys {list(shapes)})")
    unknown = [k for k in params if k not in shapes]
    if unknown:
        raise SpecError(f"params has unexpected key(s) {unknown} for architecture "
                        f"{spec.to_dict()['architecture']!r} (expected keys {list(shapes)})")
    return {name: check_array(f"params[{name!r}]", params[name], shape=shape)
            for name, shape in shapes.items()}


def check_inputs(spec: Spec, x: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """x: (T, B, *input_shape) and target: (T, B, n_out), same T and B, T >= 1, B >= 1, finite."""
    x = check_array("x", x, shape=(None, None, *spec.input_shape),
                    shape_text=f"(T, B, {', '.join(map(str, spec.input_shape))})")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise SpecError(f"x must have at least one time step and one sample (T >= 1, B >= 1), got shape {x.shape}")
    target = check_array("target", target, shape=(x.shape[0], x.shape[1], spec.n_out),
                         shape_text=f"(T={x.shape[0]}, B={x.shape[1]}, n_out={spec.n_out})")
    return x, target


class LayerCache(NamedTuple):
    dense: DenseCache
    lif: LIFCache


class NetworkCache(NamedTuple):
    layers: tuple[LayerCache, ...]
    loss: VanRossumCache


def network_forward(spec: Spec, params: Mapping[str, np.ndarray], x: np.ndarray,
                    target: np.ndarray) -> tuple[float, np.ndarray, NetworkCache]:
    """Forward through all layers and the loss. Returns (loss, output spikes (T, B, n_out), cache)."""
    T, B = x.shape[:2]
    a = x.reshape(T, B, -1)                             # (T, B, *input_shape) -> (T, B, n_in)
    if spec.input_trace:
        a = trace_forward(a, spec.neuron.tau_s)         # eq. (2) applied to the input
    caches = []
    for i in range(len(spec.layers)):
        current, dense_cache = dense_forward(a, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
        S, lif_cache = lif_forward(current, spec.neuron, spec.surrogate, spec.forward)
        caches.append(LayerCache(dense_cache, lif_cache))
        if i + 1 < len(spec.layers):
            a = trace_forward(S, spec.neuron.tau_s)     # eq. (2): the next layer reads a
    loss, loss_cache = van_rossum_forward(S, target, spec.loss_tau)
    return loss, S, NetworkCache(tuple(caches), loss_cache)


def network_backward(spec: Spec, cache: NetworkCache, adjoints: bool = False) -> dict[str, np.ndarray]:
    """BPTT through the whole network: returns grad/... keys and, with ``adjoints``, the adjoints."""
    out: dict[str, np.ndarray] = {}
    dL_dS = van_rossum_backward(cache.loss)             # eq. (6) -> dL/dS of the output layer
    if adjoints:
        out["output_error"] = cache.loss.error
    for i in range(len(spec.layers) - 1, -1, -1):
        layer = cache.layers[i]
        grads = lif_backward(dL_dS, layer.lif, spec.reset_grad, parts=adjoints)  # eq. (7)-(8)
        dL_dU = grads.dL_dU if adjoints else grads
        dW, db, da_in = dense_backward(dL_dU, layer.dense, need_input_grad=i > 0)
        out[f"grad/layers.{i}.weight"] = dW
        out[f"grad/layers.{i}.bias"] = db
        if adjoints:
            out[f"U/{i}"] = layer.lif.U
            out[f"S/{i}"] = layer.lif.S
            out[f"dL_dS/{i}"] = dL_dS
            out[f"dL_dU/{i}"] = grads.dL_dU
            out[f"dL_dU_spatial/{i}"] = grads.spatial
            out[f"dL_dU_leak/{i}"] = grads.leak
            out[f"dL_dU_reset/{i}"] = grads.reset
        if i > 0:
            dL_dS = trace_backward(da_in, spec.neuron.tau_s)  # eq. (2) backwards: dL/da -> dL/dS
    return out
