"""Benchmark: refsnn against PyTorch autograd on the paper's three CNNs, forward + backward.

    python -m validation.benchmark [--quick] [--out docs/benchmark.json] [--repeats N]

In ONE process and interleaved (so that a load from other processes hits all of them alike), it
times one forward + backward of the Table-3 networks (refsnn presets "nmnist", "mnist",
"cifar10", no padding) in float64 and float32:

- ``refsnn``         ``network_forward`` + ``network_backward`` on a parsed spec and parameters
                     validated beforehand (what a training loop pays per step);
- ``refsnn.grad``    the oracle end to end (spec parsing, input and parameter checks included);
- ``torch_per_step`` PyTorch autograd, snnTorch style: a loop over t that calls every layer
                     (conv2d, pooling, linear, the LIF step, the trace) on the (B, ...) batch of step t;
- ``torch_multi_step`` PyTorch autograd, SpikingJelly multi-step style: each stateless layer once
                     on the time-folded (T*B, ...) batch, only the LIF and trace recurrences loop over t.

All three compute the same thing: eq. (1)-(3) of refsnn/lif.py with the hard forward, the sigmoid
surrogate, the full reset gradient (S_{t-1} stays in the autograd graph), the traces of eq. (2)
between layers, and the rate cross-entropy loss of losses.py; the torch gradients are checked
against refsnn's in float64 before timing (``agreement`` in the JSON). torch uses as many threads
as numpy's BLAS (``torch.set_num_threads``).

Reported per network and dtype: median and min seconds over ``--repeats`` runs (after a warm-up),
the ratio refsnn / torch for each torch style, the GEMM FLOPs counted analytically (conv and dense
forward, dW and dx), the GFLOP/s they represent over refsnn's whole step and over the time of the
same matrix products replayed alone, against numpy's matmul peak measured in this run (a square
2048 product), and memory: the bytes each implementation keeps between forward and backward
(refsnn: the arrays of its cache; torch: the tensors autograd saved, via saved_tensors_hooks), the
peak of numpy allocations during refsnn's forward + backward (tracemalloc), and the peak resident-
set growth of one forward + backward in a fresh subprocess for each implementation (VmHWM after
resetting it through /proc/self/clear_refs, minus VmRSS before; Linux only). A scaling table
times refsnn and the faster torch style on the MNIST network for T = 5, 10, 20, 40 and B = 4, 8, 16,
32. This is a benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any, Callable

import refsnn  # before numpy: refsnn/__init__.py sets OpenBLAS's idle-thread timeout, read when numpy loads
import numpy as np  # noqa: E402,I001

from refsnn import memory
from refsnn.network import Conv, Pool, check_params, network_backward, network_forward, parse_spec

NETWORKS = {"nmnist": {"T": 5, "B": 16}, "mnist": {"T": 30, "B": 16}, "cifar10": {"T": 5, "B": 8}}
QUICK_NETWORKS = {"nmnist": {"T": 2, "B": 2}, "mnist": {"T": 3, "B": 2}, "cifar10": {"T": 2, "B": 1}}
DTYPES = ("float64", "float32")
SCALING_T = (5, 10, 20, 40)
SCALING_B = (4, 8, 16, 32)
NEURON = {"tau_m": 5.0, "tau_s": 2.0, "theta": 1.0}
SURROGATE_T = 0.4


# ----------------------------------------------------------------------------- the problem

def make_spec(network: str, dtype: str) -> dict[str, Any]:
    return {"preset": network, "dtype": dtype, "forward": "hard", "reset_grad": "full",
            "neuron": dict(NEURON), "surrogate": {"name": "sigmoid", "T": SURROGATE_T},
            "loss": {"name": "rate_ce"}}


def make_problem(network: str, T: int, B: int, dtype: str, seed: int = 0):
    """Input spikes (p = 0.3), labels, and parameters under which every layer spikes.

    Weights: U(-0.5, 2.5) * 0.5 theta / (fan_in * activity) + N(0, (2 theta)^2 / (fan_in * activity)),
    the recipe of tests/test_torch_cnn.py, so that currents differ from neuron to neuron and
    spike rates are neither 0 nor 1 (the timings do not depend on them much, but the comparison
    with torch is only meaningful when spikes and resets happen).
    """
    spec = parse_spec(make_spec(network, dtype))
    rng = np.random.default_rng(seed)
    x = (rng.random((T, B, *spec.input_shape)) < 0.3).astype(dtype)
    labels = rng.integers(0, spec.n_out, size=B)
    params, activity, i = {}, 0.3, 0
    for layer in spec.layers:
        if isinstance(layer, Pool):
            continue
        shape = spec.param_shapes()[f"layers.{i}.weight"]
        fan_in = math.prod(shape[1:])
        weight = (rng.uniform(-0.5, 2.5, shape) * 0.5 / (fan_in * activity)
                  + rng.normal(0.0, 2.0 / math.sqrt(fan_in * activity), shape))
        params[f"layers.{i}.weight"] = weight.astype(dtype)
        params[f"layers.{i}.bias"] = rng.uniform(-0.1, 0.1, shape[0]).astype(dtype)
        activity, i = 0.15, i + 1
    return spec, check_params(spec, params), x, labels


def gemm_flops(spec, T: int, B: int) -> dict[str, int]:
    """FLOPs (2 m n k per product) of the matrix products of one forward + backward.

    conv (O, C, k, k) -> (O, Ho, Wo): forward, dW and dx each 2 * (T*B*Ho*Wo) * O * C*k*k;
    dense (out, in): each 2 * T*B * out * in. The first layer computes no dx.
    """
    shapes = spec.shapes()
    N = T * B
    forward = backward = 0
    first = True
    for layer, shape_in, shape_out in zip(spec.layers, shapes[:-1], shapes[1:]):
        if isinstance(layer, Pool):
            continue
        if isinstance(layer, Conv):
            flops = 2 * N * shape_out[1] * shape_out[2] * layer.channels * shape_in[0] * layer.kernel ** 2
        else:
            flops = 2 * N * layer.n_out * math.prod(shape_in)
        forward += flops
        backward += flops if first else 2 * flops
        first = False
    return {"forward": forward, "backward": backward, "total": forward + backward}


def replay_gemms(spec, T: int, B: int, dtype: str, repeats: int) -> float:
    """Seconds of the matrix products of one forward + backward, replayed alone with refsnn's layouts.

    conv: W2d (O, Ckk) @ cols (Ckk, M); dW: dout2d (O, M) @ cols.T; dx: W2d.T @ dout2d (written
    into a (Ckk, M) buffer), M = T*B*Ho*Wo. dense: a (N, in) @ W.T; dW: dI.T @ a; da: dI @ W.
    """
    rng = np.random.default_rng(1)
    N = T * B
    products: list[Callable[[], Any]] = []
    first = True
    for layer, shape_in, shape_out in zip(spec.layers, spec.shapes()[:-1], spec.shapes()[1:]):
        if isinstance(layer, Pool):
            continue
        if isinstance(layer, Conv):
            O, Ckk, M = layer.channels, shape_in[0] * layer.kernel ** 2, N * shape_out[1] * shape_out[2]
            w2d, cols, dout2d = (rng.random(s).astype(dtype) for s in ((O, Ckk), (Ckk, M), (O, M)))
            products += [lambda w2d=w2d, cols=cols: w2d @ cols,
                         lambda dout2d=dout2d, cols=cols: dout2d @ cols.T]
            if not first:
                products.append(lambda w2d=w2d, dout2d=dout2d, cols=cols: np.matmul(w2d.T, dout2d, out=cols))
        else:
            n_in, n_out = math.prod(shape_in), layer.n_out
            a, w, dI = (rng.random(s).astype(dtype) for s in ((N, n_in), (n_out, n_in), (N, n_out)))
            products += [lambda a=a, w=w: a @ w.T, lambda a=a, dI=dI: dI.T @ a]
            if not first:
                products.append(lambda w=w, dI=dI: dI @ w)
        first = False
    return sum(median_time(product, repeats)[0] for product in products)


def matmul_peak(dtype: str, size: int, repeats: int) -> float:
    """GFLOP/s of numpy's own size^3 matrix product (the BLAS numpy links), median of repeats."""
    a = np.random.default_rng(2).random((size, size)).astype(dtype)
    seconds, _ = median_time(lambda: a @ a, repeats)
    return 2 * size ** 3 / seconds / 1e9


