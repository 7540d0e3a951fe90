"""The paper's single-neuron experiment (Yang 2020, Table 1, Fig. 2 and Fig. 3), end to end.

    refsnn reproduce toy [--out DIR] [--repeats N] [--lrs ...] [--workers N] [--scheduler ADDR]
                         [--quick] [--seed S]

One LIF neuron (eq. 1-3) reads 50 Bernoulli(1/10) input spike trains of 100 steps, filtered by
the synaptic trace of eq. (2) (``input_trace``), and is trained by plain gradient descent on the
weights for 200 iterations to emit a Bernoulli(1/20) target train under the van Rossum loss
(eq. 6, a sum over steps). Gradients are refsnn's own BPTT (network_forward/network_backward),
with the reset term (``reset_grad="full"``, the paper) or without it (``"detached"``).

Choices where the paper is silent (docs/toy.md gives the reasons):
- inputs enter through the tau_s trace; initial weights ~ U[0, 0.05) (the author's code);
- the model's bias is held at 0 and never trained (the paper's neuron has none);
- a repeat resamples inputs, target and weights, all drawn from
  ``default_rng(SeedSequence(seed, spawn_key=(repeat,)))``, so "full" and "detached" at every
  learning rate see the same problems (a paired comparison);
- the learning-rate grid (``DEFAULT_LRS``) spans 5x below to 10x above the paper's 0.005.

Outputs in DIR: points/*.json (one per repeat x lr x mode, see refsnn.sweep), results.json
(layout in ``RESULTS_LAYOUT``), fig2.png, fig2_data.npz, fig3.png. Nothing here changes the
model's equations: this module only drives them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence, TextIO

import numpy as np

from .errors import RefsnnError
from .lif import trace_forward
from .network import Spec, network_backward, network_forward, parse_spec
from .sweep import run_sweep, write_json_atomic

MODES = ("full", "detached")
DEFAULT_LRS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
DEFAULT_REPEATS = 50
QUICK_LRS = (0.002, 0.005, 0.02)       # a subset of DEFAULT_LRS: a later full run reuses the points
QUICK_REPEATS = 3
POINT_VERSION = 1                       # bump when run_point's result changes meaning

RESULTS_LAYOUT = (
    "Every per-lr list is aligned with learning_rates. curves_mean[i][k] and curves_std[i][k] are the "
    "mean and standard deviation (ddof=0) over repeats of the loss after k gradient steps at "
    "learning_rates[i], k = 0..iterations; final_loss_* are taken at k = iterations. A repeat is one "
    "resampled problem (inputs, target, initial weights), the same for both modes and every lr. "
    "comparison[metric][i] pairs the two modes over repeats at learning_rates[i]; differences are "
    "full minus detached, so a negative median favours the reset term.")


@dataclass(frozen=True)
class ToyConfig:
    """The setting of Table 1, plus what the paper leaves open (module docstring)."""

    n_inputs: int = 50
    n_steps: int = 100
    p_input: float = 1 / 10
    p_target: float = 1 / 20
    tau_m: float = 6.0
    tau_s: float = 2.0
    theta: float = 1.0
    surrogate_T: float = 0.3
    loss_tau: float = 2.0               # van Rossum kernel: the author's toy uses tau_s
    weight_low: float = 0.0             # initial weights ~ U[weight_low, weight_high) (code)
    weight_high: float = 0.05
    iterations: int = 200
    paper_lr: float = 0.005             # the learning rate of Table 1 and Fig. 2
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def spec(self, reset_grad: str) -> dict[str, Any]:
        """The network spec (docs/oracle.md) of the neuron: one dense LIF unit, no hidden layer."""
        return {"input_shape": [self.n_inputs], "architecture": "1",
                "neuron": {"tau_m": self.tau_m, "tau_s": self.tau_s, "theta": self.theta},
                "surrogate": {"name": "sigmoid", "T": self.surrogate_T},
                "reset_grad": reset_grad, "forward": "hard",
                "loss": {"name": "van_rossum", "tau": self.loss_tau}, "input_trace": True}


class Problem(NamedTuple):
    """One resampled toy problem (time-major, batch of one)."""

    x: np.ndarray        # (T, 1, n_inputs) input spikes, 0/1
    target: np.ndarray   # (T, 1, 1) desired output spikes, 0/1
    weight: np.ndarray   # (1, n_inputs) initial weights


class TrainResult(NamedTuple):
    losses: np.ndarray                  # (iterations + 1,) loss after k steps
    weight: np.ndarray                  # (1, n_inputs) final weights
    spikes: np.ndarray                  # (T,) final output spikes
    history: dict[str, np.ndarray] | None  # with record=True: see ``train``


def make_problem(config: ToyConfig, repeat: int) -> Problem:
    """Inputs, target and initial weights of repeat ``repeat``, from (config.seed, repeat) only."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(repeat,)))
    T, n = config.n_steps, config.n_inputs
    x = (rng.random((T, 1, n)) < config.p_input).astype(np.float64)
    target = (rng.random((T, 1, 1)) < config.p_target).astype(np.float64)
    weight = rng.uniform(config.weight_low, config.weight_high, size=(1, n))
    return Problem(x=x, target=target, weight=weight)


