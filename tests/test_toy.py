"""The single-neuron experiment (refsnn.toy) and the sweep layer under it (refsnn.sweep).

Fast by construction: the end-to-end CLI test runs ``--quick``; the others use a tiny config
(few iterations, two repeats) through ``toy.reproduce`` without figures.
"""

import json
import sys

import numpy as np
import pytest

import refsnn
from refsnn import sweep, toy
from refsnn.cli import main
from refsnn.network import network_backward, network_forward

from conftest import require

TINY = toy.ToyConfig(iterations=12)
TINY_LRS = (0.005, 0.05)


def tiny_run(out, **kwargs):
    kwargs.setdefault("workers", 1)
    return toy.reproduce(out, learning_rates=TINY_LRS, repeats=2, config=TINY, figures=False,
                         progress=False, **kwargs)


def point_files(out):
    return sorted((out / "points").glob("*.json"))


# ----------------------------------------------------------------------------- the command

def test_quick_run_writes_figures_and_results_and_the_loss_falls(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["reproduce", "toy", "--quick", "--out", str(out), "--workers", "2"]) == 0
    for name in ("fig2.png", "fig3.png", "fig2_data.npz", "results.json"):
        assert (out / name).stat().st_size > 0, name
    n_lrs, repeats = len(toy.QUICK_LRS), toy.QUICK_REPEATS
    assert len(point_files(out)) == 2 * n_lrs * repeats

    doc = json.loads((out / "results.json").read_text())
    assert doc["learning_rates"] == list(toy.QUICK_LRS) and doc["repeats"] == repeats
    assert doc["config"] == toy.ToyConfig().to_dict()
    assert doc["spec"]["full"]["input_trace"] is True and doc["trained"] == ["layers.0.weight"]
    iterations = doc["config"]["iterations"]
    for mode in ("full", "detached"):
        for key in ("final_loss_mean", "final_loss_std"):
            assert len(doc[mode][key]) == n_lrs
        for key in ("curves_mean", "curves_std"):
            assert np.shape(doc[mode][key]) == (n_lrs, iterations + 1)
        curves = np.array(doc[mode]["curves_mean"])
        assert np.all(curves[:, -20:].mean(axis=1) < curves[:, 0]), mode     # the loss falls
        assert doc[mode]["final_loss_mean"] == pytest.approx(curves[:, -1].tolist())
    for metric in ("final_loss", "mean_loss"):
        rows = doc["comparison"][metric]
        assert len(rows) == n_lrs
        for row in rows:
            assert row["full_wins"] + row["detached_wins"] + row["ties"] == repeats
            assert {"median_difference", "statistic", "p_value"} <= set(row)
    assert "wilcoxon" in doc["comparison"]["test"]
    fairness = doc["fairness"]
    for mode in ("full", "detached"):
        best = fairness["best_over_grid"][mode]
        assert best["best_lr"] in best["lrs_within_2x"]
    for key in ("norm_ratio_full_over_detached", "cosine"):
        stats = fairness["gradient_at_init"][key]
        assert stats["q25"] <= stats["median"] <= stats["q75"]
    assert -1.0 <= fairness["gradient_at_init"]["cosine"]["max"] <= 1.0
    with np.load(out / "fig2_data.npz") as data:
        assert data["dL_dU"].shape == (iterations, doc["config"]["n_steps"])
        assert data["S"].shape == (iterations + 1, doc["config"]["n_steps"])
        np.testing.assert_allclose(data["dL_dU"], data["dL_dU_spatial"] + data["dL_dU_leak"]
                                   + data["dL_dU_reset"], rtol=1e-12, atol=1e-15)
    printed = capsys.readouterr().out
    assert "Wilcoxon p" in printed and "|g_full|/|g_detached|" in printed


