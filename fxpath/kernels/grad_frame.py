"""The backward of a conv whose output gradient is constant away from a border frame.

Path-magnitude scores are one backward pass of the path network. Each conv there needs the
gradient of the total with respect to its input (to go on) and to its weights (the scores).
The gradient at a conv's output is the adjoint path network applied to ones, so, like the
forward activations (`fxpath.kernels.frame_conv`), it is constant per channel away from a frame at
the borders wherever the outputs are near: through a dense-prediction decoder, the gradient of a
256x256 map is one number per channel except for a few rows and columns at the borders.

`conv` finds that frame at run time: the rows around the centre that equal the centre row and
the columns around it that equal the centre column, bit for bit (no frame is assumed, so
nothing can be wrong; where the block they leave is too small to pay, the dense backward
runs, after looking at the centre row and column only). With ``g = c`` (one value per channel) on
the interior block ``I`` and ``g`` itself on the ring ``R`` around it:

* the input gradient, a transposed conv, runs on the compressed gradient and is expanded,
  with the geometry of a forward conv on a compressed image (`fxpath.kernels.frame_conv`);
* the weight gradient ``sum_p g[o, p] x[i, p + k]`` splits into ``c[o] * sum_{p in I} x[i, p +
  k]`` (box sums of the input, one pass) plus the same sum over the ring, a weight gradient
  on two thin strips (the top and bottom rows, the left and right columns).

Every term is a sum of the same non-negative products the dense gradient adds, in another
order: path networks have non-negative inputs, weights and gradients, so nothing cancels.
Only 2-D convs of stride 1 and one group with zero padding qualify (any dilation), on the CPU
(the search reads values on the host: a GPU would wait for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fxpath import layout
from fxpath.kernels.frame_conv import compression
from fxpath.kernels.geometry import Frame

__all__ = ["MIN_PIXELS", "conv", "eligible", "find_frame", "framed_backward"]

#: output maps with fewer pixels keep the dense backward (too little to save)
MIN_PIXELS = 256
#: the compressed gradient must keep at most this share of the output pixels (at a third,
#: the strips and the extra calls cost about what they save: measured on FCN's 32x32 maps)
_MAX_KEPT = 0.25


def eligible(kernel: Sequence[int], stride: Sequence[int], padding: Any,
             dilation: Sequence[int], groups: int, out_shape: Sequence[int]) -> bool:
    """Whether a conv's backward may take the framed route (static: the geometry)."""
    if isinstance(padding, int):
        padding = (padding,) * len(kernel)
    return (len(kernel) == 2 and tuple(stride) == (1, 1) and groups == 1
            and not isinstance(padding, str)
            and all(0 <= p <= d * (k - 1) for p, k, d in zip(padding, kernel, dilation))
            and out_shape[-1] * out_shape[-2] >= MIN_PIXELS)


def _run(flags: list[bool], centre: int) -> tuple[int, int]:
    """``[lo, hi)``: the widest run of True around ``centre``."""
    lo = hi = centre
    while lo > 0 and flags[lo - 1]:
        lo -= 1
    while hi < len(flags) - 1 and flags[hi + 1]:
        hi += 1
    return lo, hi + 1


def find_frame(g: Tensor, kernel: Sequence[int]) -> tuple[Frame, Tensor] | None:
    """``(frame, c)`` of a gradient ``g`` (batch 1, NCHW) whose rows between ``top`` and
    ``bottom`` all equal its centre row and whose columns between ``left`` and ``right`` all
    equal its centre column, bit for bit (``frame = ((top, bottom), (left, right))``): each
    channel ``o`` is then ``c[o]`` on that block. ``None`` where the block does not pay.

    ``kernel``: the extent of the conv's window per axis (``dilation * (k - 1) + 1``)."""
    h, w = g.shape[-2:]
    cy, cx = h // 2, w // 2
    x = g[0]
    # candidates from the centre column and the centre row (cheap), then the proof
    y0, y1 = _run((x[:, :, cx] == x[:, cy:cy + 1, cx]).all(0).tolist(), cy)
    x0, x1 = _run((x[:, cy, :] == x[:, cy, cx:cx + 1]).all(0).tolist(), cx)
    kh, kw = kernel
    if not (y1 - y0 > kh and x1 - x0 > kw) \
            or (h - (y1 - y0) + kh) * (w - (x1 - x0) + kw) > _MAX_KEPT * h * w:
        return None  # NaN at the centre lands here too
    if not (bool((x[:, y0:y1] == x[:, cy:cy + 1]).all())
            and bool((x[:, :, x0:x1] == x[:, :, cx:cx + 1]).all())):
        return None
    return ((y0, h - y1), (x0, w - x1)), x[:, cy, cx]


