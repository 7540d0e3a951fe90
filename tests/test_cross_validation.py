"""refsnn against the JAX reference and the real frameworks (snnTorch, SpikingJelly, Norse).

validation/jax_reference.py differentiates eq. (1)-(3), (6) with JAX; validation/frameworks/
puts each framework's own LIF neuron in the same network and differentiates with torch
autograd. All in float64. Bars, relative to the largest |entry| of each array (RTOL):

- the JAX reference: 1e-10, like the torch reference (measured: a few 1e-16);
- every framework configured to reproduce eq. (1)-(3) in float64: 1e-10 as well (measured: a
  few 1e-16; they compute the same arithmetic in another order);
- framework defaults: 1e-10 where they run in float64 throughout; snnTorch's built-in
  surrogates return float32 spikes, so its default is held to 1e-6 (measured ~5e-9); the float32
  runs of SpikingJelly's registered operator to 1e-5 (measured ~1.5e-7).

Hard-forward cases are kept away from the threshold (a membrane within rounding of theta may
spike in one implementation only, and SpikingJelly spikes at U == theta). In CI (CI=true) a
missing backend fails; elsewhere the module is skipped.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings

import refsnn
from conftest import require

torch = require("torch")
jax = require("jax")
require("snntorch")
require("spikingjelly")
require("norse")

from agreement import (RESET_GRADS, SURROGATE_PARAMS, assert_agree, dense_cases,  # noqa: E402
                       make_spec)
from validation import conformance  # noqa: E402
from validation.frameworks import (norse_adapter, snntorch_adapter,  # noqa: E402
                                   spikingjelly_adapter)
from validation.frameworks.common import (Unsupported, grad_keys, make_case,  # noqa: E402
                                          relative_error, spiking_case)
from validation.jax_reference import RELAXED, hard_spike, jax_adjoints, jax_grad  # noqa: E402

torch.set_num_threads(1)          # tiny tensors; the test machine is shared

RTOL = {"jax": 1e-10, "snnTorch": 1e-10, "SpikingJelly": 1e-10, "Norse": 1e-10}
SURROGATE_KEYS = {name: key for name, (key, _) in SURROGATE_PARAMS.items()}
#: parameter values at which a framework has the surrogate natively (Norse only has these)
NATIVE_POINTS = {"sigmoid": [0.25], "fast_sigmoid": [1.0, 2.0], "triangle": [1.0]}
#: (name, configure) of every framework configuration the property test tries
FRAMEWORKS = (("snnTorch", snntorch_adapter.configure),
              ("SpikingJelly", spikingjelly_adapter.configure),
              ("Norse", lambda spec: norse_adapter.configure(spec, synapse="off")),
              ("Norse", lambda spec: norse_adapter.configure(spec, synapse="trace")))


def surrogate_floors(spec, x, ours, params):
    """The scale a framework's parameter gradients are judged against, at least.

    Frameworks write the surrogate their own way (Norse: from sigma(z) (1 - sigma(z))), which in
    the far tail, where sigma' is ~1e-11 of its peak, keeps only ~1e-5 of its relative accuracy
    (and is 0 where 1 - sigma(z) rounds to 0): a gradient made only of such tails is then exact
    relative to the size its terms would have near threshold, not to its own tiny maximum. That
    size is carried down from the output layer: the terms of layer i's dL/dS can be up to the
    layer above's size, max |dL/dS| * max sigma', times the largest column sum of its |W| (dense
    weights: the only ones these tests use). Every framework is judged so: each writes its own
    surrogate formula (snnTorch and SpikingJelly too), with the same kind of tail error.
    """
    surrogate = refsnn.make_surrogate(spec["surrogate"])
    peak = float(np.max(surrogate.grad(np.linspace(-3.0, 3.0, 6001))))
    floors, carried = {}, 0.0
    for i in range(len(refsnn.parse_spec(spec).layers) - 1, -1, -1):
        size = max(float(np.max(np.abs(ours[f"dL_dS/{i}"]))), carried) * peak
        floors[f"grad/layers.{i}.weight"] = size * (max(1.0, float(np.max(np.abs(x)))) if i == 0 else 1.0)
        floors[f"grad/layers.{i}.bias"] = size
        carried = size * float(np.max(np.sum(np.abs(params[f"layers.{i}.weight"]), axis=0)))
    return floors


def spike_keys(spec):
    return [f"S/{i}" for i in range(len(refsnn.parse_spec(spec).layers))]


# ----------------------------------------------------------------------------- JAX surrogates

@pytest.mark.parametrize("name", sorted(SURROGATE_KEYS))
def test_jax_surrogates_match_refsnn(name, rng):
    """JAX's hard spike (forward, custom_vjp backward) and relaxed function equal refsnn's."""
    value = {"sigmoid": 0.3, "fast_sigmoid": 5.0, "atan": 2.0, "triangle": 1.0, "rectangle": 1.0,
             "exponential": 2.0}[name]
    surrogate = refsnn.make_surrogate({"name": name, SURROGATE_KEYS[name]: value})
    x = np.concatenate([rng.normal(0.0, 2.0, 50), [-1e4, -1.0, -1e-300, 0.0, 1e-300, 1e4]])
    jnp = jax.numpy
    parameter = jnp.asarray(value)
    spikes, pullback = jax.vjp(lambda u: hard_spike(name, u, parameter), jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(spikes), surrogate.spike(x))
    (dx,) = pullback(jnp.ones_like(spikes))
    assert relative_error(np.asarray(dx), surrogate.grad(x)) <= 1e-13
    relaxed, pullback = jax.vjp(lambda u: RELAXED[name](u, parameter), jnp.asarray(x))
    assert relative_error(np.asarray(relaxed), surrogate.relaxed(x)) <= 1e-13
    (dx,) = pullback(jnp.ones_like(relaxed))
    away = np.abs(x) > 1e-12                    # |x| is not differentiable at 0
    assert np.all(np.isfinite(np.asarray(dx)))
    assert relative_error(np.asarray(dx)[away], surrogate.grad(x)[away]) <= 1e-13


@pytest.mark.parametrize("reset_grad", RESET_GRADS)
def test_jax_reference_by_hand(reset_grad):
    """One neuron, two steps (the case of tests/test_torch_agreement.py::test_torch_reference_by_hand):
    tau_m = 2, theta = 1, w = 1.2, x = (1, 1), d = 0 give U = (1.2, 1.2), S = (1, 1), L = 13/32,
    dL/dU_2 = 3/8 s', dL/dU_1 = 7/16 s' + dL/dU_2 c, s' = sigma'(0.2), c = -0.6 s' (full),
    0 (detached), 1/2 (ignored); dL/dw = dL/db = dL/dU_1 + dL/dU_2."""
    T = 0.3
    spec = make_spec("1", ("sigmoid", T), reset_grad, input_shape=(1,), tau_m=2.0)
    params = {"layers.0.weight": np.array([[1.2]]), "layers.0.bias": np.array([0.0])}
    result = jax_adjoints(spec, np.ones((2, 1, 1)), np.zeros((2, 1, 1)), params)
    e = math.exp(-0.2 / T)
    s_prime = e / (1.0 + e) ** 2 / T
    dL_dU_2 = 3.0 / 8.0 * s_prime
    dL_dU_1 = 7.0 / 16.0 * s_prime + dL_dU_2 * {"full": -0.6 * s_prime, "detached": 0.0, "ignored": 0.5}[reset_grad]
    np.testing.assert_allclose(result["U/0"].ravel(), [1.2, 1.2], rtol=1e-15)
    np.testing.assert_array_equal(result["S/0"].ravel(), [1.0, 1.0])
    assert result["loss"] == pytest.approx(13.0 / 32.0, rel=1e-15)
    np.testing.assert_allclose(result["dL_dU/0"].ravel(), [dL_dU_1, dL_dU_2], rtol=1e-14)
    for key in ("grad/layers.0.weight", "grad/layers.0.bias"):
        assert result[key].ravel()[0] == pytest.approx(dL_dU_1 + dL_dU_2, rel=1e-14)


def test_jax_grad_keys_and_values(rng):
    """jax_grad returns exactly refsnn.grad's loss and gradient keys, float64, with refsnn's
    values (two layers, smooth forward: every gradient is nonzero)."""
    spec = make_spec("4-3", ("sigmoid", 0.3), "full", forward="smooth")
    x, target, params = make_case(spec, 6, 2, rng)
    theirs = jax_grad(spec, x, target, params)
    ours = refsnn.grad(spec, x, target, params)
    assert sorted(theirs) == sorted(grad_keys(spec))
    for key in grad_keys(spec):
        assert theirs[key].dtype == np.float64 and theirs[key].shape == np.shape(ours[key])
        assert np.all(theirs[key] != 0.0), key
    assert_agree(ours, theirs, grad_keys(spec), RTOL["jax"], "jax_grad")


# ----------------------------------------------------------------------------- framework surrogates

@pytest.mark.parametrize("name, value", [("sigmoid", 0.3), ("sigmoid", 0.25), ("fast_sigmoid", 1.0),
                                         ("fast_sigmoid", 2.0), ("fast_sigmoid", 5.0), ("atan", 2.0),
                                         ("triangle", 1.0), ("triangle", 0.5), ("rectangle", 1.0),
                                         ("rectangle", 0.4), ("exponential", 2.0)])
def test_framework_surrogates_match_refsnn(name, value, rng):
    """Each native surrogate an adapter relies on: spike value and derivative equal refsnn's
    (SpikingJelly's relaxed function too), float64 in, float64 out."""
    surrogate = refsnn.make_surrogate({"name": name, SURROGATE_KEYS[name]: value})
    x = np.concatenate([rng.normal(0.0, 2.0, 100), [-30.0, -1.0, -1e-9, 1e-9, 1.0, 30.0]])
    spec = refsnn.parse_spec(make_spec("1", (name, value), "full"))
    smooth = refsnn.parse_spec(make_spec("1", (name, value), "full", "smooth"))
    candidates = [snntorch_adapter.spike_function(spec)[0], spikingjelly_adapter.surrogate_function(spec)[0]]
    try:
        method, alpha = norse_adapter.method_for(spec)
    except Unsupported:
        pass
    else:
        from norse.torch.functional.threshold import threshold
        candidates.append(lambda u: threshold(u, method, alpha))
    for function in candidates:
        x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        spikes = function(x_t)
        spikes.sum().backward()
        assert spikes.dtype == torch.float64
        np.testing.assert_array_equal(spikes.detach().numpy(), surrogate.spike(x))
        assert relative_error(x_t.grad.numpy(), surrogate.grad(x)) <= 1e-13, function
    relaxed = spikingjelly_adapter.surrogate_function(smooth)[0]
    x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    values = relaxed(x_t)
    values.sum().backward()
    assert relative_error(values.detach().numpy(), surrogate.relaxed(x)) <= 1e-13
    away = np.abs(x) > 1e-12                    # |x| is not differentiable at 0
    assert relative_error(x_t.grad.numpy()[away], surrogate.grad(x)[away]) <= 1e-13


def test_framework_facts_the_adapters_rely_on():
    """What the adapters work around, measured on the installed versions."""
    from snntorch import surrogate as snn_surrogate
    from norse.torch.functional.threshold import threshold
    from spikingjelly.activation_based import neuron
    assert snn_surrogate.atan()(torch.zeros(3, dtype=torch.float64)).dtype == torch.float32
    grads = []
    for alpha in (1.0, 100.0):                  # Norse's SuperSpike ignores alpha
        x = torch.tensor([0.5, -2.0], dtype=torch.float64, requires_grad=True)
        threshold(x, "super", alpha).sum().backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])
    node = neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0, step_mode="m")
    assert node(torch.tensor([[1.0]], dtype=torch.float64)).item() == 1.0   # spikes at U == theta