def test_results_are_identical_for_any_number_of_workers(tmp_path):
    one = tiny_run(tmp_path / "one", workers=1)
    two = tiny_run(tmp_path / "two", workers=2)
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    for a, b in zip(point_files(tmp_path / "one"), point_files(tmp_path / "two"), strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()


def test_an_interrupted_run_resumes_from_the_finished_points(tmp_path, monkeypatch):
    out = tmp_path / "toy"
    first = tiny_run(out)
    files = point_files(out)
    files[0].unlink()                                      # a point that never finished
    files[1].write_text(files[1].read_text()[:40])         # a point cut short (not atomic)
    mtimes = {f: f.stat().st_mtime_ns for f in files[2:]}

    calls = []

    def counting_run_point(point):
        calls.append(toy.point_name(point))
        return original(point)

    original = toy.run_point
    monkeypatch.setattr(toy, "run_point", counting_run_point)
    again = tiny_run(out)
    assert sorted(calls) == sorted(f.stem for f in files[:2])
    assert {f: f.stat().st_mtime_ns for f in files[2:]} == mtimes
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)

    calls.clear()                                          # another seed: nothing can be reused
    toy.reproduce(out, learning_rates=TINY_LRS, repeats=2, config=toy.ToyConfig(iterations=12, seed=1),
                  workers=1, figures=False, progress=False)
    assert len(calls) == len(files)