def _band(x: Tensor, dim: int, a: int, b: int) -> Tensor:
    """Rows ``[a, b)`` of ``x`` along ``dim`` (2 or 3 of NCHW), zeros where they fall
    outside the map."""
    n = x.shape[dim]
    start = min(max(a, 0), n)
    s = x.narrow(dim, start, max(min(b, n) - start, 0))
    before, after = max(0, -a), max(0, b - n)
    if not (before or after):
        return s
    return F.pad(s, (0, 0, before, after) if dim == 2 else (before, after))


def _ring_part(g: Tensor, x: Tensor, w: Tensor, dim: int, lo: int, hi: int, pad: int,
               reach: int, conv_padding: tuple[int, int], dilation: Sequence[int]
               ) -> Tensor | None:
    """The weight gradient over the first ``lo`` and last ``hi`` output rows of ``g`` along
    ``dim`` (``x``: the input rows they read start at output row 0 minus ``pad``); ``None``
    when both are empty."""
    size = g.shape[dim]
    g_parts, x_parts = [], []
    if lo:
        g_parts.append(g.narrow(dim, 0, lo))
        x_parts.append(_band(x, dim, -pad, lo + reach - pad))
    if hi:
        g_parts.append(g.narrow(dim, size - hi, hi))
        x_parts.append(_band(x, dim, size - hi - pad, size + reach - pad))
    if not g_parts:
        return None
    gs, xs = _strips(g_parts, x_parts, reach, dim)
    return _weight_grad(gs, xs, w, conv_padding, dilation)


def _strips(g_parts: list[Tensor], x_parts: list[Tensor], gap: int, dim: int) -> tuple[Tensor,
                                                                                      Tensor]:
    """Two strips side by side along ``dim`` with ``gap`` zero gradient rows between them, so
    that no output of one reads the input of the other."""
    if len(g_parts) == 2:
        shape = list(g_parts[0].shape)
        shape[dim] = gap
        g_parts = [g_parts[0], g_parts[0].new_zeros(shape), g_parts[1]]
    return torch.cat(g_parts, dim), torch.cat(x_parts, dim)


def _weight_grad(g: Tensor, x: Tensor, w: Tensor, padding: Sequence[int],
                 dilation: Sequence[int]) -> Tensor:
    return torch.ops.aten.convolution_backward(
        g.contiguous(), x.contiguous(), w, None, [1, 1], list(padding), list(dilation), False,
        [0, 0], 1, [False, True, False])[1]


def _box_sums(x: Tensor, rows: Sequence[tuple[int, int]], cols: Sequence[tuple[int, int]]
              ) -> Tensor:
    """``s[i, ky, kx]``: the sum of ``x[0, i]`` over rows ``rows[ky]`` and columns
    ``cols[kx]`` (half-open ranges that share a middle), as sums of the entries themselves."""
    y_lo, y_hi = min(a for a, _ in rows), max(b for _, b in rows)
    m0, m1 = max(a for a, _ in cols), min(b for _, b in cols)
    band = x[0, :, y_lo:y_hi]
    mid = band[..., m0:m1].sum(-1)
    t = torch.stack([mid + band[..., a:m0].sum(-1) + band[..., m1:b].sum(-1)
                     for a, b in cols], -1)
    r0, r1 = max(a for a, _ in rows) - y_lo, min(b for _, b in rows) - y_lo
    t_mid = t[:, r0:r1].sum(1)
    return torch.stack([t_mid + t[:, a - y_lo:r0].sum(1) + t[:, r1:b - y_lo].sum(1)
                        for a, b in rows], 1)


