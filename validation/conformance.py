"""The conformance report: what each framework configuration computes, measured against refsnn.

    python -m validation.conformance --out docs/conformance.md

For snnTorch, SpikingJelly and Norse (validation/frameworks/) and the two autograd references
(validation/torch_reference.py, validation/jax_reference.py) this runs one small spiking case
through refsnn and through each configuration, and writes a Markdown report:

- for the configurations that reproduce eq. (1)-(3): per refsnn reset mode, the relative error
  of the loss, of the spikes and of every gradient, or why the framework cannot;
- for each framework's default configuration(s): the error against refsnn in *each* reset mode,
  so the mode the default computes shows rounding-level agreement and the others O(0.1-1);
- the versions of everything involved, the surrogate mappings and the known limitations.

Relative error of an array: max |refsnn - other| / max(|refsnn|, |other|). Nothing under refsnn/
imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import refsnn
from refsnn.lif import RESET_GRADS
ADAPTERS = ("snntorch_adapter", "spikingjelly_adapter", "norse_adapter")

#: the case every row is measured on (T steps, B samples, a 5-7-3 network)
BASE_SPEC = {"input_shape": [5], "architecture": "7-3",
             "neuron": {"tau_m": 6.0, "tau_s": 2.0, "theta": 1.0},
             "surrogate": {"name": "sigmoid", "T": 0.3}, "reset_grad": "full", "forward": "hard",
             "input_trace": False}
T_STEPS, BATCH, SEED = 12, 2, 0
#: the surrogate each framework's configured rows use (Norse has few: see its adapter)
CONFIGURED_SURROGATE = {"snntorch_adapter": {"name": "sigmoid", "T": 0.3},
                        "spikingjelly_adapter": {"name": "sigmoid", "T": 0.3},
                        "norse_adapter": {"name": "fast_sigmoid", "slope": 1.0}}
MARGIN = {"float64": 1e-6, "float32": 1e-4}     # distance of every membrane from theta


def merged(base: dict, overrides: dict) -> dict:
    """base with overrides applied (one level deep for dict entries such as "neuron")."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        if isinstance(value, dict) and key != "surrogate" and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def with_reset(spec: dict, reset_grad: str, forward: str | None = None) -> dict:
    out = {**spec, "reset_grad": reset_grad}
    if forward is not None:
        out["forward"] = forward
    return out


# ----------------------------------------------------------------------------- measuring

def compare(spec: dict, x, target, params, theirs: dict) -> dict[str, Any]:
    """Errors of ``theirs`` against refsnn on ``spec``: loss, spikes (count differing) and grads."""
    from validation.frameworks.common import errors, spike_mismatch
    ours = refsnn.grad(spec, x, target, params, adjoints=True)
    err = errors(ours, theirs, spec)
    differ, total = spike_mismatch(ours, theirs, len(refsnn.parse_spec(spec).layers))
    return {"errors": err, "spikes_differ": differ, "spikes_total": total}


def evaluate_default(default, base: dict = BASE_SPEC) -> dict[str, Any]:
    """Run one framework default once and compare it with refsnn in each reset mode."""
    from validation.frameworks.common import spiking_case
    spec = merged(base, default.overrides)
    round_to = np.float32 if default.dtype == "float32" else None
    x, target, params = spiking_case(spec, T=T_STEPS, B=BATCH, seed=SEED, margin=MARGIN[default.dtype],
                                     round_to=round_to)
    theirs = default.run(spec, x, target, params)
    by_mode = {mode: compare(with_reset(spec, mode), x, target, params, theirs) for mode in RESET_GRADS}
    worst = {mode: max(r["errors"].values()) for mode, r in by_mode.items()}
    best = min(worst, key=worst.get)
    computes = best if worst[best] <= default.bar and by_mode[best]["spikes_differ"] == 0 else None
    return {"default": default, "spec": spec, "by_mode": by_mode, "worst": worst, "computes": computes}


