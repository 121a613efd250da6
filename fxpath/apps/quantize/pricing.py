"""What each integer width would cost, per layer: the first-order estimates the bit allocator
chooses from, all widths in one pass over the weights.

For a weight ``w`` with score ``s`` and the grid step ``scale`` of a width, rounding moves it by
``|k - w / scale| * scale`` (``k`` the integer code), so the layer's estimate at that width is
``sum s / |w| * |k - w / scale| * scale`` (``docs/quantization.md``): `price` computes it for
every width while a block of weights is in cache, with the scales `quantize_tensor` uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fxpath.apps.quantize.layers import Plan, bias_estimate
from fxpath.apps.quantize.rounding import channel_amax, grid_scale
from fxpath.apps.quantize.targets import Target, read
from fxpath.program import PathProgram

__all__ = ["PRICE_BLOCK", "price"]

#: weights per block: the float64 temporaries of all widths stay in cache
PRICE_BLOCK = 1 << 15


def price(refprog: PathProgram, targets: Sequence[Target], scores: Mapping[str, Tensor],
          plan: Plan, widths: Sequence[int]) -> dict[str, dict[int, float]]:
    """The first-order estimate of every layer at every integer width: one score pass and
    one pass over the weights for all of them (the codes' rounding as in `quantize_tensor`,
    without its correction of ``k`` toward zero, which moves an estimate by float64 rounding
    at most)."""
    out: dict[str, dict[int, float]] = {}
    for t in targets:
        w = read(refprog, t.weight)
        score = scores.get(t.weight)
        costs = (_weight_costs(w, score, t, plan, widths) if score is not None
                 else dict.fromkeys(widths, 0.0))
        if t.bias is not None and t.bias_score is not None:
            for b in widths:
                costs[b] += bias_estimate(refprog, t, f"int{b}", plan)
        out[t.layer] = costs
    return out


@torch.no_grad()
def _weight_costs(w: Tensor, score: Tensor, t: Target, plan: Plan, widths: Sequence[int]
                  ) -> dict[int, float]:
    """``sum s / |w| * |k - w / scale| * scale`` of one weight tensor, for every width."""
    if w.numel() == 0:
        return dict.fromkeys(widths, 0.0)
    dim = t.channel_dim if plan.per_channel and w.dim() > 0 else None
    amax = channel_amax(w, dim).to(torch.float64)
    scales = [grid_scale(amax, 2 ** (b - 1) - 1, t.dtype) for b in widths]
    if dim is None:  # one scale: blocks of the flat tensor
        rows_w, rows_s = w.reshape(1, -1), score.reshape(1, -1)
        scales = [s.reshape(1, 1) for s in scales]
    else:  # blocks of whole channels, each with its scale
        rows_w = w.movedim(dim, 0).reshape(w.shape[dim], -1)
        rows_s = score.reshape(w.shape).movedim(dim, 0).reshape(w.shape[dim], -1)
        scales = [s.movedim(dim, 0).reshape(-1, 1) for s in scales]
    width = rows_w.shape[1]
    totals = torch.zeros(len(widths), dtype=torch.float64, device=w.device)
    step = max(1, PRICE_BLOCK // max(width, 1))  # channels per block
    chunk = PRICE_BLOCK if dim is None else width * step
    for r0 in range(0, rows_w.shape[0], step):
        r1 = min(rows_w.shape[0], r0 + step)
        for c0 in range(0, width, chunk):
            x = rows_w[r0:r1, c0:c0 + chunk].to(torch.float64)
            u = torch.div(rows_s[r0:r1, c0:c0 + chunk].to(torch.float64), x.abs())
            u.nan_to_num_(0.0, 0.0, 0.0)  # score / |w|, 0 where w is 0 (a fresh tensor)
            q, k = torch.empty_like(x), torch.empty_like(x)
            for i, sc in enumerate(scales):
                s = sc if dim is None else sc[r0:r1]
                torch.div(x, s, out=q)
                (torch.trunc if plan.rounding == "toward_zero" else torch.round)(q, out=k)
                k.sub_(q).abs_().mul_(u)
                totals[i] += (k.sum(1, keepdim=True) * s).sum()
    return dict(zip(widths, totals.tolist()))
