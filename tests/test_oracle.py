"""The oracle interface: refsnn.grad, the CLI, the file formats, and bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import refsnn
from refsnn.cli import main

SPEC = {"input_shape": [5], "architecture": "4-2", "neuron": {"tau_m": 6, "tau_s": 2, "theta": 1},
        "surrogate": {"name": "sigmoid", "T": 0.3}, "reset_grad": "full", "forward": "hard",
        "loss": {"name": "van_rossum", "tau": 2}}


@pytest.fixture
def files(tmp_path, rng):
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(SPEC))
    x = (rng.random((10, 3, 5)) < 0.3).astype(float)
    target = (rng.random((10, 3, 2)) < 0.2).astype(float)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=x, target=target)
    return tmp_path, spec_path, inputs, x, target


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "refsnn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_grad_keys_and_shapes(rng):
    x = rng.random((7, 2, 5))
    out = refsnn.grad(SPEC, x, np.zeros((7, 2, 2)), adjoints=True)
    assert out["loss"].shape == () and out["loss"].dtype == np.float64
    assert out["grad/layers.0.weight"].shape == (4, 5) and out["grad/layers.1.bias"].shape == (2,)
    assert out["layers.0.weight"].shape == (4, 5)         # parameters initialised from the seed
    for i, n in ((0, 4), (1, 2)):
        for key in ("U", "S", "dL_dS", "dL_dU", "dL_dU_spatial", "dL_dU_leak", "dL_dU_reset"):
            assert out[f"{key}/{i}"].shape == (7, 2, n), key
    assert out["output_error"].shape == (7, 2, 2)


def test_seed_determines_parameters(rng):
    x, target = rng.random((4, 1, 5)), np.zeros((4, 1, 2))
    a, b, c = (refsnn.grad(SPEC, x, target, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a["layers.0.weight"], b["layers.0.weight"])
    assert not np.array_equal(a["layers.0.weight"], c["layers.0.weight"])
    bound = 1 / np.sqrt(5)
    assert np.abs(a["layers.0.weight"]).max() <= bound       # torch nn.Linear's U(-1/sqrt(in), 1/sqrt(in))


def test_multidimensional_input_is_flattened_in_c_order(rng):
    spec = {**SPEC, "input_shape": [2, 3], "architecture": "2"}
    x = rng.random((5, 2, 2, 3))
    params = {"layers.0.weight": rng.standard_normal((2, 6)), "layers.0.bias": np.zeros(2)}
    flat = refsnn.grad({**spec, "input_shape": [6]}, x.reshape(5, 2, 6), np.zeros((5, 2, 2)), params)
    shaped = refsnn.grad(spec, x, np.zeros((5, 2, 2)), params)
    np.testing.assert_array_equal(flat["grad/layers.0.weight"], shaped["grad/layers.0.weight"])


def test_cli_writes_what_grad_returns(files):
    tmp, spec, inputs, x, target = files
    proc = run_cli("grad", spec, inputs, "--seed", 5, "--adjoints", "--out", tmp / "out.npz")
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp / "out.npz") as out:
        expected = refsnn.grad(SPEC, x, target, seed=5, adjoints=True)
        assert sorted(out.files) == sorted(expected)
        for key in expected:
            np.testing.assert_array_equal(out[key], expected[key])
    # the parameters written out reproduce the result through --params
    with np.load(tmp / "out.npz") as out:
        np.savez(tmp / "params.npz", **{k: out[k] for k in out.files if k.startswith("layers.")})
    assert main(["grad", str(spec), str(inputs), "--params", str(tmp / "params.npz"), "--out", str(tmp / "o2.npz")]) == 0
    with np.load(tmp / "o2.npz") as again:
        np.testing.assert_array_equal(again["grad/layers.0.weight"], expected["grad/layers.0.weight"])


# ----------------------------------------------------------------------------- bad input

def bad(**changes):
    spec = json.loads(json.dumps(SPEC))
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            spec[outer][inner] = value
        else:
            spec[key] = value
    return spec


@pytest.mark.parametrize("spec, match", [
    (bad(**{"neuron.tau_m": 0.5}), r"spec.neuron.tau_m must be >= 1, got 0.5"),
    (bad(**{"neuron.tau_s": 0.2}), r"spec.neuron.tau_s must be >= 1, got 0.2"),
    (bad(**{"neuron.theta": float("nan")}), r"spec.neuron.theta must be finite"),
    (bad(**{"surrogate.name": "gauss"}), r"surrogate.name must be one of .* got 'gauss'"),
    (bad(reset_grad="half"), r"spec.reset_grad must be one of 'full', 'detached', 'ignored', got 'half'"),
    (bad(forward="soft"), r"spec.forward must be one of 'hard', 'smooth', got 'soft'"),
    (bad(architecture="15X5-10"), r"architecture token '15X5' .* expected N"),
    (bad(architecture="300--10"), r"architecture token ''"),
    (bad(input_shape=[0]), r"spec.input_shape must be a non-empty list of positive integers"),
    (bad(**{"loss.name": "mse"}), r"spec.loss.name must be one of 'van_rossum', .*got 'mse'"),
    (bad(**{"loss.tau": 0}), r"spec.loss.tau must be >= 1"),
    (bad(colour="red"), r"spec has unknown key\(s\) \['colour'\]"),
])
def test_bad_spec_is_a_clear_error(rng, spec, match):
    with pytest.raises(refsnn.SpecError if "token" in match or "unknown key" in match or "input_shape" in match
                       else refsnn.RefsnnError, match=match):
        refsnn.grad(spec, rng.random((3, 1, 5)), np.zeros((3, 1, 2)))


@pytest.mark.parametrize("x_shape, t_shape, match", [
    ((3, 1, 6), (3, 1, 2), r"x must have shape \(T, B, 5\), got \(3, 1, 6\)"),
    ((3, 5), (3, 1, 2), r"x must have shape \(T, B, 5\), got \(3, 5\)"),
    ((0, 1, 5), (0, 1, 2), r"T >= 1"),
    ((3, 1, 5), (3, 1, 3), r"target must have shape \(T=3, B=1, n_out=2\), got \(3, 1, 3\)"),
    ((3, 1, 5), (4, 1, 2), r"target must have shape"),
])
def test_bad_shapes(x_shape, t_shape, match):
    with pytest.raises(refsnn.RefsnnError, match=match):
        refsnn.grad(SPEC, np.zeros(x_shape), np.zeros(t_shape))


def test_nan_and_inf_are_refused(rng):
    x = rng.random((3, 1, 5))
    x[1, 0, 2] = np.nan
    with pytest.raises(refsnn.RefsnnError, match=r"x must be finite, got nan at index \(1, 0, 2\)"):
        refsnn.grad(SPEC, x, np.zeros((3, 1, 2)))
    params = refsnn.init_params(refsnn.parse_spec(SPEC))
    params["layers.1.bias"][0] = np.inf
    with pytest.raises(refsnn.RefsnnError, match=r"params\['layers.1.bias'\] must be finite"):
        refsnn.grad(SPEC, rng.random((3, 1, 5)), np.zeros((3, 1, 2)), params)


def test_bad_params(rng):
    params = refsnn.init_params(refsnn.parse_spec(SPEC))
    x, target = rng.random((3, 1, 5)), np.zeros((3, 1, 2))
    with pytest.raises(refsnn.RefsnnError, match=r"params\['layers.0.weight'\] must have shape \(4, 5\), got \(5, 4\)"):
        refsnn.grad(SPEC, x, target, {**params, "layers.0.weight": params["layers.0.weight"].T})
    with pytest.raises(refsnn.RefsnnError, match=r"params is missing \['layers.1.bias'\]"):
        refsnn.grad(SPEC, x, target, {k: v for k, v in params.items() if k != "layers.1.bias"})
    with pytest.raises(refsnn.RefsnnError, match=r"unexpected key\(s\) \['layers.2.weight'\]"):
        refsnn.grad(SPEC, x, target, {**params, "layers.2.weight": np.zeros((1, 2))})
    with pytest.raises(refsnn.RefsnnError, match=r"seed must be a non-negative integer, got -1"):
        refsnn.grad(SPEC, x, target, seed=-1)


def cli_error(proc, match):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert match in lines[0], lines[0]


def test_cli_bad_input_prints_one_line_and_exits_2(files, rng):
    tmp, spec, inputs, x, target = files
    out = tmp / "out.npz"
    (tmp / "broken.json").write_text('{"input_shape": [5], "architecture": ')
    cli_error(run_cli("grad", tmp / "broken.json", inputs, "--out", out), "is not valid JSON")
    cli_error(run_cli("grad", tmp / "missing.json", inputs, "--out", out), "SPEC.json: cannot read")
    np.savez(tmp / "no_target.npz", x=x)
    cli_error(run_cli("grad", spec, tmp / "no_target.npz", "--out", out), "missing the array(s) ['target']")
    np.savez(tmp / "pickled.npz", x=np.array([object()], dtype=object), target=target)
    cli_error(run_cli("grad", spec, tmp / "pickled.npz", "--out", out), "needs pickle")
    (tmp / "junk.npz").write_bytes(b"not a zip")
    cli_error(run_cli("grad", spec, tmp / "junk.npz", "--out", out), "cannot read")
    np.savez(tmp / "nan.npz", x=np.full((2, 1, 5), np.nan), target=np.zeros((2, 1, 2)))
    cli_error(run_cli("grad", spec, tmp / "nan.npz", "--out", out), "x must be finite")
    cli_error(run_cli("grad", spec, inputs), "--out")
    cli_error(run_cli("grad", spec, inputs, "--seed", "-3", "--out", out), "non-negative integer")
    cli_error(run_cli("fly"), "invalid choice")
    cli_error(run_cli("grad", spec, inputs, "--out", tmp / "nowhere" / "out.npz"), "does not exist")
    assert not out.exists()


def test_output_is_atomic(files, monkeypatch):
    tmp, spec, inputs, x, target = files
    out = tmp / "out.npz"
    out.write_bytes(b"previous result")

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(RuntimeError):
        main(["grad", str(spec), str(inputs), "--out", str(out)])
    assert out.read_bytes() == b"previous result"                 # untouched
    assert sorted(p.name for p in tmp.iterdir()) == ["inputs.npz", "out.npz", "spec.json"]  # no temp left


def test_console_script_and_module_agree(files):
    tmp, spec, inputs, *_ = files
    proc = run_cli("grad", spec, inputs, "--out", tmp / "a.npz")
    assert proc.returncode == 0 and proc.stdout.startswith("loss ")
    assert main(["grad", str(spec), str(inputs), "--out", str(tmp / "b.npz")]) == 0
    with np.load(tmp / "a.npz") as a, np.load(tmp / "b.npz") as b:
        np.testing.assert_array_equal(a["grad/layers.0.weight"], b["grad/layers.0.weight"])
