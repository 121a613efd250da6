"""The IR verifier: structural invariants every pass must keep, and every node's op schema."""

from __future__ import annotations

from collections.abc import Sequence

from fxpath import ops
from fxpath.errors import IRVerificationError
from fxpath.ir.graph import Graph, Node
from fxpath.ops.io import OUTPUT

__all__ = ["FINAL_OPS", "check_ops", "verify"]

#: ops the code generator accepts (after normalization)
FINAL_OPS = frozenset(name for name, op in ops.REGISTRY.items() if op.final)


def _context(after: Sequence[str]) -> str:
    return f" (after passes: {', '.join(after)})" if after else ""


def _check_op(i: int, node: Node, ctx: str, final: bool) -> None:
    where = f"node {i}: {node.describe()}{ctx}"
    op = ops.REGISTRY.get(node.op)
    if op is None:
        raise IRVerificationError(f"{where} has op {node.op!r}, not registered in fxpath.ops")
    if final and not op.final:
        raise IRVerificationError(f"{where} has op {node.op!r}, unknown to codegen (the "
                                  f"{op.lowered_by} pass rewrites it away)")
    problems = op.check_attrs(node.attrs)
    if problems:
        raise IRVerificationError(f"{where}: {'; '.join(problems)}")


def check_ops(graph: Graph, after: Sequence[str] = (), final: bool = False) -> None:
    """Raise `IRVerificationError` naming the first node whose op is not registered in
    `fxpath.ops`, whose attributes break its op's schema (naming the attribute), or, when
    ``final``, whose op normalization should have removed."""
    ctx = _context(after)
    for i, node in enumerate(graph):
        _check_op(i, node, ctx, final)


def verify(graph: Graph, after: Sequence[str] = (), final: bool = True) -> None:
    """Raise `IRVerificationError` if the graph breaks an invariant.

    Checks: unique names, inputs defined before use (topological order), exactly one output
    node, every op registered with attributes that fit its schema (`check_ops`), and, when
    ``final``, only ops the code generator knows.
    """
    seen: set[str] = set()
    ctx = _context(after)
    # a node of an unknown op is no output here: _check_op names it below
    outputs = [n for n in graph if ops.REGISTRY.get(n.op) is OUTPUT]
    if len(outputs) != 1:
        raise IRVerificationError(f"expected one output node, found {len(outputs)}{ctx}")
    for i, node in enumerate(graph):
        where = f"node {i}: {node.describe()}{ctx}"
        if node.name in seen:
            raise IRVerificationError(f"duplicate name in {where}")
        missing = [x for x in node.inputs if x not in seen]
        if missing:
            raise IRVerificationError(f"{where} reads undefined {missing}")
        _check_op(i, node, ctx, final)
        seen.add(node.name)
