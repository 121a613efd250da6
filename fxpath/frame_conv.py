"""Convolution of a constant-interior activation: convolve the frame, fill the interior.

When a conv's input has a frame (see `fxpath.interior`), every interior output position reads
interior inputs only and holds ``v[o] = sum_{i,k} W[o,i,k] c[i]``, where ``c`` is the input's
interior value. `frame_conv` computes that one value per channel, and runs real convolutions
only on the boxes that tile the output's frame, each on the crop of the input it reads. The
weight gradient splits the same way: ``c[i] * (sum of the output gradient over the interior)``
plus the frame boxes' weight gradients. Nothing is approximated and no term cancels: every
output and gradient entry is a sum of the same products a dense convolution adds up.

The input gradient is the dense one (the output gradient has no frame structure in general).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .interior import Frame

__all__ = ["frame_conv"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

Slices = tuple[slice, ...]


@dataclass(frozen=True)
class _Box:
    out: Slices          # output positions (spatial dims) this box computes
    crop: Slices         # input positions it reads that exist
    pad: tuple[int, ...]  # F.pad widths (last dimension first) for the ones that do not


@dataclass(frozen=True)
class _Plan:
    interior_in: tuple[int, ...]  # one interior input position (where c is read)
    interior_out: Slices          # the output interior
    boxes: tuple[_Box, ...]       # disjoint boxes tiling the output frame


@functools.lru_cache(maxsize=256)
def _plan(size_in: tuple[int, ...], size_out: tuple[int, ...], kernel: tuple[int, ...],
          stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
          frame_in: Frame, frame_out: Frame) -> _Plan:
    nd = len(size_out)
    inner = [(lo, m - hi) for (lo, hi), m in zip(frame_out, size_out)]
    boxes = []
    for j in range(nd):  # slabs: dims before j interior, dim j in its border, dims after full
        for a, b in ((0, inner[j][0]), (inner[j][1], size_out[j])):
            ranges = [inner[m] if m < j else (0, size_out[m]) for m in range(nd)]
            ranges[j] = (a, b)
            if all(lo < hi for lo, hi in ranges):
                boxes.append(_box(ranges, size_in, kernel, stride, padding, dilation))
    return _Plan(tuple(lo for lo, _ in frame_in), tuple(slice(a, b) for a, b in inner),
                 tuple(boxes))


def _box(ranges: Sequence[tuple[int, int]], size_in: Sequence[int], kernel: Sequence[int],
         stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> _Box:
    crop, pad = [], []
    for (a, b), n, k, s, p, d in zip(ranges, size_in, kernel, stride, padding, dilation):
        first, end = s * a - p, s * (b - 1) - p + d * (k - 1) + 1  # input positions read
        crop.append(slice(max(first, 0), min(end, n)))
        pad.append((max(0, -first), max(0, end - n)))
    flat = tuple(w for pair in reversed(pad) for w in pair)
    return _Box(tuple(slice(a, b) for a, b in ranges), tuple(crop), flat)


def _interior_value(x: Tensor, plan: _Plan) -> Tensor:
    """``c``: the input's value at an interior position, one per channel."""
    return x[(0, slice(None), *plan.interior_in)]


def _per_output(c: Tensor, weight: Tensor, groups: int) -> Tensor:
    """``c`` laid out like one weight's input channels: ``(C_out, C_in / groups)``."""
    c_out, c_in = weight.shape[0], weight.shape[1]
    return c.reshape(groups, 1, c_in).expand(groups, c_out // groups, c_in).reshape(c_out, c_in)


def _crop(x: Tensor, box: _Box) -> Tensor:
    part = x[(slice(None), slice(None), *box.crop)]
    return F.pad(part, box.pad) if any(box.pad) else part


class _FrameConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, geometry: tuple[Any, ...],
                plan: _Plan) -> Tensor:
        stride, padding, dilation, groups, size_out = geometry
        nd = len(size_out)
        ctx.save_for_backward(x, weight)
        ctx.geometry, ctx.plan = geometry, plan
        c = _per_output(_interior_value(x, plan), weight, groups)
        v = (weight * c.reshape(*c.shape, *([1] * nd))).sum(tuple(range(1, weight.dim())))
        out = x.new_empty((1, weight.shape[0], *size_out))
        out[(slice(None), slice(None), *plan.interior_out)] = v.reshape(1, -1, *([1] * nd))
        conv = _CONV[nd]
        for box in plan.boxes:
            out[(slice(None), slice(None), *box.out)] = conv(_crop(x, box), weight, None, stride,
                                                             0, dilation, groups)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, size_out = ctx.geometry
        plan: _Plan = ctx.plan
        nd = len(size_out)
        zeros = [0] * nd
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, list(stride), list(padding), list(dilation), False, zeros,
                groups, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            inner = grad[(0, slice(None), *plan.interior_out)].sum(tuple(range(1, nd + 1)))
            c = _per_output(_interior_value(x, plan), weight, groups)
            grad_w = (inner[:, None] * c).reshape(*c.shape, *([1] * nd)).expand(
                weight.shape).contiguous()
            for box in plan.boxes:
                g = grad[(slice(None), slice(None), *box.out)]
                grad_w += torch.ops.aten.convolution_backward(
                    g, _crop(x, box), weight, None, list(stride), zeros, list(dilation), False,
                    zeros, groups, [False, True, False])[1]
        return grad_x, grad_w, None, None


def frame_conv(x: Tensor, weight: Tensor, stride: Sequence[int], padding: Sequence[int],
               dilation: Sequence[int], groups: int, frame_in: Frame, frame_out: Frame
               ) -> Tensor:
    """``conv(x, weight)`` (batch 1, zero padding, no bias) for an input with frame
    ``frame_in`` whose output has frame ``frame_out`` (`fxpath.interior.window_frame`).

    The output interior must be non-empty along every dimension. Differentiable in ``x``
    and ``weight`` (first order).
    """
    size_in = tuple(x.shape[2:])
    size_out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
                     zip(size_in, weight.shape[2:], stride, padding, dilation))
    plan = _plan(size_in, size_out, tuple(weight.shape[2:]), tuple(stride), tuple(padding),
                 tuple(dilation), tuple(frame_in), tuple(frame_out))
    geometry = (tuple(stride), tuple(padding), tuple(dilation), int(groups), size_out)
    return _FrameConv.apply(x, weight, geometry, plan)
