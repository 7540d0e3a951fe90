"""Each surrogate's grad is the exact derivative of its relaxed form; spike is the strict H."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from refsnn import RefsnnError, make_surrogate
from refsnn.surrogates import SURROGATES

PARAMS = {"sigmoid": "T", "fast_sigmoid": "slope", "superspike": "slope", "atan": "alpha",
          "triangle": "alpha", "rectangle": "width", "exponential": "alpha"}
# kinks of relaxed' (where a central difference straddles a jump of grad): keep x away from them
# (grad is not differentiable at 0 for |x|-based forms, and jumps at the rectangle's edge)
KINKS = {"triangle": lambda p: [0.0, 1.0 / p], "rectangle": lambda p: [p / 2.0],
         "exponential": lambda p: [0.0], "fast_sigmoid": lambda p: [0.0],
         "superspike": lambda p: [0.0]}


def surrogates():
    return st.sampled_from(sorted(PARAMS)).flatmap(
        lambda name: st.floats(0.05, 20.0).map(lambda p: make_surrogate({"name": name, PARAMS[name]: p})))


@given(surrogate=surrogates(), x=st.floats(-5.0, 5.0))
def test_grad_is_derivative_of_relaxed(surrogate, x):
    h = 1e-6
    for kink in KINKS.get(surrogate.name, lambda p: [])(getattr(surrogate, PARAMS[surrogate.name])):
        if abs(abs(x) - kink) < 10 * h:
            x = x + 20 * h
    numeric = (surrogate.relaxed(np.array(x + h)) - surrogate.relaxed(np.array(x - h))) / (2 * h)
    analytic = surrogate.grad(np.array(x))
    scale = max(1.0, float(np.max(surrogate.grad(np.linspace(-5, 5, 1001)))))
    assert abs(analytic - numeric) <= 1e-7 * scale, (surrogate, x, analytic, numeric)


@given(surrogate=surrogates())
def test_relaxed_is_monotone_and_centred(surrogate):
    x = np.linspace(-10, 10, 2001)
    y = surrogate.relaxed(x)
    assert np.all(np.diff(y) >= 0)
    assert surrogate.relaxed(np.array(0.0)) == pytest.approx(0.5, abs=1e-15)
    assert np.all(surrogate.grad(x) >= 0)


@given(surrogate=surrogates(), dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**32 - 1))
def test_grad_inplace_is_grad_bit_for_bit(surrogate, dtype, seed):
    x = (np.random.default_rng(seed).standard_normal((3, 50)) * 3).astype(dtype)
    x[0, :3] = [0.0, 1e-300, -700.0]
    expected = surrogate.grad(x)
    work = x.copy()
    result = surrogate.grad_inplace(work, np.full_like(x, np.nan))
    assert result is work and result.dtype == dtype
    np.testing.assert_array_equal(result, expected)


def test_sigmoid_grad_keeps_relative_accuracy_in_the_tails():
    # e / (T (1 + e)^2) with e = exp(-|x|/T) against the textbook sigma (1 - sigma) / T in
    # extended precision: no cancellation far from threshold, none near it
    x = np.array([-60.0, -5.0, -0.3, -1e-9, 0.0, 2e-9, 0.4, 7.0, 90.0])
    z = np.longdouble(x) / np.longdouble(0.25)
    sigma = 1 / (1 + np.exp(-z))
    exact = (sigma * (1 / (1 + np.exp(z)))) / np.longdouble(0.25)   # sigma(z) sigma(-z) / T
    ours = make_surrogate({"name": "sigmoid", "T": 0.25}).grad(x)
    np.testing.assert_allclose(ours, exact.astype(np.float64), rtol=4e-16, atol=0)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_spike_is_strict_heaviside(name):
    s = make_surrogate({"name": name})
    np.testing.assert_array_equal(s.spike(np.array([-1.0, -1e-300, 0.0, 1e-300, 2.0])), [0, 0, 0, 1, 1])


def test_sigmoid_matches_paper_eq_9_10():
    s = make_surrogate({"name": "sigmoid", "T": 0.3})
    x = np.array([-0.7, 0.0, 0.2, 1.5])
    sigma = 1.0 / (1.0 + np.exp(-x / 0.3))
    np.testing.assert_allclose(s.relaxed(x), sigma, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(s.grad(x), sigma * (1 - sigma) / 0.3, rtol=1e-12)
    assert s.relaxed(np.array(-1e4)) == 0.0 and s.relaxed(np.array(1e4)) == 1.0   # no overflow


def test_known_values():
    assert make_surrogate({"name": "fast_sigmoid", "slope": 25}).grad(np.array(0.1)) == pytest.approx(1 / 3.5 ** 2)
    assert make_surrogate({"name": "atan", "alpha": 2}).grad(np.array(0.0)) == pytest.approx(1.0)
    assert make_surrogate({"name": "triangle", "alpha": 2}).grad(np.array(0.25)) == pytest.approx(1.0)
    assert make_surrogate({"name": "rectangle", "width": 0.5}).grad(np.array([0.2, 0.3])).tolist() == [2.0, 0.0]
    assert make_surrogate({"name": "exponential", "alpha": 2}).grad(np.array(0.5)) == pytest.approx(np.exp(-1))


@pytest.mark.parametrize("spec, match", [
    ({"name": "gauss"}, "surrogate.name must be one of"),
    ({"name": "sigmoid", "T": 0}, r"surrogate.T must be > 0"),
    ({"name": "sigmoid", "T": float("nan")}, "surrogate.T must be finite"),
    ({"name": "sigmoid", "slope": 3}, "unknown"),
    ({"T": 0.3}, "must be a dict with a 'name'"),
    ({"name": "atan", "alpha": "2"}, "surrogate.alpha must be a finite number"),
])
def test_bad_surrogate_specs(spec, match):
    with pytest.raises(RefsnnError, match=match):
        make_surrogate(spec)


def test_all_names_registered():
    assert set(PARAMS) == set(SURROGATES)
