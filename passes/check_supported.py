"""Refuse models that are not ReLU-DAGs, listing every offending op at once."""

from __future__ import annotations

from fxpath.errors import UnsupportedModelError, UnsupportedOp
from fxpath.ir import Graph


def check_supported(graph: Graph) -> Graph:
    """Return ``graph`` unchanged, or raise `UnsupportedModelError` naming every unsupported op.

    Guarantees: after it, no node has op ``unsupported``.
    """
    bad = [UnsupportedOp(n.attrs["what"], n.attrs["where"], n.attrs["reason"])
           for n in graph if n.op == "unsupported"]
    if bad:
        raise UnsupportedModelError(bad)
    return graph