def framed_backward(g: Tensor, x: Tensor, w: Tensor, padding: Sequence[int], need_x: bool,
                    need_w: bool, dilation: Sequence[int] = (1, 1)
                    ) -> tuple[Tensor | None, Tensor | None] | None:
    """``(d/dx, d/dW)`` of ``sum(g * conv2d(x, W, padding=padding, dilation=dilation))`` on
    the frame of ``g`` (see the module docstring); ``None`` where ``g`` has no frame that
    pays."""
    dh, dw = dilation
    kh, kw = w.shape[2:]
    eh, ew = dh * (kh - 1), dw * (kw - 1)  # how far a window reaches beyond its first row
    found = find_frame(g, (eh + 1, ew + 1))
    if found is None:
        return None
    ((top, bottom), (left, right)), c = found
    ph, pw = padding
    ho, wo = g.shape[2:]
    gx = gw = None
    if need_x:  # a transposed conv is a conv with padding reach - p: compress as forward
        cuts = compression((ho, wo), (kh, kw), (1, 1), (eh - ph, ew - pw), (dh, dw), found[0])
        in_rows, out_rows, out_layout = layout.conv_indices(None, cuts, (ho, wo))
        small = F.conv_transpose2d(layout.select(g, *layout.as_runs(in_rows)), w, None, 1,
                                   (ph, pw), 0, 1, (dh, dw))
        gx = layout.select(small, *layout.as_runs(out_rows))
        if out_layout is not None:  # the stored rows, expanded to the full map
            gx = layout.select(gx, *layout.as_runs(layout.relayout(out_layout, None)))
        if gx.shape != x.shape:
            return None
    if need_w:
        # interior: c[o] times box sums of x over the interior shifted by each kernel offset
        h, wd = x.shape[2:]
        rows = [(max(top + ky * dh - ph, 0), min(ho - bottom + ky * dh - ph, h))
                for ky in range(kh)]
        cols = [(max(left + kx * dw - pw, 0), min(wo - right + kx * dw - pw, wd))
                for kx in range(kw)]
        gw = c[:, None, None, None] * _box_sums(x, rows, cols)[None]
        # the ring: top and bottom rows at full width, then the left and right columns of
        # the rows between them
        g_mid = g[:, :, top:ho - bottom]
        x_mid = _band(x, 2, top - ph, ho - bottom + eh - ph)
        for part in (_ring_part(g, x, w, 2, top, bottom, ph, eh, (0, pw), (dh, dw)),
                     _ring_part(g_mid, x_mid, w, 3, left, right, pw, ew, (0, 0), (dh, dw))):
            if part is not None:
                gw = gw + part
    return gx, gw


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, padding: tuple[int, int],
                dilation: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, w, None, 1, padding, dilation)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        grad = grad.contiguous()
        out = framed_backward(grad, x, w, ctx.padding, need_x, need_w, ctx.dilation)
        if out is None:
            gx, gw, _ = torch.ops.aten.convolution_backward(
                grad, x, w, None, [1, 1], list(ctx.padding), list(ctx.dilation), False,
                [0, 0], 1, [need_x, need_w, False])
            out = (gx, gw)
        return out[0], out[1], None, None


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv(x: Tensor, w: Tensor, padding: int | Sequence[int],
         dilation: int | Sequence[int] = 1) -> Tensor:
    """``F.conv2d(x, w, None, 1, padding, dilation)`` whose CPU backward takes the framed
    route where the output gradient has a frame (see the module docstring)."""
    if (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
            and x.device.type == "cpu" and x.shape[0] == 1):
        return _Conv.apply(x, w, _pair(padding), _pair(dilation))
    return F.conv2d(x, w, None, 1, padding, dilation)