# ----------------------------------------------------------------------------- torch

def torch_model(spec, params: dict[str, np.ndarray], style: str, dtype: str):
    """A closure running one forward + backward in PyTorch autograd; returns (loss, grads dict)."""
    import torch
    import torch.nn.functional as F

    torch_dtype = getattr(torch, dtype)
    beta, theta, tau_s = 1.0 - 1.0 / spec.neuron.tau_m, spec.neuron.theta, spec.neuron.tau_s
    decay = 1.0 - 1.0 / tau_s
    T_surrogate = spec.surrogate.T

    class SigmoidSpike(torch.autograd.Function):
        """H(x) forward; sigma_T(x) (1 - sigma_T(x)) / T backward (refsnn's Sigmoid, eq. 9-10)."""

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            s = torch.sigmoid(x / T_surrogate)
            return grad_output * s * (1.0 - s) / T_surrogate

    weights = {name: torch.tensor(value, dtype=torch_dtype, requires_grad=True) for name, value in params.items()}
    layers = spec.layers
    n_weighted = len(spec.weighted)

    def stateless(layer, h, i):
        """conv2d / pooling / linear on a (batch, ...) tensor; i counts weighted layers."""
        if isinstance(layer, Pool):
            if layer.kind == "avg":
                return F.avg_pool2d(h, layer.size)
            if layer.kind == "max":
                return F.max_pool2d(h, layer.size)
            return layer.weight * F.avg_pool2d(h, layer.size, divisor_override=1)
        weight, bias = weights[f"layers.{i}.weight"], weights[f"layers.{i}.bias"]
        if isinstance(layer, Conv):
            return F.conv2d(h, weight, bias, stride=layer.stride, padding=layer.padding)
        return F.linear(h.flatten(1), weight, bias)

    def loss_of(counts, labels):
        """rate_ce: 1/B sum_b (logsumexp_n c_bn - c_b,y_b) of the spike counts c (B, n)."""
        return F.cross_entropy(counts, labels)

    def per_step(x, labels):
        T = x.shape[0]
        state: list[Any] = [None] * n_weighted            # (U, S, a) per LIF layer
        counts = None
        for t in range(T):
            h, i = x[t], 0                                 # (B, C, H, W)
            for layer in layers:
                h = stateless(layer, h, i)
                if isinstance(layer, Pool):
                    continue
                if state[i] is None:
                    U = h                                  # eq. (1) with U_0 = S_0 = 0
                else:
                    U_prev, S_prev, _ = state[i]
                    U = beta * U_prev * (1.0 - S_prev) + h  # eq. (1), reset in the graph
                S = SigmoidSpike.apply(U - theta)          # eq. (3)
                a = None
                if i + 1 < n_weighted:                     # eq. (2): the next layer reads a
                    a = S / tau_s if state[i] is None else decay * state[i][2] + S / tau_s
                    h = a
                state[i] = (U, S, a)
                i += 1
            counts = S if counts is None else counts + S
        return loss_of(counts, labels)

    def multi_step(x, labels):
        T, B = x.shape[:2]
        h, i = x, 0                                        # (T, B, ...)
        for layer in layers:
            folded = stateless(layer, h.flatten(0, 1), i)  # (T*B, ...) -> (T*B, ...)
            h = folded.reshape(T, B, *folded.shape[1:])
            if isinstance(layer, Pool):
                continue
            U, S_list = h[0], []
            S = SigmoidSpike.apply(U - theta)
            S_list.append(S)
            for t in range(1, T):                          # eq. (1), (3)
                U = beta * U * (1.0 - S) + h[t]
                S = SigmoidSpike.apply(U - theta)
                S_list.append(S)
            if i + 1 < n_weighted:                         # eq. (2)
                a = S_list[0] / tau_s
                a_list = [a]
                for t in range(1, T):
                    a = decay * a + S_list[t] / tau_s
                    a_list.append(a)
                h = torch.stack(a_list)
            else:
                h = torch.stack(S_list)
            i += 1
        return loss_of(h.sum(0), labels)

    forward = per_step if style == "per_step" else multi_step

    def step(x, labels):
        for weight in weights.values():
            weight.grad = None
        loss = forward(x, labels)
        loss.backward()
        return loss

    return step, weights


