"""The envelope of two coordinate tensors: what the path-metric network takes from them.

For coordinates ``a`` and ``b`` of one slot: ``lo = min(|a|, |b|)``, ``hi = max(|a|, |b|)`` and
three flags (0-dim boolean tensors, so that a GPU never waits): ``a * b >= 0`` everywhere,
``|a| >= |b|`` everywhere, ``|b| >= |a|`` everywhere. On the CPU it works through the tensors in
cache-sized blocks: VGG-16's coordinates are 550 MB per parameter set, and whole-tensor
temporaries (``|a|``, ``|b|``, ``a * b``, boolean masks) cost a pass of page faults each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Envelope", "envelope"]

#: elements per block on the CPU (4 MiB of float32: the temporaries stay in cache)
BLOCK = 1 << 20


@dataclass(frozen=True)
class Envelope:
    """``lo``/``hi`` (shaped like the inputs) and the three flags, see the module docstring."""

    lo: Tensor
    hi: Tensor
    same_sign: Tensor
    a_over: Tensor
    b_over: Tensor


def envelope(a: Tensor, b: Tensor) -> Envelope:
    """The envelope of ``a`` and ``b`` (same shape, dtype and device)."""
    fa, fb = a.reshape(-1), b.reshape(-1)
    lo, hi = torch.empty_like(fa), torch.empty_like(fa)
    step = fa.numel() if fa.is_cuda else BLOCK
    same, a_over, b_over = [], [], []
    for start in range(0, fa.numel(), step):
        xa, xb = fa[start:start + step], fb[start:start + step]
        x, y = xa.abs(), xb.abs()
        same.append((xa * xb >= 0).all())
        a_over.append((y <= x).all())
        b_over.append((x <= y).all())
        torch.maximum(x, y, out=hi[start:start + step])
        torch.minimum(x, y, out=lo[start:start + step])
    return Envelope(lo.view(a.shape), hi.view(a.shape), *(_all(f, a.device) for f in
                                                          (same, a_over, b_over)))


def _all(flags: list[Tensor], device: torch.device) -> Tensor:
    if not flags:  # an empty tensor: every statement about its entries holds
        return torch.ones((), dtype=torch.bool, device=device)
    return flags[0] if len(flags) == 1 else torch.stack(flags).all()
