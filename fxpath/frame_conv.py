"""Convolution of a constant-interior activation on a compressed image.

When a conv's input has a frame (see `fxpath.interior`), deleting ``s * D`` identical interior
rows from the input (``s`` the stride) deletes exactly ``D`` identical interior rows from the
output, as long as the cut is surrounded by interior rows. `frame_conv` deletes as many as it
can along every spatial dimension, convolves the small image that is left (VGG-16's first
layers: 224x224 -> 8x8), and expands the result by repeating one interior row. Every output
entry is the same sum of the same products a dense convolution computes.

Backward, with ``E`` the expansion and ``C`` the compression (both 0/1 maps):

* the weight gradient is ``conv_weight_grad(E^T g, C x)``: the output gradient summed over
  the interior, paired with the compressed input. Exact.
* the input gradient is ``C^T conv_input_grad(E^T g)``. It differs from the dense one, but
  only by a vector orthogonal to every activation with this frame. Every perturbation of the
  path network's parameters moves each activation inside its frame's subspace (the frames come
  from geometry, not values), and every quantity fxpath reads off gradients pairs them with
  such vectors (weight gradients, per-channel sums of neuron path mass), so all of them are
  exact. Do not use `frame_conv` where the input gradient itself is the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .geometry import Frame, window_frame

__all__ = ["Cut", "compression", "frame_conv", "frame_conv_metric"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class Cut:
    """One spatial dimension: input rows ``[at, at + stride * count)`` and output rows
    ``[lo + 1, lo + 1 + count)`` are deleted; output rows ``[lo, size - hi)`` are interior."""

    at: int
    count: int
    stride: int
    lo: int
    hi: int
    size: int  # output size along the dimension

    @property
    def deleted_in(self) -> int:
        return self.stride * self.count


def _cut(frame_in: tuple[int, int], frame_out: tuple[int, int], size_in: int, size_out: int,
         k: int, s: int, p: int, d: int) -> Cut:
    (lo_in, _), (lo, hi) = frame_in, frame_out
    at = max(lo_in, s * (lo - 1) - p + d * (k - 1) + 1)  # after every read of the low frame
    count = min((s * (size_out - hi) - p - at) // s,  # before every read of the high frame
                size_out - hi - lo - 1,              # one interior row stays
                (size_in - at) // s)
    return Cut(at, max(count, 0), s, lo, hi, size_out)


def compression(size_in: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int], frame_in: Frame
                ) -> tuple[Cut, ...]:
    """The cut of every spatial dimension (``count == 0``: nothing deleted there)."""
    size_out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                for n, k, s, p, d in zip(size_in, kernel, stride, padding, dilation)]
    frame_out = window_frame(frame_in, size_in, size_out, kernel, stride, padding, dilation)
    return tuple(_cut(fi, fo, n, m, k, s, p, d) for fi, fo, n, m, k, s, p, d in
                 zip(frame_in, frame_out, size_in, size_out, kernel, stride, padding, dilation))


def _compress(x: Tensor, cuts: Sequence[Cut]) -> Tensor:
    """``C x``: delete each cut's input rows."""
    for dim, c in enumerate(cuts, start=2):
        if c.count:
            n = x.shape[dim]
            x = torch.cat([x.narrow(dim, 0, c.at),
                           x.narrow(dim, c.at + c.deleted_in, n - c.at - c.deleted_in)], dim)
    return x


def _expand(y: Tensor, cuts: Sequence[Cut]) -> Tensor:
    """``E y``: repeat the interior row ``lo`` over the full interior again."""
    for dim, c in enumerate(cuts, start=2):
        if c.count:
            inner = y.narrow(dim, c.lo, 1)
            inner = inner.expand(*inner.shape[:dim], c.size - c.lo - c.hi, *inner.shape[dim + 1:])
            y = torch.cat([y.narrow(dim, 0, c.lo), inner,
                           y.narrow(dim, y.shape[dim] - c.hi, c.hi)], dim)
    return y


def _expand_adjoint(g: Tensor, cuts: Sequence[Cut]) -> Tensor:
    """``E^T g``: sum the gradient over the interior into row ``lo``."""
    for dim, c in reversed(list(enumerate(cuts, start=2))):
        if c.count:
            inner = g.narrow(dim, c.lo, c.size - c.lo - c.hi).sum(dim, keepdim=True)
            rest = list(g.shape)
            rest[dim] = c.size - c.count - c.lo - c.hi - 1
            g = torch.cat([g.narrow(dim, 0, c.lo), inner, g.new_zeros(rest),
                           g.narrow(dim, c.size - c.hi, c.hi)], dim)
    return g


def _compress_adjoint(g: Tensor, cuts: Sequence[Cut]) -> Tensor:
    """``C^T g``: zeros where rows were deleted."""
    for dim, c in reversed(list(enumerate(cuts, start=2))):
        if c.count:
            rest = list(g.shape)
            rest[dim] = c.deleted_in
            g = torch.cat([g.narrow(dim, 0, c.at), g.new_zeros(rest),
                           g.narrow(dim, c.at, g.shape[dim] - c.at)], dim)
    return g


class _FrameConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, geometry: tuple[Any, ...],
                cuts: tuple[Cut, ...]) -> Tensor:
        stride, padding, dilation, groups = geometry
        small = _compress(x, cuts)
        ctx.save_for_backward(small, weight)
        ctx.geometry, ctx.cuts = geometry, cuts
        y = _CONV[weight.dim() - 2](small, weight, None, stride, padding, dilation, groups)
        return _expand(y, cuts)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        small, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        nd = weight.dim() - 2
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            _expand_adjoint(grad, ctx.cuts), small, weight, None, list(stride), list(padding),
            list(dilation), False, [0] * nd, groups, [need_x, need_w, False])
        if need_x:
            grad_x = _compress_adjoint(grad_x, ctx.cuts)
        return grad_x, grad_w, None, None


def frame_conv(x: Tensor, weight: Tensor, stride: Sequence[int], padding: Sequence[int],
               dilation: Sequence[int], groups: int, frame_in: Frame) -> Tensor:
    """``conv(x, weight)`` (batch 1, zero padding, no bias) for an input with frame
    ``frame_in``, computed on the compressed image (see the module docstring for what its
    input gradient means)."""
    cuts = compression(tuple(x.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation,
                       frame_in)
    geometry = (tuple(stride), tuple(padding), tuple(dilation), int(groups))
    return _FrameConv.apply(x, weight, geometry, cuts)


def frame_conv_metric(lo: Tensor, delta: Tensor, w_lo: Tensor, w_gap: Tensor,
                      stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                      groups: int, frame_in: Frame) -> tuple[Tensor, Tensor]:
    """One conv of the path-metric network (`fxpath.emit.Emitter.metric_step`) on compressed
    images: ``(W_lo lo, W_lo delta + W_gap (lo + delta))``. ``lo`` and ``delta`` share the
    frame, so both are compressed first, every sum is taken on the small images, and one
    batch-of-two expansion writes the outputs. No autograd (the metric network has none)."""
    cuts = compression(tuple(lo.shape[2:]), tuple(w_lo.shape[2:]), stride, padding, dilation,
                       frame_in)
    conv = _CONV[w_lo.dim() - 2]
    small_lo, small_delta = _compress(lo, cuts), _compress(delta, cuts)
    y = conv(torch.cat([small_lo, small_delta]), w_lo, None, stride, padding, dilation, groups)
    y[1:].add_(conv(small_lo + small_delta, w_gap, None, stride, padding, dilation, groups))
    y = _expand(y, cuts)
    return y[:1], y[1:]
