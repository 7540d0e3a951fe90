"""The ``refsnn`` command line (also ``python -m refsnn``).

    refsnn grad SPEC.json INPUTS.npz [--params PARAMS.npz] [--seed N] [--adjoints] --out OUT.npz

A user's mistake (bad file, bad spec, bad shape, bad option) prints one line,
``refsnn: error: ...``, on stderr and exits with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .errors import RefsnnError


class UsageError(Exception):
    """Raised by the argument parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
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
