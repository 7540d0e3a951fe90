"""Adam/AdamW (optim.py), the training loop (train.py) and ``refsnn reproduce table2`` (table2.py).

Training tests run a tiny config (a narrow network, a few dozen real MNIST samples, T = 3);
the learning test runs ``--quick`` end to end on the real data and asserts accuracy far above
chance (10 %). Real data only: when ../shared/data is missing these tests fail under CI=true
and skip elsewhere.
"""

import dataclasses
import json

import numpy as np
import pytest

from refsnn import optim, table2
from refsnn.cli import main
from refsnn.errors import RefsnnError
from refsnn.train import (CHECKPOINT, TrainConfig, count_ties, epoch_order, predict, scale_architecture,
                          train)

from conftest import require

TINY = TrainConfig(dataset="mnist", architecture="4C5-P2-8C5-P2", train_size=24, test_size=20, time_steps=3,
                   batch_size=8, epochs=2, eval_batch_size=10, seed=5)


# ----------------------------------------------------------------------------- Adam / AdamW

def test_adam_two_steps_by_hand():
    params = {"w": np.array([1.0, -2.0])}
    state = optim.adam_init(params)
    # step 1, g = (0.5, -0.1): m = 0.1 g, v = 0.001 g^2; corrected m/(1-0.9) = g, v/(1-0.999) = g^2,
    # so the step is lr * g / (|g| + eps) = 0.1 * sign(g) up to eps
    params1, state1 = optim.adam_update(params, {"w": np.array([0.5, -0.1])}, state, lr=0.1)
    assert state1.step == 1
    assert state1.m["w"] == pytest.approx([0.05, -0.01], rel=1e-15)
    assert state1.v["w"] == pytest.approx([0.00025, 0.00001], rel=1e-12)
    assert params1["w"] == pytest.approx([1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 0.1 / (0.1 + 1e-8)], rel=1e-15)
    # step 2, g = (0.3, 0.2): m = (0.9*0.05 + 0.1*0.3, 0.9*-0.01 + 0.1*0.2) = (0.075, 0.011)
    # v = (0.999*0.00025 + 0.001*0.09, 0.999*0.00001 + 0.001*0.04) = (0.00033975, 0.00004999)
    # step = 0.1/(1 - 0.81) * m / (sqrt(v)/sqrt(1 - 0.998001) + 1e-8)
    params2, state2 = optim.adam_update(params1, {"w": np.array([0.3, 0.2])}, state1, lr=0.1)
    assert state2.m["w"] == pytest.approx([0.075, 0.011], rel=1e-14)
    assert state2.v["w"] == pytest.approx([0.00033975, 0.00004999], rel=1e-12)
    expected = [params1["w"][0] - 0.1 / 0.19 * 0.075 / (np.sqrt(0.00033975 / 0.001999) + 1e-8),
                params1["w"][1] - 0.1 / 0.19 * 0.011 / (np.sqrt(0.00004999 / 0.001999) + 1e-8)]
    assert params2["w"] == pytest.approx(expected, rel=1e-12)
    assert params2["w"] == pytest.approx([0.9 - 0.095749, -1.9 - 0.036610], abs=2e-6)   # the numbers, by hand


def test_adamw_decays_the_weight_and_adam_adds_l2_to_the_gradient():
    params = {"w": np.array([2.0])}
    grads = {"w": np.array([0.0])}
    # AdamW with a zero gradient: m = v = 0, only the decay p (1 - lr wd) acts
    decayed, _ = optim.adamw_update(params, grads, optim.adam_init(params), lr=0.1, weight_decay=0.5)
    assert decayed["w"] == pytest.approx([2.0 * (1 - 0.05)], rel=1e-15)
    # Adam: g = 0 + 0.5 * 2 = 1 enters the moments, the first step moves by lr * sign
    l2, state = optim.adam_update(params, grads, optim.adam_init(params), lr=0.1, weight_decay=0.5)
    assert state.m["w"] == pytest.approx([0.1]) and l2["w"] == pytest.approx([2.0 - 0.1 / (1 + 1e-8)])


def test_optimisers_match_torch_over_several_steps(rng):
    torch = require("torch")
    shapes = {"a": (3, 4), "b": (4,)}
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    grads_seq = [{k: rng.normal(size=s) for k, s in shapes.items()} for _ in range(5)]
    for name, update, torch_cls in (("adam", optim.adam_update, torch.optim.Adam),
                                    ("adamw", optim.adamw_update, torch.optim.AdamW)):
        ours, state = dict(params), optim.adam_init(params)
        tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
        opt = torch_cls(list(tensors.values()), lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)
        for grads in grads_seq:
            ours, state = update(ours, grads, state, lr=0.01, beta1=0.9, beta2=0.99, eps=1e-6, weight_decay=0.1)
            for k, tensor in tensors.items():
                tensor.grad = torch.tensor(grads[k], dtype=torch.float64)
            opt.step()
        for k in shapes:
            np.testing.assert_allclose(ours[k], tensors[k].detach().numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name} {k}")


