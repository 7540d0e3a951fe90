"""Whole CNNs: architecture notation, presets, and BPTT against finite differences (smooth forward)."""

import numpy as np
import pytest

import refsnn
from refsnn.gradcheck import check_spec, gradcheck
from refsnn.network import PRESETS, Conv, Dense, Pool
from refsnn.oracle import loss_function

RTOL = 1e-6


def cnn_problem(rng, arch, input_shape, T=6, B=2, scale=2.5, loss=None, **extra):
    spec = {"input_shape": input_shape, "architecture": arch, "n_out": 3, "forward": "smooth",
            "neuron": {"tau_m": 4.0, "tau_s": 2.0, "theta": 0.3}, "surrogate": {"name": "sigmoid", "T": 0.4},
            **extra}
    if loss:
        spec["loss"] = loss
    x = (rng.random((T, B, *input_shape)) < 0.5).astype(float)
    parsed = refsnn.parse_spec(spec)
    if parsed.loss.name == "van_rossum":
        target = (rng.random((T, B, 3)) < 0.3).astype(float)
    else:
        target = rng.integers(0, 3, size=B)
    params = {k: scale * v for k, v in refsnn.init_params(parsed, 11).items()}
    return spec, x, target, params


def test_architecture_notation():
    spec = refsnn.parse_spec({"preset": "mnist"})
    assert spec.layers == (Conv(15, 5), Pool(2), Conv(40, 5), Pool(2), Dense(300), Dense(10))
    assert spec.shapes() == [(1, 28, 28), (15, 24, 24), (15, 12, 12), (40, 8, 8), (40, 4, 4), (300,), (10,)]
    assert spec.param_shapes() == {"layers.0.weight": (15, 1, 5, 5), "layers.0.bias": (15,),
                                   "layers.1.weight": (40, 15, 5, 5), "layers.1.bias": (40,),
                                   "layers.2.weight": (300, 640), "layers.2.bias": (300,),
                                   "layers.3.weight": (10, 300), "layers.3.bias": (10,)}
    # no padding unless asked: 32 -> 30 -> 28 -> P2 14 -> 12 -> P2 6 -> 4 -> 2
    assert refsnn.parse_spec({"preset": "cifar10"}).shapes()[-4:] == [(256, 2, 2), (1024,), (1024,), (10,)]
    assert refsnn.parse_spec({"preset": "cifar10", "padding": 1}).shapes()[-4:] == [(256, 8, 8), (1024,), (1024,), (10,)]
    assert refsnn.parse_spec({"preset": "nmnist"}).shapes()[-2:] == [(64, 5, 5), (10,)]
    assert set(PRESETS) == {"nmnist", "mnist", "cifar10"}


@pytest.mark.parametrize("spec, match", [
    ({"input_shape": [50], "architecture": "15C5"}, r"'15C5' \(position 0\) needs a \(C, H, W\) input"),
    ({"input_shape": [1, 4, 4], "architecture": "3C5"}, r"kernel 5 does not fit the 4x4 input"),
    ({"input_shape": [1, 8, 8], "architecture": "3C3-P2"}, r"ends with pooling: give spec.n_out"),
    ({"input_shape": [1, 8, 8], "architecture": "3C3-P9", "n_out": 2}, r"window 9 does not fit"),
    ({"input_shape": [1, 8, 8], "architecture": "3C3", "pooling": "median"}, r"spec.pooling must be one of"),
    ({"input_shape": [1, 8, 8], "architecture": "3C3", "padding": -1}, r"spec.padding must be an integer >= 0"),
    ({"preset": "imagenet"}, r"spec.preset must be one of 'nmnist', 'mnist', 'cifar10'"),
])
def test_bad_cnn_specs(spec, match):
    with pytest.raises(refsnn.RefsnnError, match=match):
        refsnn.parse_spec(spec)


CNNS = [
    ("2C3-P2", [1, 6, 6], {}),
    ("3C3-P2-4", [2, 7, 7], {"pooling": "max"}),
    ("2C3-3C2", [1, 6, 6], {"pooling": "sum", "padding": 1}),
    ("P2-2C3", [1, 8, 8], {}),
    ("2C3-P2", [1, 9, 9], {"pooling": "sum", "pool_weight": 1.1, "stride": 2}),
]


