"""The envelope of two coordinate tensors: what the path-metric network takes from them.

For coordinates ``a`` and ``b`` of one slot: ``lo = min(|a|, |b|)``, ``gap = ||a| - |b||``
(so ``hi = lo + gap``) and three flags, 0-dim boolean tensors so that a GPU never waits:

* ``same_sign``: no entry has ``a`` and ``b`` of opposite signs, both non-zero. It is decided on
  ``a * sign(b)``, which is exact: ``a * b`` would underflow to ``-0.0`` for tiny weights of
  opposite signs (``1e-30 * -1e-30`` in float32) and call them the same sign;
* ``a_over``: ``|a| >= |b|`` everywhere; ``b_over``: ``|b| >= |a|`` everywhere.

With ``ref`` (a tensor shaped like ``a``), ``matches_ref`` says whether ``|a|`` equals it bit
for bit: the path-metric then reuses a path-norm computed on exactly these magnitudes.

On the CPU it works through the tensors in blocks that stay in cache: the ten elementwise
steps then cost about one pass over memory, not ten (VGG-16's coordinates are 550 MB per
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


@torch.no_grad()
def envelope(a: Tensor, b: Tensor, ref: Tensor | None = None,
             out: tuple[Tensor, Tensor] | None = None) -> Envelope:
    """The envelope of ``a`` and ``b`` (same shape, dtype and device); see the module
    docstring for ``ref``. ``out``: two contiguous tensors of ``a``'s size, dtype and device
    that ``lo`` and ``gap`` are written into (fresh memory costs page faults on every call)."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    fr = ref.reshape(-1) if ref is not None else None
    if out is not None and all(t.is_contiguous() and t.numel() == fa.numel()
                               and t.dtype == fa.dtype and t.device == fa.device for t in out):
        lo, gap = (t.view(-1) for t in out)
    else:
        lo, gap = (empty_scores(fa.shape, fa.dtype, fa.device) for _ in range(2))
    step = max(fa.numel(), 1) if fa.is_cuda else BLOCK
    matches = ref is not None and ref.shape == a.shape and ref.dtype == a.dtype
    # rows: |a|, |b|, then what is reduced: |a| - |b|, a * sign(b), |a| - ref
    scratch = torch.empty((5 if matches else 4, min(step, fa.numel())), dtype=fa.dtype,
                          device=fa.device)
    lows, highs = [], []
    for start in range(0, fa.numel(), step):
        xa, xb = fa[start:start + step], fb[start:start + step]
        rows = scratch[:, :xa.numel()]
        x, y, t, s = rows[:4]
        torch.abs(xa, out=x)
        torch.abs(xb, out=y)
        torch.sub(x, y, out=t)
        torch.minimum(x, y, out=lo[start:start + step])
        torch.abs(t, out=gap[start:start + step])
        torch.sign(xb, out=s)
        s.mul_(xa)  # < 0 exactly where the signs differ
        # amin/amax: twice as fast as min()/aminmax() on the CPU
        low, high = [t.amin(), s.amin()], [t.amax()]
        if matches:
            assert fr is not None
            d = torch.sub(x, fr[start:start + step], out=rows[4])
            low.append(d.amin())
            high.append(d.amax())
        lows.append(torch.stack(low))
        highs.append(torch.stack(high))
    if not lows:  # an empty tensor: every statement about its entries holds
        yes = torch.ones((), dtype=torch.bool, device=a.device)
        return Envelope(lo.view(a.shape), gap.view(a.shape), yes, yes, yes, matches)
    low = torch.stack(lows).amin(0) if len(lows) > 1 else lows[0]
    high = torch.stack(highs).amax(0) if len(highs) > 1 else highs[0]
    if matches:  # |a| - ref is 0 everywhere (NaN or inf - inf is not)
        matches = bool(low[2] == 0) and bool(high[1] == 0)
    return Envelope(lo.view(a.shape), gap.view(a.shape), low[1] >= 0, low[0] >= 0,
                    high[0] <= 0, matches)
