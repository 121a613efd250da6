"""Constant-interior analysis: where the path network's activations are constant in space.

The path network is fed all-ones and is linear and translation-equivariant layer by layer,
so a conv/pool output differs from one position to the next only where its window reaches
the zero padding (or a varying part of its input). Every activation of shape ``(C, *spatial)``
therefore has a *frame*: per spatial dimension ``j`` a pair ``(lo_j, hi_j)`` such that moving
a position along dimension ``j`` inside ``[lo_j, size_j - hi_j)`` never changes the value.
All positions inside every interval (the *interior*) hold one value per channel.

`interior_frames` computes the frame of every node (``None`` when no such structure is known,
e.g. after a reshape) with each op's frame rule (`fxpath.ops`); `fxpath.kernels.frame_conv` uses it
to convolve the thin frame only. The analysis is exact (it derives from window geometry, never
from values), except for pooling coefficient tensors, whose frame is read off the tensor
itself.
"""

from __future__ import annotations

from fxpath.ir.graph import Graph, Node
from fxpath.kernels.geometry import Frame, tensor_frame, window_frame
from fxpath.ops.linear import zero_padded_conv
from fxpath.ops.walk import BY_RULE, walk

__all__ = ["Frame", "interior_frames", "tensor_frame", "window_frame", "zero_padded_conv"]


def interior_frames(graph: Graph) -> dict[str, Frame | None]:
    """The frame of every node's output in the path network (fed all-ones), or ``None``.

    Nodes without spatial extent (every spatial size 1, or a 1-D shape) are constant: their
    frame is all zeros. Ops whose frame rule does not apply (reshapes, the ops normalization
    removes) give ``None``, as do rules that know no frame (transposed convs, dense layers on
    sequences), and so does everything computed from a ``None``.
    """
    def constant(n: Node) -> Frame | object:
        spatial = n.shape[1:]
        if len(n.shape) <= 1 or all(s == 1 for s in spatial):
            return tuple((0, 0) for _ in spatial)
        return BY_RULE

    return walk(graph, "frame_rule",
                lambda rule, n, ins: rule(n, ins, [graph[i].shape for i in n.inputs]),
                fixed=constant, otherwise=lambda n, why: None)
