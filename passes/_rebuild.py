"""The one helper passes share: rebuild a graph node by node through an old -> new name map."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fxpath.ir import Graph, Node


def rebuild(graph: Graph, rule: Callable[[Node], Iterable[Node] | str]) -> Graph:
    """Apply ``rule`` to every node (inputs already renamed) and assemble the new graph.

    ``rule`` returns the nodes that replace the node (the last one takes over its value and, by
    convention, its name), or a string: the name of an existing node that replaces it (the node
    is dropped and its users read that node instead).
    """
    alias: dict[str, str] = {}
    out: list[Node] = []
    for node in graph:
        node = node.replace(inputs=tuple(alias.get(i, i) for i in node.inputs))
        result = rule(node)
        if isinstance(result, str):
            alias[node.name] = result
            continue
        new = list(result)
        out.extend(new)
        if new and new[-1].name != node.name:
            alias[node.name] = new[-1].name
    return Graph(tuple(out))