def compile_spec(config: ToyConfig, reset_grad: str) -> tuple[Spec, Spec]:
    """(the model's spec, the spec the training loop runs on a pre-filtered input).

    The input trace of eq. (2) does not depend on the weights, so it is computed once per problem
    by ``filtered_input`` (the same trace_forward network_forward would call) and fed to a copy of
    the spec with ``input_trace`` off: the same arithmetic, without 200 identical re-filterings.
    """
    spec = parse_spec(config.spec(reset_grad))
    return spec, dataclasses.replace(spec, input_trace=False)


def filtered_input(spec: Spec, x: np.ndarray) -> np.ndarray:
    """x (T, 1, n_in) -> the presynaptic traces a_in (T, 1, n_in) the neuron reads (eq. 2)."""
    return trace_forward(x, spec.neuron.tau_s) if spec.input_trace else x


def _params(weight: np.ndarray) -> dict[str, np.ndarray]:
    return {"layers.0.weight": weight, "layers.0.bias": np.zeros(1)}   # bias fixed at 0


def train(config: ToyConfig, problem: Problem, lr: float, reset_grad: str,
          record: bool = False) -> TrainResult:
    """``config.iterations`` steps of plain gradient descent on the weights (bias held at 0).

    With ``record``, ``history`` holds per iteration k = 0..iterations-1 (rows) and step t
    (columns) the BPTT adjoints of the neuron (output_error, dL_dS, dL_dU_spatial, dL_dU_leak,
    dL_dU_reset, dL_dU: (iterations, T)), the output spikes S (iterations + 1, T), and the weight
    gradient of the other reset mode at the same weights (grad_full, grad_detached:
    (iterations, n_inputs)) for the fairness analysis.
    """
    spec, run_spec = compile_spec(config, reset_grad)
    other_spec = dataclasses.replace(run_spec, reset_grad="detached" if reset_grad == "full" else "full")
    a_in = filtered_input(spec, problem.x)
    weight = problem.weight.copy()
    losses = np.empty(config.iterations + 1)
    keys = ("output_error", "dL_dS/0", "dL_dU_spatial/0", "dL_dU_leak/0", "dL_dU_reset/0", "dL_dU/0")
    history: dict[str, list] = {key: [] for key in (*keys, "S", "grad_full", "grad_detached")}
    for k in range(config.iterations + 1):
        loss, S, cache = network_forward(run_spec, _params(weight), a_in, problem.target)
        losses[k] = loss
        if record:
            history["S"].append(S[:, 0, 0])
        if k == config.iterations:
            break
        grads = network_backward(run_spec, cache, adjoints=record)       # eq. (6)-(8), BPTT
        dL_dW = grads["grad/layers.0.weight"]
        if record:
            for key in keys:
                history[key].append(grads[key][:, 0, 0])
            other = network_backward(other_spec, cache)["grad/layers.0.weight"]
            history[f"grad_{reset_grad}"].append(dL_dW[0])
            history[f"grad_{other_spec.reset_grad}"].append(other[0])
        weight = weight - lr * dL_dW                                     # plain gradient descent
    recorded = None
    if record:
        recorded = {key.replace("/0", ""): np.array(value) for key, value in history.items()}
    return TrainResult(losses=losses, weight=weight, spikes=S[:, 0, 0].copy(), history=recorded)