def torch_inputs(x: np.ndarray, labels: np.ndarray, dtype: str):
    import torch
    return torch.tensor(x, dtype=getattr(torch, dtype)), torch.tensor(labels, dtype=torch.int64)


def torch_saved_bytes(step, x_t, labels_t) -> int:
    """Bytes of the tensors autograd saves for the backward (deduplicated by storage)."""
    import torch
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step(x_t, labels_t)
    return sum(storages.values())


# ----------------------------------------------------------------------------- refsnn

def refsnn_step(spec, params, x, labels):
    _, _, cache = network_forward(spec, params, x, labels)
    return network_backward(spec, cache)


def cache_bytes(value, seen: dict[int, int] | None = None) -> int:
    """Bytes of the numpy buffers reachable from a cache (NamedTuples, tuples), each buffer once."""
    seen = {} if seen is None else seen
    if isinstance(value, np.ndarray):
        base = value
        while isinstance(base.base, np.ndarray):
            base = base.base
        seen[id(base)] = base.nbytes
    elif isinstance(value, (tuple, list)):
        for item in value:
            cache_bytes(item, seen)
    return sum(seen.values())


def kept_bytes_formula(spec, T: int, B: int) -> int:
    """What refsnn's cache holds between forward and backward, from the shapes alone.

    T*B * [sum_i n_i (itemsize + s) + sum_i m_i itemsize + sum_max-pools p_j] + parameter bytes,
    n_i the per-sample size of LIF layer i (U in the dtype, S as 1-byte booleans in the hard
    forward: s = 1), m_i the per-sample size of what weighted layer i reads (the network input
    for i = 0, otherwise the previous trace after any pooling; the caches reference it, the
    un-pooled trace is not kept), p_j the output size of max-pooling layer j (1-byte argmax).
    The caches reference the weights, hence the parameter bytes; the loss adds its own small part.
    """
    itemsize = np.dtype(spec.dtype).itemsize
    spike_bytes = 1 if spec.forward == "hard" else itemsize
    shapes = spec.shapes()
    per_sample = 0
    for layer, shape_in, shape_out in zip(spec.layers, shapes[:-1], shapes[1:]):
        if isinstance(layer, Pool):
            per_sample += math.prod(shape_out) if layer.kind == "max" else 0
        else:
            per_sample += math.prod(shape_out) * (itemsize + spike_bytes) + math.prod(shape_in) * itemsize
    params = sum(math.prod(shape) for shape in spec.param_shapes().values()) * itemsize
    return T * B * per_sample + params


