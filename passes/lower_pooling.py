"""Lower pooling ops to ``pool`` nodes with each output neuron's exact edge weights.

An avg-pool output neuron j has edges of weight ``1/divisor_j`` from the real (non-padding)
inputs of its window; ``divisor_j`` depends on ``count_include_pad``, ``ceil_mode`` and
``divisor_override``. Rather than re-deriving PyTorch's rules, the coefficients are read off
PyTorch's own pooling applied to an all-ones map (float64): the divisor is ``sum(1) / avg(1)``
(rounded: divisors are integers), where ``sum`` is the same window with divisor 1.
Max-pooling becomes k-max-pooling neurons whose edges have weight 1. Adaptive and global
(mean/sum) pools likewise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fxpath.passes._rebuild import rebuild, unsupported_op

from fxpath.errors import UnsupportedModelError
from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import op_of
from fxpath.ops.pre_norm import (
    ADAPTIVE_MAXPOOL,
    ADAPTIVE_POOLS,
    AVGPOOL,
    MAXPOOL,
    MEAN,
    WINDOW_POOLS,
)
from fxpath.runtime import window_sum

_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _regular(node: Node, in_spatial: tuple[int, ...]) -> Node:
    a = node.attrs
    if any(d != 1 for d in a["dilation"]):
        raise UnsupportedModelError([unsupported_op(node, "dilation > 1 is not supported yet",
                                                    "dilated max-pooling")])
    attrs = {"reduce": "max" if op_of(node) is MAXPOOL else "sum", "window": "regular",
             "ndim": a["ndim"], "kernel": a["kernel"], "stride": a["stride"],
             "padding": a["padding"], "ceil_mode": a["ceil_mode"], "coeff": None, "count": None}
    if op_of(node) is AVGPOOL:
        ones = torch.ones((1, 1, *in_spatial), dtype=torch.float64)
        nd = a["ndim"]
        if nd == 1:
            avg = F.avg_pool1d(ones, a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                               a["count_include_pad"])
            if a["divisor_override"]:
                avg = window_sum(ones, a["kernel"], a["stride"], a["padding"], a["ceil_mode"])
                avg = avg / a["divisor_override"]
        else:
            avg = _AVG[nd](ones, a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                           a["count_include_pad"], a["divisor_override"])
        total = window_sum(ones, a["kernel"], a["stride"], a["padding"], a["ceil_mode"])
        # divisors are integers: round away the division's last-bit error, then invert
        attrs["coeff"] = 1.0 / torch.round(total / avg)[0]
    return node.replace(op="pool", attrs=attrs)


def _adaptive(node: Node, in_spatial: tuple[int, ...]) -> Node:
    nd = node.attrs["ndim"]
    out_spatial = node.shape[1:]
    # window sizes: PyTorch's adaptive windows [floor(i*n/o), ceil((i+1)*n/o))
    counts = torch.zeros((1, 1, *out_spatial), dtype=torch.float64)
    for idx in torch.cartesian_prod(*[torch.arange(o) for o in out_spatial]).reshape(
            -1, nd).tolist():
        size = 1
        for i, (o, n) in zip(idx, zip(out_spatial, in_spatial)):
            start, end = (i * n) // o, -((-(i + 1) * n) // o)
            size *= end - start
        counts[(0, 0, *idx)] = size
    reduce = "max" if op_of(node) is ADAPTIVE_MAXPOOL else "sum"
    return node.replace(op="pool", attrs={
        "reduce": reduce, "window": "adaptive", "ndim": nd, "output_size": out_spatial,
        "count": counts[0], "coeff": None if reduce == "max" else 1.0 / counts[0]})


def _global(node: Node, in_shape: tuple[int, ...]) -> Node:
    dims = node.attrs["dims"]  # batched dims, >= 1
    n = 1
    for d in dims:
        n *= in_shape[d - 1]
    coeff = 1.0 / n if node.attrs["reduce"] == "mean" else 1.0
    return node.replace(op="pool", attrs={
        "reduce": "sum", "window": "global", "dims": dims, "keepdim": node.attrs["keepdim"],
        "count": float(n), "coeff": coeff})


def lower_pooling(graph: Graph) -> Graph:
    """Replace avgpool/maxpool/adaptive/mean nodes by ``pool`` nodes with exact coefficients.

    Guarantees: every output neuron's window and edge weights are PyTorch's own; the function
    computed is unchanged.
    """
    shapes = {n.name: n.shape for n in graph}

    def rule(node: Node) -> list[Node]:
        op = op_of(node)
        if op in WINDOW_POOLS:
            return [_regular(node, shapes[node.inputs[0]][1:])]
        if op in ADAPTIVE_POOLS:
            return [_adaptive(node, shapes[node.inputs[0]][1:])]
        if op is MEAN:
            return [_global(node, shapes[node.inputs[0]])]
        return [node]

    return rebuild(graph, rule)
