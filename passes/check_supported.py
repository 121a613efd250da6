"""Refuse models that are not ReLU-DAGs, listing every offending op at once."""

from __future__ import annotations

from fxpath.errors import UnsupportedModelError, UnsupportedOp
from fxpath.ir import Graph


def check_supported(graph: Graph) -> Graph:
    """Return ``graph`` unchanged, or raise `UnsupportedModelError` naming every unsupported op.

    Guarantees: after it, no node has op ``unsupported``. When a lowering rule failed with an
    exception (kept in the node's ``attrs["error"]``), the first one is the error's ``__cause__``.
    """
    nodes = [n for n in graph if n.op == "unsupported"]
    if not nodes:
        return graph
    error = UnsupportedModelError([UnsupportedOp(n.attrs["what"], n.attrs["where"],
                                                 n.attrs["reason"]) for n in nodes])
    # a lowering rule that raised kept its exception: chain the first one
    cause = next((n.attrs["error"] for n in nodes if n.attrs.get("error") is not None), None)
    if cause is not None:
        raise error from cause
    raise error
