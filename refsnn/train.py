"""Minibatch training of the paper's CNNs on real data, resumable and deterministic under a seed.

    config = TrainConfig(dataset="mnist", reset_grad="full", seed=0, epochs=1, train_size=500)
    summary, params = train(config, run_dir="runs/x")   # summary: test accuracy per epoch, wall time, ...

What a run is (every choice is a field of ``TrainConfig``, recorded in results and checkpoints):

- the network: the Table 3 preset of the data set (network.PRESETS), optionally width-scaled
  (``width``: every conv channel count and hidden dense size times ``width``, rounded, the 10
  outputs kept), torch's default initialisation (network.init_params) with every weight times
  ``init_gain`` (a deep network starts silent otherwise: at gain 1 the CIFAR-10 network's spikes
  die out by its third layer), sum pooling of the traces with the fixed weight 1.1 (the TSSL-BP lineage,
  METHODS.md section 1), the neuron of spec defaults (tau_m 6, tau_s 2, theta 1) and the sigmoid
  surrogate with T = 0.3 (eq. 9-10); ``reset_grad`` "full" (with the reset term, eq. 8) or
  "detached";
- the input: ``time_steps`` steps (paper: MNIST 30, N-MNIST 5, CIFAR-10 5), encoded by
  data.encode_batch: "direct" (pixels repeated) for images by default ("standardized" and
  "bernoulli" on request), "events" for N-MNIST;
- the loss: ``loss`` (a losses.py spec, on integer labels), by default count_mse with target
  counts 0.5 T for the label's neuron and 0 for the others (DEFAULT_LOSS; table2.py says why);
- AdamW (optim.py) with ``lr`` and ``weight_decay``, batches of ``batch_size``, the last
  partial batch of an epoch kept;
- the data: ``train_size`` training and ``test_size`` test samples, class-balanced subsets
  fixed by ``subset_seed`` (data.balanced_subset), the same for every seed and reset mode.

Randomness, all from ``seed``: the initial weights (network.init_params(spec, seed)), the order
of the training samples in epoch e (SeedSequence(seed, spawn_key=(ORDER_STREAM, e))), and the
Bernoulli draws of step k of epoch e (SeedSequence(seed, spawn_key=(ENCODE_STREAM, e, k))). No
generator state is carried from step to step, so a run resumed from a checkpoint draws exactly
what an uninterrupted run draws, and the two reset modes of a seed see the same initial weights
and batches (a paired comparison).

Accuracy: the predicted class is the output neuron with the most spikes over the T steps; ties
go to the FIRST maximum (np.argmax), so a silent output predicts class 0. ``silent`` and
``tied`` in the result count how often that rule decided.

Checkpoints: ``run_dir/checkpoint.npz`` (parameters, AdamW moments, and a JSON ``meta`` with
the config, the position in the run and the history), written atomically at the end of every
epoch and every ``checkpoint_seconds`` within one. ``train`` resumes from it when present (and
refuses one made with another config); the result is bit-for-bit that of an uninterrupted run.
No autograd framework is imported here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, TextIO

import numpy as np

from . import data
from .errors import RefsnnError, check_choice
from .losses import make_loss
from .network import PRESETS, Spec, init_params, network_backward, network_forward, parse_spec
from .optim import AdamState, OPTIMIZERS, adam_init
from .progress import Progress

ORDER_STREAM, ENCODE_STREAM = 1, 2
CHECKPOINT = "checkpoint.npz"
CHECKPOINT_VERSION = 1
DEFAULT_LOSS = {"name": "count_mse", "true_rate": 0.5, "false_rate": 0.0}
DEFAULT_ENCODING = {"mnist": "direct", "cifar10": "direct", "nmnist": "events"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run's result depends on (module docstring). JSON round-trips."""

    dataset: str = "mnist"
    reset_grad: str = "full"
    seed: int = 0
    epochs: int = 1
    train_size: int | None = None          # None: the whole training split
    test_size: int | None = None           # None: the whole test split
    batch_size: int = 16
    time_steps: int | None = None          # None: the preset's (Table 3)
    encoding: str | None = None            # None: DEFAULT_ENCODING[dataset]
    width: float = 1.0                     # hidden-layer width factor (CIFAR-10 is run reduced)
    init_gain: float = 1.0                 # initial weights = init_gain * network.init_params (torch's default)
    architecture: str | None = None        # None: the preset's; an override is for tests
    loss: dict = field(default_factory=lambda: dict(DEFAULT_LOSS))
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pooling: str = "sum"
    pool_weight: float = 1.1
    neuron: dict = field(default_factory=lambda: {"tau_m": 6.0, "tau_s": 2.0, "theta": 1.0})
    surrogate: dict = field(default_factory=lambda: {"name": "sigmoid", "T": 0.3})
    dtype: str = "float64"
    subset_seed: int = 0
    eval_batch_size: int = 100

    def __post_init__(self):
        check_choice("dataset", self.dataset, data.DATASETS)
        check_choice("optimizer", self.optimizer, tuple(OPTIMIZERS))
        for name in ("seed", "subset_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise RefsnnError(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "train_size", "test_size", "time_steps"):
            value = getattr(self, name)
            if value is None and name in ("train_size", "test_size", "time_steps"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RefsnnError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.width, (int, float)) and 0 < self.width <= 4):
            raise RefsnnError(f"width must be a number in (0, 4], got {self.width!r}")
        # the loss in its complete form, so that {"name": "count_mse"} and its defaults spelt out are one config
        object.__setattr__(self, "loss", make_loss(dict(self.loss), default_tau=self.neuron.get("tau_s", 2.0)).to_spec())
        if self.encoding is not None:
            check_choice("encoding", self.encoding, data.ENCODINGS)
            if (self.encoding == "events") != (self.dataset == "nmnist"):
                raise RefsnnError(f"encoding {self.encoding!r} does not fit {self.dataset}: N-MNIST takes 'events', "
                                  "images take 'direct', 'standardized' or 'bernoulli'")
        for name in ("lr", "init_gain"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise RefsnnError(f"{name} must be a finite number > 0, got {value!r}")

    @property
    def steps(self) -> int:
        return self.time_steps or PRESETS[self.dataset]["time_steps"]

    @property
    def input_encoding(self) -> str:
        return self.encoding or DEFAULT_ENCODING[self.dataset]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise RefsnnError(f"unknown training option(s) {sorted(unknown)}")
        return cls(**values)

    def spec_dict(self) -> dict[str, Any]:
        """The network spec (network.py) of this run."""
        preset = PRESETS[self.dataset]
        return {"input_shape": list(preset["input_shape"]),
                "architecture": scale_architecture(self.architecture or preset["architecture"], self.width),
                "n_out": preset["n_out"], "pooling": self.pooling, "pool_weight": self.pool_weight,
                "neuron": dict(self.neuron), "surrogate": dict(self.surrogate), "reset_grad": self.reset_grad,
                "loss": dict(self.loss), "dtype": self.dtype}

    def spec(self) -> Spec:
        return parse_spec(self.spec_dict())


def scale_architecture(architecture: str, width: float) -> str:
    """'96C3-P2-1024' at width 0.25 -> '24C3-P2-256': channels and dense sizes times width, >= 1."""
    if width == 1:
        return architecture
    tokens = []
    for token in architecture.split("-"):
        if match := re.fullmatch(r"([1-9][0-9]*)([Cc][1-9][0-9]*)", token):
            token = f"{max(1, round(int(match[1]) * width))}{match[2]}"
        elif re.fullmatch(r"[1-9][0-9]*", token):
            token = str(max(1, round(int(token) * width)))
        tokens.append(token)
    return "-".join(tokens)


def initial_params(spec: Spec, config: TrainConfig) -> dict[str, np.ndarray]:
    """torch's default init (network.init_params from the seed), every weight times init_gain, biases as drawn."""
    params = init_params(spec, config.seed)
    if config.init_gain != 1:
        params = {name: value * config.init_gain if name.endswith(".weight") else value
                  for name, value in params.items()}
    return params


# ----------------------------------------------------------------------------- evaluation

def predict(S: np.ndarray) -> np.ndarray:
    """Output spikes (T, B, n) -> predicted classes (B,): most spikes, first maximum on ties."""
    return np.argmax(S.sum(axis=0), axis=1)          # (T, B, n) -> (B, n) -> (B,)


def count_ties(S: np.ndarray) -> tuple[int, int]:
    """(samples with a silent output layer, samples whose maximum count is shared)."""
    counts = S.sum(axis=0)                            # (B, n)
    silent = int(np.sum(counts.max(axis=1) == 0))
    tied = int(np.sum((counts == counts.max(axis=1, keepdims=True)).sum(axis=1) > 1))
    return silent, tied


def evaluate(spec: Spec, params: Mapping[str, np.ndarray], split: data.Split, indices: np.ndarray,
             config: TrainConfig) -> dict[str, float]:
    """Accuracy (spike-count rule), mean loss, silent/tied counts on ``split[indices]``."""
    correct = silent = tied = 0
    loss_sum = 0.0
    for start in range(0, indices.size, config.eval_batch_size):
        batch = indices[start:start + config.eval_batch_size]
        # the test set uses ENCODE_STREAM with epoch 2**31 (no training epoch): the same draws at every evaluation
        rng = _stream(config.seed, ENCODE_STREAM, 2 ** 31, start)
        x = data.encode_batch(split, batch, config.steps, config.input_encoding, rng, config.dtype)
        labels = split.labels[batch]
        loss, S, _ = network_forward(spec, params, x, labels)
        loss_sum += loss * batch.size
        correct += int(np.sum(predict(S) == labels))
        batch_silent, batch_tied = count_ties(S)
        silent += batch_silent
        tied += batch_tied
    n = int(indices.size)
    return {"accuracy": correct / n, "loss": loss_sum / n, "silent": silent, "tied": tied, "n": n}


# ----------------------------------------------------------------------------- checkpoints

@dataclass
class RunState:
    """Where a run is: parameters, optimiser, position, and what was measured so far."""

    params: dict[str, np.ndarray]
    optimizer: AdamState
    epoch: int = 0                  # epochs finished
    step_in_epoch: int = 0          # steps of epoch ``epoch`` finished
    epoch_loss_sum: float = 0.0     # sum over finished steps of this epoch of loss * batch size
    epoch_correct: int = 0
    epoch_seen: int = 0
    history: list = field(default_factory=list)
    elapsed: float = 0.0            # wall seconds spent in train() over all sessions
    resumed: int = 0                # how many times the run was resumed


def save_checkpoint(path: Path, config: TrainConfig, state: RunState) -> None:
    from .oracle import save_npz_atomic

    meta = {"version": CHECKPOINT_VERSION, "config": config.to_dict(), "optimizer_step": state.optimizer.step,
            "epoch": state.epoch, "step_in_epoch": state.step_in_epoch, "epoch_loss_sum": state.epoch_loss_sum,
            "epoch_correct": state.epoch_correct, "epoch_seen": state.epoch_seen, "history": state.history,
            "elapsed": state.elapsed, "resumed": state.resumed}
    arrays = {"meta": np.array(json.dumps(meta, allow_nan=False))}
    for name in state.params:
        arrays[f"param/{name}"] = state.params[name]
        arrays[f"adam_m/{name}"] = state.optimizer.m[name]
        arrays[f"adam_v/{name}"] = state.optimizer.v[name]
    save_npz_atomic(path, arrays)


def load_checkpoint(path: Path, config: TrainConfig) -> RunState:
    from .oracle import load_npz

    arrays = load_npz(path, "checkpoint", required=("meta",))
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError:
        raise RefsnnError(f"checkpoint {str(path)!r}: unreadable meta data; delete it to start again") from None
    if meta.get("version") != CHECKPOINT_VERSION:
        raise RefsnnError(f"checkpoint {str(path)!r} has version {meta.get('version')}, expected "
                          f"{CHECKPOINT_VERSION}; delete it to start again")
    if meta["config"] != json.loads(json.dumps(config.to_dict())):
        changed = sorted(k for k in config.to_dict() if meta["config"].get(k) != config.to_dict()[k])
        raise RefsnnError(f"checkpoint {str(path)!r} belongs to another run (options {changed} differ); "
                          "use another output folder or delete the checkpoint")
    names = [key[len("param/"):] for key in arrays if key.startswith("param/")]
    optimizer = AdamState(step=meta["optimizer_step"], m={n: arrays[f"adam_m/{n}"] for n in names},
                          v={n: arrays[f"adam_v/{n}"] for n in names})
    return RunState(params={n: arrays[f"param/{n}"] for n in names}, optimizer=optimizer, epoch=meta["epoch"],
                    step_in_epoch=meta["step_in_epoch"], epoch_loss_sum=meta["epoch_loss_sum"],
                    epoch_correct=meta["epoch_correct"], epoch_seen=meta["epoch_seen"], history=meta["history"],
                    elapsed=meta["elapsed"], resumed=meta["resumed"] + 1)


# ----------------------------------------------------------------------------- the loop

def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


def epoch_order(config: TrainConfig, train_indices: np.ndarray, epoch: int) -> np.ndarray:
    """The training samples of ``epoch`` in the order they are visited."""
    return train_indices[_stream(config.seed, ORDER_STREAM, epoch).permutation(train_indices.size)]


def load_data(config: TrainConfig, data_dir=None) -> tuple[data.Split, np.ndarray, data.Split, np.ndarray]:
    """The train and test splits and the subset indices of this run."""
    train_split = data.load_split(config.dataset, "train", data_dir=data_dir, time_steps=config.steps)
    test_split = data.load_split(config.dataset, "test", data_dir=data_dir, time_steps=config.steps)
    for name, split, size in (("train_size", train_split, config.train_size),
                              ("test_size", test_split, config.test_size)):
        if size is not None and size > len(split):
            raise RefsnnError(f"{name} is {size}, but the {config.dataset} {split.split} split in the data "
                              f"directory has only {len(split)} samples")
    return (train_split, data.balanced_subset(train_split.labels, config.train_size, config.subset_seed),
            test_split, data.balanced_subset(test_split.labels, config.test_size, config.subset_seed))


def train(config: TrainConfig, run_dir: str | Path | None = None, *, data_dir=None, progress: bool = True,
          stream: TextIO | None = None, label: str | None = None, in_place: bool | None = None,
          checkpoint_seconds: float = 300.0, stop_after_steps: int | None = None) -> TrainResult:
    """Train (resuming from ``run_dir/checkpoint.npz`` if there); return the summary and parameters.

    ``stop_after_steps``: return after that many optimiser steps of this call, with a
    checkpoint written and ``finished`` false (for tests and time-boxed sessions).
    """
    wall_start = time.monotonic()
    spec = config.spec()
    train_split, train_indices, test_split, test_indices = load_data(config, data_dir)
    if train_split.input_shape != spec.input_shape:
        raise RefsnnError(f"{config.dataset} inputs have shape {train_split.input_shape}, the network expects "
                          f"{spec.input_shape}")
    update = OPTIMIZERS[config.optimizer]
    checkpoint = Path(run_dir) / CHECKPOINT if run_dir is not None else None
    if checkpoint is not None:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, config)
    else:
        params = initial_params(spec, config)
        state = RunState(params=params, optimizer=adam_init(params))
    session_start, last_save = time.monotonic(), time.monotonic()
    elapsed_before = state.elapsed

    def save():
        nonlocal last_save
        state.elapsed = elapsed_before + (time.monotonic() - session_start)
        if checkpoint is not None:
            save_checkpoint(checkpoint, config, state)
        last_save = time.monotonic()

    steps_per_epoch = math.ceil(train_indices.size / config.batch_size)
    label = label or f"{config.dataset} {config.reset_grad} seed {config.seed}"
    steps_this_call = 0
    while state.epoch < config.epochs:
        order = epoch_order(config, train_indices, state.epoch)
        bar = Progress(steps_per_epoch, done=state.step_in_epoch, stream=stream, enabled=progress,
                       in_place=in_place, label=f"{label} epoch {state.epoch + 1}/{config.epochs}")
        for step in range(state.step_in_epoch, steps_per_epoch):
            if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                save()
                bar.close()
                return _result(config, spec, state, finished=False, wall=time.monotonic() - wall_start)
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            rng = _stream(config.seed, ENCODE_STREAM, state.epoch, step)
            x = data.encode_batch(train_split, batch, config.steps, config.input_encoding, rng, config.dtype)
            labels = train_split.labels[batch]
            loss, S, cache = network_forward(spec, state.params, x, labels)
            if not np.isfinite(loss):                   # before the update: a NaN step is never applied
                raise RefsnnError(f"{label}: the loss became {loss} at epoch {state.epoch + 1} step {step + 1}")
            grads = network_backward(spec, cache)
            grads = {name: grads[f"grad/{name}"] for name in state.params}
            state.params, state.optimizer = update(state.params, grads, state.optimizer, lr=config.lr,
                                                   weight_decay=config.weight_decay)
            state.step_in_epoch = step + 1
            state.epoch_loss_sum += loss * batch.size
            state.epoch_correct += int(np.sum(predict(S) == labels))
            state.epoch_seen += int(batch.size)
            steps_this_call += 1
            bar.update(1, f"loss {state.epoch_loss_sum / state.epoch_seen:.4g} "
                                 f"acc {state.epoch_correct / state.epoch_seen:.3f}")
            if checkpoint is not None and time.monotonic() - last_save > checkpoint_seconds:
                save()
        bar.close()
        test = evaluate(spec, state.params, test_split, test_indices, config)
        state.history.append({"epoch": state.epoch + 1, "train_loss": state.epoch_loss_sum / state.epoch_seen,
                              "train_accuracy": state.epoch_correct / state.epoch_seen,
                              "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                              "test_silent": test["silent"], "test_tied": test["tied"],
                              "elapsed": elapsed_before + (time.monotonic() - session_start)})
        if progress:
            (stream or sys.stderr).write(f"{label} epoch {state.epoch + 1}/{config.epochs}: test accuracy "
                                         f"{test['accuracy']:.4f} on {test['n']} samples\n")
        state.epoch += 1
        state.step_in_epoch, state.epoch_loss_sum, state.epoch_correct, state.epoch_seen = 0, 0.0, 0, 0
        save()
    state.elapsed = elapsed_before + (time.monotonic() - session_start)
    return _result(config, spec, state, finished=True, wall=time.monotonic() - wall_start,
                   n_train=int(train_indices.size), n_test=int(test_indices.size))


class TrainResult(NamedTuple):
    """What ``train`` returns: a JSON-able summary and the final parameters."""

    summary: dict[str, Any]
    params: dict[str, np.ndarray]


def _result(config: TrainConfig, spec: Spec, state: RunState, *, finished: bool, wall: float,
            n_train: int | None = None, n_test: int | None = None) -> TrainResult:
    last = state.history[-1] if state.history else {}
    summary = {"finished": finished, "config": config.to_dict(), "spec": spec.to_dict(),
            "n_params": int(sum(p.size for p in state.params.values())),
            "test_accuracy": last.get("test_accuracy"), "history": list(state.history),
            "n_train": n_train, "n_test": n_test, "optimizer_steps": state.optimizer.step,
            "train_seconds": state.elapsed, "wall_seconds_this_session": wall, "resumed": state.resumed}
    return TrainResult(summary, state.params)
