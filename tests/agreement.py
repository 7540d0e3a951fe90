"""What the agreement tests share: the dense networks they draw, and how two results are compared.

Used by tests/test_torch_agreement.py (refsnn against the torch reference), tests/test_torch_cnn.py
and tests/test_cross_validation.py (against JAX and the frameworks).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from refsnn.lif import FORWARDS, RESET_GRADS  # noqa: F401 (the modes the tests draw; re-exported)
from validation.frameworks.common import relative_error

#: each surrogate's parameter name and the value the fixed cases use
SURROGATE_PARAMS = {"sigmoid": ("T", 0.3), "fast_sigmoid": ("slope", 5.0), "atan": ("alpha", 2.0),
                    "triangle": ("alpha", 1.0), "rectangle": ("width", 1.0), "exponential": ("alpha", 2.0)}
#: ranges of each surrogate's parameter for the property tests (x = U - theta is O(theta))
SURROGATE_RANGES = {"sigmoid": (0.05, 1.0), "fast_sigmoid": (0.5, 50.0), "atan": (0.5, 10.0),
                    "triangle": (0.2, 5.0), "rectangle": (0.2, 4.0), "exponential": (0.5, 10.0)}


def make_spec(architecture, surrogate, reset_grad, forward="hard", *, input_shape=(5,), tau_m=6.0,
              tau_s=2.0, theta=1.0, input_trace=False, loss_tau=None):
    """A dense network's spec; surrogate: a name (its SURROGATE_PARAMS value) or (name, value)."""
    name, value = surrogate if isinstance(surrogate, tuple) else (surrogate, SURROGATE_PARAMS[surrogate][1])
    spec = {"input_shape": list(input_shape), "architecture": architecture,
            "neuron": {"tau_m": tau_m, "tau_s": tau_s, "theta": theta},
            "surrogate": {"name": name, SURROGATE_PARAMS[name][0]: value},
            "reset_grad": reset_grad, "forward": forward, "input_trace": input_trace}
    if loss_tau is not None:
        spec["loss"] = {"name": "van_rossum", "tau": loss_tau}
    return spec


@st.composite
def dense_cases(draw, native_points=None):
    """A tiny dense network, its constants and a seed for the arrays (drawn by numpy, not
    Hypothesis, so that no input sits exactly at a threshold or a surrogate's kink by
    construction). native_points: name -> parameter values drawn besides the range."""
    name = draw(st.sampled_from(sorted(SURROGATE_RANGES)), label="surrogate")
    values = st.floats(*SURROGATE_RANGES[name])
    if native_points and name in native_points:
        values = st.one_of(st.sampled_from(native_points[name]), values)
    parameter = draw(values, label=SURROGATE_PARAMS[name][0])
    n_layers = draw(st.integers(1, 3), label="n_layers")
    sizes = draw(st.lists(st.integers(1, 4), min_size=n_layers, max_size=n_layers), label="sizes")
    spec = make_spec("-".join(map(str, sizes)), (name, parameter),
                     draw(st.sampled_from(RESET_GRADS), label="reset_grad"),
                     draw(st.sampled_from(FORWARDS), label="forward"),
                     input_shape=draw(st.lists(st.integers(1, 3), min_size=1, max_size=2), label="input_shape"),
                     tau_m=draw(st.floats(1.0, 20.0), label="tau_m"),
                     tau_s=draw(st.floats(1.0, 10.0), label="tau_s"),
                     theta=draw(st.floats(0.1, 2.0), label="theta"),
                     input_trace=draw(st.booleans(), label="input_trace"),
                     loss_tau=draw(st.one_of(st.none(), st.floats(1.0, 10.0)), label="loss_tau"))
    T = draw(st.integers(1, 12), label="T")
    B = draw(st.integers(1, 3), label="B")
    gain = draw(st.floats(0.3, 3.0), label="gain")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    return spec, T, B, gain, seed


def assert_agree(ours, theirs, keys, rtol, context="", floors=None, dtype=None, other="theirs"):
    """Every key within rtol, relative to the largest |entry| of the pair; a failure names the
    key, the worst index and both values.

    floors (key -> scale) adds a lower bound to an array's scale: a weight gradient
    sum_t dL/dU_t a_in_t^T whose terms cancel is only as exact as the size of its terms, not its
    (possibly tiny) result. dtype: both arrays must have it (else they are compared in float64).
    """
    for key in keys:
        a, b = np.asarray(ours[key]), np.asarray(theirs[key])
        assert a.shape == b.shape, (key, a.shape, b.shape)
        if dtype is not None:
            assert a.dtype == b.dtype == dtype, (key, a.dtype, b.dtype)
        a, b = a.astype(np.float64), b.astype(np.float64)
        err = relative_error(a, b)
        if floors and floors.get(key, 0.0) > 0:
            err = min(err, float(np.max(np.abs(a - b))) / floors[key])
        if err > rtol:
            index = np.unravel_index(np.argmax(np.abs(a - b)), a.shape) if a.ndim else ()
            pytest.fail(f"{context}: {key} differs by {err:.3e} (relative to its max |entry|) at "
                        f"index {index}: refsnn {a[index]!r} vs {other} {b[index]!r}")
