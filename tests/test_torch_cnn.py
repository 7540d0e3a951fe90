"""refsnn's hand-written BPTT through CNNs against PyTorch autograd on the same equations, float64.

validation/torch_reference.py writes the forward of the CNNs in torch (conv2d with stride and
padding, avg_pool2d, the window sum of avg_pool2d(divisor_override=1) times w, max_pool2d,
flattening in (C, H, W) order, the LIF layers of eq. 1-3, every loss of losses.py) and lets
autograd do every backward step. refsnn must agree with it to RTOL, relative to the largest
entry of each array, for every pooling kind, reset mode, loss, both forwards, with padding and
stride, and on the three Table-3 presets at small T and B.

Cases are scaled so that neurons spike (asserted for the hard forward, otherwise the reset paths
and the spike-dependent max-pooling winners would be tested vacuously). In CI (CI=true) a
missing torch fails; elsewhere it skips.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import refsnn
from conftest import require

torch = require("torch")
from agreement import FORWARDS, RESET_GRADS, relative_error  # noqa: E402
import agreement  # noqa: E402
from validation.frameworks.common import grad_keys  # noqa: E402
from validation.torch_reference import torch_adjoints, torch_grad  # noqa: E402

torch.set_num_threads(1)          # small tensors; the test machine is shared

RTOL = 1e-10                      # relative to the largest |entry| of each array (float64)
LOSSES = ({"name": "van_rossum", "tau": 3.0},
          {"name": "count_mse", "true_rate": 0.8, "false_rate": 0.1},
          {"name": "rate_ce"},
          {"name": "van_rossum_class", "tau": 2.0, "true_period": 2, "false_period": 5})

# (architecture, input shape, extra spec keys): every pooling kind, padding, stride, pooling of
# the input, a window that does not divide the size (floor mode), conv after conv, dense after conv
CNNS = {
    "avg": ("3C3-P2", [2, 8, 8], {}),
    "avg-dense": ("3C3-P2-5", [1, 9, 9], {}),
    "sum": ("3C3-P2-4C2", [1, 9, 9], {"pooling": "sum", "pool_weight": 1.1}),
    "max": ("4C3-P2-5", [2, 7, 7], {"pooling": "max"}),
    "max-P3": ("3C2-P3", [1, 8, 8], {"pooling": "max"}),
    "padding": ("3C3-4C3", [1, 6, 6], {"padding": 1}),
    "stride": ("3C3-P2", [1, 11, 11], {"pooling": "sum", "stride": 2}),
    "pool-input": ("P2-3C3", [1, 10, 10], {}),
}


# ----------------------------------------------------------------------------- helpers

def make_spec(architecture, input_shape, reset_grad="full", forward="hard", loss=None, n_out=3, **extra):
    spec = {"input_shape": list(input_shape), "architecture": architecture, "n_out": n_out,
            "neuron": {"tau_m": 5.0, "tau_s": 2.0, "theta": 1.0},
            "surrogate": {"name": "sigmoid", "T": 0.4}, "reset_grad": reset_grad, "forward": forward,
            **extra}
    if loss is not None:
        spec["loss"] = loss
    return spec


def make_case(spec, T, B, rng, gain=0.5, spread=0.0):
    """Input spikes (p = 1/2), a target and parameters that make neurons spike.

    Each weighted layer's weights are U(-0.5, 2.5) * gain * theta / (fan_in * activity), fan_in =
    in (* k * k), activity the expected mean of what it reads (1/2 for x; about 0.15 for a hidden
    trace, times the ramp of a trace that starts at 0, times w k^2 after sum pooling), so the
    mean current is about gain * theta per step, which the leak integrates past theta. With a
    large fan_in that current is nearly the same for every neuron (all spike or none do), so
    ``spread`` adds N(0, (spread * theta)^2 / (fan_in * activity)) to each weight: currents
    that differ by about spread * theta from neuron to neuron.
    """
    parsed = refsnn.parse_spec(spec)
    theta = parsed.neuron.theta
    ramp = min(1.0, T / (2.0 * parsed.neuron.tau_s))
    x = (rng.random((T, B, *parsed.input_shape)) < 0.5).astype(np.float64)
    if parsed.loss.name == "van_rossum":
        target = (rng.random((T, B, parsed.n_out)) < 0.2).astype(np.float64)
    else:
        target = rng.integers(0, parsed.n_out, size=B)
    params, activity, i = {}, 0.5, 0
    for layer in parsed.layers:
        if isinstance(layer, refsnn.network.Pool):
            activity *= layer.weight * layer.size ** 2 if layer.kind == "sum" else 1.0
            continue
        shape = parsed.param_shapes()[f"layers.{i}.weight"]
        fan_in = math.prod(shape[1:])
        params[f"layers.{i}.weight"] = (rng.uniform(-0.5, 2.5, shape) * gain * theta / (fan_in * activity)
                                        + rng.normal(0.0, spread * theta / math.sqrt(fan_in * activity), shape))
        params[f"layers.{i}.bias"] = rng.uniform(-0.1, 0.1, shape[0]) * theta
        activity, i = 0.15 * ramp, i + 1
    return x, target, params


def assert_agree(ours, theirs, keys, context=""):
    agreement.assert_agree(ours, theirs, keys, RTOL, context, dtype=np.float64, other="torch")


def adjoint_keys(spec):
    n = len(refsnn.parse_spec(spec).weighted)
    return [f"{k}/{i}" for i in range(n) for k in ("U", "S", "dL_dU")]


def assert_spiking(result, spec):
    """Hard forward: every LIF layer has spikes and silent steps (else the reset is not exercised)."""
    for i in range(len(refsnn.parse_spec(spec).weighted)):
        rate = result[f"S/{i}"].mean()
        assert 0.0 < rate < 1.0, f"layer {i} spike rate {rate}: the case does not exercise the reset"


def compare(spec, x, target, params, adjoints=True):
    """refsnn.grad against the torch reference; in the hard forward the spikes must be identical."""
    ours = refsnn.grad(spec, x, target, params, adjoints=True)
    theirs = (torch_adjoints if adjoints else torch_grad)(spec, x, target, params)
    if spec["forward"] == "hard":
        assert_spiking(ours, spec)
        if adjoints:
            for i in range(len(refsnn.parse_spec(spec).weighted)):
                np.testing.assert_array_equal(ours[f"S/{i}"], theirs[f"S/{i}"], err_msg=f"S/{i}")
    keys = grad_keys(spec) + (adjoint_keys(spec) if adjoints else [])
    assert_agree(ours, theirs, keys, context=str(spec))
    return ours, theirs


# ----------------------------------------------------------------------------- fixed cases

@pytest.mark.parametrize("forward", FORWARDS)
@pytest.mark.parametrize("reset_grad", RESET_GRADS)
@pytest.mark.parametrize("case", sorted(CNNS))
def test_cnn_matches_torch(case, reset_grad, forward, rng):
    """Gradients and every adjoint (U, S, dL/dU per layer) for each pooling kind and geometry."""
    architecture, shape, extra = CNNS[case]
    spec = make_spec(architecture, shape, reset_grad, forward, **extra)
    x, target, params = make_case(spec, T=6, B=2, rng=rng)
    compare(spec, x, target, params)


@pytest.mark.parametrize("forward", FORWARDS)
@pytest.mark.parametrize("reset_grad", RESET_GRADS)
@pytest.mark.parametrize("loss", LOSSES, ids=[loss["name"] for loss in LOSSES])
def test_losses_match_torch(loss, reset_grad, forward, rng):
    spec = make_spec("3C3-P2-6", [2, 8, 8], reset_grad, forward, loss=loss, n_out=4)
    x, target, params = make_case(spec, T=8, B=3, rng=rng)
    compare(spec, x, target, params)


def test_reset_modes_differ_in_a_cnn(rng):
    """The three reset modes give three different gradients here: agreement in each is not vacuous."""
    base = make_spec("3C3-P2-5", [1, 9, 9])
    x, target, params = make_case(base, T=8, B=2, rng=rng)
    grads = {mode: torch_grad({**base, "reset_grad": mode}, x, target, params)["grad/layers.0.weight"]
             for mode in RESET_GRADS}
    for a, b in [("full", "detached"), ("full", "ignored"), ("detached", "ignored")]:
        assert relative_error(grads[a], grads[b]) > 1e-3, (a, b)


def test_pooling_kinds_differ(rng):
    """avg, sum and max pooling give different gradients (the reference is not one op three times)."""
    base = make_spec("3C3-P2-5", [1, 9, 9])
    x, target, params = make_case(base, T=6, B=2, rng=rng)          # the same parameters for all
    grads = {kind: torch_grad({**base, "pooling": kind}, x, target, params)["grad/layers.0.weight"]
             for kind in ("avg", "sum", "max")}
    for a, b in [("avg", "sum"), ("avg", "max"), ("sum", "max")]:
        assert relative_error(grads[a], grads[b]) > 1e-3, (a, b)


# ----------------------------------------------------------------------------- presets

@pytest.mark.parametrize("preset", ["nmnist", "mnist", "cifar10"])
def test_preset_matches_torch(preset, rng):
    """The Table-3 networks, hard forward, T = 2, B = 1: every gradient of every layer to RTOL."""
    spec = {"preset": preset, "forward": "hard", "reset_grad": "full", "loss": {"name": "rate_ce"},
            "neuron": {"tau_m": 5.0, "tau_s": 2.0, "theta": 1.0}, "surrogate": {"name": "sigmoid", "T": 0.4}}
    x, target, params = make_case(spec, T=2, B=1, rng=rng, gain=0.5, spread=2.0)
    compare(spec, x, target, params, adjoints=False)


# ----------------------------------------------------------------------------- property test

@st.composite
def geometries(draw):
    """A conv layer (channels, kernel, stride, padding), then pooling of any kind, then dense."""
    kernel = draw(st.integers(1, 4), label="kernel")
    stride = draw(st.integers(1, 3), label="stride")
    padding = draw(st.integers(0, 2), label="padding")
    pool_size = draw(st.integers(1, 3), label="pool")
    size = draw(st.integers(max(1, kernel - 2 * padding), 10), label="size")
    conv_size = (size + 2 * padding - kernel) // stride + 1
    assume(conv_size >= pool_size)
    spec = make_spec(f"{draw(st.integers(1, 4), label='channels')}C{kernel}-P{pool_size}",
                     [draw(st.integers(1, 3), label="in_channels"), size, size],
                     draw(st.sampled_from(RESET_GRADS), label="reset_grad"),
                     draw(st.sampled_from(FORWARDS), label="forward"),
                     pooling=draw(st.sampled_from(["avg", "sum", "max"]), label="pooling"),
                     stride=stride, padding=padding)
    return spec, draw(st.integers(1, 6), label="T"), draw(st.integers(1, 2), label="B"), \
        draw(st.integers(0, 2**32 - 1), label="seed")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=geometries())
def test_cnn_geometry_matches_torch_property(case):
    spec, T, B, seed = case
    x, target, params = make_case(spec, T, B, np.random.default_rng(seed), gain=1.0)
    ours = refsnn.grad(spec, x, target, params, adjoints=True)
    theirs = torch_adjoints(spec, x, target, params)
    n = len(refsnn.parse_spec(spec).weighted)
    if spec["forward"] == "hard":
        # a membrane within rounding of theta may spike in one implementation only: not a bug
        assume(all(np.min(np.abs(ours[f"U/{i}"] - 1.0)) > 1e-9 for i in range(n)))
        for i in range(n):
            np.testing.assert_array_equal(ours[f"S/{i}"], theirs[f"S/{i}"])
    assert_agree(ours, theirs, grad_keys(spec) + adjoint_keys(spec), context=str(spec))
