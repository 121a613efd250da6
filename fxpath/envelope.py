"""The envelope of two coordinate tensors: what the path-metric network takes from them.

For coordinates ``a`` and ``b`` of one slot: ``lo = min(|a|, |b|)``, ``gap = ||a| - |b||``
(so ``hi = lo + gap``) and three flags, 0-dim boolean tensors so that a GPU never waits:

* ``same_sign``: no entry has ``a`` and ``b`` of opposite signs, both non-zero. It is decided on
  ``a * sign(b)``, which is exact: ``a * b`` would underflow to ``-0.0`` for tiny weights of
  opposite signs (``1e-30 * -1e-30`` in float32) and call them the same sign;
* ``a_over``: ``|a| >= |b|`` everywhere; ``b_over``: ``|b| >= |a|`` everywhere.

With ``ref`` (a tensor shaped like ``a``), ``matches_ref`` says whether ``|a|`` equals it bit
for bit: the path-metric then reuses a path-norm computed on exactly these magnitudes.

On the CPU it works through the tensors in blocks that stay in cache: the nine elementwise
steps then cost about one pass over memory, not nine (VGG-16's coordinates are 550 MB per
parameter set), and ``lo`` and ``gap`` get huge pages (`fxpath.memory`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .memory import empty_scores

__all__ = ["Envelope", "envelope"]

#: elements per block on the CPU (1 MiB of float32: a block's four scratch tensors stay in
#: cache, and are allocated once per call)
BLOCK = 1 << 18


@dataclass(frozen=True)
class Envelope:
    """``lo``/``gap`` (shaped like the inputs) and the flags, see the module docstring."""

    lo: Tensor
    gap: Tensor
    same_sign: Tensor
    a_over: Tensor
    b_over: Tensor
    matches_ref: bool = False

    @property
    def hi(self) -> Tensor:
        """``max(|a|, |b|)`` (computed on request: ``lo + gap``)."""
        return self.lo + self.gap


@torch.no_grad()
def envelope(a: Tensor, b: Tensor, ref: Tensor | None = None) -> Envelope:
    """The envelope of ``a`` and ``b`` (same shape, dtype and device); see the module
    docstring for ``ref``."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    fr = ref.reshape(-1) if ref is not None else None
    lo, gap = (empty_scores(fa.shape, fa.dtype, fa.device) for _ in range(2))
    step = max(fa.numel(), 1) if fa.is_cuda else BLOCK
    scratch = torch.empty((4, min(step, fa.numel())), dtype=fa.dtype, device=fa.device)
    signed, lows, highs = [], [], []
    matches = ref is not None and ref.shape == a.shape and ref.dtype == a.dtype
    for start in range(0, fa.numel(), step):
        xa, xb = fa[start:start + step], fb[start:start + step]
        x, y, t, s = scratch[:, :xa.numel()]
        torch.abs(xa, out=x)
        torch.abs(xb, out=y)
        torch.sub(x, y, out=t)
        torch.minimum(x, y, out=lo[start:start + step])
        torch.abs(t, out=gap[start:start + step])
        low, high = torch.aminmax(t)
        lows.append(low)
        highs.append(high)
        torch.sign(xb, out=s)
        signed.append(s.mul_(xa).min())  # < 0 exactly where the signs differ
        if matches:
            assert fr is not None
            matches = torch.equal(x, fr[start:start + step])
    if not signed:  # an empty tensor: every statement about its entries holds
        yes = torch.ones((), dtype=torch.bool, device=a.device)
        return Envelope(lo.view(a.shape), gap.view(a.shape), yes, yes, yes, matches)
    low, sign = (torch.stack(v).amin() if len(v) > 1 else v[0] for v in (lows, signed))
    high = torch.stack(highs).amax() if len(highs) > 1 else highs[0]
    return Envelope(lo.view(a.shape), gap.view(a.shape), sign >= 0, low >= 0, high <= 0,
                    matches)
