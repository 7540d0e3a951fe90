"""Surrogate gradients for the Heaviside spike function (the paper's eq. 9-10 and its relatives).

A surrogate is a small immutable object with three vectorised methods of ``x = U - theta``:

- ``spike(x)``   the hard forward, H(x) = 1 if x > 0 else 0 (strict, eq. 3);
- ``relaxed(x)`` a smooth stand-in for H, used by the "smooth" forward;
- ``grad(x)``    the surrogate derivative, which is *exactly* d relaxed / dx.

Because ``grad`` is the derivative of ``relaxed`` (a property test checks it against finite
differences), a network run with ``relaxed`` in the forward pass is a differentiable function
whose exact gradient is what refsnn's BPTT with the full reset term computes.

Parameter names follow snnTorch or SpikingJelly where they implement the same function; each
docstring states the mapping. Nothing here imports an autograd framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit

from .errors import RefsnnError, check_number


def as_float(x) -> np.ndarray:
    """x as a float32 or float64 array (float32 stays float32; anything else becomes float64)."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def heaviside(x: np.ndarray) -> np.ndarray:
    """H(x) = 1 if x > 0 else 0 (strict: a neuron exactly at threshold does not spike), in x's float type."""
    x = as_float(x)
    return (x > 0).astype(x.dtype)


