"""Smoke test of the benchmark command: it runs at tiny sizes and writes JSON of the documented
structure. No timing is asserted (the benchmark is not a timed test; docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import require

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_quick_writes_the_documented_json(tmp_path):
    require("torch")
    out = tmp_path / "benchmark.json"
    done = subprocess.run([sys.executable, "-m", "validation.benchmark", "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          # one thread everywhere: a smoke run on a shared machine, not a measurement
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1",
                               "OMP_NUM_THREADS": "1", "REFSNN_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refsnn" in done.stdout and "scaling" in done.stdout
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "settings", "numpy_matmul_peak_gflops", "networks", "scaling"}
    assert {"nproc", "cpu", "numpy", "torch", "blas", "loadavg_start", "loadavg_end"} <= set(report["machine"])
    assert set(report["numpy_matmul_peak_gflops"]) == {"float64", "float32"}
    runs = {(r["network"], r["dtype"]) for r in report["networks"]}
    assert runs == {(n, d) for n in ("nmnist", "mnist", "cifar10") for d in ("float64", "float32")}
    for result in report["networks"]:
        assert set(result["times"]) == {"refsnn", "refsnn.grad", "torch_per_step", "torch_multi_step"}
        for timing in result["times"].values():
            assert timing["median_s"] > 0 and timing["min_s"] <= timing["median_s"]
        assert set(result["ratio_refsnn_over_torch"]) == {"per_step", "multi_step"}
        assert result["gemm"]["flops"]["total"] == result["gemm"]["flops"]["forward"] + result["gemm"]["flops"]["backward"]
        assert result["gemm"]["gflops_in_gemms"] > 0
        memory = result["memory"]
        assert memory["refsnn"]["kept_between_forward_and_backward"] > 0
        assert memory["refsnn"]["tracemalloc_peak_forward_backward"] >= memory["refsnn"]["kept_between_forward_and_backward"]
        assert memory["refsnn"]["pool_held_after_a_step"] > 0
        assert set(memory["torch_saved_tensors_bytes"]) == {"per_step", "multi_step"}
        if result["dtype"] == "float64":         # torch computes the same gradients as refsnn
            assert max(result["agreement_max_rel_error"].values()) < 1e-10
    assert "peak_rss_growth_bytes" in report["networks"][0]["memory"]
    assert [(row["T"], row["B"]) for row in report["scaling"]] == [(2, 2), (3, 2), (2, 1)]
