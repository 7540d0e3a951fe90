"""The paper's Table 2 at reduced scale on real data: test accuracy with and without the reset term.

    refsnn reproduce table2 --dataset mnist|nmnist|cifar10 [--epochs N] [--train-size N]
        [--test-size N] [--seeds S ...] [--reset-grad full detached] [--workers N]
        [--scheduler ADDR] [--out DIR] [--quick] [--data DIR] [--time-steps T] [--batch-size B]
        [--lr LR] [--width W] [--dtype float64|float32] [--loss NAME] [--init-gain G]

One training run (train.py) per seed x reset mode, run through the sweep layer (sweep.py: local
processes or a Dask cluster; one JSON file per finished run in DIR/points/, so a re-run with the
same --out skips finished runs), each run checkpointing every epoch in DIR/runs/<name>/ so an
interrupted run resumes where it stopped (with --scheduler, on the worker's file system at the same
absolute path). The two modes of a seed start from the same weights
and see the same batches, so their difference is paired.

Outputs in DIR: results.json (layout: RESULTS_LAYOUT) and results.md (the table next to the
paper's numbers, the per-seed paired differences, the settings, wall time).

Choices (the paper gives only the networks, T and the accuracies):
- loss: count_mse (target count 0.5 T for the label's neuron, 0 for the others) on MNIST and
  N-MNIST, where it learned a little better than rate_ce and van_rossum_class in short runs
  (MNIST, 3000 samples, T = 8, 3 epochs: 96.0 / 95.5 / 95.1 %); rate_ce (cross-entropy of the
  spike counts) on CIFAR-10, where count_mse drove the 7-layer network to the all-silent output
  (loss 0.5 (0.5 T)^2, 10 % accuracy) at every gain and rate tried;
- AdamW, lr 1e-3, weight decay 1e-4, batch 16; sum pooling of the traces with weight 1.1;
- initial weights: torch's default times init_gain, 1 for MNIST and N-MNIST, 3 for CIFAR-10
  (at gain 1 its spikes die out by the third layer; TSSL-BP's CIFAR-10 config scales by 5);
- class-balanced subsets of the splits, fixed (subset_seed 0) for all seeds and modes;
- CIFAR-10 runs at width 0.25 by default (every conv channel count and hidden dense size
  divided by 4: 24C3-64C3-P2-96C3-P2-96C3-64C3-256-256; a full-width step costs ~9x more), on
  the JPEG q75 copy of the shared data (data.CIFAR10_NOTE), never the lossless benchmark.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

import numpy as np

from . import data
from .errors import RefsnnError, check_choice
from .lif import RESET_GRADS
from .sweep import default_name, run_sweep, write_json_atomic
from .train import TrainConfig, load_data, train

POINT_VERSION = 1                      # bump when run_point's result changes meaning
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_MODES = ("full", "detached")

#: Table 2 of the paper, test accuracy in percent: with the reset term ("full") and without ("detached").
PAPER = {"nmnist": {"full": 99.29, "detached": 99.28},
         "mnist": {"full": 99.49, "detached": 99.50},
         "cifar10": {"full": 88.96, "detached": 88.98}}

#: The default run of each data set (3 seeds x 2 modes, 2 workers), the runs of docs/results.md.
#: Measured per step with 2 workers of 1 BLAS thread each, float64, batch 16, quiet machine: MNIST
#: (T 30) ~0.5 s per step and ~1.4 s per 100 test samples; N-MNIST (T 5) ~0.15 s / 0.3 s; CIFAR-10
#: width 0.25 (T 5) ~0.85 s / 2.5 s (full width ~6 s per step). The runs of docs/results.md shared
#: the 2 cores with each other and took 50-65 min of wall time per data set.
DEFAULTS = {
    "mnist": {"epochs": 2, "train_size": 10_000, "test_size": None},
    "nmnist": {"epochs": 30, "train_size": None, "test_size": None},
    "cifar10": {"epochs": 1, "train_size": 5000, "test_size": 2000, "width": 0.25, "init_gain": 3.0,
                "loss": {"name": "rate_ce"}},
}

#: --quick: runs of well under 2 minutes on 2 cores. MNIST's learns (~80 % on 500 test samples; the CI
#: test asserts > 50 %, chance is 10 %), N-MNIST's reaches ~70 %; CIFAR-10's is only a smoke test
#: (~10 %: 500 images and one epoch are too few for the 7-layer network).
QUICK = {
    "mnist": {"epochs": 1, "train_size": 512, "test_size": 500, "time_steps": 8},
    "nmnist": {"epochs": 2, "train_size": 500, "test_size": None},
    "cifar10": {"epochs": 1, "train_size": 500, "test_size": 500, "width": 0.25, "init_gain": 3.0,
                "loss": {"name": "rate_ce"}},
}
QUICK_SEEDS = (0, 1)

RESULTS_LAYOUT = (
    "Accuracies are fractions of the test subset (results.md shows percent). summary[mode] holds the "
    "final-epoch test accuracy of every seed (aligned with seeds), their mean and sample standard "
    "deviation (ddof=1; null with one seed). paired[k] compares modes[0] with another mode seed by seed: "
    "differences = accuracy(modes[0]) - accuracy(other), their mean, std (ddof=1), a 95% t interval of "
    "the mean and the two-sided paired t-test p value (null with fewer than 2 seeds). runs lists every "
    "run's summary (train.py) with its per-epoch history. wall_seconds is this invocation's wall time; "
    "train_seconds_total sums the runs' own training time over all invocations.")


def build_config(dataset: str, *, quick: bool = False, seed: int = 0, reset_grad: str = "full",
                 **overrides: Any) -> TrainConfig:
    """The TrainConfig of one run: DEFAULTS (or QUICK) of the data set, then the non-None overrides."""
    check_choice("--dataset", dataset, data.DATASETS)
    values = copy.deepcopy(QUICK[dataset] if quick else DEFAULTS[dataset])
    values.update({key: value for key, value in overrides.items() if value is not None})
    return TrainConfig(dataset=dataset, seed=seed, reset_grad=reset_grad, **values)


def make_points(base: TrainConfig, seeds: Sequence[int], modes: Sequence[str]) -> list[dict[str, Any]]:
    return [{"version": POINT_VERSION,
             "config": dataclasses.replace(base, seed=int(seed), reset_grad=mode).to_dict()}
            for seed in seeds for mode in modes]


def point_name(point: dict[str, Any]) -> str:
    config = point["config"]
    return f"{config['dataset']}-{config['reset_grad']}-seed{config['seed']}-{default_name(point)[:8]}"


def run_point(point: dict[str, Any], *, run_root: str, data_dir: str | None = None,
              progress: bool = True, in_place: bool | None = None) -> dict[str, Any]:
    """Train one seed x mode (resuming from its checkpoint) and return its JSON-able summary."""
    config = TrainConfig.from_dict(point["config"])
    summary, _ = train(config, Path(run_root) / point_name(point), data_dir=data_dir, progress=progress,
                       in_place=in_place, label=f"{config.dataset} {config.reset_grad} seed {config.seed}")
    return summary


@contextlib.contextmanager
def _blas_threads(threads: int | None) -> Iterator[None]:
    """Set the BLAS (and refsnn.parallel) thread count spawned workers inherit, unless the user set one; restore."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "REFSNN_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    try:
        if threads is not None and not any(saved.values()):
            for name in names:
                os.environ[name] = str(threads)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ----------------------------------------------------------------------------- statistics

