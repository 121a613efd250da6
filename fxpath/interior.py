"""Constant-interior analysis: where the path network's activations are constant in space.

The path network is fed all-ones and is linear and translation-equivariant layer by layer,
so a conv/pool output differs from one position to the next only where its window reaches
the zero padding (or a varying part of its input). Every activation of shape ``(C, *spatial)``
therefore has a *frame*: per spatial dimension ``j`` a pair ``(lo_j, hi_j)`` such that moving
a position along dimension ``j`` inside ``[lo_j, size_j - hi_j)`` never changes the value.
All positions inside every interval (the *interior*) hold one value per channel.

`interior_frames` computes the frame of every node (``None`` when no such structure is known,
e.g. after a reshape); `fxpath.frame_conv` uses it to convolve the thin frame only. The
analysis is exact (it derives from window geometry, never from values), except for pooling
coefficient tensors, whose frame is read off the tensor itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .ir import Graph, Node

__all__ = ["Frame", "interior_frames", "tensor_frame", "window_frame", "zero_padded_conv"]

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
        mid = (n - 1) // 2
        lo, hi = mid, mid
        while lo > 0 and same[lo - 1]:
            lo -= 1
        while hi < n - 1 and same[hi]:
            hi += 1
        out.append((lo, n - 1 - hi))
    return tuple(out)


def _widest(frames: Sequence[Frame | None]) -> Frame | None:
    """A sum or concatenation of operands is constant where all of them are."""
    known = [f for f in frames if f is not None]
    if len(known) != len(frames) or len({len(f) for f in known}) != 1:
        return None
    return tuple((max(f[j][0] for f in known), max(f[j][1] for f in known))
                 for j in range(len(known[0])))


def _spatial(node: Node) -> tuple[int, ...]:
    return node.shape[1:]


def zero_padded_conv(n: Node) -> bool:
    """A conv with explicit zero padding: the windowed op `window_frame` describes."""
    a = n.attrs
    return (n.op == "linear" and a["kind"] == "conv" and "padding_mode" not in a
            and not isinstance(a["padding"], str))


def _linear(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]) -> Frame | None:
    a = n.attrs
    if not zero_padded_conv(n) or ins[0] is None:
        return None
    return window_frame(ins[0], shapes[0][1:], _spatial(n), a["kernel"], a["stride"],
                        a["padding"], a["dilation"])


def _pool(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]) -> Frame | None:
    a, f, size_in = n.attrs, ins[0], shapes[0][1:]
    if f is None:
        return None
    if a["window"] == "regular":
        nd = len(size_in)
        out = window_frame(f, size_in, _spatial(n), a["kernel"], a["stride"], a["padding"],
                           (1,) * nd)
        coeff = a.get("coeff")
        return out if not isinstance(coeff, Tensor) else _widest([out, tensor_frame(coeff)])
    if a["window"] == "adaptive":
        size_out = _spatial(n)
        if any(i % o for i, o in zip(size_in, size_out)):
            return None  # windows of uneven sizes: no translation structure
        k = tuple(i // o for i, o in zip(size_in, size_out))
        out = window_frame(f, size_in, size_out, k, k, (0,) * len(k), (1,) * len(k))
        return _widest([out, tensor_frame(a["count"])])
    return None  # global sums: see the size-one rule in `interior_frames`


def _same(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]) -> Frame | None:
    if n.op == "affine" and len(n.shape) > 1 and n.channel_dim() != 1:
        return None  # channels last: the per-channel factor varies along a "spatial" dim
    return ins[0]


def _add(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]) -> Frame | None:
    return _widest(ins) if all(s == n.shape for s in shapes) else None


def _concat(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]) -> Frame | None:
    return _widest(ins) if n.attrs["dim"] == 1 else None


_RULES: dict[str, Callable[[Node, list[Frame | None], list[tuple[int, ...]]], Frame | None]] = {
    "linear": _linear, "pool": _pool, "affine": _same, "relu": _same, "add": _add,
    "concat": _concat,
}


def interior_frames(graph: Graph) -> dict[str, Frame | None]:
    """The frame of every node's output in the path network (fed all-ones), or ``None``.

    Nodes without spatial extent (every spatial size 1, or a 1-D shape) are constant: their
    frame is all zeros. Ops without a rule (reshapes, transposed convs, dense layers on
    sequences) give ``None``, and so does everything computed from a ``None``.
    """
    frames: dict[str, Frame | None] = {}
    for n in graph:
        if len(n.shape) <= 1 or all(s == 1 for s in _spatial(n)) or n.op == "input":
            frames[n.name] = tuple((0, 0) for _ in _spatial(n))
            continue
        rule = _RULES.get(n.op)
        ins = [frames[i] for i in n.inputs]
        shapes = [graph[i].shape for i in n.inputs]
        frames[n.name] = rule(n, ins, shapes) if rule else None
    return frames

