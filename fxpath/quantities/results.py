"""Result types: path-norms and path-metrics as mantissa x 2**exponent, never overflowing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["PathMetric", "PathNorm"]

_LOG10_2 = math.log10(2.0)


def _pow2(log2: float) -> float:
    """2**log2 as a float, ``inf`` past float64's range (no OverflowError)."""
    if math.isinf(log2):
        return 0.0 if log2 < 0 else math.inf
    whole = math.floor(log2)
    try:
        return math.ldexp(2.0 ** (log2 - whole), whole)
    except OverflowError:
        return math.inf


def log2_of(mantissa: float, exponent: float) -> float:
    """log2 of ``mantissa * 2**exponent`` (``-inf`` for zero)."""
    if mantissa <= 0.0:
        return -math.inf
    return math.log2(mantissa) + exponent


@dataclass(frozen=True)
class PathNorm:
    """The l^q path-norm ``||Phi(theta)||_q`` of a model at one input shape.

    Attributes:
        q: the exponent.
        log2: ``log2 ||Phi||_q`` (finite for any non-zero norm, whatever its size).
        log_tensor: ``log ||Phi||_q`` as a differentiable 0-dim tensor when requested
            (``differentiable=True``), else ``None``.
    """

    q: float
    log2: float
    log_tensor: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def log10(self) -> float:
        """``log10 ||Phi||_q``."""
        return self.log2 * _LOG10_2

    @property
    def value(self) -> float:
        """``||Phi||_q`` as a float (``inf`` only when beyond float64's range)."""
        return _pow2(self.log2)

    def __float__(self) -> float:
        return self.value

    def __repr__(self) -> str:
        return f"PathNorm(q={self.q:g}, value={self.value:.10g}, log10={self.log10:.10g})"


@dataclass(frozen=True)
class PathMetric:
    """The l^1 path-metric ``||Phi(theta) - Phi(theta')||_1`` or a certified upper bound of it.

    Attributes:
        log2: ``log2`` of the metric (``-inf`` when it is zero).
        exact: ``True`` when the value is the exact metric (one parameter set dominates the
            other coordinate-wise with the same signs: pruning, rounding toward zero);
            ``False`` when it is a certified upper bound (``prod max - prod min`` construction,
            or the intermediate parameter for pairs with differing signs).
        norm: the l^1 path-norm of the first parameter set, for the relative metric.
    """

    log2: float
    exact: bool
    norm: PathNorm

    @property
    def value(self) -> float:
        """The metric as a float (``inf`` only past float64's range)."""
        return _pow2(self.log2)

    @property
    def log10(self) -> float:
        """``log10`` of the metric."""
        return self.log2 * _LOG10_2

    @property
    def relative(self) -> float:
        """The scale-free metric ``d / ||Phi(theta)||_1``."""
        return _pow2(self.log2 - self.norm.log2)

    def __float__(self) -> float:
        return self.value

    def __repr__(self) -> str:
        kind = "exact" if self.exact else "upper bound"
        return (f"PathMetric(value={self.value:.10g}, log10={self.log10:.10g}, "
                f"relative={self.relative:.6g}, {kind})")