def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), (float(array.std(ddof=1)) if array.size > 1 else None)


def paired_comparison(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """Per-seed differences first - second, their mean, std, 95% t interval and paired t-test p."""
    differences = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    mean, std = _mean_std(differences)
    result = {"differences": differences.tolist(), "mean": mean, "std": std, "ci95": None, "t": None, "p": None}
    n = differences.size
    if n > 1:
        from scipy import stats

        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        result["ci95"] = [mean - half, mean + half]
        if std > 0:
            t_stat = mean / (std / math.sqrt(n))
            result["t"], result["p"] = float(t_stat), float(2 * stats.t.sf(abs(t_stat), n - 1))
        else:
            result["p"] = 1.0 if mean == 0 else 0.0
    return result


def analyse(base: TrainConfig, seeds: Sequence[int], modes: Sequence[str], points: list[dict[str, Any]],
            results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    by_run = {(p["config"]["seed"], p["config"]["reset_grad"]): r for p, r in zip(points, results)}
    summary = {}
    for mode in modes:
        accuracies = [by_run[(seed, mode)]["test_accuracy"] for seed in seeds]
        mean, std = _mean_std(accuracies)
        summary[mode] = {"accuracies": accuracies, "mean": mean, "std": std, "n": len(accuracies)}
    paired = [{"first": modes[0], "second": mode,
               **paired_comparison(summary[modes[0]]["accuracies"], summary[mode]["accuracies"])}
              for mode in modes[1:]]
    spec = results[0]["spec"]
    notes = []
    if base.dataset == "cifar10":
        notes.append(data.CIFAR10_NOTE)
        if base.width != 1:
            notes.append(f"network width x{base.width:g}: architecture {spec['architecture']} instead of the "
                         "paper's 96C3-256C3-P2-384C3-P2-384C3-256C3-1024-1024")
    return {"experiment": "table2", "dataset": base.dataset, "layout": RESULTS_LAYOUT,
            "paper_percent": PAPER[base.dataset], "seeds": list(seeds), "modes": list(modes),
            "config": {k: v for k, v in base.to_dict().items() if k not in ("seed", "reset_grad")},
            "spec": {k: v for k, v in spec.items() if k != "reset_grad"},
            "time_steps": base.steps, "encoding": base.input_encoding,
            "n_params": results[0]["n_params"], "n_train": results[0]["n_train"], "n_test": results[0]["n_test"],
            "summary": summary, "paired": paired,
            "runs": [{"seed": p["config"]["seed"], "reset_grad": p["config"]["reset_grad"], "name": point_name(p),
                      **{k: v for k, v in r.items() if k not in ("config", "spec")}}
                     for p, r in zip(points, results)],
            "wall_seconds": wall, "train_seconds_total": float(sum(r["train_seconds"] for r in results)),
            "notes": notes}


def _percent(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def _paper(doc: dict[str, Any], mode: str) -> str:
    value = doc["paper_percent"].get(mode)
    return "n/a" if value is None else f"{value:.2f}"


def markdown(doc: dict[str, Any], command: str | None = None) -> str:
    """results.md: the table next to the paper's numbers, paired differences, settings, wall time."""
    config, spec = doc["config"], doc["spec"]
    lines = [f"# Table 2, {doc['dataset']}: test accuracy with and without the reset term", ""]
    lines += ["| reset term | test accuracy (%) | seeds | paper (%) |", "|---|---|---|---|"]
    names = {"full": "with (full)", "detached": "without (detached)", "ignored": "ignored"}
    for mode in doc["modes"]:
        row = doc["summary"][mode]
        spread = f" +- {_percent(row['std'])}" if row["std"] is not None else ""
        lines.append(f"| {names.get(mode, mode)} | {_percent(row['mean'])}{spread} | {row['n']} | "
                     f"{_paper(doc, mode)} |")
    lines += ["", "mean +- sample standard deviation (ddof=1) over seeds, final-epoch accuracy on "
                  f"{doc['n_test']} test samples.", ""]
    for pair in doc["paired"]:
        lines.append(f"Paired difference {pair['first']} - {pair['second']} (percentage points), per seed: "
                     + ", ".join(f"seed {s}: {100 * d:+.2f}" for s, d in zip(doc["seeds"], pair["differences"])))
        text = f"mean {100 * pair['mean']:+.2f}"
        if pair["std"] is not None:
            text += f" +- {100 * pair['std']:.2f}"
        if pair["ci95"] is not None:
            text += f", 95% CI [{100 * pair['ci95'][0]:+.2f}, {100 * pair['ci95'][1]:+.2f}]"
        if pair["p"] is not None:
            text += f", paired t-test p = {pair['p']:.3g}"
        lines += [text + ".", ""]
    lines += ["## Settings", "",
              f"- network: {spec['architecture']} ({doc['n_params']} parameters), "
              f"{spec['pooling']} pooling (weight {spec['pool_weight']}), neuron {spec['neuron']}, "
              f"surrogate {spec['surrogate']}, {spec['dtype']}",
              f"- data: {doc['n_train']} training / {doc['n_test']} test samples (class-balanced subsets), "
              f"T = {doc['time_steps']}, encoding {doc['encoding']}, initial weights x{config['init_gain']:g}",
              f"- training: {config['epochs']} epoch(s), batch {config['batch_size']}, {config['optimizer']} "
              f"lr {config['lr']:g} weight decay {config['weight_decay']:g}, loss {config['loss']}",
              f"- wall time of this invocation {doc['wall_seconds']:.0f} s; training time summed over runs "
              f"{doc['train_seconds_total']:.0f} s"]
    if command:
        lines.append(f"- command: `{command}`")
    for note in doc["notes"]:
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the command

def reproduce(dataset: str, out_dir: str | os.PathLike, *, seeds: Sequence[int] = DEFAULT_SEEDS,
              modes: Sequence[str] = DEFAULT_MODES, quick: bool = False, workers: int | None = None,
              scheduler: str | None = None, data_dir: str | os.PathLike | None = None, progress: bool = True,
              stream: TextIO | None = None, command: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Run (or resume) the seeds x modes sweep; write results.json and results.md; return the doc.

    overrides: TrainConfig fields (epochs, train_size, test_size, time_steps, batch_size, lr, width,
    dtype, ...); None keeps the default of DEFAULTS / QUICK.
    """
    start = time.monotonic()
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    modes = list(dict.fromkeys(modes))
    if not seeds or not modes:
        raise RefsnnError("give at least one seed and one reset mode")
    for mode in modes:
        check_choice("--reset-grad", mode, RESET_GRADS)
    base = build_config(dataset, quick=quick, **overrides)
    base.spec()                                          # a bad width / architecture fails here, not in a worker
    data_dir = str(data.find_data_dir(data_dir, dataset))        # a missing data directory fails here, with the message
    load_data(base, data_dir)                           # so do missing files and too large subsets
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RefsnnError(f"--out {str(out)!r} exists and is not a folder")
    points = make_points(base, seeds, modes)
    local_workers = workers if workers is not None else (os.cpu_count() or 1)
    parallel = scheduler is None and local_workers > 1 and len(points) > 1
    fn = functools.partial(run_point, run_root=str((out / "runs").resolve()), data_dir=data_dir,
                           progress=progress, in_place=False if parallel else None)
    threads = max(1, (os.cpu_count() or 1) // min(local_workers, len(points))) if parallel else None
    with _blas_threads(threads):
        results = run_sweep(fn, points, out / "points", name=point_name, workers=workers, scheduler=scheduler,
                            progress=progress, label=f"table2 {dataset}", stream=stream)
    doc = analyse(base, seeds, modes, points, results, time.monotonic() - start)
    doc["command"] = command
    write_json_atomic(out / "results.json", doc)
    (out / "results.md").write_text(markdown(doc, command), encoding="utf-8")
    return doc


def summary_lines(doc: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = []
    for mode in doc["modes"]:
        row = doc["summary"][mode]
        spread = f" +- {_percent(row['std'])}" if row["std"] is not None else ""
        lines.append(f"{doc['dataset']} {mode:9s} test accuracy {_percent(row['mean'])}{spread} % over "
                     f"{row['n']} seed(s) (paper {_paper(doc, mode)} %)")
    for pair in doc["paired"]:
        lines.append(f"paired {pair['first']} - {pair['second']}: "
                     + " ".join(f"{100 * d:+.2f}" for d in pair["differences"]) + " points")
    return "\n".join(lines)
