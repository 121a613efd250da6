"""Run a conv on its compressed image where its path-network input is nearly constant.

The path network is fed all-ones, so the input of a zero-padded conv is constant per channel
away from a thin frame at the borders (`fxpath.codegen.frames`). Such a conv can convolve the frame
plus a few interior rows and columns and expand the result (`fxpath.kernels.frame_conv`): the same
sums, far less work. This pass rewrites each conv where that pays into a ``frame_conv`` node,
which carries its input's frame; the code generator then emits the compressed call. The
rewrite changes no value and no coordinate: ``frame_conv`` is a ``linear`` conv in every other
rule of the registry.

It pays when the compressed output keeps at most `fxpath.ops.linear.MAX_KEPT` of the positions
and the conv has at least ``min_macs`` multiply-adds (on a GPU small convs are launch-bound,
and the extra kernels of a compressed conv cost more than they save).
"""

from __future__ import annotations

import math

from fxpath.codegen.frames import interior_frames
from fxpath.ir.graph import Graph, Node
from fxpath.kernels.frame_conv import compression
from fxpath.ops.core import op_of
from fxpath.ops.linear import LINEAR, MAX_KEPT, zero_padded_conv


def _pays(graph: Graph, n: Node, frame: tuple[tuple[int, int], ...], min_macs: int) -> bool:
    a = n.attrs
    x_shape = graph[n.inputs[0]].shape
    cuts = compression(x_shape[1:], a["kernel"], a["stride"], a["padding"], a["dilation"],
                       frame)
    kept = math.prod((c.size - c.count) / c.size for c in cuts)
    macs = math.prod(n.shape) * (x_shape[0] // a["groups"]) * math.prod(a["kernel"])
    return kept <= MAX_KEPT and macs >= min_macs


def frame_convs(graph: Graph, *, min_macs: int = 0) -> Graph:
    """``graph`` with each zero-padded conv worth compressing as a ``frame_conv`` node.

    Args:
        graph: a normalized IR (`fxpath.passes.pipeline.normalize`).
        min_macs: convs of fewer multiply-adds (dense count) stay plain convs.
    """
    frames = interior_frames(graph)
    nodes = []
    for n in graph:
        frame = frames.get(n.inputs[0]) if n.inputs else None
        if op_of(n) is LINEAR and zero_padded_conv(n) and frame is not None \
                and _pays(graph, n, frame, min_macs):
            n = n.replace(op="frame_conv", attrs={**n.attrs, "frame": frame})
        nodes.append(n)
    return Graph(tuple(nodes))
