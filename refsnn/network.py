"""A network spec, its parameters, and the forward/backward of the whole network.

The spec is the JSON document of the oracle interface (docs/oracle.md):

    {"input_shape": [50], "architecture": "300-10",
     "neuron": {"tau_m": 6, "tau_s": 2, "theta": 1},
     "surrogate": {"name": "sigmoid", "T": 0.3},
     "reset_grad": "full", "forward": "hard",
     "loss": {"name": "van_rossum", "tau": 2},
     "input_trace": false}

``architecture`` uses the paper's notation: "300-10" is two dense LIF layers of 300 and 10
neurons; "15C5" is a convolutional LIF layer of 15 channels and 5x5 kernels; "P2" is 2x2 pooling
of the traces with stride 2. Optional keys: ``n_out`` appends a dense output layer of that size
("15C5-P2-40C5-P2-300" with n_out 10 is the paper's MNIST network), ``padding`` (zero padding of
every convolution, default 0), ``stride`` (of every convolution, default 1), ``pooling``
("avg" (default, torch's avg_pool2d), "sum", "max") and ``pool_weight`` (the fixed weight of sum
pooling, default 1.1 as in the TSSL-BP code), ``dtype`` ("float64", default, or "float32" for
speed; the gradient checks and the oracle's guarantees are float64). ``preset`` ("nmnist", "mnist", "cifar10") fills
input_shape, architecture and n_out of the paper's Table 3 networks (see PRESETS).

Every weighted layer (dense or conv) is followed by the LIF neuron of eq. (1)-(3) and its trace
(eq. 2); pooling acts on traces; the next weighted layer reads the trace a. The network input
x_t enters the first layer as given, or filtered by the trace of eq. (2) when ``input_trace`` is
true. A dense layer reading a (T, B, C, H, W) trace flattens it in C order, as torch does.

Parameters are a flat dict in PyTorch's state_dict naming: ``layers.{i}.weight`` ((out, in) or
(out, in, k, k)) and ``layers.{i}.bias`` (out,), i counting weighted layers from 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Union

import numpy as np

from . import conv
from .errors import SpecError, check_array, check_choice, check_number
from .layers import dense_backward, dense_forward
from .lif import (FORWARDS, RESET_GRADS, LIFCache, NeuronParams, lif_backward, lif_forward,
                  trace_backward, trace_forward, trace_lif_backward)
from .losses import Loss, make_loss
from .surrogates import Surrogate, make_surrogate

SPEC_KEYS = ("preset", "input_shape", "architecture", "n_out", "padding", "stride", "pooling",
             "pool_weight", "neuron", "surrogate", "reset_grad", "forward", "loss", "input_trace", "dtype")
DTYPES = ("float64", "float32")
POOLINGS = ("avg", "sum", "max")

#: The networks of the paper's Table 3 with their input shapes and time steps.
PRESETS = {
    "nmnist": {"input_shape": [2, 34, 34], "architecture": "12C5-P2-64C5-P2", "n_out": 10, "time_steps": 5},
    "mnist": {"input_shape": [1, 28, 28], "architecture": "15C5-P2-40C5-P2-300", "n_out": 10, "time_steps": 30},
    "cifar10": {"input_shape": [3, 32, 32], "architecture": "96C3-256C3-P2-384C3-P2-384C3-256C3-1024-1024",
                "n_out": 10, "time_steps": 5},
}


@dataclass(frozen=True)
class Dense:
    """A dense LIF layer of ``n_out`` neurons (architecture token: a bare number, "300")."""

    n_out: int

    @property
    def token(self) -> str:
        return str(self.n_out)


@dataclass(frozen=True)
class Conv:
    """A convolutional LIF layer (token "15C5": 15 channels, 5x5 kernel)."""

    channels: int
    kernel: int
    stride: int = 1
    padding: int = 0

    @property
    def token(self) -> str:
        return f"{self.channels}C{self.kernel}"


@dataclass(frozen=True)
class Pool:
    """Pooling of the traces (token "P2": 2x2 windows, stride 2), kind avg, sum or max."""

    size: int
    kind: str = "avg"
    weight: float = 1.1          # sum pooling only

    @property
    def token(self) -> str:
        return f"P{self.size}"


Layer = Union[Dense, Conv, Pool]


@dataclass(frozen=True)
class Spec:
    """A validated network spec (build it with ``parse_spec``)."""

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    neuron: NeuronParams
    surrogate: Surrogate
    reset_grad: str = "full"
    forward: str = "hard"
    loss: Loss = None
    input_trace: bool = False
    padding: int = 0
    stride: int = 1
    pooling: str = "avg"
    pool_weight: float = 1.1
    dtype: str = "float64"

    @property
    def weighted(self) -> tuple[Layer, ...]:
        """The weighted (LIF) layers, in order: their index is the i of ``layers.{i}``."""
        return tuple(layer for layer in self.layers if not isinstance(layer, Pool))

    @property
    def n_out(self) -> int:
        return self.layers[-1].n_out

    def shapes(self) -> list[tuple[int, ...]]:
        """The per-sample shape entering each layer, then the output: len(layers) + 1 entries."""
        return layer_shapes(self.input_shape, self.layers)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes, i = {}, 0
        for layer, shape_in in zip(self.layers, self.shapes()):
            if isinstance(layer, Dense):
                shapes[f"layers.{i}.weight"] = (layer.n_out, math.prod(shape_in))
                shapes[f"layers.{i}.bias"] = (layer.n_out,)
            elif isinstance(layer, Conv):
                shapes[f"layers.{i}.weight"] = (layer.channels, shape_in[0], layer.kernel, layer.kernel)
                shapes[f"layers.{i}.bias"] = (layer.channels,)
            else:
                continue
            i += 1
        return shapes

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of this spec (parse_spec(spec.to_dict()) == spec)."""
        return {"input_shape": list(self.input_shape),
                "architecture": "-".join(layer.token for layer in self.layers),
                "padding": self.padding, "stride": self.stride, "pooling": self.pooling,
                "pool_weight": self.pool_weight,
                "neuron": self.neuron._asdict(), "surrogate": self.surrogate.to_spec(),
                "reset_grad": self.reset_grad, "forward": self.forward,
                "loss": self.loss.to_spec(), "input_trace": self.input_trace, "dtype": self.dtype}


