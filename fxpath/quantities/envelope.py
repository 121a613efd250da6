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
parameter set), and ``lo`` and ``gap`` get huge pages (`fxpath.engine.memory`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fxpath.engine.memory import empty_scores
from fxpath.ir.coordinates import Factored, multiplied, tensor_of

__all__ = ["Envelope", "Operand", "envelope"]

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


Operand = Tensor | Factored


@torch.no_grad()
def envelope(a: Operand, b: Operand, ref: Tensor | None = None,
             out: tuple[Tensor, Tensor] | None = None) -> Envelope:
    """The envelope of ``a`` and ``b`` (same shape, dtype and device; either may be a
    `fxpath.ir.coordinates.Factored` product, multiplied out one block at a time); see the
    module docstring for ``ref``. ``out``: two contiguous tensors of ``a``'s size, dtype and
    device that ``lo`` and ``gap`` are written into (fresh memory costs page faults on every
    call)."""
    shape, numel = a.shape, a.numel()
    like = tensor_of(a)
    if out is not None and all(t.is_contiguous() and t.numel() == numel
                               and t.dtype == like.dtype and t.device == like.device
                               for t in out):
        lo, gap = (t.view(-1) for t in out)
    else:
        lo, gap = (empty_scores((numel,), like.dtype, like.device) for _ in range(2))
    fr = ref.reshape(-1) if ref is not None else None
    matches = ref is not None and ref.shape == shape and ref.dtype == like.dtype
    factored = [t for t in (a, b) if isinstance(t, Factored)]
    if factored and like.is_cuda or not factored:  # whole tensors, or flat blocks
        ta, tb = multiplied(a).reshape(-1), multiplied(b).reshape(-1)
        rows, row = numel, 1
    else:  # blocks of whole rows (dimension 0), where the scale is applied
        ta, tb = (t if isinstance(t, Factored) else t.reshape(-1) for t in (a, b))
        rows, row = shape[0], numel // max(shape[0], 1)
    step = max(numel, 1) if like.is_cuda else BLOCK
    per = max(1, step // max(row, 1))  # rows per block
    width = min(per * row, numel)
    # ``|a| == ref`` on the CPU: one comparison per block, none after the first difference; on
    # a GPU from the extremes of ``|a| - ref`` (no host sync per block)
    on_host = matches and not like.is_cuda
    # rows: signed a and b where multiplied out, |a|, |b|, |a| - |b|, a * sign(b), |a| - ref
    scratch = torch.empty((7 if matches and not on_host else 6, width), dtype=like.dtype,
                          device=like.device)
    lows, highs = [], []
    for r0 in range(0, rows, per):
        r1 = min(rows, r0 + per)
        f0, f1 = r0 * row, r1 * row
        n = f1 - f0
        xa_s, xb_s, x, y, t, s = scratch[:6, :n]
        xa = ta.rows(r0, r1, xa_s).view(-1) if isinstance(ta, Factored) else ta[f0:f1]
        xb = tb.rows(r0, r1, xb_s).view(-1) if isinstance(tb, Factored) else tb[f0:f1]
        torch.sign(xb, out=s)
        s.mul_(xa)  # < 0 exactly where the signs differ
        torch.abs(xa, out=x)
        torch.abs(xb, out=y)
        torch.sub(x, y, out=t)
        torch.minimum(x, y, out=lo[f0:f1])
        torch.abs(t, out=gap[f0:f1])
        # amin/amax: twice as fast as min()/aminmax() on the CPU
        low, high = [t.amin(), s.amin()], [t.amax()]
        if on_host and matches:
            assert fr is not None
            matches = torch.equal(x, fr[f0:f1])
        elif matches and not on_host:
            assert fr is not None
            d = torch.sub(x, fr[f0:f1], out=scratch[6, :n])
            low.append(d.amin())
            high.append(d.amax())
        lows.append(torch.stack(low))
        highs.append(torch.stack(high))
    if not lows:  # an empty tensor: every statement about its entries holds
        yes = torch.ones((), dtype=torch.bool, device=like.device)
        return Envelope(lo.view(shape), gap.view(shape), yes, yes, yes, matches)
    low = torch.stack(lows).amin(0) if len(lows) > 1 else lows[0]
    high = torch.stack(highs).amax(0) if len(highs) > 1 else highs[0]
    if matches and not on_host:  # |a| - ref is 0 everywhere (NaN or inf - inf is not)
        matches = bool(low[2] == 0) and bool(high[1] == 0)
    return Envelope(lo.view(shape), gap.view(shape), low[1] >= 0, low[0] >= 0,
                    high[0] <= 0, matches)
