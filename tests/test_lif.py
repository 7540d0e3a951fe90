"""Golden traces small enough to check by hand, and structural properties of the BPTT."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import refsnn
from refsnn.lif import (NeuronParams, lif_backward, lif_forward, trace_backward, trace_forward,
                        trace_lif_backward)
from refsnn.surrogates import Sigmoid


def constant_current(value, T):
    return np.full((T, 1, 1), value)


def test_golden_constant_input_spike_times():
    # beta = 1 - 1/2 = 0.5, I = 0.6, theta = 1:
    # U_1 = 0.6, U_2 = 0.3 + 0.6 = 0.9, U_3 = 0.45 + 0.6 = 1.05 > 1 -> spike, reset to 0:
    # U_4 = 0.6 again, so the neuron spikes at t = 3, 6, 9.
    S, cache = lif_forward(constant_current(0.6, 9), NeuronParams(2.0, 2.0, 1.0), Sigmoid(0.3))
    np.testing.assert_allclose(cache.U[:, 0, 0], [0.6, 0.9, 1.05] * 3, rtol=1e-15)
    np.testing.assert_array_equal(S[:, 0, 0], [0, 0, 1] * 3)
    # eq. (2) with tau_s = 2: a_t = a_{t-1}/2 + S_t/2
    a = trace_forward(S, 2.0)
    np.testing.assert_allclose(a[:, 0, 0], [0, 0, 0.5, 0.25, 0.125, 0.5625, 0.28125, 0.140625, 0.5703125])
    np.testing.assert_array_equal(trace_forward(S[:, 0, 0], 2.0), a[:, 0, 0])        # a single (T,) train
    np.testing.assert_array_equal(trace_backward(S[:, 0, 0], 2.0), trace_backward(S, 2.0)[:, 0, 0])


def test_golden_threshold_is_strict():
    # beta = 0.5, I = 0.5, theta = 0.5: U_1 = 0.5 is not > 0.5 (no spike); U_2 = 0.75 spikes.
    S, cache = lif_forward(constant_current(0.5, 3), NeuronParams(2.0, 2.0, 0.5), Sigmoid(0.3))
    np.testing.assert_allclose(cache.U[:, 0, 0], [0.5, 0.75, 0.5])
    np.testing.assert_array_equal(S[:, 0, 0], [0, 1, 0])


def test_golden_bptt_two_steps_by_hand():
    # T = 2, one neuron, beta = 0.5, theta = 1, sigmoid T = 0.3, dL/dS = (g1, g2) given.
    # dL/dU_2 = g2 s'(U_2);  dL/dU_1 = g1 s'(U_1) + dL/dU_2 * beta * (1 - S_1 - U_1 s'(U_1)).
    U1, U2 = 1.2, 0.4                     # U_1 spikes; U_2 = 0.5*1.2*0 + I_2 with I_2 = 0.4
    S, cache = lif_forward(np.array([U1, U2]).reshape(2, 1, 1), NeuronParams(2.0, 2.0, 1.0), Sigmoid(0.3))
    g = np.array([0.7, -1.3]).reshape(2, 1, 1)
    sp = lambda u: Sigmoid(0.3).grad(np.array(u - 1.0))
    dU2 = -1.3 * sp(U2)
    expected = {"full": 0.7 * sp(U1) + dU2 * 0.5 * (1 - 1 - U1 * sp(U1)),
                "detached": 0.7 * sp(U1) + dU2 * 0.5 * (1 - 1),
                "ignored": 0.7 * sp(U1) + dU2 * 0.5}
    for mode, value in expected.items():
        dU = lif_backward(g, cache, mode)
        np.testing.assert_allclose(dU[:, 0, 0], [value, dU2], rtol=1e-14, err_msg=mode)


def test_trace_backward_is_adjoint_of_trace_forward(rng):
    S, g = rng.standard_normal((2, 17, 3, 4))
    for tau in (1.0, 2.0, 7.5):
        assert np.sum(trace_forward(S, tau) * g) == pytest.approx(np.sum(S * trace_backward(g, tau)), rel=1e-13)


def small_problem(rng, T=12, B=2, arch="5-3", **spec):
    base = {"input_shape": [4], "architecture": arch, "neuron": {"tau_m": 4, "tau_s": 2, "theta": 0.5}}
    base.update(spec)
    x = rng.random((T, B, 4)) * 2
    target = (rng.random((T, B, int(arch.split("-")[-1]))) < 0.3).astype(float)
    params = {k: 2 * v for k, v in refsnn.init_params(refsnn.parse_spec(base), 3).items()}
    return base, x, target, params


@pytest.mark.parametrize("mode", ["full", "detached", "ignored"])
def test_parts_sum_to_total_and_drop_as_documented(rng, mode):
    spec, x, target, params = small_problem(rng, reset_grad=mode)
    out = refsnn.grad(spec, x, target, params, adjoints=True)
    assert out["S/0"].any(), "vacuous: no spikes"
    for i in (0, 1):
        total = out[f"dL_dU_spatial/{i}"] + out[f"dL_dU_leak/{i}"] + out[f"dL_dU_reset/{i}"]
        np.testing.assert_allclose(total, out[f"dL_dU/{i}"], rtol=1e-12, atol=1e-15)
        sigma_prime = Sigmoid(0.3).grad(out[f"U/{i}"] - 0.5)
        np.testing.assert_allclose(out[f"dL_dU_spatial/{i}"], out[f"dL_dS/{i}"] * sigma_prime, rtol=1e-13)
        dU_next = np.concatenate([out[f"dL_dU/{i}"][1:], np.zeros_like(out[f"dL_dU/{i}"][:1])])
        beta = 0.75
        if mode == "ignored":
            np.testing.assert_allclose(out[f"dL_dU_leak/{i}"], beta * dU_next, rtol=1e-13)
        else:
            np.testing.assert_allclose(out[f"dL_dU_leak/{i}"], beta * dU_next * (1 - out[f"S/{i}"]), rtol=1e-13)
        if mode == "full":
            np.testing.assert_allclose(out[f"dL_dU_reset/{i}"], -beta * dU_next * out[f"U/{i}"] * sigma_prime,
                                       rtol=1e-13)
            assert np.abs(out[f"dL_dU_reset/{i}"]).max() > 0
        else:
            assert not out[f"dL_dU_reset/{i}"].any()
    # output error of the van Rossum loss: f(S) - f(d), and dL/dS of the output is its adjoint filter
    np.testing.assert_allclose(out["output_error"], trace_forward(out["S/1"], 2) - trace_forward(target, 2))
    np.testing.assert_allclose(out["dL_dS/1"], trace_backward(out["output_error"], 2))
    assert float(out["loss"]) == pytest.approx(0.5 * np.sum(out["output_error"] ** 2))


@given(seed=st.integers(0, 10_000), T=st.integers(1, 12), B=st.integers(1, 4),
       mode=st.sampled_from(["full", "detached", "ignored"]), forward=st.sampled_from(["hard", "smooth"]),
       tau_s=st.sampled_from([1.0, 2.0, 5.5]))
def test_fast_bptt_equals_the_three_parts_and_the_fused_trace(seed, T, B, mode, forward, tau_s):
    # lif_backward's one-update form == spatial + leak + reset of the term-by-term form, and
    # trace_lif_backward == trace_backward then lif_backward, bit for bit.
    rng = np.random.default_rng(seed)
    current = rng.normal(0.6, 0.8, size=(T, B, 3, 2))
    S, cache = lif_forward(current, NeuronParams(4.0, tau_s, 1.0), Sigmoid(0.3), forward)
    g = rng.standard_normal(current.shape)
    fast = lif_backward(g, cache, mode)
    parts = lif_backward(g, cache, mode, parts=True)
    np.testing.assert_allclose(fast, parts.spatial + parts.leak + parts.reset, rtol=1e-13,
                               atol=1e-15 * np.abs(parts.spatial).max(initial=1.0))
    np.testing.assert_array_equal(trace_lif_backward(g, cache, tau_s, mode),
                                  lif_backward(trace_backward(g, tau_s), cache, mode))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("forward", ["hard", "smooth"])
@pytest.mark.parametrize("mode", ["full", "detached", "ignored"])
def test_gradients_do_not_depend_on_asking_for_adjoints(rng, mode, forward, dtype):
    # adjoints=True takes trace_backward + lif_backward(parts=True), the default the fused loop:
    # a user comparing the two outputs must see the same gradients, bit for bit, in the spec's dtype
    spec, x, target, params = small_problem(rng, arch="5-4-3", reset_grad=mode, forward=forward, dtype=dtype)
    x, target = x.astype(dtype), target.astype(dtype)
    params = {name: value.astype(dtype) for name, value in params.items()}
    plain = refsnn.grad(spec, x, target, params)
    with_adjoints = refsnn.grad(spec, x, target, params, adjoints=True)
    assert with_adjoints["S/0"].any()
    for key, value in plain.items():
        np.testing.assert_array_equal(with_adjoints[key], value, err_msg=key)
    assert {value.dtype for value in with_adjoints.values() if value.ndim} == {np.dtype(dtype)}


@given(T=st.integers(1, 8), tau_m=st.floats(1.0, 20.0), mode=st.sampled_from(["full", "detached", "ignored"]),
       forward=st.sampled_from(["hard", "smooth"]))
def test_modes_agree_when_there_is_no_temporal_path(T, tau_m, mode, forward):
    # T = 1 (no t+1) or tau_m = 1 (beta = 0): the reset term cannot matter.
    rng = np.random.default_rng(T)
    spec, x, target, params = small_problem(rng, T=T, reset_grad=mode, forward=forward)
    spec["neuron"]["tau_m"] = tau_m if T == 1 else 1.0
    ours = refsnn.grad(spec, x, target, params)
    ref = refsnn.grad({**spec, "reset_grad": "full"}, x, target, params)
    for key in ours:
        np.testing.assert_allclose(ours[key], ref[key], rtol=1e-13, atol=0, err_msg=key)


@given(seed=st.integers(0, 10_000), T=st.integers(1, 10), B=st.integers(1, 3),
       mode=st.sampled_from(["full", "detached", "ignored"]))
def test_zero_error_gives_zero_gradient_in_hard_mode(seed, T, B, mode):
    rng = np.random.default_rng(seed)
    spec, x, _, params = small_problem(rng, T=T, B=B, reset_grad=mode)
    S = refsnn.grad(spec, x, np.zeros((T, B, 3)), params, adjoints=True)["S/1"]
    out = refsnn.grad(spec, x, S, params)       # the target is the network's own output
    assert float(out["loss"]) == 0.0
    for key in out:
        if key.startswith("grad/"):
            assert not out[key].any(), key


@given(seed=st.integers(0, 10_000))
def test_loss_is_nonnegative_and_gradients_are_finite(seed):
    rng = np.random.default_rng(seed)
    spec, x, target, params = small_problem(rng)
    out = refsnn.grad(spec, x, target, params)
    assert float(out["loss"]) >= 0
    assert all(np.all(np.isfinite(v)) for v in out.values())


def test_inputs_are_not_modified(rng):
    spec, x, target, params = small_problem(rng)
    copies = [x.copy(), target.copy(), {k: v.copy() for k, v in params.items()}]
    refsnn.grad(spec, x, target, params, adjoints=True)
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(target, copies[1])
    for k in params:
        np.testing.assert_array_equal(params[k], copies[2][k])
