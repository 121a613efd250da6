"""Remove no-ops: eval-mode dropout, nn.Identity, contiguous/clone, shape-preserving views."""

from __future__ import annotations

from fxpath.passes._rebuild import rebuild

from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import op_of
from fxpath.ops.pre_norm import IDENTITY
from fxpath.ops.reindex import RESHAPE


def remove_identities(graph: Graph) -> Graph:
    """Drop ``identity`` nodes and ``view`` reshapes that keep their input's shape.

    Guarantees: the function computed is unchanged; no ``identity`` node remains.
    """
    shapes = {n.name: n.shape for n in graph}

    def rule(node: Node) -> list[Node] | str:
        if op_of(node) is IDENTITY:
            return node.inputs[0]
        if op_of(node) is RESHAPE and node.attrs.get("fn") == "view" \
                and shapes[node.inputs[0]] == node.shape:
            return node.inputs[0]
        return [node]

    return rebuild(graph, rule)
