"""refsnn's hand-written BPTT against PyTorch autograd on the same equations, in float64.

validation/torch_reference.py writes the forward of eq. (1)-(3), (6) in torch (the hard forward
through one torch.autograd.Function per surrogate, the smooth forward through the relaxed
functions) and lets autograd do every backward step. refsnn must agree with it to RTOL, relative
to the largest entry of each array, for every reset mode, both forwards, every surrogate.

Cases are scaled so that neurons spike (asserted for the hard forward, otherwise the reset paths
would be tested vacuously). In CI (CI=true) a missing torch fails; elsewhere it skips.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings

import refsnn
from conftest import require

torch = require("torch")
from agreement import (FORWARDS, RESET_GRADS, SURROGATE_PARAMS, dense_cases, make_spec,  # noqa: E402
                       relative_error)
import agreement  # noqa: E402
from validation.frameworks.common import grad_keys, make_case  # noqa: E402  (spiking inputs and parameters)
from validation.torch_reference import (RELAXED, SPIKE_FUNCTIONS, torch_adjoints,  # noqa: E402
                                        torch_grad)

torch.set_num_threads(1)          # tiny tensors; the test machine is shared

RTOL = 1e-10                      # relative to the largest |entry| of each array (float64)
ARCHITECTURES = ("1", "7-3", "12-8-4")


# ----------------------------------------------------------------------------- helpers

def assert_agree(ours, theirs, keys, context="", floors=None):
    agreement.assert_agree(ours, theirs, keys, RTOL, context, floors, dtype=np.float64, other="torch")


def assert_spiking(result, spec):
    """Hard forward: every layer has spikes and silent steps (else the reset is not exercised)."""
    for i in range(len(refsnn.parse_spec(spec).layers)):
        rate = result[f"S/{i}"].mean()
        assert 0.0 < rate < 1.0, f"layer {i} spike rate {rate}: the case does not exercise the reset"


# ----------------------------------------------------------------------------- surrogates

@pytest.mark.parametrize("name", sorted(SURROGATE_PARAMS))
def test_torch_surrogates_match_refsnn(name, rng):
    """The torch spike Function and relaxed function equal refsnn's spike, grad and relaxed."""
    key, value = SURROGATE_PARAMS[name]
    surrogate = refsnn.make_surrogate({"name": name, key: value})
    x = np.concatenate([rng.normal(0.0, 2.0, 200), [-1e4, -1.0, -1e-300, 0.0, 1e-300, 1e4]])
    x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    spikes = SPIKE_FUNCTIONS[name].apply(x_t, value)
    spikes.backward(torch.ones_like(x_t))
    np.testing.assert_array_equal(spikes.detach().numpy(), surrogate.spike(x))
    # relative to the largest entry: refsnn's sigmoid derivative is accurate to about eps / T
    # absolutely, not relatively, in its tails (see test_sigmoid_tail_regression)
    assert relative_error(x_t.grad.numpy(), surrogate.grad(x)) <= 1e-13

    x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    relaxed = RELAXED[name](x_t, value)
    relaxed.backward(torch.ones_like(x_t))
    assert relative_error(relaxed.detach().numpy(), surrogate.relaxed(x)) <= 1e-13
    assert np.all(np.isfinite(x_t.grad.numpy()))
    away = np.abs(x) > 1e-12                    # |x| is not differentiable at 0 in torch
    assert relative_error(x_t.grad.numpy()[away], surrogate.grad(x)[away]) <= 1e-13


# ----------------------------------------------------------------------------- fixed cases

@pytest.mark.parametrize("input_trace", [False, True], ids=["x", "trace(x)"])
@pytest.mark.parametrize("forward", FORWARDS)
@pytest.mark.parametrize("reset_grad", RESET_GRADS)
@pytest.mark.parametrize("surrogate", sorted(SURROGATE_PARAMS))
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_grad_matches_torch(architecture, surrogate, reset_grad, forward, input_trace, rng):
    spec = make_spec(architecture, surrogate, reset_grad, forward, input_trace=input_trace)
    x, target, params = make_case(spec, T=10, B=2, rng=rng)
    ours = refsnn.grad(spec, x, target, params)
    theirs = torch_grad(spec, x, target, params)
    assert set(theirs) == set(grad_keys(spec))
    if forward == "hard":
        assert_spiking(refsnn.grad(spec, x, target, params, adjoints=True), spec)
    assert_agree(ours, theirs, grad_keys(spec), context=str(spec))


