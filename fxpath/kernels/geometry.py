"""Frame geometry: where a path-network activation varies in space (see `fxpath.codegen.frames`).

A *frame* gives, per spatial dimension, the widths ``(lo, hi)`` of the border of an activation
``(C, *spatial)`` outside which moving a position never changes the value. These helpers are
shared by the frame rules of the ops (`fxpath.ops`) and the compressed conv
(`fxpath.kernels.frame_conv`); the graph-wide analysis is `fxpath.codegen.frames.interior_frames`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["Frame", "centre_run", "tensor_frame", "widest", "window_frame"]

#: Per spatial dimension, the widths ``(lo, hi)`` of the varying border.
Frame = tuple[tuple[int, int], ...]


def window_frame(frame: Frame, size_in: Sequence[int], size_out: Sequence[int],
                 kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                 dilation: Sequence[int]) -> Frame:
    """The frame of a windowed op's output (zero padding, PyTorch's window placement).

    Output position ``o`` reads input ``s*o - p + d*k``, ``k < K``; it is interior when every
    read lies in the input's interior, so that a shift of ``o`` shifts only interior reads.
    An output without interior along a dimension gets ``(size_out, 0)`` there.
    """
    out = []
    for (lo, hi), n, m, k, s, p, d in zip(frame, size_in, size_out, kernel, stride, padding,
                                          dilation):
        first = max(0, -(-(lo + p) // s))
        last = min(m - 1, (n - hi - 1 + p - d * (k - 1)) // s)
        out.append((first, m - 1 - last) if first <= last else (m, 0))
    return tuple(out)


def tensor_frame(t: Tensor) -> Frame:
    """The frame of a concrete tensor ``(C, *spatial)``: the widest interval around the middle
    of each dimension along which no value changes."""
    out = []
    for j in range(1, t.dim()):
        n = t.shape[j]
        same = [bool(torch.equal(t.select(j, i), t.select(j, i + 1))) for i in range(n - 1)]
        out.append(centre_run(same, n))
    return tuple(out)


def centre_run(same: Sequence[bool], rows: int) -> tuple[int, int]:
    """``(lo, hi)``: rows before and after the widest run of equal rows around the middle of
    ``rows`` rows, where ``same[i]`` says row ``i`` equals row ``i + 1``."""
    first = last = (rows - 1) // 2
    while first > 0 and same[first - 1]:
        first -= 1
    while last < rows - 1 and same[last]:
        last += 1
    return first, rows - 1 - last


def widest(frames: Sequence[Frame | None]) -> Frame | None:
    """A sum or concatenation of operands is constant where all of them are."""
    known = [f for f in frames if f is not None]
    if len(known) != len(frames) or len({len(f) for f in known}) != 1:
        return None
    return tuple((max(f[j][0] for f in known), max(f[j][1] for f in known))
                 for j in range(len(known[0])))
