"""Refuse models that are not ReLU-DAGs, listing every offending op at once."""

from __future__ import annotations

import math

from fxpath.errors import UnsupportedModelError, UnsupportedOp
from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import op_of
from fxpath.ops.pre_norm import MAXPOOL, UNSUPPORTED
from fxpath.ops.reindex import RESHAPE


def _selects_padding(pad: Node, pool: Node) -> bool:
    """Whether some window of max-pool ``pool`` (reading ``pad``'s output) holds only
    padded entries: its max would be the padding value."""
    a = pool.attrs
    widths = pad.attrs["pad"]
    spatial = pad.shape[1:]
    for j in range(len(spatial)):
        k = len(spatial) - 1 - j  # F.pad lists the last dimension first
        lo, hi = (widths[2 * k], widths[2 * k + 1]) if 2 * k + 1 < len(widths) else (0, 0)
        size, out = spatial[j], pool.shape[1 + j]
        kj, sj, pj, dj = (a[key][j] for key in ("kernel", "stride", "padding", "dilation"))
        for i in range(out):
            reads = (i * sj - pj + t * dj for t in range(kj))
            if not any(lo <= r < size - hi for r in reads):
                return True
    return False


def _bad_padding(graph: Graph) -> list[UnsupportedOp]:
    """Constant padding with -inf is exact only in front of max-pools whose every window
    reads at least one real entry (the max never selects the padding)."""
    users: dict[str, list[Node]] = {}
    for n in graph:
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    bad = []
    for n in graph:
        if op_of(n) is not RESHAPE or n.attrs.get("value") != -math.inf:
            continue
        for u in users.get(n.name, []):
            if op_of(u) is not MAXPOOL:
                why = (f"constant padding with -inf feeds {u.op} ({u.source}): only a max-pool "
                       "never selects it")
            elif _selects_padding(n, u):
                why = (f"constant padding with -inf in front of the max-pool {u.source}, some "
                       "of whose windows hold only padding (their max is -inf)")
            else:
                continue
            bad.append(UnsupportedOp("pad", n.source.rpartition(" at ")[2], why))
    return bad


def check_supported(graph: Graph) -> Graph:
    """Return ``graph`` unchanged, or raise `UnsupportedModelError` naming every unsupported op.

    Guarantees: after it, no node has op ``unsupported``, and every ``-inf`` padding feeds only
    max-pools that never select it. When a lowering rule failed with an exception (kept in the
    node's ``attrs["error"]``), the first one is the error's ``__cause__``.
    """
    nodes = [n for n in graph if op_of(n) is UNSUPPORTED]
    ops = [UnsupportedOp(n.attrs["what"], n.attrs["where"], n.attrs["reason"]) for n in nodes]
    ops += _bad_padding(graph)
    if not ops:
        return graph
    error = UnsupportedModelError(ops)
    # a lowering rule that raised kept its exception: chain the first one
    cause = next((n.attrs["error"] for n in nodes if n.attrs.get("error") is not None), None)
    if cause is not None:
        raise error from cause
    raise error