@pytest.mark.parametrize("forward", FORWARDS)
@pytest.mark.parametrize("reset_grad", RESET_GRADS)
@pytest.mark.parametrize("surrogate", sorted(SURROGATE_PARAMS))
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_adjoints_match_torch(architecture, surrogate, reset_grad, forward, rng):
    """refsnn's U, S and dL/dU of every layer against the forward and U.grad of autograd."""
    spec = make_spec(architecture, surrogate, reset_grad, forward, input_shape=(2, 3),
                     loss_tau=3.0)
    x, target, params = make_case(spec, T=9, B=2, rng=rng)
    ours = refsnn.grad(spec, x, target, params, adjoints=True)
    theirs = torch_adjoints(spec, x, target, params)
    n = len(refsnn.parse_spec(spec).layers)
    if forward == "hard":
        assert_spiking(ours, spec)
        for i in range(n):
            np.testing.assert_array_equal(ours[f"S/{i}"], theirs[f"S/{i}"])
    keys = [f"{k}/{i}" for i in range(n) for k in ("U", "S", "dL_dU")]
    assert_agree(ours, theirs, keys + grad_keys(spec), context=str(spec))
    # refsnn's split of dL/dU (eq. 7-8) adds up to the total that autograd found
    for i in range(n):
        parts = ours[f"dL_dU_spatial/{i}"] + ours[f"dL_dU_leak/{i}"] + ours[f"dL_dU_reset/{i}"]
        assert relative_error(parts, theirs[f"dL_dU/{i}"]) <= RTOL


@pytest.mark.parametrize("forward", FORWARDS)
def test_reset_modes_give_different_gradients(forward, rng):
    """The three reset modes are three different gradients here, so agreement in each is not vacuous."""
    base = make_spec("7-3", "sigmoid", "full", forward)
    x, target, params = make_case(base, T=12, B=2, rng=rng)
    grads = {mode: torch_grad({**base, "reset_grad": mode}, x, target, params)["grad/layers.0.weight"]
             for mode in RESET_GRADS}
    for a, b in itertools.combinations(RESET_GRADS, 2):
        assert relative_error(grads[a], grads[b]) > 1e-3, (a, b)


# ----------------------------------------------------------------------------- property test

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=dense_cases())
def test_grad_matches_torch_property(case):
    spec, T, B, gain, seed = case
    x, target, params = make_case(spec, T, B, np.random.default_rng(seed), gain=gain)
    ours = refsnn.grad(spec, x, target, params, adjoints=True)
    theirs = torch_adjoints(spec, x, target, params)
    n = len(refsnn.parse_spec(spec).layers)
    theta = spec["neuron"]["theta"]
    if spec["forward"] == "hard":
        # a membrane within rounding of theta may spike in one implementation only: not a bug
        assume(all(np.min(np.abs(ours[f"U/{i}"] - theta)) > 1e-9 * max(1.0, theta) for i in range(n)))
        for i in range(n):
            np.testing.assert_array_equal(ours[f"S/{i}"], theirs[f"S/{i}"])
        spiking = sum(bool(ours[f"S/{i}"].any()) for i in range(n))
        event("hard: spikes in every layer" if spiking == n else
              "hard: spikes in some layers" if spiking else "hard: no spikes")
    keys = grad_keys(spec) + [f"{k}/{i}" for i in range(n) for k in ("U", "S", "dL_dU")]
    # the size of the terms each parameter gradient sums (a_in is x for layer 0, a trace <= 1 after)
    floors = {f"grad/layers.{i}.{p}": float(np.max(np.abs(ours[f"dL_dU/{i}"])))
              * (max(1.0, float(np.max(np.abs(x)))) if p == "weight" else 1.0)
              for i in range(n) for p in ("weight", "bias")}
    assert_agree(ours, theirs, keys, context=str(spec), floors=floors)


# ----------------------------------------------------------------------------- sigmoid tails

def sigmoid_derivative(z, T):
    """d/dx sigmoid(x / T) at x = z T, in the form that is accurate for any z (Python floats)."""
    e = math.exp(-abs(z))
    return e / (1.0 + e) ** 2 / T