def refsnn_memory(spec, params, x, labels) -> dict[str, int]:
    """Bytes kept between forward and backward, the tracemalloc peak of forward + backward (every
    array fresh: the pool of refsnn/memory.py off, which tracemalloc would not see reused), and
    the bytes the pool holds after a step with it on (its buffers, in use or free)."""
    gc.collect()
    with memory.disabled():
        tracemalloc.start()
        _, _, cache = network_forward(spec, params, x, labels)
        kept = cache_bytes(cache)
        network_backward(spec, cache)
        del cache
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    memory.clear()
    network_backward(spec, network_forward(spec, params, x, labels)[2])
    return {"kept_between_forward_and_backward": kept, "tracemalloc_peak_forward_backward": peak,
            "pool_held_after_a_step": memory.POOL.held_bytes(),
            "kept_formula": kept_bytes_formula(spec, x.shape[0], x.shape[1])}


# ----------------------------------------------------------------------------- timing

def median_time(function: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median, min) seconds of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def interleaved_times(functions: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """Median and min seconds of each function, the calls interleaved round-robin (after warm-ups)."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            gc.collect()
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(ts), "min_s": min(ts), "repeats": len(ts)}
            for name, ts in times.items()}


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    scale = max(np.max(np.abs(ours), initial=0.0), np.max(np.abs(theirs), initial=0.0))
    return float(np.max(np.abs(ours - theirs), initial=0.0) / scale) if scale > 0 else 0.0


def agreement(spec, params, x, labels) -> dict[str, float]:
    """Max relative error (per array, max |entry| normalised) of each torch style's gradients vs refsnn's."""
    ours = refsnn_step(spec, params, x, labels)
    x_t, labels_t = torch_inputs(x, labels, spec.dtype)
    result = {}
    for style in ("per_step", "multi_step"):
        step, weights = torch_model(spec, params, style, spec.dtype)
        step(x_t, labels_t)
        result[style] = max(relative_error(ours[f"grad/{name}"], weight.grad.numpy())
                            for name, weight in weights.items())
    return result


def spike_rates(spec, params, x, labels) -> list[float]:
    grads = refsnn.grad(spec, x, labels, params, adjoints=True)
    return [round(float(grads[f"S/{i}"].mean()), 4) for i in range(len(spec.weighted))]


# ----------------------------------------------------------------------------- memory probe

MEMORY_PROBE = "--memory-probe"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_probe(implementation: str, network: str, T: int, B: int, dtype: str, threads: int) -> dict[str, int]:
    """In this (fresh) process: peak RSS growth of ONE forward + backward, no warm-up."""
    spec, params, x, labels = make_problem(network, T, B, dtype)
    if implementation == "refsnn":
        run = lambda: refsnn_step(spec, params, x, labels)  # noqa: E731
    else:
        import torch
        torch.set_num_threads(threads)
        step, _ = torch_model(spec, params, implementation[len("torch_"):], dtype)
        x_t, labels_t = torch_inputs(x, labels, dtype)
        run = lambda: step(x_t, labels_t)  # noqa: E731
    gc.collect()
    rss_before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")                             # resets VmHWM to the current RSS
    run()
    return {"peak_rss_growth_bytes": (_status_kib("VmHWM") - rss_before) * 1024}


def measure_memory_in_subprocess(implementation, network, T, B, dtype, threads) -> int | None:
    command = [sys.executable, "-m", "validation.benchmark", MEMORY_PROBE, implementation, network,
               str(T), str(B), dtype, str(threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_growth_bytes"]
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError):
        return None


# ----------------------------------------------------------------------------- the run

def numpy_threads() -> int:
    """Threads of numpy's BLAS: OPENBLAS_NUM_THREADS / OMP_NUM_THREADS if set, else the usable cores."""
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    import torch
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = "unknown"
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{config.get('name')} {config.get('version')}"
    except Exception:                                     # noqa: BLE001 - informational only
        pass
    return {"nproc": os.cpu_count(), "usable_cores": numpy_threads(), "cpu": cpu,
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "blas": blas, "torch_threads": torch.get_num_threads(),
            "openblas_thread_timeout": os.environ.get("OPENBLAS_THREAD_TIMEOUT", "default (2^28 cycles)"),
            "loadavg_start": list(os.getloadavg())}


def bench_network(network: str, T: int, B: int, dtype: str, repeats: int, threads: int,
                  memory: bool, peak: dict[str, float]) -> dict[str, Any]:
    spec, params, x, labels = make_problem(network, T, B, dtype)
    x_t, labels_t = torch_inputs(x, labels, dtype)
    per_step, _ = torch_model(spec, params, "per_step", dtype)
    multi_step, _ = torch_model(spec, params, "multi_step", dtype)
    spec_dict = make_spec(network, dtype)
    functions = {
        "refsnn": lambda: refsnn_step(spec, params, x, labels),
        "refsnn.grad": lambda: refsnn.grad(spec_dict, x, labels, params),
        "torch_per_step": lambda: per_step(x_t, labels_t),
        "torch_multi_step": lambda: multi_step(x_t, labels_t),
    }
    times = interleaved_times(functions, repeats)
    refsnn_s = times["refsnn"]["median_s"]
    flops = gemm_flops(spec, T, B)
    gemm_s = replay_gemms(spec, T, B, dtype, max(3, repeats // 2))
    result: dict[str, Any] = {
        "network": network, "T": T, "B": B, "dtype": dtype, "times": times,
        "ratio_refsnn_over_torch": {style: refsnn_s / times[f"torch_{style}"]["median_s"]
                                    for style in ("per_step", "multi_step")},
        "ratio_refsnn_over_fastest_torch": refsnn_s / min(times["torch_per_step"]["median_s"],
                                                         times["torch_multi_step"]["median_s"]),
        "gemm": {"flops": flops, "replayed_gemm_s": gemm_s,
                 "gflops_in_gemms": flops["total"] / gemm_s / 1e9,
                 "gflops_over_refsnn_step": flops["total"] / refsnn_s / 1e9,
                 "numpy_peak_gflops": peak[dtype], "gemm_share_of_refsnn_step": gemm_s / refsnn_s},
        "spike_rates": spike_rates(spec, params, x, labels),
        "memory": {"refsnn": refsnn_memory(spec, params, x, labels),
                   "torch_saved_tensors_bytes": {"per_step": torch_saved_bytes(per_step, x_t, labels_t),
                                                 "multi_step": torch_saved_bytes(multi_step, x_t, labels_t)}},
    }
    if dtype == "float64":
        result["agreement_max_rel_error"] = agreement(spec, params, x, labels)
    if memory:
        result["memory"]["peak_rss_growth_bytes"] = {
            implementation: measure_memory_in_subprocess(implementation, network, T, B, dtype, threads)
            for implementation in ("refsnn", "torch_per_step", "torch_multi_step")}
    return result


def scaling(T_values, B_values, base_T: int, base_B: int, dtype: str, repeats: int) -> list[dict[str, Any]]:
    """refsnn and both torch styles on the MNIST network for each T (at base_B) and each B (at base_T)."""
    rows = []
    for T, B in [(T, base_B) for T in T_values] + [(base_T, B) for B in B_values if B != base_B]:
        spec, params, x, labels = make_problem("mnist", T, B, dtype)
        x_t, labels_t = torch_inputs(x, labels, dtype)
        per_step, _ = torch_model(spec, params, "per_step", dtype)
        multi_step, _ = torch_model(spec, params, "multi_step", dtype)
        times = interleaved_times({"refsnn": lambda: refsnn_step(spec, params, x, labels),
                                   "torch_per_step": lambda: per_step(x_t, labels_t),
                                   "torch_multi_step": lambda: multi_step(x_t, labels_t)}, repeats)
        rows.append({"T": T, "B": B, "dtype": dtype,
                     **{f"{name}_median_s": value["median_s"] for name, value in times.items()},
                     "refsnn_s_per_sample_step": times["refsnn"]["median_s"] / (T * B),
                     "refsnn_kept_bytes": refsnn_memory(spec, params, x, labels)["kept_between_forward_and_backward"]})
    return rows


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'network':8s} {'dtype':8s} {'T':>3s} {'B':>3s} {'refsnn':>9s} {'grad()':>9s} {'per-step':>9s} "
          f"{'multi':>9s} {'r/per':>6s} {'r/multi':>7s} {'GF/s gemm':>9s} {'GF/s step':>9s} {'peak':>6s} "
          f"{'kept MB':>8s}")
    for r in results:
        t = r["times"]
        print(f"{r['network']:8s} {r['dtype']:8s} {r['T']:3d} {r['B']:3d} {t['refsnn']['median_s']:9.4f} "
              f"{t['refsnn.grad']['median_s']:9.4f} {t['torch_per_step']['median_s']:9.4f} "
              f"{t['torch_multi_step']['median_s']:9.4f} {r['ratio_refsnn_over_torch']['per_step']:6.2f} "
              f"{r['ratio_refsnn_over_torch']['multi_step']:7.2f} {r['gemm']['gflops_in_gemms']:9.1f} "
              f"{r['gemm']['gflops_over_refsnn_step']:9.1f} {r['gemm']['numpy_peak_gflops']:6.1f} "
              f"{r['memory']['refsnn']['kept_between_forward_and_backward'] / 1e6:8.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == MEMORY_PROBE:
        implementation, network, T, B, dtype, threads = argv[1:7]
        print(json.dumps(memory_probe(implementation, network, int(T), int(B), dtype, int(threads))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m validation.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (a smoke run)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (default 15, --quick 2)")
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess RSS probes")
    parser.add_argument("--no-scaling", action="store_true", help="skip the T and B scaling table")
    args = parser.parse_args(argv)

    import torch
    threads = numpy_threads()
    torch.set_num_threads(threads)
    repeats = args.repeats or (1 if args.quick else 15)
    sizes = QUICK_NETWORKS if args.quick else NETWORKS
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['usable_cores']} usable cores (nproc {info['nproc']}); numpy "
          f"{info['numpy']} ({info['blas']}), torch {info['torch']} with {threads} threads; "
          f"load average {info['loadavg_start']}", flush=True)
    peak_size = 256 if args.quick else 2048
    peak = {dtype: matmul_peak(dtype, peak_size, 2 if args.quick else 7) for dtype in args.dtypes}
    print("numpy matmul peak (GFLOP/s, %d^3): %s" % (peak_size, {k: round(v, 1) for k, v in peak.items()}), flush=True)

    results = []
    for network in args.networks:
        for dtype in args.dtypes:
            # --quick probes the memory of the first network and dtype only (each probe is a
            # fresh interpreter that imports torch)
            memory = not args.no_memory and (not args.quick or not results)
            results.append(bench_network(network, sizes[network]["T"], sizes[network]["B"], dtype, repeats,
                                         threads, memory=memory, peak=peak))
            print_table(results[-1:])
    scaling_rows = []
    if not args.no_scaling:
        T_values, B_values = ((2, 3), (1, 2)) if args.quick else (SCALING_T, SCALING_B)
        base_T, base_B = (2, 2) if args.quick else (30, 16)
        scaling_rows = scaling(T_values, B_values, base_T, base_B, "float64", max(3, repeats // 2))
        print("scaling (MNIST network, float64): T, B, refsnn s, torch per-step s, torch multi-step s, "
              "refsnn s per sample-step")
        for row in scaling_rows:
            print(f"  {row['T']:3d} {row['B']:3d} {row['refsnn_median_s']:8.4f} {row['torch_per_step_median_s']:8.4f} "
                  f"{row['torch_multi_step_median_s']:8.4f} {row['refsnn_s_per_sample_step'] * 1e3:8.3f} ms")
    info["loadavg_end"] = list(os.getloadavg())
    report = {"machine": info, "settings": {"quick": args.quick, "repeats": repeats, "threads": threads,
                                            "neuron": NEURON, "surrogate_T": SURROGATE_T, "loss": "rate_ce",
                                            "forward": "hard", "reset_grad": "full"},
              "numpy_matmul_peak_gflops": peak, "networks": results, "scaling": scaling_rows}
    if args.out:
        with open(args.out, "w") as out:
            json.dump(report, out, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
