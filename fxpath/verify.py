"""The IR verifier: structural invariants every pass must keep."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import IRVerificationError
from .ir import Graph

#: ops the code generator accepts (after normalization)
FINAL_OPS = frozenset({"input", "linear", "affine", "relu", "pool", "add", "concat", "reshape",
                       "output"})


def verify(graph: Graph, after: Sequence[str] = (), final: bool = True) -> None:
    """Raise `IRVerificationError` if the graph breaks an invariant.

    Checks: unique names, inputs defined before use (topological order), exactly one output
    node, and, when ``final``, only ops the code generator knows.
    """
    seen: set[str] = set()
    ctx = f" (after passes: {', '.join(after)})" if after else ""
    outputs = [n for n in graph if n.op == "output"]
    if len(outputs) != 1:
        raise IRVerificationError(f"expected one output node, found {len(outputs)}{ctx}")
    for i, node in enumerate(graph):
        where = f"node {i}: {node.describe()}{ctx}"
        if node.name in seen:
            raise IRVerificationError(f"duplicate name in {where}")
        missing = [x for x in node.inputs if x not in seen]
        if missing:
            raise IRVerificationError(f"{where} reads undefined {missing}")
        if final and node.op not in FINAL_OPS:
            raise IRVerificationError(f"{where} has op {node.op!r}, unknown to codegen")
        seen.add(node.name)