def test_updates_are_pure_and_validated(rng):
    params = {"w": rng.normal(size=3)}
    grads = {"w": rng.normal(size=3)}
    state = optim.adam_init(params)
    before = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in grads.items()}
    new_params, new_state = optim.adamw_update(params, grads, state, lr=0.1)
    assert np.array_equal(params["w"], before[0]["w"]) and np.array_equal(grads["w"], before[1]["w"])
    assert state.step == 0 and not state.m["w"].any() and new_state.step == 1
    assert new_params["w"] is not params["w"] and new_params["w"].dtype == np.float64
    with pytest.raises(RefsnnError, match=r"beta2 must lie in \[0, 1\)"):
        optim.adam_update(params, grads, state, beta2=1.0)
    with pytest.raises(RefsnnError, match="same keys"):
        optim.adam_update(params, {"v": grads["w"]}, state)
    with pytest.raises(RefsnnError, match=r"grads\['w'\] has shape \(2,\)"):
        optim.adam_update(params, {"w": np.zeros(2)}, state)
    with pytest.raises(RefsnnError, match="lr must be >= 0"):
        optim.adam_update(params, grads, state, lr=-1.0)


# ----------------------------------------------------------------------------- small pieces

def test_prediction_is_the_most_spiking_neuron_first_on_ties():
    S = np.zeros((4, 3, 3))
    S[:2, 0, 2] = 1                    # sample 0: neuron 2, two spikes
    S[:, 1, 0] = S[:, 1, 1] = 1        # sample 1: a tie of neurons 0 and 1 -> 0
    # sample 2: silent -> class 0
    assert predict(S).tolist() == [2, 0, 0]
    assert count_ties(S) == (1, 2)


def test_width_scaling_of_architectures():
    paper = "96C3-256C3-P2-384C3-P2-384C3-256C3-1024-1024"
    assert scale_architecture(paper, 0.25) == "24C3-64C3-P2-96C3-P2-96C3-64C3-256-256"
    assert scale_architecture("15C5-P2-40C5-P2-300", 1) == "15C5-P2-40C5-P2-300"
    assert scale_architecture("3C3-P2", 0.1) == "1C3-P2"
    assert TrainConfig(dataset="cifar10", width=0.25).spec().n_out == 10