def run_point(point: dict[str, Any]) -> dict[str, Any]:
    """One sweep point: train repeat ``point['repeat']`` at ``point['lr']`` in one reset mode."""
    config = ToyConfig(**point["config"])
    problem = make_problem(config, point["repeat"])
    result = train(config, problem, point["lr"], point["reset_grad"])
    exact = np.flatnonzero(result.losses == 0.0)
    return {"losses": result.losses.tolist(),
            "final_loss": float(result.losses[-1]),
            "first_exact_iteration": int(exact[0]) if exact.size else None,
            "final_spike_count": int(result.spikes.sum()),
            "target_spike_count": int(problem.target.sum())}


def point_name(point: dict[str, Any]) -> str:
    return f"{point['reset_grad']}_lr={point['lr']!r}_r{point['repeat']:04d}"


def make_points(config: ToyConfig, learning_rates: Sequence[float], repeats: int) -> list[dict[str, Any]]:
    return [{"experiment": "toy", "version": POINT_VERSION, "config": config.to_dict(),
             "repeat": repeat, "lr": float(lr), "reset_grad": mode}
            for mode in MODES for lr in learning_rates for repeat in range(repeats)]


# ----------------------------------------------------------------------------- analysis

def _quantiles(values: np.ndarray) -> dict[str, float]:
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return {"mean": float(np.mean(values)), "median": float(median), "q25": float(q25),
            "q75": float(q75), "min": float(np.min(values)), "max": float(np.max(values))}


def paired_comparison(full: np.ndarray, detached: np.ndarray) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of full vs detached over paired repeats (scipy)."""
    from scipy.stats import wilcoxon

    difference = full - detached
    out = {"median_difference": float(np.median(difference)),
           "mean_difference": float(np.mean(difference)),
           "full_wins": int(np.sum(difference < 0)), "detached_wins": int(np.sum(difference > 0)),
           "ties": int(np.sum(difference == 0)), "statistic": None, "p_value": None}
    if np.any(difference != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # few non-zero pairs: normal approx. warns
            test = wilcoxon(full, detached, zero_method="wilcox", alternative="two-sided")
        out["statistic"] = float(test.statistic)
        out["p_value"] = float(test.pvalue) if math.isfinite(test.pvalue) else None
    return out


def initial_gradients(config: ToyConfig, repeats: int) -> dict[str, Any]:
    """Over repeats, |g_full| / |g_detached| and cos(g_full, g_detached) at the initial weights."""
    spec, spec_full = compile_spec(config, "full")
    spec_detached = compile_spec(config, "detached")[1]
    ratios, cosines = [], []
    for repeat in range(repeats):
        problem = make_problem(config, repeat)
        a_in = filtered_input(spec, problem.x)
        _, _, cache = network_forward(spec_full, _params(problem.weight), a_in, problem.target)
        g_full = network_backward(spec_full, cache)["grad/layers.0.weight"].ravel()
        g_detached = network_backward(spec_detached, cache)["grad/layers.0.weight"].ravel()  # same forward
        norm_full, norm_detached = np.linalg.norm(g_full), np.linalg.norm(g_detached)
        if norm_full > 0 and norm_detached > 0:                 # else ratio and cosine are undefined
            ratios.append(norm_full / norm_detached)
            cosines.append(g_full @ g_detached / (norm_full * norm_detached))
    return {"repeats_with_nonzero_gradients": len(ratios),
            "norm_ratio_full_over_detached": _quantiles(np.array(ratios)) if ratios else None,
            "cosine": _quantiles(np.array(cosines)) if cosines else None}


def best_over_grid(learning_rates: Sequence[float], final_loss_mean: Sequence[float]) -> dict[str, Any]:
    """The lr with the lowest mean final loss, and every lr whose mean final loss is within 2x of it."""
    losses = np.asarray(final_loss_mean)
    best = int(np.argmin(losses))
    within = [float(lr) for lr, loss in zip(learning_rates, losses) if loss <= 2 * losses[best]]
    return {"best_lr": float(learning_rates[best]), "best_final_loss_mean": float(losses[best]),
            "best_at_grid_edge": len(losses) > 1 and best in (0, len(losses) - 1),
            "lrs_within_2x": within, "n_lrs_within_2x": len(within)}


def analyse(config: ToyConfig, learning_rates: Sequence[float], repeats: int,
            results: Sequence[dict[str, Any]], points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate the sweep's per-point results into the results.json document (RESULTS_LAYOUT)."""
    lr_index = {float(lr): i for i, lr in enumerate(learning_rates)}
    curves = {mode: np.empty((len(learning_rates), repeats, config.iterations + 1)) for mode in MODES}
    exact = {mode: np.full((len(learning_rates), repeats), np.nan) for mode in MODES}
    for point, result in zip(points, results):
        i, r = lr_index[point["lr"]], point["repeat"]
        curves[point["reset_grad"]][i, r] = result["losses"]
        if result["first_exact_iteration"] is not None:
            exact[point["reset_grad"]][i, r] = result["first_exact_iteration"]

    doc: dict[str, Any] = {
        "experiment": "toy", "paper": "Yang 2020, arXiv 2011.09964, Table 1 / Fig. 2 / Fig. 3",
        "layout": RESULTS_LAYOUT, "config": config.to_dict(),
        "spec": {mode: config.spec(mode) for mode in MODES},
        "trained": ["layers.0.weight"], "bias": "layers.0.bias held at 0, not trained",
        "learning_rates": [float(lr) for lr in learning_rates], "repeats": repeats}
    for mode in MODES:
        final = curves[mode][:, :, -1]
        solved = ~np.isnan(exact[mode])
        doc[mode] = {
            "final_loss_mean": final.mean(axis=1).tolist(),
            "final_loss_std": final.std(axis=1).tolist(),
            "final_loss_median": np.median(final, axis=1).tolist(),
            "mean_loss_mean": curves[mode].mean(axis=(1, 2)).tolist(),
            "exact_match_fraction": solved.mean(axis=1).tolist(),     # loss 0 is absorbing: grad = 0
            "curves_mean": curves[mode].mean(axis=1).tolist(),
            "curves_std": curves[mode].std(axis=1).tolist()}
    doc["comparison"] = {
        "test": "scipy.stats.wilcoxon, two-sided, zero_method='wilcox' (zero differences dropped), "
                "paired by repeat; difference = full - detached; a mode wins a pair with the lower loss",
        "final_loss": [paired_comparison(curves["full"][i, :, -1], curves["detached"][i, :, -1])
                       for i in range(len(learning_rates))],
        "mean_loss": [paired_comparison(curves["full"][i].mean(axis=1), curves["detached"][i].mean(axis=1))
                      for i in range(len(learning_rates))]}
    best = {mode: best_over_grid(learning_rates, doc[mode]["final_loss_mean"]) for mode in MODES}
    best_index = {mode: lr_index[best[mode]["best_lr"]] for mode in MODES}
    doc["fairness"] = {
        "best_over_grid": best,
        "best_vs_best": {"metric": "final_loss", "full_lr": best["full"]["best_lr"],
                         "detached_lr": best["detached"]["best_lr"],
                         **paired_comparison(curves["full"][best_index["full"], :, -1],
                                             curves["detached"][best_index["detached"], :, -1])},
        "gradient_at_init": initial_gradients(config, repeats)}
    return doc