# ----------------------------------------------------------------------------- configured frameworks

@pytest.mark.parametrize("name", conformance.ADAPTERS)
def test_configured_frameworks_fixed_case(name):
    """The report's configured rows: every configuration that runs agrees to 1e-10 with exact
    spikes (hard); each framework runs both the full and the detached reset and refuses "ignored"."""
    adapter = importlib.import_module(f"validation.frameworks.{name}")
    rows = conformance.evaluate_configured(adapter)
    ran = {(row["mode"], row["forward"]) for row in rows if "why" not in row}
    assert {("full", "hard"), ("detached", "hard")} <= ran
    assert not any(mode == "ignored" for mode, _ in ran)
    for row in rows:
        if "why" in row:
            continue
        assert max(row["errors"].values()) <= RTOL[adapter.FRAMEWORK], row
        if row["forward"] == "hard":
            assert row["spikes_differ"] == 0, row


@pytest.mark.parametrize("surrogate", [("sigmoid", 0.25), ("fast_sigmoid", 1.0), ("triangle", 1.0)])
@pytest.mark.parametrize("synapse, input_trace", [("off", False), ("off", True), ("trace", False),
                                                  ("trace", True)])
@pytest.mark.parametrize("reset_grad", ["full", "detached"])
def test_norse_configurations(reset_grad, synapse, input_trace, surrogate):
    """Norse with each of its three refsnn-equivalent surrogates, its synapse off or as eq. (2)."""
    spec = make_spec("6-3", surrogate, reset_grad, tau_m=5.0, tau_s=3.0, input_trace=input_trace,
                     loss_tau=4.0)
    x, target, params = spiking_case(spec, T=10, B=2)
    ours = refsnn.grad(spec, x, target, params, adjoints=True)
    theirs = norse_adapter.grad(spec, x, target, params, synapse=synapse)
    for key in spike_keys(spec):
        np.testing.assert_array_equal(ours[key], theirs[key])
    assert_agree(ours, theirs, grad_keys(spec), RTOL["Norse"], str(spec))


