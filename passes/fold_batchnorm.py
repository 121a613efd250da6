"""Fold frozen BatchNorm into the conv/linear that produces its input.

See docs/mathematics.md#batchnorm-folding.

A BatchNorm whose input is a conv/linear read by nothing else becomes part of that node (one
neuron per channel with weights ``W * s`` and one combined bias ``s * (c - mean) + b``). Any
other BatchNorm (after a concat, an add, a ReLU: DenseNet, pre-activation nets) becomes a
standalone per-channel ``affine`` node. Folding gives the tighter path-norm and is the default.
"""

from __future__ import annotations

from fxpath.passes._rebuild import rebuild

from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import op_of
from fxpath.ops.linear import LINEAR
from fxpath.ops.pre_norm import BATCHNORM


def _foldable(producer: Node, users: list[str]) -> bool:
    if op_of(producer) is not LINEAR or "bn" in producer.attrs or len(users) != 1:
        return False
    kind = producer.attrs["kind"]
    if kind == "dense":
        return len(producer.shape) == 1  # (N, C): the BatchNorm channel is the output feature
    if kind == "conv_transpose":
        return producer.attrs["groups"] == 1
    return True


def fold_batchnorm(graph: Graph, fold: bool = True) -> Graph:
    """Replace every ``batchnorm`` node by a folded ``linear`` or a standalone ``affine`` node.

    Args:
        graph: the IR.
        fold: fold into the producing conv/linear where possible (default); ``False`` keeps
            every BatchNorm standalone (the published code's convention).

    Guarantees: the function is unchanged; no ``batchnorm`` node remains.
    """
    users = graph.users()
    folded = {n.inputs[0]: n for n in graph if op_of(n) is BATCHNORM
              and fold and _foldable(graph[n.inputs[0]], users[n.inputs[0]])}

    def rule(node: Node) -> list[Node] | str:
        if node.name in folded:
            bn = folded[node.name]
            return [node.replace(attrs={**node.attrs, "bn": bn.attrs["bn"]},
                                 source=f"{node.source} + {bn.source}")]
        if op_of(node) is BATCHNORM:
            if node.inputs[0] in folded:
                return node.inputs[0]
            return [node.replace(op="affine", attrs={"kind": "batchnorm", **node.attrs})]
        return [node]

    return rebuild(graph, rule)