def test_dask_local_cluster_gives_the_same_results(tmp_path):
    distributed = require("dask.distributed")
    reference = tiny_run(tmp_path / "local")
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address=None) as cluster:
        result = tiny_run(tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert json.dumps(result, sort_keys=True) == json.dumps(reference, sort_keys=True)
    assert len(point_files(tmp_path / "dask")) == 2 * len(TINY_LRS) * 2


def test_a_malformed_scheduler_address_is_a_one_line_error(tmp_path, capsys):
    require("dask.distributed")
    assert main(["reproduce", "toy", "--quick", "--out", str(tmp_path / "d"), "--scheduler", "no port"]) == 2
    err = capsys.readouterr().err
    assert "not a scheduler address" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- the model

def test_training_uses_refsnn_bptt_bit_for_bit(rng):
    # The loop feeds a pre-filtered input to a spec with input_trace off: the same arithmetic as
    # the model spec (input_trace true) through the public oracle.
    config = toy.ToyConfig()
    problem = toy.make_problem(config, 7)
    weight = problem.weight + rng.uniform(0, 0.05, size=problem.weight.shape)
    params = {"layers.0.weight": weight, "layers.0.bias": np.zeros(1)}
    for mode in toy.MODES:
        spec, run_spec = toy.compile_spec(config, mode)
        assert spec.input_trace and not run_spec.input_trace
        loss, _, cache = network_forward(run_spec, params, toy.filtered_input(spec, problem.x), problem.target)
        grads = network_backward(run_spec, cache)
        oracle = refsnn.grad(config.spec(mode), problem.x, problem.target, params)
        assert loss == float(oracle["loss"])
        np.testing.assert_array_equal(grads["grad/layers.0.weight"], oracle["grad/layers.0.weight"])


def test_training_one_step_is_gradient_descent_on_the_weights_only():
    config = toy.ToyConfig(iterations=1)
    problem = toy.make_problem(config, 0)
    run = toy.train(config, problem, 0.01, "full")
    params = {"layers.0.weight": problem.weight, "layers.0.bias": np.zeros(1)}
    oracle = refsnn.grad(config.spec("full"), problem.x, problem.target, params)
    np.testing.assert_array_equal(run.weight, problem.weight - 0.01 * oracle["grad/layers.0.weight"])
    assert run.losses[0] == float(oracle["loss"])


def test_a_problem_depends_on_seed_and_repeat_only():
    config = toy.ToyConfig()
    a, b = toy.make_problem(config, 3), toy.make_problem(config, 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.x, toy.make_problem(config, 4).x)
    assert not np.array_equal(a.x, toy.make_problem(toy.ToyConfig(seed=1), 3).x)
    assert a.x.shape == (100, 1, 50) and a.target.shape == (100, 1, 1) and a.weight.shape == (1, 50)
    assert set(np.unique(a.x)) <= {0.0, 1.0} and np.all((0 <= a.weight) & (a.weight < 0.05))


def test_best_over_grid_and_paired_comparison():
    best = toy.best_over_grid([0.001, 0.01, 0.1], [0.5, 0.2, 0.39])
    assert best == {"best_lr": 0.01, "best_final_loss_mean": 0.2, "best_at_grid_edge": False,
                    "lrs_within_2x": [0.01, 0.1],
                    "n_lrs_within_2x": 2}
    same = toy.paired_comparison(np.ones(4), np.ones(4))
    assert same["ties"] == 4 and same["p_value"] is None
    row = toy.paired_comparison(np.array([0.0, 1.0, 2.0, 0.5]), np.array([1.0, 1.0, 3.0, 2.0]))
    assert (row["full_wins"], row["detached_wins"], row["ties"]) == (3, 0, 1)
    assert row["median_difference"] == -1.0 and 0 < row["p_value"] <= 1


# ----------------------------------------------------------------------------- the sweep layer

def square(point):
    return {"value": point["x"] ** 2}


def test_sweep_returns_results_in_point_order_and_reuses_files(tmp_path, monkeypatch):
    points = [{"x": x} for x in (3, 1, 2)]
    assert sweep.run_sweep(square, points, tmp_path, workers=1) == [{"value": 9}, {"value": 1}, {"value": 4}]
    assert len(list(tmp_path.glob("*.json"))) == 3

    def must_not_run(point):
        raise AssertionError(f"recomputed {point}")

    assert sweep.run_sweep(must_not_run, points, tmp_path, workers=1) == [{"value": 9}, {"value": 1}, {"value": 4}]
    with pytest.raises(ValueError, match="same file name"):
        sweep.run_sweep(square, points, tmp_path, name=lambda p: "same", workers=1)


def test_sweep_refuses_more_local_processes_than_it_allows(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 3)
    assert sweep.max_workers() == 3 * sweep.MAX_WORKERS_PER_CPU
    with pytest.raises(refsnn.RefsnnError, match=r"workers must be at most 12 \(4 per CPU; use a Dask scheduler for more\), got 13"):
        sweep.run_sweep(square, [{"x": 1}], tmp_path / "out", workers=13)
    assert not (tmp_path / "out").exists()                       # refused before anything is written
    assert sweep.run_sweep(square, [{"x": 1}], tmp_path / "out", workers=12) == [{"value": 1}]
    assert sweep.check_workers(13, local=False) == 13            # a Dask cluster is not bounded by this CPU
    for bad in (0, True, 2.0, "2"):
        with pytest.raises(refsnn.RefsnnError, match="workers must be an integer >= 1"):
            sweep.check_workers(bad, local=False)


# ----------------------------------------------------------------------------- user errors

@pytest.mark.parametrize("args", [
    ["--lrs", "0"], ["--lrs", "0.01", "-1"], ["--lrs", "abc"], ["--lrs", "inf"], ["--repeats", "0"],
    ["--workers", "0"], ["--workers", "two"], ["--workers", str(sweep.max_workers() + 1)],
    ["--workers", "99999999999999999999999"], ["--seed", "-1"], ["--bogus"]])
def test_bad_options_exit_2_with_one_line(args, tmp_path, capsys):
    assert main(["reproduce", "toy", "--out", str(tmp_path / "out"), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("refsnn") and captured.err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["reproduce"], ["reproduce", "nonsense"]])
def test_missing_or_unknown_experiment_exits_2(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_out_that_is_a_file_and_missing_dask_are_one_line_errors(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main(["reproduce", "toy", "--quick", "--out", str(a_file)]) == 2
    assert "not a folder" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "dask.distributed", None)      # import fails as if not installed
    assert main(["reproduce", "toy", "--quick", "--out", str(tmp_path / "d"), "--scheduler", "tcp://x:1"]) == 2
    err = capsys.readouterr().err
    assert "refsnn[dask]" in err and err.count("\n") == 1
