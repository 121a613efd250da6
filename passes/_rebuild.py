"""What passes share: rebuild a graph node by node through an old -> new name map, and name
the model op behind an IR node in errors."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fxpath.errors import FxPathError, UnsupportedModelError, UnsupportedOp
from fxpath.ir.graph import Graph, Node


def unsupported_op(node: Node, reason: str, what: str = "") -> UnsupportedOp:
    """An `UnsupportedOp` for an IR node: the model op and module path its ``source`` names.

    ``source`` reads ``"<op> at <module path>"`` (``"Conv2d at l1.conv + BatchNorm2d at l1.bn"``
    after folding: the first op is named).
    """
    head, sep, rest = node.source.partition(" at ")
    where = rest.split(" + ")[0] if sep else ""
    return UnsupportedOp(what or head or node.op, where, reason)


def rebuild(graph: Graph, rule: Callable[[Node], Iterable[Node] | str]) -> Graph:
    """Apply ``rule`` to every node (inputs already renamed) and assemble the new graph.

    ``rule`` returns the nodes that replace the node (the last one takes over its value and, by
    convention, its name), or a string: the name of an existing node that replaces it (the node
    is dropped and its users read that node instead).

    Raises:
        UnsupportedModelError: ``rule`` failed on a node (a raw exception, chained); it names
            the node's op and where it sits in the model.
    """
    alias: dict[str, str] = {}
    out: list[Node] = []
    for node in graph:
        node = node.replace(inputs=tuple(alias.get(i, i) for i in node.inputs))
        try:
            result = rule(node)
            new = None if isinstance(result, str) else list(result)
        except FxPathError:
            raise
        except Exception as exc:
            raise UnsupportedModelError([unsupported_op(
                node, f"fxpath cannot normalize this {node.op} node "
                      f"({type(exc).__name__}: {exc})")]) from exc
        if new is None:
            alias[node.name] = str(result)
            continue
        out.extend(new)
        if new and new[-1].name != node.name:
            alias[node.name] = new[-1].name
    return Graph(tuple(out))