@dataclass(frozen=True)
class Surrogate:
    """Base class: subclasses define ``relaxed`` and ``grad``; ``spike`` is always H."""

    name: ClassVar[str] = ""

    def spike(self, x: np.ndarray) -> np.ndarray:
        return heaviside(x)

    def relaxed(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def grad(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def grad_inplace(self, x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        """``grad(x)`` written over the float array x (bit for bit the same values); returns x.

        scratch: a float array of x's shape and dtype that the call may overwrite. For the BPTT
        loop (lif.py), which calls this once per step on buffers it reuses: fresh temporaries of
        that size cost about as much as the arithmetic. This default computes grad(x) and copies.
        """
        np.copyto(x, self.grad(x))
        return x

    def to_spec(self) -> dict[str, Any]:
        """The spec dict that builds this surrogate again: ``{"name": ..., <param>: ...}``."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """The paper's surrogate (eq. 9-10), temperature ``T`` > 0.

        relaxed(x) = sigma_T(x) = 1 / (1 + exp(-x / T))
        grad(x)    = sigma_T(x) (1 - sigma_T(x)) / T

    snnTorch ``surrogate.sigmoid(slope)`` and SpikingJelly ``surrogate.Sigmoid(alpha)`` compute
    the same function with ``slope = alpha = 1 / T``.
    """

    T: float = 0.3
    name: ClassVar[str] = "sigmoid"

    def __post_init__(self):
        check_number("surrogate.T", self.T, minimum=0.0, strict_minimum=True)

    def relaxed(self, x):
        return expit(as_float(x) / self.T)   # never overflows

    def grad(self, x):
        # sigma(z) (1 - sigma(z)) = sigma(z) sigma(-z) = e / (1 + e)^2 with e = exp(-|z|), z = x / T:
        # one exp (not two), e <= 1 never overflows, and no 1 - sigma cancellation for x >> T
        # (the tails keep full relative accuracy).
        e = np.exp(np.abs(as_float(x)) * (-1.0 / self.T))
        return e / (self.T * (1.0 + e) ** 2)

    def grad_inplace(self, x, scratch):
        # the operations of grad, in the same order, on the two buffers
        np.abs(x, out=x)
        x *= -1.0 / self.T
        np.exp(x, out=x)                                # e
        np.add(x, 1.0, out=scratch)
        np.square(scratch, out=scratch)
        scratch *= self.T                               # T (1 + e)^2
        np.divide(x, scratch, out=x)
        return x


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike's fast sigmoid (Zenke & Ganguli 2018), ``slope`` > 0.

        grad(x)    = 1 / (1 + slope |x|)^2
        relaxed(x) = 1/2 + x / (1 + slope |x|)

    ``grad`` is exactly snnTorch ``surrogate.fast_sigmoid(slope)`` (same name, same value) and
    SpyTorch's ``SurrGradSpike`` with ``scale = slope``. Its integral over the real line is
    2 / slope, so ``relaxed`` runs from 1/2 - 1/slope to 1/2 + 1/slope: a proper squashing function
    only for slope = 2 (SpikingJelly's ``SoftSign(alpha)`` is the normalised variant, equal to
    ``alpha/2 * grad`` with slope = alpha). Also available under the name "superspike".
    """

    slope: float = 25.0
    name: ClassVar[str] = "fast_sigmoid"

    def __post_init__(self):
        check_number("surrogate.slope", self.slope, minimum=0.0, strict_minimum=True)

    def relaxed(self, x):
        x = as_float(x)
        return 0.5 + x / (1.0 + self.slope * np.abs(x))

    def grad(self, x):
        x = as_float(x)
        return 1.0 / (1.0 + self.slope * np.abs(x)) ** 2


@dataclass(frozen=True)
class ATan(Surrogate):
    """Arctangent surrogate (Fang et al. 2021), ``alpha`` > 0.

        relaxed(x) = 1/2 + arctan(pi/2 * alpha * x) / pi
        grad(x)    = (alpha / 2) / (1 + (pi/2 * alpha * x)^2)

    Identical, with the same parameter name, to snnTorch ``surrogate.atan(alpha)`` and
    SpikingJelly ``surrogate.ATan(alpha)``.
    """

    alpha: float = 2.0
    name: ClassVar[str] = "atan"

    def __post_init__(self):
        check_number("surrogate.alpha", self.alpha, minimum=0.0, strict_minimum=True)

    def relaxed(self, x):
        x = as_float(x)
        return 0.5 + np.arctan(0.5 * math.pi * self.alpha * x) / math.pi

    def grad(self, x):
        x = as_float(x)
        return 0.5 * self.alpha / (1.0 + (0.5 * math.pi * self.alpha * x) ** 2)


@dataclass(frozen=True)
class Triangle(Surrogate):
    """Triangular surrogate (Esser et al. 2016; Bellec et al. 2018), ``alpha`` > 0.

        grad(x)    = alpha * max(0, 1 - alpha |x|)           (peak alpha, half-width 1/alpha)
        relaxed(x) = 0 for x < -1/alpha;  1 for x > 1/alpha;
                     1/2 + alpha x - alpha^2 x |x| / 2 in between

    Identical, with the same parameter name, to SpikingJelly ``surrogate.PiecewiseQuadratic(alpha)``.
    snnTorch's ``surrogate.triangular`` is a different function (its sign flips at 0), so it has
    no counterpart here.
    """

    alpha: float = 1.0
    name: ClassVar[str] = "triangle"

    def __post_init__(self):
        check_number("surrogate.alpha", self.alpha, minimum=0.0, strict_minimum=True)

    def relaxed(self, x):
        x = as_float(x)
        a = self.alpha
        inside = 0.5 + a * x - 0.5 * a * a * x * np.abs(x)
        return np.where(x < -1.0 / a, 0.0, np.where(x > 1.0 / a, 1.0, inside))

    def grad(self, x):
        x = as_float(x)
        return self.alpha * np.maximum(0.0, 1.0 - self.alpha * np.abs(x))


@dataclass(frozen=True)
class Rectangle(Surrogate):
    """Rectangular surrogate of STBP (Wu et al. 2018, "rectangular curve"), ``width`` > 0.

        grad(x)    = 1 / width if |x| < width / 2 else 0
        relaxed(x) = clip(x / width + 1/2, 0, 1)

    STBP's parameter ``a`` is ``width`` (a = 1 in their experiments). Neither snnTorch nor
    SpikingJelly ships this exact function as a named surrogate.
    """

    width: float = 1.0
    name: ClassVar[str] = "rectangle"

    def __post_init__(self):
        check_number("surrogate.width", self.width, minimum=0.0, strict_minimum=True)

    def relaxed(self, x):
        x = as_float(x)
        return np.clip(x / self.width + 0.5, 0.0, 1.0)

    def grad(self, x):
        x = as_float(x)
        return np.where(np.abs(x) < 0.5 * self.width, 1.0 / self.width, 0.0).astype(x.dtype, copy=False)


@dataclass(frozen=True)
class Exponential(Surrogate):
    """Exponential surrogate of SLAYER (Shrestha & Orchard 2018), ``alpha`` > 0.

        grad(x)    = (alpha / 2) exp(-alpha |x|)
        relaxed(x) = exp(alpha x) / 2 for x <= 0,  1 - exp(-alpha x) / 2 for x > 0

    Identical, with the same parameter name, to SpikingJelly ``surrogate.PiecewiseExp(alpha)``.
    SLAYER's spike-function derivative ``scaleRho / tauRho * exp(-|x| / tauRho)`` (per unit of
    threshold) is this shape with alpha = 1 / tauRho, times 2 * scaleRho.
    """

    alpha: float = 1.0
    name: ClassVar[str] = "exponential"

    def __post_init__(self):
        check_number("surrogate.alpha", self.alpha, minimum=0.0, strict_minimum=True)

    def relaxed(self, x):
        x = as_float(x)
        half = 0.5 * np.exp(-self.alpha * np.abs(x))
        return np.where(x > 0, 1.0 - half, half)

    def grad(self, x):
        x = as_float(x)
        return 0.5 * self.alpha * np.exp(-self.alpha * np.abs(x))


SURROGATES: dict[str, type[Surrogate]] = {
    "sigmoid": Sigmoid,
    "fast_sigmoid": FastSigmoid,
    "superspike": FastSigmoid,
    "atan": ATan,
    "triangle": Triangle,
    "rectangle": Rectangle,
    "exponential": Exponential,
}


def make_surrogate(spec: Any) -> Surrogate:
    """Build a surrogate from ``{"name": "sigmoid", "T": 0.3}`` (or a Surrogate, returned as is)."""
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise RefsnnError(f"surrogate must be a dict with a 'name' (one of {', '.join(SURROGATES)}), "
                          f"got {spec!r}")
    name = spec["name"]
    if name not in SURROGATES:
        raise RefsnnError(f"surrogate.name must be one of {', '.join(repr(n) for n in SURROGATES)}, got {name!r}")
    cls = SURROGATES[name]
    allowed = {f.name for f in fields(cls)}
    params = {k: v for k, v in spec.items() if k != "name"}
    unknown = set(params) - allowed
    if unknown:
        raise RefsnnError(f"surrogate {name!r} takes parameter(s) {sorted(allowed)}, got unknown {sorted(unknown)}")
    return cls(**params)
