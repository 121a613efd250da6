"""Rewrite ReLU6, Hardtanh/clamp, LeakyReLU and PReLU exactly into ReLU neurons.

See docs/mathematics.md#exact-relu-rewrites.

* ``hardtanh(x; lo, hi) = relu(x - lo) - relu(x - hi) + lo`` (ReLU6 is ``hardtanh(0, 6)``;
  ``clamp(x, min=lo)`` is ``relu(x - lo) + lo``)
* ``leaky_relu(x; a) = relu(x) - a * relu(-x)``
* ``prelu(x; a) = relu(x) + (-a) * relu(-x)`` with the slope ``a`` a parameter (an ``affine``
  node reading it)

The constants ``lo``, ``hi`` become biases of identity neurons: they start paths of their own,
exactly as in the ReLU-DAG these functions are.
"""

from __future__ import annotations

from fxpath.passes._rebuild import rebuild

from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import op_of
from fxpath.ops.pre_norm import HARDTANH, LEAKY_RELU, PRELU, RELU6


def _shift(x: str, node: Node, name: str, const: float) -> list[Node]:
    if const == 0.0:
        return []
    return [Node(name, "add", (x,), node.shape, {"coeffs": (1.0,), "const": const}, {},
                 node.source)]


def _hardtanh(node: Node, lo: float, hi: float | None) -> list[Node]:
    x, out = node.inputs[0], []
    lo_in = _shift(x, node, f"{node.name}_minus_lo", -lo)
    out += lo_in
    pos = Node(f"{node.name}_relu_lo", "relu", (lo_in[-1].name if lo_in else x,), node.shape,
               {}, {}, node.source)
    out.append(pos)
    if hi is None:
        return out + [Node(node.name, "add", (pos.name,), node.shape,
                           {"coeffs": (1.0,), "const": lo}, {}, node.source)]
    hi_in = _shift(x, node, f"{node.name}_minus_hi", -hi)
    cap = Node(f"{node.name}_relu_hi", "relu", (hi_in[-1].name if hi_in else x,), node.shape,
               {}, {}, node.source)
    return out + hi_in + [cap, Node(node.name, "add", (pos.name, cap.name), node.shape,
                                    {"coeffs": (1.0, -1.0), "const": lo}, {}, node.source)]


def _negative_part(node: Node) -> list[Node]:
    x = node.inputs[0]
    neg = Node(f"{node.name}_neg", "add", (x,), node.shape, {"coeffs": (-1.0,), "const": 0.0},
               {}, node.source)
    return [Node(f"{node.name}_pos", "relu", (x,), node.shape, {}, {}, node.source), neg,
            Node(f"{node.name}_relu_neg", "relu", (neg.name,), node.shape, {}, {}, node.source)]


def _leaky(node: Node) -> list[Node]:
    pos, neg, rneg = _negative_part(node)
    return [pos, neg, rneg, Node(node.name, "add", (pos.name, rneg.name), node.shape,
                                 {"coeffs": (1.0, -float(node.attrs["slope"])), "const": 0.0},
                                 {}, node.source)]


def _prelu(node: Node) -> list[Node]:
    pos, neg, rneg = _negative_part(node)
    slope = Node(f"{node.name}_slope", "affine", (rneg.name,), node.shape,
                 {"kind": "prelu"}, {"weight": node.params["weight"]}, node.source)
    return [pos, neg, rneg, slope, Node(node.name, "add", (pos.name, slope.name), node.shape,
                                        {"coeffs": (1.0, 1.0), "const": 0.0}, {}, node.source)]


def rewrite_activations(graph: Graph) -> Graph:
    """Replace relu6/hardtanh/leaky_relu/prelu nodes by ReLU, add and affine nodes.

    Guarantees: the function computed is unchanged (exact identities, no approximation); the
    rewritten node keeps its name, so its users are untouched.
    """
    def rule(node: Node) -> list[Node]:
        op = op_of(node)
        if op is RELU6:
            return _hardtanh(node, 0.0, 6.0)
        if op is HARDTANH:
            return _hardtanh(node, float(node.attrs["lo"]), node.attrs["hi"])
        if op is LEAKY_RELU:
            return _leaky(node)
        if op is PRELU:
            return _prelu(node)
        return [node]

    return rebuild(graph, rule)
