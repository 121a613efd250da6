"""Remove nodes whose values never reach the output (unused branches carry no paths)."""

from __future__ import annotations

from fxpath.ir.graph import Graph
from fxpath.ops.core import op_of
from fxpath.ops.io import INPUT


def eliminate_dead_nodes(graph: Graph) -> Graph:
    """Keep only the nodes the output depends on (inputs are always kept).

    Guarantees: every path of the network is kept; every remaining node reaches the output.
    """
    live = {graph.output.name}
    for node in reversed(graph.nodes):
        if node.name in live:
            live.update(node.inputs)
    return Graph(tuple(n for n in graph if n.name in live or op_of(n) is INPUT))