# ----------------------------------------------------------------------------- figures

def _save_figure(figure, path: Path) -> None:
    """Write a PNG atomically, reduced to a 128-colour palette (3x smaller, same look)."""
    import io

    from PIL import Image        # pillow: a dependency of matplotlib

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    image = Image.open(buffer).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT,
                                                       dither=Image.Dither.NONE)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        image.save(tmp, format="png", optimize=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def figure2(history: dict[str, np.ndarray], target: np.ndarray, lr: float, path: Path, repeat: int = 0) -> None:
    """Fig. 2: the four phases of the gradient over all iterations overlaid, and the raster."""
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    iterations, T = history["dL_dU"].shape
    steps = np.arange(1, T + 1)
    colours = colormaps["viridis"](np.linspace(0, 1, iterations))
    figure = Figure(figsize=(12, 8), layout="constrained")
    grid = figure.add_gridspec(4, 2, width_ratios=(1.5, 1))
    panels = (("output_error", "A  output error f(S) - f(d)"),
              ("dL_dS", "B  dL/dS (left tails)"),
              ("dL_dU_spatial", "C  spatial part of dL/dU"),
              ("dL_dU", "D  dL/dU with the temporal terms (leak + reset)"))
    for row, (key, title) in enumerate(panels):
        axis = figure.add_subplot(grid[row, 0])
        lines = np.stack([np.broadcast_to(steps, history[key].shape), history[key]], axis=-1)  # (K, T, 2)
        axis.add_collection(LineCollection(lines, colors=colours, linewidths=0.6, alpha=0.5))
        axis.autoscale_view()
        axis.set_title(title, loc="left", fontsize=10)
        axis.set_xlim(1, T)
        if row == 3:
            axis.set_xlabel("time step t")
    raster = figure.add_subplot(grid[:, 1])
    spikes = history["S"]                              # (iterations + 1, T)
    k_idx, t_idx = np.nonzero(spikes)
    raster.scatter(t_idx + 1, k_idx, s=2, color="black", label="output spikes")
    for t in np.flatnonzero(target):
        raster.axvline(t + 1, color="tab:red", linewidth=0.8, alpha=0.6)
    raster.plot([], [], color="tab:red", label="target spikes")
    raster.set_xlim(0.5, T + 0.5)
    raster.set_ylim(spikes.shape[0] - 0.5, -0.5)
    raster.set_xlabel("time step t")
    raster.set_ylabel("iteration")
    raster.set_title(f"output spikes over iterations (repeat {repeat}, lr {lr:g}, reset full)", fontsize=10)
    raster.legend(loc="lower right", fontsize=8)
    figure.suptitle("Single neuron, BPTT with the reset term: 200 iterations overlaid (colour = iteration)")
    _save_figure(figure, path)


def figure3(doc: dict[str, Any], path: Path) -> None:
    """Fig. 3: loss curves, mean (solid) and +-1 std (dashed) over repeats, one panel per lr."""
    from matplotlib.figure import Figure

    lrs = doc["learning_rates"]
    columns = min(3, len(lrs))
    rows = math.ceil(len(lrs) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    style = {"full": ("tab:blue", "with reset term (full)"), "detached": ("tab:orange", "without (detached)")}
    initial = max(doc[mode]["curves_mean"][i][0] for mode in MODES for i in range(len(lrs)))
    top = 3.0 * initial                                 # a first-iterations transient may go off scale
    for i, lr in enumerate(lrs):
        axis = axes.flat[i]
        peak = max(max(np.add(doc[mode]["curves_mean"][i], doc[mode]["curves_std"][i])) for mode in MODES)
        if peak > top:
            axis.text(0.98, 0.95, f"clipped: mean + std reaches {peak:.3g}", transform=axis.transAxes,
                      ha="right", va="top", fontsize=7)
        for mode in MODES:
            colour, label = style[mode]
            mean = np.array(doc[mode]["curves_mean"][i])
            std = np.array(doc[mode]["curves_std"][i])
            k = np.arange(mean.size)
            axis.plot(k, mean, color=colour, label=label)
            axis.plot(k, mean + std, color=colour, linestyle="--", linewidth=0.8)
            axis.plot(k, np.maximum(mean - std, 0.0), color=colour, linestyle="--", linewidth=0.8)
        axis.set_title(f"lr = {lr:g}", fontsize=10)
        axis.set_xlabel("iteration")
        axis.set_ylabel("van Rossum loss")
        axis.set_ylim(0, top)
    for axis in list(axes.flat)[len(lrs):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(f"Loss over {doc['repeats']} repeats: mean (solid), +-1 std (dashed; lower clipped at 0)")
    _save_figure(figure, path)


# ----------------------------------------------------------------------------- the command

def summary_table(doc: dict[str, Any]) -> str:
    """A short text table of the outcome (printed by ``refsnn reproduce toy``)."""
    lines = [f"{'lr':>8}  {'full: final loss':>20}  {'detached: final loss':>20}  "
             f"{'median diff':>11}  {'wins f/d/tie':>12}  {'Wilcoxon p':>10}"]
    for i, lr in enumerate(doc["learning_rates"]):
        cmp = doc["comparison"]["final_loss"][i]
        p = "n/a" if cmp["p_value"] is None else f"{cmp['p_value']:.2g}"
        lines.append(f"{lr:>8g}  {doc['full']['final_loss_mean'][i]:>11.4f} +- {doc['full']['final_loss_std'][i]:<6.3f}"
                     f"  {doc['detached']['final_loss_mean'][i]:>11.4f} +- {doc['detached']['final_loss_std'][i]:<6.3f}"
                     f"  {cmp['median_difference']:>11.4g}  {cmp['full_wins']:>4}/{cmp['detached_wins']}/{cmp['ties']:<4}"
                     f"  {p:>10}")
    fair = doc["fairness"]
    for mode in MODES:
        best = fair["best_over_grid"][mode]
        edge = " (edge of the grid)" if best["best_at_grid_edge"] else ""
        lines.append(f"{mode:>8}: best mean final loss {best['best_final_loss_mean']:.4f} at lr {best['best_lr']:g}{edge}; "
                     f"within 2x at lr {', '.join(f'{lr:g}' for lr in best['lrs_within_2x'])}")
    vs = fair["best_vs_best"]
    p = "n/a" if vs["p_value"] is None else f"{vs['p_value']:.2g}"
    lines.append(f"best vs best (full at {vs['full_lr']:g}, detached at {vs['detached_lr']:g}): median diff "
                 f"{vs['median_difference']:.4g}, wins f/d/tie {vs['full_wins']}/{vs['detached_wins']}/{vs['ties']}, "
                 f"Wilcoxon p {p}")
    ratio, cosine = fair["gradient_at_init"]["norm_ratio_full_over_detached"], fair["gradient_at_init"]["cosine"]
    if ratio is not None:
        lines.append(f"at init: |g_full|/|g_detached| median {ratio['median']:.3g} "
                     f"(IQR {ratio['q25']:.3g}-{ratio['q75']:.3g}), cosine median {cosine['median']:.3g} "
                     f"(IQR {cosine['q25']:.3g}-{cosine['q75']:.3g}) over {doc['repeats']} repeats")
    return "\n".join(lines)


def reproduce(out_dir: str | os.PathLike, *, learning_rates: Sequence[float] = DEFAULT_LRS,
              repeats: int = DEFAULT_REPEATS, config: ToyConfig | None = None, workers: int | None = None,
              scheduler: str | None = None, figures: bool = True, progress: bool = True,
              stream: TextIO | None = None) -> dict[str, Any]:
    """Run the sweep (resuming from out_dir/points), write results.json and the figures; return the doc."""
    config = config or ToyConfig()
    learning_rates = sorted({float(lr) for lr in learning_rates})
    if not learning_rates or any(not (lr > 0 and math.isfinite(lr)) for lr in learning_rates):
        raise RefsnnError(f"learning rates must be finite and > 0, got {learning_rates}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise RefsnnError(f"repeats must be an integer >= 1, got {repeats!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RefsnnError(f"--out {str(out)!r} exists and is not a folder")

    points = make_points(config, learning_rates, repeats)
    results = run_sweep(run_point, points, out / "points", name=point_name, workers=workers,
                        scheduler=scheduler, progress=progress, label="toy", stream=stream)
    doc = analyse(config, learning_rates, repeats, results, points)

    # Fig. 2: repeat 0 at the paper's lr with the reset term, recorded iteration by iteration.
    problem = make_problem(config, 0)
    run = train(config, problem, config.paper_lr, "full", record=True)
    g_full, g_detached = run.history["grad_full"], run.history["grad_detached"]
    norms = np.linalg.norm(g_full, axis=1), np.linalg.norm(g_detached, axis=1)
    nonzero = (norms[0] > 0) & (norms[1] > 0)
    exact = np.flatnonzero(run.losses == 0.0)
    doc["figure2"] = {"repeat": 0, "lr": config.paper_lr, "reset_grad": "full",
                      "initial_loss": float(run.losses[0]), "final_loss": float(run.losses[-1]),
                      "first_exact_iteration": int(exact[0]) if exact.size else None,
                      "target_spike_count": int(problem.target.sum()),
                      "gradient_along_trajectory": {
                          "iterations_with_nonzero_gradients": int(nonzero.sum()),
                          "norm_ratio_full_over_detached": _quantiles(norms[0][nonzero] / norms[1][nonzero])
                          if nonzero.any() else None,
                          "cosine": _quantiles(np.sum(g_full * g_detached, axis=1)[nonzero]
                                               / (norms[0] * norms[1])[nonzero]) if nonzero.any() else None}}
    write_json_atomic(out / "results.json", doc)
    if figures:
        from .oracle import save_npz_atomic

        save_npz_atomic(out / "fig2_data.npz", {**run.history, "target": problem.target[:, 0, 0],
                                                "losses": run.losses})
        figure2(run.history, problem.target[:, 0, 0], config.paper_lr, out / "fig2.png")
        figure3(doc, out / "fig3.png")
    return doc
