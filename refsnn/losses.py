"""Losses on output spike trains, as forward/backward pairs.

All losses read the output layer's spikes S (T, B, n) and return dL/dS (T, B, n), the gradient
through S_t's consumer only (the "spatial" dL/dS of lif.py).

van_rossum (eq. 6 of Yang 2020): both trains are filtered by the first-order kernel of eq. (2)
with time constant tau (default tau_s), f(x)_t = (1 - 1/tau) f(x)_{t-1} + x_t / tau, and

    L = 1/2 * sum_t sum_b sum_n (f(d)_t - f(S)_t)^2          (a sum, not a mean)

    target: desired spike trains d (T, B, n). Backward: dL/df(S)_t = f(S)_t - f(d)_t (the output
    error, Fig. 2A), then the adjoint of the kernel gives dL/dS_t (Fig. 2B).

Classification losses (target: integer labels y (B,) in [0, n)); each is a MEAN over the batch
so that a learning rate does not depend on B:

count_mse:  c_bn = sum_t S_tbn,  c*_bn = true_rate * T if n == y_b else false_rate * T
            L = 1/(2B) sum_b sum_n (c_bn - c*_bn)^2;          dL/dS_tbn = (c_bn - c*_bn) / B
rate_ce:    logits z_bn = sum_t S_tbn (spike counts; snnTorch's ce_count_loss)
            L = 1/B sum_b (logsumexp_n z_bn - z_b,y_b);        dL/dS_tbn = (softmax(z_b)_n - [n == y_b]) / B
van_rossum_class (TSSL-BP style): per class a target spike pattern, the true neuron spiking every
            ``true_period`` steps (t = true_period, 2 true_period, ...), the others every
            ``false_period`` steps (0: silent); L = 1/B * the van Rossum loss above.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .errors import RefsnnError, check_array, check_number
from .lif import trace_backward, trace_forward


class VanRossumCache(NamedTuple):
    error: np.ndarray    # (T, B, n) f(S)_t - f(d)_t
    tau: float
    scale: float         # 1 (van_rossum) or 1/B (van_rossum_class)


def van_rossum_forward(S: np.ndarray, target: np.ndarray, tau: float,
                       scale: float = 1.0) -> tuple[float, VanRossumCache]:
    """S, target: (T, B, n) -> L (float), eq. (6), times ``scale``."""
    error = trace_forward(S, tau) - trace_forward(target, tau)
    loss = 0.5 * scale * float(np.sum(error * error))
    return loss, VanRossumCache(error=error, tau=tau, scale=scale)


def van_rossum_backward(cache: VanRossumCache) -> np.ndarray:
    """dL/dS_t (T, B, n): the output error filtered backwards through the kernel."""
    dS = trace_backward(cache.error, cache.tau)
    if cache.scale != 1.0:
        dS *= cache.scale
    return dS


def check_labels(target: Any, B: int, n_out: int) -> np.ndarray:
    """Integer class labels (B,) in [0, n_out)."""
    if not isinstance(target, np.ndarray) or target.dtype.kind not in "iu" and not (
            target.dtype.kind == "f" and np.all(np.isfinite(target)) and np.all(target == np.round(target))):
        got = f"dtype {target.dtype}" if isinstance(target, np.ndarray) else type(target).__name__
        raise RefsnnError(f"target must be integer class labels of shape (B={B},), got {got}")
    if target.shape != (B,):
        raise RefsnnError(f"target must be integer class labels of shape (B={B},), got shape {target.shape}")
    labels = target.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_out):
        raise RefsnnError(f"target labels must lie in [0, {n_out}), got values in [{labels.min()}, {labels.max()}]")
    return labels


@dataclass(frozen=True)
class Loss:
    name: ClassVar[str] = ""

    def to_spec(self) -> dict[str, Any]:
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True)
class VanRossum(Loss):
    """eq. (6) against desired spike trains; target (T, B, n)."""

    tau: float = 2.0
    name: ClassVar[str] = "van_rossum"

    def check_target(self, target, T, B, n_out, dtype=np.float64):
        return check_array("target", target, shape=(T, B, n_out), shape_text=f"(T={T}, B={B}, n_out={n_out})",
                           dtype=dtype)

    def forward(self, S, target):
        return van_rossum_forward(S, target, self.tau)

    def backward(self, cache):
        return van_rossum_backward(cache)


class CountCache(NamedTuple):
    dS: np.ndarray       # (B, n) dL/dS_t, the same at every t
    T: int


def _broadcast_over_time(cache: CountCache) -> np.ndarray:
    return np.broadcast_to(cache.dS, (cache.T, *cache.dS.shape)).copy()   # (B, n) -> (T, B, n)


@dataclass(frozen=True)
class CountMSE(Loss):
    """Spike-count MSE against target counts true_rate * T (label) and false_rate * T (others)."""

    true_rate: float = 0.5
    false_rate: float = 0.0
    name: ClassVar[str] = "count_mse"

    def __post_init__(self):
        check_number("spec.loss.true_rate", self.true_rate, minimum=0.0)
        check_number("spec.loss.false_rate", self.false_rate, minimum=0.0)

    def check_target(self, target, T, B, n_out, dtype=np.float64):
        return check_labels(target, B, n_out)

    def forward(self, S, labels):
        T, B, n = S.shape
        wanted = np.full((B, n), self.false_rate * T, dtype=S.dtype)
        wanted[np.arange(B), labels] = self.true_rate * T
        diff = S.sum(axis=0) - wanted                      # c_bn - c*_bn
        return 0.5 * float(np.sum(diff * diff)) / B, CountCache(diff / B, T)

    def backward(self, cache):
        return _broadcast_over_time(cache)


@dataclass(frozen=True)
class RateCE(Loss):
    """Cross-entropy of the softmax of the output spike counts (snnTorch's ce_count_loss)."""

    name: ClassVar[str] = "rate_ce"

    def check_target(self, target, T, B, n_out, dtype=np.float64):
        return check_labels(target, B, n_out)

    def forward(self, S, labels):
        T, B, n = S.shape
        logits = S.sum(axis=0)                             # (T, B, n) -> (B, n)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1))
        loss = float(np.sum(log_norm - shifted[np.arange(B), labels])) / B
        dz = np.exp(shifted - log_norm[:, None])           # softmax(z)
        dz[np.arange(B), labels] -= 1.0
        return loss, CountCache(dz / B, T)

    def backward(self, cache):
        return _broadcast_over_time(cache)


@dataclass(frozen=True)
class VanRossumClass(Loss):
    """van Rossum loss (mean over the batch) against a per-class target spike pattern."""

    tau: float = 2.0
    true_period: int = 1
    false_period: int = 0
    name: ClassVar[str] = "van_rossum_class"

    def __post_init__(self):
        check_number("spec.loss.true_period", self.true_period, minimum=1, integer=True)
        check_number("spec.loss.false_period", self.false_period, minimum=0, integer=True)

    def pattern(self, T: int, labels: np.ndarray, n_out: int) -> np.ndarray:
        """The desired spike trains d (T, B, n_out) of the labels."""
        t = np.arange(1, T + 1)
        true_train = (t % self.true_period == 0).astype(np.float64)
        false_train = (t % self.false_period == 0).astype(np.float64) if self.false_period else np.zeros(T)
        d = np.repeat(false_train[:, None, None], labels.size, axis=1).repeat(n_out, axis=2)
        d[:, np.arange(labels.size), labels] = true_train[:, None]
        return d

    def check_target(self, target, T, B, n_out, dtype=np.float64):
        return check_labels(target, B, n_out)

    def forward(self, S, labels):
        T, B, n = S.shape
        return van_rossum_forward(S, self.pattern(T, labels, n).astype(S.dtype), self.tau, scale=1.0 / B)

    def backward(self, cache):
        return van_rossum_backward(cache)


LOSSES: dict[str, type[Loss]] = {"van_rossum": VanRossum, "count_mse": CountMSE, "rate_ce": RateCE,
                                 "van_rossum_class": VanRossumClass}


def make_loss(spec: Any, default_tau: float = 2.0) -> Loss:
    """Build a loss from ``{"name": "van_rossum", "tau": 2}`` (tau defaults to ``default_tau`` = tau_s)."""
    if isinstance(spec, Loss):
        return spec
    if not isinstance(spec, dict):
        raise RefsnnError(f"spec.loss must be an object such as {{'name': 'van_rossum', 'tau': 2}}, got {spec!r}")
    name = spec.get("name", "van_rossum")
    if name not in LOSSES:
        raise RefsnnError(f"spec.loss.name must be one of {', '.join(repr(n) for n in LOSSES)}, got {name!r}")
    cls = LOSSES[name]
    allowed = {f.name for f in fields(cls)}
    params = {k: v for k, v in spec.items() if k != "name"}
    unknown = set(params) - allowed
    if unknown:
        raise RefsnnError(f"spec.loss {name!r} takes {sorted(allowed)}, got unknown key(s) {sorted(unknown)}")
    if "tau" in allowed:
        params["tau"] = check_number("spec.loss.tau", params.get("tau", default_tau), minimum=1.0)
    return cls(**params)