@pytest.mark.parametrize("z", [-200.0, -30.0, -12.0, 12.0, 30.0, 200.0])
def test_torch_sigmoid_is_accurate_in_the_tails(z):
    """The reference itself: both the hard Function's backward and autograd through the relaxed
    sigmoid give sigma'(x) to a few ulps, relatively, far out in both tails."""
    T = 0.0625
    exact = sigmoid_derivative(z, T)
    for compute in (lambda x: SPIKE_FUNCTIONS["sigmoid"].apply(x, T), lambda x: RELAXED["sigmoid"](x, T)):
        x = torch.tensor([z * T], dtype=torch.float64, requires_grad=True)
        compute(x).sum().backward()
        assert x.grad.item() == pytest.approx(exact, rel=1e-14)


@pytest.mark.parametrize("forward", FORWARDS)
def test_sigmoid_tail_regression(forward):
    """One neuron driven 2 = 32 T above threshold at t = 1: the whole gradient is a tail value
    (a regression: refsnn once computed sigma' as s (1 - s) / T, which cancels there)."""
    spec = make_spec("1", ("sigmoid", 0.0625), "full", forward, input_shape=(1,))
    x, target = np.ones((1, 1, 1)), np.zeros((1, 1, 1))
    params = {"layers.0.weight": np.array([[3.0]]), "layers.0.bias": np.array([0.0])}
    ours, theirs = refsnn.grad(spec, x, target, params), torch_grad(spec, x, target, params)
    # torch is right here (by hand: dL/db = dL/dS_1 sigma'(2), dL/dS_1 = f(S)_1 / tau_s = S_1 / 4)
    S_1 = 1.0 if forward == "hard" else 1.0 / (1.0 + math.exp(-32.0))
    assert theirs["grad/layers.0.bias"][0] == pytest.approx(S_1 / 4.0 * sigmoid_derivative(32.0, 0.0625),
                                                            rel=1e-13)
    assert_agree(ours, theirs, grad_keys(spec), context=str(spec))


# ----------------------------------------------------------------------------- the reference by hand

@pytest.mark.parametrize("reset_grad", RESET_GRADS)
def test_torch_reference_by_hand(reset_grad):
    """torch_grad on one neuron over two steps, against the chain rule written out by hand.

    tau_m = 2 (beta = 1/2), tau_s = loss tau = 2, theta = 1, w = 1.2, b = 0, x = (1, 1), d = 0:
    U_1 = 1.2, S_1 = 1; U_2 = beta U_1 (1 - S_1) + w = 1.2, S_2 = 1.
    f_1 = S_1 / 2 = 1/2, f_2 = f_1 / 2 + S_2 / 2 = 3/4, L = (f_1^2 + f_2^2) / 2 = 13/32.
    dL/dS_2 = f_2 / 2 = 3/8; dL/dS_1 through the trace = f_1 / 2 + f_2 / 4 = 7/16.
    dL/dU_2 = 3/8 s', s' = sigma'(0.2); dL/dU_1 = 7/16 s' + dL/dU_2 * c with c = dU_2/dU_1 =
    beta (1 - S_1) - beta U_1 s' = -0.6 s' ("full"), beta (1 - S_1) = 0 ("detached"),
    beta = 1/2 ("ignored"). dL/dw = dL/db = dL/dU_1 + dL/dU_2 (x = 1 at both steps).
    """
    T = 0.3
    spec = make_spec("1", ("sigmoid", T), reset_grad, "hard", input_shape=(1,), tau_m=2.0)
    params = {"layers.0.weight": np.array([[1.2]]), "layers.0.bias": np.array([0.0])}
    result = torch_adjoints(spec, np.ones((2, 1, 1)), np.zeros((2, 1, 1)), params)
    s_prime = sigmoid_derivative(0.2 / T, T)
    dL_dU_2 = 3.0 / 8.0 * s_prime
    carry = {"full": -0.6 * s_prime, "detached": 0.0, "ignored": 0.5}[reset_grad]
    dL_dU_1 = 7.0 / 16.0 * s_prime + dL_dU_2 * carry
    np.testing.assert_allclose(result["U/0"].ravel(), [1.2, 1.2], rtol=1e-15)
    np.testing.assert_array_equal(result["S/0"].ravel(), [1.0, 1.0])
    assert result["loss"] == pytest.approx(13.0 / 32.0, rel=1e-15)
    np.testing.assert_allclose(result["dL_dU/0"].ravel(), [dL_dU_1, dL_dU_2], rtol=1e-14)
    for key in ("grad/layers.0.weight", "grad/layers.0.bias"):
        assert result[key].ravel()[0] == pytest.approx(dL_dU_1 + dL_dU_2, rel=1e-14)
