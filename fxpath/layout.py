"""Compact path-network values: a framed activation stored with one interior row per axis.

A ``frame_conv`` node convolves a compressed image (`fxpath.kernels.frame_conv.compression`).
Expanding its output to full size, only for the next op to rescale it, add it to a residual
branch and compress it again for the next conv, costs more than the conv itself on the large
early maps of a ResNet.
So the path networks keep such values *compact*: along every spatial axis that has a frame
``(lo, hi)``, only the ``lo`` frame rows, one interior row and the ``hi`` frame rows are
stored. The `Layout` says, per spatial axis, ``(size, lo, hi)`` (full size ``size``; rows
``[lo, size - hi)`` all equal the stored row ``lo``) or ``None`` (all rows stored).

The ops that work on compact values (their registry entry sets ``compact``): the convs on
compressed images read the rows they need straight from the compact input and store their
output compact, and so do max-pools; ReLU passes it on, a standalone per-channel affine map
(an unfoldable BatchNorm) applies to the stored rows; residual adds and channel
concatenations bring their operands to one layout. Any other op gets full tensors
(`Emitter.full`). Every step selects rows (slices and repeated rows, `select`), so values are
the same numbers as with full tensors, and autograd sums the gradient of the rows a stored
row stands for: scores stay exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fxpath import runtime
from fxpath.kernels.frame_conv import Cut

__all__ = ["Axis", "Layout", "as_runs", "common", "compact_conv", "compact_conv_metric",
           "compact_window_sum", "conv_indices", "is_compact", "relayout", "rows", "runs",
           "select", "stored", "target_rows"]

#: one spatial axis: ``(size, lo, hi)``, or ``None`` when every row is stored
Axis = tuple[int, int, int] | None
#: one `Axis` per spatial dimension
Layout = tuple[Axis, ...]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def is_compact(layout: Layout | None) -> bool:
    """Whether ``layout`` stores fewer rows than the full tensor along some axis."""
    return layout is not None and any(a is not None for a in layout)


def stored(axis: Axis, row: int) -> int:
    """The stored row that full row ``row`` equals."""
    if axis is None:
        return row
    size, lo, hi = axis
    if row < lo:
        return row
    if row >= size - hi:
        return lo + 1 + row - (size - hi)
    return lo


def rows(layout: Layout, wanted: Sequence[Sequence[int] | None]) -> list[list[int] | None]:
    """Per axis, the stored rows of the full rows ``wanted[d]`` (``None``: every full row);
    ``None`` where nothing needs selecting (every stored row, in order)."""
    out: list[list[int] | None] = []
    for axis, want in zip(layout, wanted):
        if axis is None:
            out.append(None if want is None else list(want))
            continue
        size, lo, hi = axis
        idx = [stored(axis, r) for r in (range(size) if want is None else want)]
        out.append(None if idx == list(range(lo + 1 + hi)) else idx)
    return out


def relayout(layout: Layout, target: Layout | None) -> list[list[int] | None]:
    """Per axis, the stored rows that give a value of ``layout`` the layout ``target``
    (``None``: full tensors)."""
    goal = target if target is not None else (None,) * len(layout)
    return rows(layout, [target_rows(t) for t in goal])


def common(layouts: Sequence[Layout | None]) -> Layout | None:
    """One layout every operand can be brought to: per axis the widest frame, or every row
    where an operand stores every row (or the frame leaves no interior)."""
    if any(lay is None for lay in layouts) or len({len(lay) for lay in layouts}) != 1:
        return None
    out: list[Axis] = []
    for axes in zip(*layouts):  # type: ignore[misc]
        if any(a is None for a in axes) or len({a[0] for a in axes}) != 1:
            out.append(None)
            continue
        size = axes[0][0]
        lo, hi = max(a[1] for a in axes), max(a[2] for a in axes)
        out.append((size, lo, hi) if lo + 1 + hi < size else None)
    return tuple(out) if is_compact(tuple(out)) else None


def target_rows(axis: Axis) -> list[int] | None:
    """The full rows a layout axis stores (``None``: all of them)."""
    if axis is None:
        return None
    size, lo, hi = axis
    return [*range(lo + 1), *range(size - hi, size)]


#: rows of one axis as runs ``(start, length, times)``: ``length`` rows from ``start``, or
#: (``times > 1``) row ``start`` repeated ``times`` times
Runs = tuple[tuple[int, int, int], ...]


def runs(idx: Sequence[int]) -> Runs:
    """``idx`` as runs of consecutive rows and of one repeated row."""
    out: list[list[int]] = []
    for i in idx:
        if out and out[-1][2] == 1 and i == out[-1][0] + out[-1][1]:
            out[-1][1] += 1  # the slice goes on
        elif out and i == out[-1][0] and (out[-1][1] == 1):
            out[-1][2] += 1  # the row repeats
        else:
            out.append([i, 1, 1])
    return tuple((s, n, t) for s, n, t in out)


def as_runs(rows_per_axis: Sequence[Sequence[int] | None]) -> tuple[Runs | None, ...]:
    """Rows per spatial axis (``None``: all) as the constant runs `select` takes."""
    return tuple(None if r is None else runs(r) for r in rows_per_axis)


def select(x: Tensor, *axes: Runs | None) -> Tensor:
    """A fresh tensor of the rows ``axes[d]`` of each spatial axis ``d`` (``None``: all
    rows): slices and expanded rows, concatenated (their gradients are sums and slices)."""
    for d, axis in enumerate(axes):
        if axis is None:
            continue
        dim = 2 + d
        pieces = []
        for start, length, times in axis:
            piece = x.narrow(dim, start, length)
            if times > 1:
                shape = list(piece.shape)
                shape[dim] = times
                piece = piece.expand(shape)
            pieces.append(piece)
        x = torch.cat(pieces, dim)
    return x


def conv_indices(layout: Layout | None, cuts: Sequence[Cut], size_in: Sequence[int]
                 ) -> tuple[list[list[int] | None], list[list[int] | None], Layout | None]:
    """For a conv on its compressed image (`fxpath.kernels.frame_conv.compression`): the stored rows
    of the input it convolves, the rows of its small output to keep, and the layout of what
    is kept."""
    lay = layout if layout is not None else (None,) * len(cuts)
    wanted: list[Sequence[int] | None] = []
    out_idx: list[list[int] | None] = []
    out_layout: list[Axis] = []
    for c, n in zip(cuts, size_in):
        if not c.count:
            wanted.append(None)
            out_idx.append(None)
            out_layout.append(None)
            continue
        wanted.append([*range(c.at), *range(c.at + c.deleted_in, n)])
        small = c.size - c.count
        keep = [*range(c.lo + 1), *range(small - c.hi, small)]
        out_idx.append(None if keep == list(range(small)) else keep)
        out_layout.append((c.size, c.lo, c.hi))
    return rows(lay, wanted), out_idx, tuple(out_layout) if any(out_layout) else None


def compact_conv(x: Tensor, w: Tensor, stride: Sequence[int], padding: Sequence[int],
                 dilation: Sequence[int], groups: int, in_idx: Sequence[Runs | None],
                 out_idx: Sequence[Runs | None]) -> Tensor:
    """A conv on its compressed image, from and to compact values: the rows ``in_idx`` of
    ``x``, convolved, then the rows ``out_idx`` of the result (see `conv_indices`)."""
    y = _CONV[w.dim() - 2](select(x, *in_idx), w, None, stride, padding, dilation, groups)
    return select(y, *out_idx)


def compact_window_sum(x: Tensor, kernel: Sequence[int], stride: Sequence[int],
                       padding: Sequence[int], in_idx: Sequence[Runs | None],
                       out_idx: Sequence[Runs | None]) -> Tensor:
    """`fxpath.runtime.window_sum` (a max-pool in the path network) from and to compact
    values, like `compact_conv`."""
    y = runtime.window_sum(select(x, *in_idx), kernel, stride, padding, False)
    return select(y, *out_idx)


def compact_conv_metric(lo: Tensor, delta: Tensor, w_lo: Tensor, w_gap: Tensor,
                        stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                        groups: int, in_idx: Sequence[Runs | None],
                        out_idx: Sequence[Runs | None]) -> tuple[Tensor, Tensor]:
    """One conv of the path-metric network (`fxpath.kernels.emit.Emitter.metric_step`) from and to
    compact values: ``(W_lo lo, W_lo delta + W_gap (lo + delta))``, ``lo`` and ``delta`` as
    one batch."""
    conv = _CONV[w_lo.dim() - 2]
    small_lo, small_delta = select(lo, *in_idx), select(delta, *in_idx)
    y = conv(torch.cat([small_lo, small_delta]), w_lo, None, stride, padding, dilation, groups)
    y[1:].add_(conv(small_lo + small_delta, w_gap, None, stride, padding, dilation, groups))
    y = select(y, *out_idx)
    return y[:1], y[1:]