@pytest.mark.parametrize("arch, shape, extra", CNNS)
def test_cnn_bptt_equals_finite_differences(rng, arch, shape, extra):
    spec, x, target, params = cnn_problem(rng, arch, shape, **extra)
    report = check_spec(spec, x, target, params, mode="full", rtol=RTOL)
    assert report.ok and len(report.params) == len(params)


@pytest.mark.parametrize("mode", ["detached", "ignored"])
def test_cnn_without_the_reset_term_fails(rng, mode):
    spec, x, target, params = cnn_problem(rng, "2C3-P2", [1, 6, 6], reset_grad=mode)
    report = check_spec(spec, x, target, params, mode="full", raise_on_failure=False)
    assert report.max_rel_error > 1e-2, report


@pytest.mark.parametrize("loss", [{"name": "count_mse", "true_rate": 0.8, "false_rate": 0.1},
                                  {"name": "rate_ce"},
                                  {"name": "van_rossum_class", "true_period": 2, "false_period": 5}])
def test_classification_losses_equal_finite_differences(rng, loss):
    spec, x, target, params = cnn_problem(rng, "2C3-P2", [1, 6, 6], loss=loss)
    assert check_spec(spec, x, target, params, mode="full", rtol=RTOL).ok


def test_classification_loss_values_by_hand():
    S = np.zeros((4, 2, 3))
    S[:, 0, 1] = 1                                   # sample 0 fires 4 times on neuron 1
    S[:2, 1, 2] = 1                                  # sample 1 fires twice on neuron 2
    labels = np.array([1, 0])
    mse = refsnn.losses.CountMSE(true_rate=0.5, false_rate=0.0)
    # targets: counts 2 on the label; c - c*: sample 0 (0, 2, 0), sample 1 (-2, 0, 2) -> (4 + 8)/2/2 = 3
    assert mse.forward(S, labels)[0] == pytest.approx(3.0)
    ce = refsnn.losses.RateCE()
    z0, z1 = np.array([0.0, 4.0, 0.0]), np.array([0.0, 0.0, 2.0])
    expected = (np.log(np.exp(z0).sum()) - 4.0 + np.log(np.exp(z1).sum()) - 0.0) / 2
    assert ce.forward(S, labels)[0] == pytest.approx(expected)
    pattern = refsnn.losses.VanRossumClass(true_period=2, false_period=0).pattern(4, labels, 3)
    assert pattern[:, 0, 1].tolist() == [0, 1, 0, 1] and pattern[:, 1, 0].tolist() == [0, 1, 0, 1]
    assert pattern[:, 0, [0, 2]].sum() == 0


def test_labels_are_checked(rng):
    spec, x, _, params = cnn_problem(rng, "2C3-P2", [1, 6, 6], loss={"name": "rate_ce"})
    with pytest.raises(refsnn.RefsnnError, match=r"target labels must lie in \[0, 3\), got values in \[0, 3\]"):
        refsnn.grad(spec, x, np.array([0, 3]), params)
    with pytest.raises(refsnn.RefsnnError, match=r"shape \(B=2,\)"):
        refsnn.grad(spec, x, np.zeros((6, 2, 3)), params)


def test_preset_runs_through_the_oracle_with_random_direction_check(rng):
    spec = {"preset": "nmnist", "forward": "smooth", "surrogate": {"name": "sigmoid", "T": 0.5},
            "neuron": {"tau_m": 4, "tau_s": 2, "theta": 0.2}}
    x = (rng.random((2, 1, 2, 34, 34)) < 0.3).astype(float)
    target = (rng.random((2, 1, 10)) < 0.5).astype(float)
    result = refsnn.grad(spec, x, target, seed=1)
    names = [k[5:] for k in result if k.startswith("grad/")]
    assert result["grad/layers.0.weight"].shape == (12, 2, 5, 5)
    report = gradcheck(loss_function(spec, x, target), {n: result[n] for n in names},
                       {n: result["grad/" + n] for n in names}, mode="random", n_directions=1)
    assert report.ok