# ----------------------------------------------------------------------------- defaults

@pytest.mark.parametrize("default", [d for a in (snntorch_adapter, spikingjelly_adapter, norse_adapter)
                                     for d in a.DEFAULTS],
                         ids=lambda d: f"{d.framework}: {d.call} [{d.dtype}]")
def test_default_computes_its_reset_mode(default):
    """Each framework default against refsnn in every reset mode: it agrees (to its bar) with the
    mode its adapter claims and with no other (those differ by the reset term itself, > 1e-2)."""
    result = conformance.evaluate_default(default)
    if default.claimed_reset is None:             # not eq. (1): no mode matches
        assert result["computes"] is None
        assert min(result["worst"].values()) > 1e-2
        return
    assert result["computes"] == default.claimed_reset, result["worst"]
    assert result["worst"][default.claimed_reset] <= default.bar
    assert result["by_mode"][default.claimed_reset]["spikes_differ"] == 0
    for mode in RESET_GRADS:
        if mode != default.claimed_reset:
            assert result["worst"][mode] > 1e-2, (mode, result["worst"])


def test_conformance_report_states_each_default():
    """docs/conformance.md (generated by `python -m validation.conformance`) names every default
    with the reset mode its adapter claims, and the versions the adapters pin."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "conformance.md").read_text()
    for adapter in (snntorch_adapter, spikingjelly_adapter, norse_adapter):
        assert f"## {adapter.FRAMEWORK} {adapter.VERSION}" in text
        for d in adapter.DEFAULTS:
            computes = d.claimed_reset or "none (not eq. 1)"
            assert f"| {d.framework} | `{d.call}` | {d.dtype} | **{computes}** |" in text, d.call


# ----------------------------------------------------------------------------- property test

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=dense_cases(NATIVE_POINTS))
def test_all_backends_agree_property(case):
    """refsnn, the JAX reference and every framework that can run the case, on the same arrays."""
    spec, T, B, gain, seed = case
    x, target, params = make_case(spec, T, B, np.random.default_rng(seed), gain=gain)
    ours = refsnn.grad(spec, x, target, params, adjoints=True)
    n = len(refsnn.parse_spec(spec).layers)
    theta = spec["neuron"]["theta"]
    if spec["forward"] == "hard":
        # a membrane within rounding of theta may spike in one implementation only: not a bug
        assume(all(np.min(np.abs(ours[f"U/{i}"] - theta)) > 1e-9 * max(1.0, theta) for i in range(n)))
    context = str(spec)

    theirs = jax_adjoints(spec, x, target, params)
    if spec["forward"] == "hard":
        for key in spike_keys(spec):
            np.testing.assert_array_equal(ours[key], theirs[key])
    keys = grad_keys(spec) + [f"{k}/{i}" for i in range(n) for k in ("U", "S", "dL_dU")]
    assert_agree(ours, theirs, keys, RTOL["jax"], "jax: " + context)

    for framework, configure in FRAMEWORKS:
        try:
            setup = configure(spec)
        except Unsupported:
            event(f"{framework}: cannot")
            continue
        event(f"{framework}: ran ({spec['reset_grad']})")
        theirs = setup.run(x, target, params)
        if spec["forward"] == "hard":
            for key in spike_keys(spec):
                np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{framework}: {context}")
        assert_agree(ours, theirs, grad_keys(spec) + spike_keys(spec), RTOL[framework],
                     f"{framework} ({setup.call}): {context}", floors=surrogate_floors(spec, x, ours, params))