def layer_shapes(input_shape: tuple[int, ...], layers: tuple[Layer, ...]) -> list[tuple[int, ...]]:
    """Propagate the per-sample shape through the layers; a SpecError names a token that does not fit."""
    shapes = [tuple(input_shape)]
    for position, layer in enumerate(layers):
        shape = shapes[-1]
        if isinstance(layer, Dense):
            shapes.append((layer.n_out,))
            continue
        if len(shape) != 3:
            raise SpecError(f"architecture token {layer.token!r} (position {position}) needs a (C, H, W) input, "
                            f"got shape {shape}" + (" (after a dense layer)" if position else " (spec.input_shape)"))
        C, H, W = shape
        if isinstance(layer, Conv):
            k, s, p = layer.kernel, layer.stride, layer.padding
            if H + 2 * p < k or W + 2 * p < k:
                raise SpecError(f"architecture token {layer.token!r} (position {position}): kernel {k} does not fit "
                                f"the {H}x{W} input with padding {p}")
            shapes.append((layer.channels, (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1))
        else:
            if H < layer.size or W < layer.size:
                raise SpecError(f"architecture token {layer.token!r} (position {position}): window {layer.size} "
                                f"does not fit the {H}x{W} input")
            shapes.append((C, (H - layer.size) // layer.size + 1, (W - layer.size) // layer.size + 1))
    return shapes


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_architecture(text: Any, *, padding: int = 0, stride: int = 1, pooling: str = "avg",
                       pool_weight: float = 1.1) -> tuple[Layer, ...]:
    """'15C5-P2-300' -> (Conv(15, 5), Pool(2), Dense(300)). Unknown tokens are a SpecError naming the token."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"architecture must be a string such as '300-10' or '15C5-P2-40C5-P2-300', got {text!r}")
    layers: list[Layer] = []
    for position, token in enumerate(text.strip().split("-")):
        token = token.strip()
        if re.fullmatch(r"[1-9][0-9]*", token):
            layers.append(Dense(int(token)))
        elif match := re.fullmatch(r"([1-9][0-9]*)[Cc]([1-9][0-9]*)", token):
            layers.append(Conv(int(match[1]), int(match[2]), stride, padding))
        elif match := re.fullmatch(r"[Pp]([1-9][0-9]*)", token):
            layers.append(Pool(int(match[1]), pooling, pool_weight))
        else:
            raise SpecError(f"architecture token {token!r} (position {position} of {text!r}) is not understood: "
                            "expected N (dense layer of N neurons), NCk (N channels of k x k convolution) or Pk "
                            "(k x k pooling)")
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
    if "preset" in spec:
        preset = check_choice("spec.preset", spec["preset"], tuple(PRESETS))
        spec = {**{k: v for k, v in PRESETS[preset].items() if k != "time_steps"},
                **{k: v for k, v in spec.items() if k != "preset"}}
    for key in ("input_shape", "architecture"):
        if key not in spec:
            raise SpecError(f"spec is missing the required key {key!r} (or give a 'preset')")

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

    input_trace = spec.get("input_trace", False)
    if not isinstance(input_trace, bool):
        raise SpecError(f"spec.input_trace must be true or false, got {input_trace!r}")
    padding = _positive_int("spec.padding", spec.get("padding", 0), minimum=0)
    stride = _positive_int("spec.stride", spec.get("stride", 1))
    pooling = check_choice("spec.pooling", spec.get("pooling", "avg"), POOLINGS)
    pool_weight = check_number("spec.pool_weight", spec.get("pool_weight", 1.1))
    layers = parse_architecture(spec["architecture"], padding=padding, stride=stride, pooling=pooling,
                                pool_weight=pool_weight)
    if "n_out" in spec:
        layers += (Dense(_positive_int("spec.n_out", spec["n_out"])),)
    if isinstance(layers[-1], Pool):
        raise SpecError(f"the network must end with a weighted LIF layer (the loss reads its spikes), but "
                        f"architecture {spec['architecture']!r} ends with pooling: give spec.n_out")
    layer_shapes(tuple(shape), layers)                      # geometry errors name the token now

    return Spec(input_shape=tuple(shape), layers=layers, neuron=neuron_params,
                surrogate=make_surrogate(spec.get("surrogate", {"name": "sigmoid", "T": 0.3})),
                reset_grad=check_choice("spec.reset_grad", spec.get("reset_grad", "full"), RESET_GRADS),
                forward=check_choice("spec.forward", spec.get("forward", "hard"), FORWARDS),
                loss=make_loss(spec.get("loss", {"name": "van_rossum"}), default_tau=neuron_params.tau_s),
                input_trace=input_trace, padding=padding, stride=stride, pooling=pooling,
                pool_weight=pool_weight, dtype=check_choice("spec.dtype", spec.get("dtype", "float64"), DTYPES))


def init_params(spec: Spec, seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's nn.Linear / nn.Conv2d distribution: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    rng = np.random.default_rng(seed)
    params, bound = {}, 0.0
    for name, shape in spec.param_shapes().items():   # each weight comes before its bias
        if name.endswith(".weight"):
            bound = 1.0 / math.sqrt(math.prod(shape[1:]))  # 1/sqrt(fan_in), fan_in = in (* k * k)
        params[name] = rng.uniform(-bound, bound, size=shape).astype(spec.dtype)
    return params


def check_params(spec: Spec, params: Any) -> dict[str, np.ndarray]:
    """Check names, shapes and finiteness of a parameter dict; return float64 arrays."""
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
    return {name: check_array(f"params[{name!r}]", params[name], shape=shape, dtype=spec.dtype)
            for name, shape in shapes.items()}


def check_inputs(spec: Spec, x: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """x: (T, B, *input_shape), T >= 1, B >= 1, finite; target as the loss expects (losses.py)."""
    x = check_array("x", x, shape=(None, None, *spec.input_shape),
                    shape_text=f"(T, B, {', '.join(map(str, spec.input_shape))})", dtype=spec.dtype)
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise SpecError(f"x must have at least one time step and one sample (T >= 1, B >= 1), got shape {x.shape}")
    return x, spec.loss.check_target(target, x.shape[0], x.shape[1], spec.n_out, dtype=spec.dtype)


class WeightedCache(NamedTuple):
    op: Any                      # DenseCache or Conv2dCache
    lif: LIFCache
    in_shape: tuple[int, ...]    # (T, B, ...) of the trace read, before a dense layer's flattening


class PoolLayerCache(NamedTuple):
    op: Any                      # conv.PoolCache or conv.MaxPoolCache
    kind: str


class NetworkCache(NamedTuple):
    layers: tuple[Union[WeightedCache, PoolLayerCache], ...]
    loss: Any


POOL_FORWARD = {"avg": lambda a, layer: conv.avg_pool_forward(a, layer.size),
                "sum": lambda a, layer: conv.sum_pool_forward(a, layer.size, layer.weight),
                "max": lambda a, layer: conv.max_pool_forward(a, layer.size)}
POOL_BACKWARD = {"avg": conv.avg_pool_backward, "sum": conv.sum_pool_backward, "max": conv.max_pool_backward}


def fused_pool(spec: Spec, position: int) -> conv.TiledPool | None:
    """The pooling that the LIF loop of weighted layer ``position`` runs on its trace, if any:
    an average or sum pooling right after a hidden weighted layer (max pooling runs on its own)."""
    if not 0 <= position < len(spec.layers) - 1 or isinstance(spec.layers[position], Pool):
        return None
    layer = spec.layers[position + 1]
    if not isinstance(layer, Pool) or layer.kind == "max":
        return None
    scale = 1.0 / (layer.size * layer.size) if layer.kind == "avg" else float(layer.weight)
    return conv.TiledPool(kernel=layer.size, scale=scale)


def network_forward(spec: Spec, params: Mapping[str, np.ndarray], x: np.ndarray,
                    target: np.ndarray) -> tuple[float, np.ndarray, NetworkCache]:
    """Forward through all layers and the loss. Returns (loss, output spikes (T, B, n_out), cache).

    A hidden layer's LIF loop also runs eq. (2) and, when an average or sum pooling follows, the
    pooling (lif_forward with trace_tau and pool): the trace a_t of that layer is never stored.
    """
    T, B = x.shape[:2]
    a = trace_forward(x, spec.neuron.tau_s) if spec.input_trace else x   # eq. (2) on the input if asked
    caches: list[Union[WeightedCache, PoolLayerCache]] = []
    n_weighted, i = len(spec.weighted), 0
    pooled_below = None                                 # the pooling run in the LIF loop below, if any
    for position, layer in enumerate(spec.layers):
        if isinstance(layer, Pool):
            if pooled_below is not None:                # a is already pooled: keep its geometry for the backward
                pool_cache = conv.PoolCache(x_shape=caches[-1].lif.U.shape, kernel=pooled_below.kernel,
                                            stride=pooled_below.kernel, scale=pooled_below.scale)
                pooled_below = None
            else:
                a, pool_cache = POOL_FORWARD[layer.kind](a, layer)      # (T, B, C, H, W) -> (T, B, C, H/p, W/p)
            caches.append(PoolLayerCache(pool_cache, layer.kind))
            continue
        weight, bias = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
        in_shape = a.shape
        if isinstance(layer, Dense):
            current, op_cache = dense_forward(a.reshape(T, B, -1), weight, bias)  # (T, B, ...) -> (T, B, n_in)
        else:
            current, op_cache = conv.conv2d_forward(a, weight, bias, layer.stride, layer.padding)
        i += 1
        if i < n_weighted:                              # eq. (1), (3), (2) [and pooling]: the next layer reads a
            pool = fused_pool(spec, position)
            a, lif_cache = lif_forward(current, spec.neuron, spec.surrogate, spec.forward,
                                       trace_tau=spec.neuron.tau_s, pool=pool)
            pooled_below = pool
        else:                                           # eq. (1), (3): the loss reads S
            S, lif_cache = lif_forward(current, spec.neuron, spec.surrogate, spec.forward)
        caches.append(WeightedCache(op_cache, lif_cache, in_shape))
    loss, loss_cache = spec.loss.forward(S, target)
    return loss, S, NetworkCache(tuple(caches), loss_cache)


def network_backward(spec: Spec, cache: NetworkCache, adjoints: bool = False) -> dict[str, np.ndarray]:
    """BPTT through the whole network: returns grad/... keys and, with ``adjoints``, the adjoints.

    An average or sum pooling on a hidden layer's trace is undone inside that layer's BPTT loop
    (trace_lif_backward with pool), except with ``adjoints``, which reports dL/dS_t in full.
    """
    out: dict[str, np.ndarray] = {}
    dL_dS = spec.loss.backward(cache.loss)              # dL/dS of the output layer (spatial)
    if adjoints and spec.loss.name == "van_rossum":
        out["output_error"] = cache.loss.error
    dL_da = None                                        # dL/da of the trace the layer above read
    pool = None                                         # a pooling left to the BPTT loop below
    i = len(spec.weighted)
    for position in range(len(spec.layers) - 1, -1, -1):
        layer_cache = cache.layers[position]
        if isinstance(layer_cache, PoolLayerCache):
            if dL_da is None:                           # pooling of the network input: not needed
                continue
            pool = None if adjoints else fused_pool(spec, position - 1)
            if pool is None:
                dL_da = POOL_BACKWARD[layer_cache.kind](dL_da, layer_cache.op)   # pooling adjoint
            continue
        i -= 1
        if dL_da is not None and pool is None:
            dL_da = dL_da.reshape(layer_cache.lif.U.shape)
        if dL_da is not None and not adjoints:          # [pooling,] eq. (2) backwards and (7)-(8), in one loop over t
            dL_dU = trace_lif_backward(dL_da, layer_cache.lif, spec.neuron.tau_s, spec.reset_grad, pool=pool)
            pool = None
        else:
            if dL_da is not None:
                dL_dS = trace_backward(dL_da, spec.neuron.tau_s)                            # eq. (2) backwards
            grads = lif_backward(dL_dS, layer_cache.lif, spec.reset_grad, parts=adjoints)  # eq. (7)-(8)
            dL_dU = grads.dL_dU if adjoints else grads
        if isinstance(spec.layers[position], Dense):
            dW, db, da_in = dense_backward(dL_dU, layer_cache.op, need_input_grad=i > 0)
        else:
            dW, db, da_in = conv.conv2d_backward(dL_dU, layer_cache.op, need_input_grad=i > 0)
        dL_da = da_in.reshape(layer_cache.in_shape) if da_in is not None else None  # (T, B, n_in) -> (T, B, C, H, W)
        out[f"grad/layers.{i}.weight"] = dW
        out[f"grad/layers.{i}.bias"] = db
        if adjoints:
            out[f"U/{i}"] = layer_cache.lif.U
            out[f"S/{i}"] = layer_cache.lif.S.astype(layer_cache.lif.U.dtype)   # bool (hard) -> 0.0 / 1.0
            out[f"dL_dS/{i}"] = dL_dS
            out[f"dL_dU/{i}"] = grads.dL_dU
            out[f"dL_dU_spatial/{i}"] = grads.spatial
            out[f"dL_dU_leak/{i}"] = grads.leak
            out[f"dL_dU_reset/{i}"] = grads.reset
    return out