def evaluate_configured(adapter, base: dict = BASE_SPEC) -> list[dict[str, Any]]:
    """For each forward and reset mode: the adapter configured for it, and its errors (or why not).

    Norse is run twice: its synapse off (the glue applies eq. 2) and its synapse as eq. (2)
    (on a spec with input_trace=True, since Norse then filters the network input too).
    """
    from validation.frameworks.common import Unsupported, spiking_case
    name = adapter.__name__.rsplit(".", 1)[-1]
    variants = [("", {}, {})]
    if name == "norse_adapter":
        variants.append((" (synapse as eq. 2, input_trace)", {"synapse": "trace"}, {"input_trace": True}))
    rows = []
    for forward in ("hard", "smooth"):
        for mode in RESET_GRADS:
            for suffix, kwargs, spec_overrides in variants:
                spec = merged(base, {"surrogate": CONFIGURED_SURROGATE[name], "reset_grad": mode,
                                     "forward": forward, **spec_overrides})
                row = {"mode": mode, "forward": forward, "suffix": suffix}
                try:
                    setup = adapter.configure(spec, **kwargs)
                except Unsupported as why:
                    rows.append({**row, "why": str(why)})
                    continue
                x, target, params = spiking_case(spec, T=T_STEPS, B=BATCH, seed=SEED, margin=MARGIN["float64"])
                rows.append({**row, "setup": setup, **compare(spec, x, target, params, setup.run(x, target, params))})
    return rows


def evaluate_references(base: dict = BASE_SPEC) -> list[dict[str, Any]]:
    """torch_reference and jax_reference against refsnn in each reset mode and forward."""
    from validation.frameworks.common import spiking_case
    references = []
    for module_name, function_name in (("validation.torch_reference", "torch_adjoints"),
                                       ("validation.jax_reference", "jax_adjoints")):
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except ImportError as exc:
            references.append({"name": module_name, "missing": str(exc)})
            continue
        for forward in ("hard", "smooth"):
            for mode in RESET_GRADS:
                spec = with_reset(base, mode, forward)
                x, target, params = spiking_case(spec, T=T_STEPS, B=BATCH, seed=SEED, margin=MARGIN["float64"])
                references.append({"name": module_name, "mode": mode, "forward": forward,
                                   **compare(spec, x, target, params, function(spec, x, target, params))})
    return references


# ----------------------------------------------------------------------------- writing

def fmt(value: float) -> str:
    if value == 0.0:
        return "0"
    return f"{value:.1e}"


def grad_columns(spec: dict) -> list[str]:
    n = len(refsnn.parse_spec(spec).layers)
    return [f"grad/layers.{i}.{p}" for i in range(n) for p in ("weight", "bias")]


def error_cells(result: dict, spec: dict, forward: str = "hard") -> list[str]:
    """loss, spikes, gradients: spikes as "differing/total" for the hard forward (0/1 values),
    as a relative error for the smooth one (relaxed values in (0, 1))."""
    err = result["errors"]
    spikes = (f"{result['spikes_differ']}/{result['spikes_total']}" if forward == "hard"
              else fmt(err["spikes"]))
    return [fmt(err["loss"]), spikes] + [fmt(err[key]) for key in grad_columns(spec)]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def versions(adapters: dict) -> list[list[str]]:
    rows = [["python", platform.python_version()], ["numpy", np.__version__],
            ["refsnn", metadata.version("refsnn")]]
    for package in ("torch", "jax", "jaxlib", "snntorch", "spikingjelly", "norse"):
        try:
            rows.append([package, metadata.version(package)])
        except metadata.PackageNotFoundError:
            rows.append([package, "not installed"])
    return rows


