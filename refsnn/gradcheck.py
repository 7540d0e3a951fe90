"""Finite-difference gradient checks (refsnn.gradcheck).

Two checks, both by central differences of a loss ``f(params) -> float``:

- ``full``: every entry of every parameter, (f(p + eps e_i) - f(p - eps e_i)) / (2 eps);
  2 forward passes per entry, for small networks.
- ``random``: per parameter tensor, ``n_directions`` random unit directions v, comparing
  (f(p + eps v) - f(p - eps v)) / (2 eps) with <grad, v>; 2 forward passes per direction
  whatever the size (the JAX check_grads / torch gradgradcheck idea), for big networks.

Errors are relative to the size of the gradient: for a tensor, max|g - n| / max(max|n|, max|g|);
for a direction, |g.v - n| / max(|g.v|, |n|). A check passes when the absolute error is at most
rtol * that scale + the rounding noise of the central difference itself,
``NOISE_ULPS * machine_eps * max(|f(p+)|, |f(p-)|) / eps`` (differences below it cannot be
measured; it matters only for gradients that are tiny next to the loss). Float32 parameters are refused (a
float32 central difference cannot resolve 1e-6), the caller's arrays are never modified (the
checker perturbs its own copies), and a failure names the parameter, the index (or direction)
and both values.

Finite differences through the Heaviside of the "hard" forward mean nothing: check the
plumbing in the "smooth" forward, where BPTT with the full reset term is the exact gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .errors import RefsnnError

#: default tolerances by dtype: only float64 is accepted.
TOLERANCES = {np.dtype(np.float64): {"eps": 1e-6, "rtol": 1e-6}}
#: rounding error of one loss evaluation, in units of machine epsilon times |loss|
NOISE_ULPS = 64.0


class GradientMismatch(AssertionError):
    """Raised by ``gradcheck`` when analytic and numerical gradients disagree."""


@dataclass
class ParamReport:
    name: str
    rel_error: float          # max over entries (full) or directions (random)
    worst: tuple              # index (full) or direction number (random)
    analytic: float           # value at the worst place
    numeric: float
    ok: bool = True           # abs error <= rtol * scale + rounding noise of the difference


@dataclass
class GradcheckReport:
    mode: str
    eps: float
    rtol: float
    params: list[ParamReport] = field(default_factory=list)

    @property
    def max_rel_error(self) -> float:
        return max((p.rel_error for p in self.params), default=0.0)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.params)

    def failures(self) -> list[ParamReport]:
        return [p for p in self.params if not p.ok]

    def __str__(self) -> str:
        lines = [f"gradcheck ({self.mode}, eps={self.eps:g}, rtol={self.rtol:g}): "
                 f"max relative error {self.max_rel_error:.3e}"]
        for p in self.params:
            flag = "ok" if p.ok else "FAIL"
            where = f"index {p.worst}" if self.mode == "full" else f"direction {p.worst[0]}"
            lines.append(f"  {flag:4} {p.name}: rel error {p.rel_error:.3e} at {where} "
                         f"(analytic {p.analytic:.12g}, numeric {p.numeric:.12g})")
        return "\n".join(lines)


def _copy_float64(params: Mapping[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    copies = {}
    for name, value in params.items():
        value = np.asarray(value)
        if value.dtype != np.float64:
            raise RefsnnError(f"{what}[{name!r}] must be float64 for a finite-difference check "
                              f"(float32 cannot resolve the differences), got {value.dtype}")
        copies[name] = value.copy()
    return copies


def gradcheck(loss: Callable[[Mapping[str, np.ndarray]], float], params: Mapping[str, np.ndarray],
              grads: Mapping[str, np.ndarray], *, mode: str = "full", eps: float | None = None,
              rtol: float | None = None, n_directions: int = 3, seed: int = 0,
              raise_on_failure: bool = True) -> GradcheckReport:
    """Check ``grads`` (analytic dL/dparams, same keys as ``params``) against central differences.

    Returns a GradcheckReport; raises GradientMismatch (naming the parameter, the index or
    direction and both values) when an error exceeds ``rtol`` and ``raise_on_failure``.
    """
    if mode not in ("full", "random"):
        raise RefsnnError(f"mode must be 'full' or 'random', got {mode!r}")
    probe = _copy_float64(params, "params")       # the only arrays this function perturbs
    analytic = _copy_float64(grads, "grads")
    if set(probe) != set(analytic):
        raise RefsnnError(f"grads must have the keys of params {sorted(probe)}, got {sorted(analytic)}")
    for name in probe:
        if probe[name].shape != analytic[name].shape:
            raise RefsnnError(f"grads[{name!r}] must have shape {probe[name].shape}, got {analytic[name].shape}")
    defaults = TOLERANCES[np.dtype(np.float64)]
    eps = defaults["eps"] if eps is None else eps
    rtol = defaults["rtol"] if rtol is None else rtol
    report = GradcheckReport(mode=mode, eps=eps, rtol=rtol)
    rng = np.random.default_rng(seed)

    def central(name: str, direction: np.ndarray) -> tuple[float, float]:
        """(f(p + eps v) - f(p - eps v)) / (2 eps) and its rounding noise."""
        original = probe[name].copy()
        probe[name] += eps * direction
        plus = loss(probe)
        probe[name][...] = original - eps * direction
        minus = loss(probe)
        probe[name][...] = original
        noise = NOISE_ULPS * np.finfo(np.float64).eps * max(abs(plus), abs(minus)) / eps
        return (plus - minus) / (2.0 * eps), noise

    for name, g in analytic.items():
        if mode == "full":
            numeric = np.empty_like(g)
            noise = 0.0
            unit = np.zeros_like(g)
            for index in np.ndindex(g.shape):
                unit[index] = 1.0
                numeric[index], entry_noise = central(name, unit)
                noise = max(noise, entry_noise)
                unit[index] = 0.0
            if not g.size:
                continue
            diff = np.abs(g - numeric)
            scale = max(float(np.max(np.abs(numeric))), float(np.max(np.abs(g))))
            worst = np.unravel_index(int(np.argmax(diff)), g.shape)
            rel = float(diff[worst]) / scale if scale > 0 else 0.0
            report.params.append(ParamReport(name, rel, tuple(int(i) for i in worst), float(g[worst]),
                                             float(numeric[worst]), float(diff[worst]) <= rtol * scale + noise))
        else:
            worst = ParamReport(name, 0.0, (0,), 0.0, 0.0)
            for k in range(n_directions):
                direction = rng.standard_normal(g.shape)
                direction /= np.linalg.norm(direction) or 1.0
                expected = float(np.sum(g * direction))
                numeric, noise = central(name, direction)
                scale = max(abs(expected), abs(numeric))
                error = abs(expected - numeric)
                rel = error / scale if scale > 0 else 0.0
                ok = error <= rtol * scale + noise
                if (not ok, rel) >= (not worst.ok, worst.rel_error):
                    worst = ParamReport(name, rel, (k,), expected, numeric, ok)
            report.params.append(worst)
    if raise_on_failure and not report.ok:
        raise GradientMismatch(str(report))
    return report


def check_spec(spec, x, target, params=None, *, seed: int = 0, **options) -> GradcheckReport:
    """Run refsnn.grad on a spec and check all its parameter gradients by finite differences.

    Meaningful in the "smooth" forward (spec["forward"] = "smooth"); ``options`` go to gradcheck.
    """
    from .oracle import grad, loss_function

    result = grad(spec, x, target, params, seed=seed)
    names = [k[len("grad/"):] for k in result if k.startswith("grad/")]
    return gradcheck(loss_function(spec, x, target), {n: result[n] for n in names},
                     {n: result["grad/" + n] for n in names}, **options)
