"""The ``refsnn`` command line (also ``python -m refsnn``).

    refsnn grad SPEC.json INPUTS.npz [--params PARAMS.npz] [--seed N] [--adjoints] --out OUT.npz
    refsnn reproduce toy [--out DIR] [--repeats N] [--lrs LR ...] [--workers N] [--scheduler ADDR]
                         [--quick] [--seed S]
    refsnn reproduce table2 --dataset mnist|nmnist|cifar10 [--epochs N] [--train-size N] [--test-size N]
                            [--seeds S ...] [--reset-grad MODE ...] [--workers N] [--scheduler ADDR]
                            [--out DIR] [--quick] [--data DIR] [--time-steps T] [--batch-size B]
                            [--lr LR] [--width W] [--dtype float64|float32] [--loss NAME]
                            [--init-gain G] [--encoding NAME]

A user's mistake (bad file, bad spec, bad shape, bad option) prints one line,
``refsnn: error: ...``, on stderr and exits with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .errors import RefsnnError
from .sweep import check_workers


class UsageError(Exception):
    """Raised by the argument parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def _int_at_least(minimum: int, expected: str):
    """An argparse type: an integer >= minimum, else an error saying ``expected``."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return convert


_nonnegative_int = _int_at_least(0, "a non-negative integer")
_positive_int = _int_at_least(1, "an integer >= 1")


def _workers(text: str) -> int:
    """--workers: what sweep.check_workers allows (checked here, before any data is loaded)."""
    try:
        return check_workers(_positive_int(text))
    except RefsnnError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="refsnn", description="Reference surrogate-gradient BPTT for spiking networks.")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    commands.required = True

    grad = commands.add_parser("grad", help="loss and exact BPTT gradients of a network (the oracle)",
                               description="Write the loss and gradients of SPEC.json on INPUTS.npz to OUT.npz "
                                           "(format: docs/oracle.md).")
    grad.add_argument("spec", metavar="SPEC.json")
    grad.add_argument("inputs", metavar="INPUTS.npz", help="arrays x (T, B, *input_shape) and target (T, B, n_out)")
    grad.add_argument("--params", metavar="PARAMS.npz", help="layers.{i}.weight / layers.{i}.bias; "
                                                             "default: initialised from --seed")
    grad.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the parameter initialisation")
    grad.add_argument("--adjoints", action="store_true", help="also write U, S, dL_dS, dL_dU and its three parts")
    grad.add_argument("--out", required=True, metavar="OUT.npz")
    grad.set_defaults(run=_run_grad)

    reproduce = commands.add_parser("reproduce", help="reproduce an experiment of the paper",
                                    description="Reproduce an experiment of Yang 2020: toy (data generated here) or table2 (real data).")
    experiments = reproduce.add_subparsers(dest="experiment", parser_class=_Parser, metavar="EXPERIMENT")
    experiments.required = True
    toy = experiments.add_parser("toy", help="the single-neuron experiment (Table 1, Fig. 2, Fig. 3)",
                                 description="Train one LIF neuron with and without the reset term over "
                                             "repeats x learning rates; write DIR/fig2.png, DIR/fig3.png, "
                                             "DIR/results.json (docs/toy.md). Re-running with the same --out "
                                             "resumes from the finished points in DIR/points/.")
    toy.add_argument("--out", default=os.path.join("runs", "toy"), metavar="DIR",
                     help="output folder (default: runs/toy)")
    toy.add_argument("--repeats", type=_positive_int, default=None, metavar="N",
                     help="resampled problems per learning rate (default 50; 3 with --quick)")
    toy.add_argument("--lrs", type=_positive_float, nargs="+", default=None, metavar="LR",
                     help="learning rates (default 0.001 0.002 0.005 0.01 0.02 0.05; "
                          "0.002 0.005 0.02 with --quick)")
    toy.add_argument("--workers", type=_workers, default=None, metavar="N",
                     help="local worker processes (default: the number of CPUs)")
    toy.add_argument("--scheduler", default=None, metavar="ADDR",
                     help="run the points on this Dask scheduler (e.g. tcp://host:8786) instead of local "
                          "processes; needs the extra refsnn[dask]")
    toy.add_argument("--quick", action="store_true", help="a small version: few repeats, short grid")
    toy.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the resampled problems")
    toy.set_defaults(run=_run_reproduce_toy)

    table2 = experiments.add_parser(
        "table2", help="Table 2: CNN test accuracy with and without the reset term, on real data",
        description="Train the paper's network of a data set (Table 3) for every seed x reset mode on the real "
                    "data of the data directory and write DIR/results.json and DIR/results.md (mean +- std over "
                    "seeds, paired differences, wall time). Re-running with the same --out skips finished runs "
                    "(DIR/points/) and resumes interrupted ones from their checkpoints (DIR/runs/).")
    table2.add_argument("--dataset", required=True, choices=("mnist", "nmnist", "cifar10"))
    table2.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                        help="training epochs (default: per data set, refsnn.table2.DEFAULTS)")
    table2.add_argument("--train-size", type=_positive_int, default=None, metavar="N",
                        help="class-balanced training subset (default: per data set)")
    table2.add_argument("--test-size", type=_positive_int, default=None, metavar="N",
                        help="class-balanced test subset (default: per data set)")
    table2.add_argument("--seeds", type=_nonnegative_int, nargs="+", default=None, metavar="S",
                        help="seed values, not a count (default 0 1 2; 0 1 with --quick)")
    table2.add_argument("--reset-grad", nargs="+", default=["full", "detached"], metavar="MODE",
                        choices=("full", "detached", "ignored"),
                        help="reset modes to compare, the first against each other (default: full detached)")
    table2.add_argument("--workers", type=_workers, default=None, metavar="N",
                        help="local worker processes (default: the number of CPUs)")
    table2.add_argument("--scheduler", default=None, metavar="ADDR",
                        help="run on this Dask scheduler (e.g. tcp://host:8786); needs refsnn[dask]")
    table2.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default: runs/table2-DATASET, runs/table2-DATASET-quick with --quick)")
    table2.add_argument("--quick", action="store_true",
                        help="a small run for CI (MNIST: 512 training samples, T=8, 1 epoch, seeds 0 1)")
    table2.add_argument("--data", default=None, metavar="DIR",
                        help="data directory (default: $REFSNN_DATA, else ../shared/data)")
    table2.add_argument("--time-steps", type=_positive_int, default=None, metavar="T",
                        help="time steps (default: the paper's, MNIST 30, N-MNIST 5, CIFAR-10 5)")
    table2.add_argument("--batch-size", type=_positive_int, default=None, metavar="B", help="default 16")
    table2.add_argument("--lr", type=_positive_float, default=None, metavar="LR", help="AdamW rate (default 1e-3)")
    table2.add_argument("--width", type=_positive_float, default=None, metavar="W",
                        help="hidden-layer width factor (default 1; 0.25 for CIFAR-10)")
    table2.add_argument("--dtype", choices=("float64", "float32"), default=None, help="default float64")
    table2.add_argument("--loss", choices=("count_mse", "rate_ce", "van_rossum_class"), default=None,
                        help="classification loss with its default parameters (default: count_mse; rate_ce "
                             "for CIFAR-10)")
    table2.add_argument("--init-gain", type=_positive_float, default=None, metavar="G",
                        help="initial weights = G x torch's default (default 1; 3 for CIFAR-10)")
    table2.add_argument("--encoding", choices=("direct", "standardized", "bernoulli", "events"), default=None,
                        help="input encoding (refsnn/data.py; default: direct for images, events for N-MNIST)")
    table2.set_defaults(run=_run_reproduce_table2)
    return parser


def _run_grad(args) -> int:
    from .oracle import grad, load_npz, load_spec, save_npz_atomic

    spec = load_spec(args.spec)
    inputs = load_npz(args.inputs, "INPUTS.npz", required=("x", "target"))
    params = load_npz(args.params, "PARAMS.npz") if args.params else None
    result = grad(spec, inputs["x"], inputs["target"], params, seed=args.seed, adjoints=args.adjoints)
    save_npz_atomic(args.out, result)
    n_params = sum(v.size for k, v in result.items() if k.startswith("grad/"))
    print(f"loss {float(result['loss']):.12g}; gradients of {n_params} parameters written to {args.out}")
    return 0


def _run_reproduce_toy(args) -> int:
    from . import toy

    repeats = args.repeats or (toy.QUICK_REPEATS if args.quick else toy.DEFAULT_REPEATS)
    lrs = args.lrs or (toy.QUICK_LRS if args.quick else toy.DEFAULT_LRS)
    start = time.monotonic()
    doc = toy.reproduce(args.out, learning_rates=lrs, repeats=repeats, config=toy.ToyConfig(seed=args.seed),
                        workers=args.workers, scheduler=args.scheduler)
    print(toy.summary_table(doc))
    print(f"{2 * len(doc['learning_rates']) * repeats} points in {time.monotonic() - start:.1f} s; "
          f"wrote {os.path.join(args.out, 'results.json')}, fig2.png, fig3.png")
    return 0


def _table2_command(args, seeds, out) -> str:
    """The command line that reproduces this run (the options given, seeds and --out made explicit)."""
    words = ["refsnn", "reproduce", "table2", "--dataset", args.dataset]
    for option in ("epochs", "train_size", "test_size", "time_steps", "batch_size", "lr", "width", "dtype", "loss",
                   "init_gain", "encoding"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option.replace('_', '-')}", str(value)]
    words += ["--seeds", *map(str, seeds), "--reset-grad", *args.reset_grad, "--out", out]
    return " ".join(words + (["--quick"] if args.quick else []))


def _run_reproduce_table2(args) -> int:
    from . import table2

    seeds = args.seeds if args.seeds is not None else (table2.QUICK_SEEDS if args.quick else table2.DEFAULT_SEEDS)
    out = args.out or os.path.join("runs", f"table2-{args.dataset}" + ("-quick" if args.quick else ""))
    doc = table2.reproduce(args.dataset, out, seeds=seeds, modes=args.reset_grad, quick=args.quick,
                           workers=args.workers, scheduler=args.scheduler, data_dir=args.data,
                           command=_table2_command(args, seeds, out),
                           epochs=args.epochs, train_size=args.train_size, test_size=args.test_size,
                           time_steps=args.time_steps, batch_size=args.batch_size, lr=args.lr,
                           width=args.width, dtype=args.dtype, init_gain=args.init_gain, encoding=args.encoding,
                           loss={"name": args.loss} if args.loss else None)
    print(table2.summary_lines(doc))
    print(f"{len(doc['runs'])} runs in {doc['wall_seconds']:.1f} s; wrote {os.path.join(out, 'results.json')} "
          "and results.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.run(args)
    except UsageError as exc:
        print(f"{exc}".replace("\n", " "), file=sys.stderr)
        return 2
    except RefsnnError as exc:
        print(f"refsnn: error: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refsnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