def write_report(adapters: dict, defaults: list, configured: dict, references: list) -> str:
    columns = grad_columns(BASE_SPEC)
    short = [c.replace("grad/layers.", "dW").replace(".weight", "").replace(".bias", " b")
             .replace("dW0 b", "db0").replace("dW1 b", "db1") for c in columns]
    out = ["# Conformance of SNN frameworks to refsnn's eq. (1)-(3)", "",
           "Generated by `python -m validation.conformance --out docs/conformance.md`; do not edit by hand.",
           "Every number is measured, on one small spiking case (below), against refsnn's float64 BPTT.",
           "", "Relative error of an array: max |refsnn - other| / max(|refsnn|, |other|); *spikes*: "
           "entries that differ / entries, over both layers (smooth forward: the relative error of the "
           "relaxed spikes). A reset mode a configuration computes shows "
           "rounding-level errors (~1e-16 in float64); any other mode shows errors of order 0.1-1, the size "
           "of the reset term itself.", ""]

    out += ["## What the defaults compute", ""]
    rows = []
    for result in defaults:
        d = result["default"]
        computes = result["computes"] or "none (not eq. 1)"
        flag = "" if (result["computes"] == d.claimed_reset) else " (differs from the adapter's claim!)"
        others = [f"{m}: {fmt(result['worst'][m])}" for m in RESET_GRADS if m != result["computes"]]
        rows.append([d.framework, f"`{d.call}`", d.dtype, f"**{computes}**{flag}", d.surrogate,
                     fmt(result["worst"][result["computes"]]) if result["computes"] else "-",
                     "; ".join(others)])
    out += table(["framework", "default", "dtype", "reset mode it computes", "surrogate",
                  "max rel. error in that mode", "max rel. error against the other modes"], rows)
    out += ["", "The case each default runs on fixes the constants the default implies (its tau, threshold "
            "and surrogate; see the notes below); the reset mode is found, not assumed.", ""]

    for name, adapter in adapters.items():
        out += [f"## {adapter.FRAMEWORK} {adapter.VERSION}", "", "### Configured to reproduce eq. (1)-(3)", ""]
        rows = []
        for row in configured[name]:
            label = f"{row['mode']}, {row['forward']}{row['suffix']}"
            if "why" in row:
                rows.append([label, "cannot: " + row["why"], "", "", *[""] * len(columns)])
            else:
                rows.append([label, f"`{row['setup'].call}`; surrogate: {row['setup'].surrogate}",
                             *error_cells(row, BASE_SPEC, row["forward"])])
        out += table(["refsnn reset mode, forward", "configuration", "loss", "spikes", *short], rows)
        out += ["", "### Defaults, against each refsnn reset mode", ""]
        for result in (r for r in defaults if r["default"].framework == adapter.FRAMEWORK):
            d = result["default"]
            out += [f"`{d.call}` ({d.dtype}): {d.note}. Constants: `{json.dumps(d.overrides)}`.", ""]
            rows = [[mode, *error_cells(result["by_mode"][mode], result["spec"])] for mode in RESET_GRADS]
            out += table(["refsnn reset mode", "loss", "spikes", *short], rows) + [""]
        out += ["### Surrogates (refsnn name: framework equivalent)", ""]
        out += [f"- {key}: {value}" for key, value in adapter.SURROGATE_MAP.items()] + [""]
        out += ["### Configurations that cannot match eq. (1)-(3), and why", ""]
        out += [f"- {what}: {why}" for what, why in adapter.LIMITATIONS] + [""]
        out += ["### Facts the adapter relies on, measured when this report was generated", ""]
        out += table(["probe", "result"], [[what, result] for what, result in adapter.probes()]) + [""]

    out += ["## The autograd references", "",
            "validation/torch_reference.py and validation/jax_reference.py differentiate the forward of "
            "eq. (1)-(3), (6) with torch autograd and JAX (float64); the reset modes are detach / "
            "stop_gradient in their forward graphs.", ""]
    rows = []
    for ref in references:
        if "missing" in ref:
            rows.append([ref["name"], "not installed: " + ref["missing"], "", "", *[""] * len(columns)])
        else:
            rows.append([ref["name"], f"{ref['mode']}, {ref['forward']}",
                         *error_cells(ref, BASE_SPEC, ref["forward"])])
    out += table(["reference", "reset mode, forward", "loss", "spikes", *short], rows) + [""]

    out += ["## The case", "",
            f"T = {T_STEPS}, B = {BATCH}, input spikes with p = 1/2, target spikes with p = 1/5, weights "
            "scaled so that every layer spikes (validation/frameworks/common.py: `spiking_case`, first "
            f"seed from {SEED} with every membrane at least 1e-6 (float32: 1e-4) away from theta). Base "
            "spec (each row overrides the surrogate, the reset mode and the forward; each default its "
            "constants):", "", "```json", json.dumps(BASE_SPEC), "```", ""]
    out += ["## Versions", ""] + table(["package", "version"], versions(adapters)) + [""]
    out += [f"Platform: {platform.platform()}; torch threads: 1.", ""]
    return "\n".join(out)


def build_report() -> str:
    import torch
    torch.set_num_threads(1)
    adapters = {name: importlib.import_module(f"validation.frameworks.{name}") for name in ADAPTERS}
    defaults = [evaluate_default(d) for adapter in adapters.values() for d in adapter.DEFAULTS]
    configured = {name: evaluate_configured(adapter) for name, adapter in adapters.items()}
    references = evaluate_references()
    return write_report(adapters, defaults, configured, references)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation.conformance", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="-", help="Markdown file to write (default: stdout)")
    args = parser.parse_args(argv)
    text = build_report()
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
