"""Scale tracking: the small functions the generated path networks call.

Path-network values overflow any float type (ResNet-152's l^1 path-norm is about 1e222), so
every value is carried as ``(mantissa, exponent)`` with ``value = mantissa * 2**exponent``:
after each layer the mantissa is divided by a power of two chosen from its largest entry.
Multiplying by a power of two is exact in binary floating point, so scale tracking adds no
rounding error at all; the exponent is a 0-dim tensor (no host sync, CUDA-graph friendly).

The scale factors are computed from detached values: they are constants to autograd, so the
gradient of the scaled output is the gradient of the true output times a constant, and
``a * grad / output`` (path mass fractions) is exact.

Functions taking ``*streams`` work on one stream (path-norms) or on the pair
``(lo, delta)`` of the path-metric network, which share one exponent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["add", "cat", "exponent_of", "output_total", "rescale", "rescale_with_bias",
           "window_sum"]

_AVG = {2: F.avg_pool2d, 3: F.avg_pool3d}
#: the smallest exponent k that `exponent_of` returns: ``2**-k`` is finite in the dtype
_MIN_EXP = {torch.float64: -1021, torch.float32: -125, torch.float16: -13, torch.bfloat16: -125}


def exponent_of(m: Tensor) -> Tensor:
    """The exponent k with ``m * 2**-k`` in [0.5, 1) (0 for m == 0), as m's dtype.

    For a subnormal ``m`` it stops at the smallest normal exponent, so that ``2**-k`` stays
    finite (``m * 2**-k`` is then below 0.5: correct, just not fully normalized).
    """
    return torch.frexp(m).exponent.clamp(min=_MIN_EXP.get(m.dtype, -125)).to(m.dtype)


def _peak(streams: Sequence[Tensor]) -> Tensor:
    """The largest entry of any stream: of ``(lo, delta)``, at least half the largest entry
    of ``lo + delta`` (the hi-network's value stays below 2 after renormalizing), without
    the sum's pass over memory."""
    peak = streams[0].detach().amax()
    for s in streams[1:]:
        peak = torch.maximum(peak, s.detach().amax())
    return peak


def _top(exps: Sequence[Tensor]) -> Tensor:
    """The largest of several exponents (the common scale operands are aligned to)."""
    top = exps[0]
    for e in exps[1:]:
        top = torch.maximum(top, e)
    return top


def rescale(exp: Tensor, *streams: Tensor) -> tuple[Tensor, ...]:
    """Renormalize ``streams`` (value ``s * 2**exp``): returns ``(*scaled, new_exp)``.

    Scales in place: the generated code only passes freshly computed tensors whose producers
    do not keep them for their backward (conv, pooling, sums), so autograd stays valid.
    """
    k = exponent_of(_peak(streams))
    f = torch.exp2(-k)
    return (*(s.mul_(f) for s in streams), exp + k)


def rescale_with_bias(exp: Tensor, streams: Sequence[Tensor], biases: Sequence[Tensor],
                      bias_exp: Tensor | float = 0.0) -> tuple[Tensor, ...]:
    """``s * 2**exp + b * 2**bias_exp`` for each stream/bias pair, renormalized to one shared
    exponent."""
    k_in = exp + exponent_of(_peak(streams))
    k_b = exponent_of(_peak(biases)) + bias_exp
    new = torch.maximum(k_in, k_b)
    f, g = torch.exp2(exp - new), torch.exp2(bias_exp - new)
    return (*(s.mul_(f).add_(b * g) for s, b in zip(streams, biases)), new)


def add(exps: Sequence[Tensor], inputs: Sequence[Sequence[Tensor]], coeffs: Sequence[float],
        const: float, const_exp: float = 0.0) -> tuple[Tensor, ...]:
    """``sum_k coeffs[k] * x_k + const * 2**const_exp`` per stream (non-negative
    coefficients), renormalized.

    ``inputs[k]`` holds the streams of the k-th operand, with exponent ``exps[k]``; the constant
    (a bias of these identity neurons) goes into the first stream only.
    """
    top = _top(exps)
    if const:
        top = top.clamp(min=float(math.frexp(const)[1]) + const_exp)
    n = len(inputs[0])
    out = []
    for i in range(n):
        acc = None
        for e, x, c in zip(exps, inputs, coeffs):
            factor = torch.exp2(e - top) * c
            acc = x[i] * factor if acc is None else torch.addcmul(acc, x[i], factor)
        if const and i == 0:
            acc = acc + const * torch.exp2(const_exp - top)
        out.append(acc)
    return rescale(top, *out)


def pad_const(exp: Tensor, streams: Sequence[Tensor], pad: Sequence[int], value: float,
              value_exp: float = 0.0) -> tuple[Tensor, ...]:
    """Each stream zero-padded, the first one with ``value * 2**value_exp`` in its padding
    instead (constants padded into the model start paths of their own), renormalized."""
    top = exp.clamp(min=float(math.frexp(value)[1]) + value_exp) if value else exp
    out = []
    for i, x in enumerate(streams):
        y = F.pad(x * torch.exp2(exp - top), list(pad))
        if i == 0 and value:
            border = F.pad(torch.zeros_like(x), list(pad), value=1.0)
            y = torch.addcmul(y, border, value * torch.exp2(value_exp - top))
        out.append(y)
    return rescale(top, *out)


def cat(exps: Sequence[Tensor], inputs: Sequence[Sequence[Tensor]], dim: int) -> tuple[Tensor, ...]:
    """Concatenate operands along ``dim`` per stream after aligning their exponents."""
    top = _top(exps)
    n = len(inputs[0])
    out = [torch.cat([x[i] * torch.exp2(e - top) for e, x in zip(exps, inputs)], dim)
           for i in range(n)]
    return (*out, top)


def output_total(exps: Sequence[Tensor], outputs: Sequence[Sequence[Tensor]]) -> tuple[Tensor, ...]:
    """Sum of all output neurons of all outputs, per stream: ``(*totals, exponent)``."""
    top = _top(exps)
    n = len(outputs[0])
    totals = []
    for i in range(n):
        acc = None
        for e, x in zip(exps, outputs):
            term = x[i].sum() * torch.exp2(e - top)
            acc = term if acc is None else acc + term
        totals.append(acc)
    return (*totals, top)


def window_sum(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int],
               padding: Sequence[int], ceil_mode: bool) -> torch.Tensor:
    """Sum of each pooling window's real inputs (zero padding), PyTorch's window placement."""
    nd = len(kernel)
    if nd == 1:  # avg_pool1d has no divisor_override: go through 2-D
        out = F.avg_pool2d(x.unsqueeze(-2), (1, kernel[0]), (1, stride[0]), (0, padding[0]),
                           ceil_mode, True, 1)
        return out.squeeze(-2)
    return _AVG[nd](x, kernel, stride, padding, ceil_mode, True, 1)