def test_config_validation_and_round_trip():
    assert TrainConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    with pytest.raises(RefsnnError, match="batch_size must be an integer >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(RefsnnError, match="dataset must be one of"):
        TrainConfig(dataset="svhn")
    with pytest.raises(RefsnnError, match="unknown training option"):
        TrainConfig.from_dict({"epoch": 3})


def test_epoch_orders_depend_on_seed_and_epoch_only():
    indices = np.arange(100, 150)
    first = epoch_order(TINY, indices, 0)
    assert sorted(first.tolist()) == indices.tolist()
    assert np.array_equal(first, epoch_order(TINY, indices, 0))
    assert not np.array_equal(first, epoch_order(TINY, indices, 1))
    assert not np.array_equal(first, epoch_order(dataclasses.replace(TINY, seed=6), indices, 0))


# ----------------------------------------------------------------------------- training

def _same_run(a, b):
    (summary_a, params_a), (summary_b, params_b) = a, b
    assert params_a.keys() == params_b.keys()
    for name in params_a:
        assert np.array_equal(params_a[name], params_b[name]), name
    strip = lambda h: [{k: v for k, v in epoch.items() if k != "elapsed"} for epoch in h]  # noqa: E731
    assert strip(summary_a["history"]) == strip(summary_b["history"])
    assert summary_a["optimizer_steps"] == summary_b["optimizer_steps"]


def test_training_is_deterministic_under_a_seed(data_dir):
    first = train(TINY, data_dir=data_dir, progress=False)
    second = train(TINY, data_dir=data_dir, progress=False)
    _same_run(first, second)
    assert first.summary["finished"] and first.summary["optimizer_steps"] == 2 * 3
    assert len(first.summary["history"]) == 2 and first.summary["n_train"] == 24
    other = train(dataclasses.replace(TINY, seed=6), data_dir=data_dir, progress=False)
    assert not np.array_equal(other.params["layers.0.weight"], first.params["layers.0.weight"])


@pytest.mark.parametrize("stop_after", [2, 3])     # inside epoch 1, and exactly at its end
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(data_dir, tmp_path, stop_after):
    whole = train(TINY, tmp_path / "whole", data_dir=data_dir, progress=False)
    run_dir = tmp_path / "parts"
    part = train(TINY, run_dir, data_dir=data_dir, progress=False, stop_after_steps=stop_after)
    assert not part.summary["finished"] and (run_dir / CHECKPOINT).is_file()
    assert part.summary["optimizer_steps"] == stop_after
    resumed = train(TINY, run_dir, data_dir=data_dir, progress=False)
    assert resumed.summary["finished"] and resumed.summary["resumed"] == 1
    _same_run(whole, resumed)
    # a finished run is not trained again
    again = train(TINY, run_dir, data_dir=data_dir, progress=False)
    _same_run(whole, again)


def test_a_checkpoint_of_another_config_is_refused(data_dir, tmp_path):
    train(TINY, tmp_path, data_dir=data_dir, progress=False, stop_after_steps=1)
    with pytest.raises(RefsnnError, match=r"belongs to another run \(options \['lr'\] differ\)"):
        train(dataclasses.replace(TINY, lr=0.5), tmp_path, data_dir=data_dir, progress=False)


def test_progress_goes_to_the_given_stream(data_dir, capsys):
    import io

    stream = io.StringIO()
    train(dataclasses.replace(TINY, epochs=1), data_dir=data_dir, stream=stream)
    text = stream.getvalue()
    assert "epoch 1/1 [" in text and "3/3" in text and "test accuracy" in text
    assert capsys.readouterr().err == ""


def test_reset_modes_of_a_seed_start_from_the_same_weights(data_dir):
    one_step = dataclasses.replace(TINY, epochs=1, lr=1e-12, weight_decay=0.0)
    full = train(one_step, data_dir=data_dir, progress=False)
    detached = train(dataclasses.replace(one_step, reset_grad="detached"), data_dir=data_dir, progress=False)
    for name in full.params:
        np.testing.assert_allclose(full.params[name], detached.params[name], rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- table2

def test_paired_statistics():
    result = table2.paired_comparison([0.9, 0.8, 0.7], [0.8, 0.8, 0.6])
    assert result["differences"] == pytest.approx([0.1, 0.0, 0.1])
    assert result["mean"] == pytest.approx(0.2 / 3) and result["std"] == pytest.approx(np.std([.1, 0, .1], ddof=1))
    assert result["ci95"][0] < result["mean"] < result["ci95"][1]
    assert 0 < result["p"] < 1
    single = table2.paired_comparison([0.9], [0.8])
    assert single["std"] is None and single["p"] is None


def test_quick_table2_learns_far_above_chance(data_dir, tmp_path, capsys):
    """The CI learning test: `refsnn reproduce table2 --dataset mnist --quick` on the real data."""
    out = tmp_path / "quick"
    argv = ["reproduce", "table2", "--dataset", "mnist", "--quick", "--out", str(out), "--workers", "2",
            "--data", str(data_dir)]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["dataset"] == "mnist" and doc["modes"] == ["full", "detached"] and doc["seeds"] == [0, 1]
    assert doc["n_test"] == table2.QUICK["mnist"]["test_size"]
    for mode in ("full", "detached"):
        accuracy = doc["summary"][mode]["mean"]
        assert accuracy > 0.5, f"{mode}: test accuracy {accuracy} is not far above chance (0.1)"
    assert len(doc["paired"][0]["differences"]) == 2 and doc["paired"][0]["ci95"] is not None
    markdown = (out / "results.md").read_text()
    assert "| with (full) |" in markdown and "99.49" in markdown and "--quick" in markdown
    assert len(list((out / "points").glob("*.json"))) == 4
    assert len(list((out / "runs").glob(f"*/{CHECKPOINT}"))) == 4
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "results.json" in printed
    # a second invocation reuses the finished runs (no point or checkpoint rewritten) and reports the same numbers
    finished = {path: path.stat().st_mtime_ns for path in [*(out / "points").glob("*.json"),
                                                           *(out / "runs").glob(f"*/{CHECKPOINT}")]}
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["summary"] == doc["summary"]
    assert {path: path.stat().st_mtime_ns for path in finished} == finished


def test_table2_bad_input_is_one_line(tmp_path, capsys):
    assert main(["reproduce", "table2", "--dataset", "mnist", "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refsnn: error: data directory") and err.count("\n") == 1
    assert main(["reproduce", "table2", "--dataset", "svhn"]) == 2
    assert "invalid choice" in capsys.readouterr().err
