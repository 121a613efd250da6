"""Code generation: emit the path network of a normalized IR as a torch.fx GraphModule.

The path network (docs/mathematics.md#the-path-network) is the model with every coordinate
``w`` replaced by ``|w|^q``, ReLU by the identity and max-pooling by a windowed sum, fed
all-ones. It is linear with non-negative coefficients; the sum of its outputs is
``||Phi||_q^q``.

Two flavours share one rule table:

* ``mode="norm"``: one stream; arguments are the magnitudes ``|w|^q`` of the coordinates.
  Returns ``(total, exponent)`` (and optionally the scaled output of every linear/affine node,
  for neuron path mass).
* ``mode="diff"``: the path-metric network (docs/mathematics.md#the-path-metric). Arguments are
  the magnitudes ``lo`` and ``gap = hi - lo`` of two coordinate envelopes
  (`fxpath.quantities.envelope`); it carries ``(lo, delta)`` with ``delta = hi-network -
  lo-network`` computed as a sum of non-negative terms (``W_lo * delta + W_gap * (lo + delta)``, see
  `Emitter.metric_step`), so the difference of two nearly equal huge path-norms keeps full relative
  precision. Returns ``(total_lo, total_delta, exponent)``.

Every value is carried with a power-of-two exponent (see `fxpath.runtime`). With
``scaled=True`` (the norm network for ``q != 1``) the inputs carry exponents too: each
coordinate tensor arrives as a mantissa tensor and a 0-dim exponent, and every fixed
coefficient ``c^q`` (pooling, rewrites) is split the same way, so that ``|w|^q`` neither
underflows nor overflows for large or small ``q``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx

from fxpath.codegen.lift import Slot
from fxpath.ir.graph import Graph, Node
from fxpath.kernels.emit import Emitter, Value
from fxpath.ops.core import PathRule, op_of
from fxpath.ops.linear import tapped
from fxpath.ops.walk import walk

__all__ = ["generate", "tapped_nodes"]


def tapped_nodes(graph: Graph) -> list[Node]:
    """Dense layers on vectors: their coordinate scores are ``a * outer(grad_out, input)``.

    With ``generate(..., taps=True)`` each takes a zero tap added to its output (shape
    ``(1, *node.shape)``) and the network returns the input it reads, so path-magnitude scores
    of these (often huge) matrices need no weight gradient from autograd.
    """
    return [n for n in graph if tapped(n)]


def _arguments(e: Emitter, graph: Graph, slots: Sequence[Slot], scaled: bool,
               taps: bool) -> dict[str, list[Slot]]:
    """The network's placeholders, in call order: coordinates (``_lo``/``_gap`` pairs in diff
    mode), then their exponents (scaled), then the taps; returns the slots of each node."""
    by_node: dict[str, list[Slot]] = {}
    for s in slots:
        suffixes = ("",) if e.mode == "norm" else ("_lo", "_gap")
        e.args[s.name] = tuple(e.graph.placeholder(f"{s.name}{x}") for x in suffixes)
        by_node.setdefault(s.node, []).append(s)
    if scaled:
        for s in slots:
            e.exps[s.name] = e.graph.placeholder(f"{s.name}_exp")
    if taps:
        for n in tapped_nodes(graph):
            e.taps[n.name] = e.graph.placeholder(f"{by_node[n.name][0].name}_tap")
    return by_node


def generate(graph: Graph, slots: Sequence[Slot], *, mode: str = "norm", q: float = 1.0,
             probes: bool = False, taps: bool = False, scaled: bool = False,
             grad_frames: bool = False, class_name: str = "PathNetwork") -> fx.GraphModule:
    """Emit the path network of a normalized IR as a GraphModule (float64 buffers).

    Each node's value comes from its op's path rule (`fxpath.ops`); the output node's rule
    emits the network's result.

    Args:
        graph: normalized IR (see `fxpath.passes.pipeline.normalize`).
        slots: the coordinate tensors it takes, from `fxpath.codegen.lift.slots`.
        mode: ``"norm"`` (path-norm network) or ``"diff"`` (path-metric network, q = 1).
        q: the exponent of the l^q path-norm.
        probes: also return the scaled output of every linear/affine node (norm mode only).
        taps: take one extra zero argument per `tapped_nodes` entry, added to that layer's
            output, and also return the (scaled) inputs of those layers (norm mode only).
        scaled: take a 0-dim exponent argument per slot after the coordinate arguments
            (``|w|^q = mantissa * 2**exponent``) and split fixed coefficients alike (norm
            mode without probes or taps): for any ``q``, nothing underflows or overflows.
        grad_frames: norm-mode convs that qualify (`fxpath.kernels.grad_frame.eligible`) compute
            their CPU backward on the frame of their output gradient, where it has one.
    """
    if mode == "diff" and q != 1.0:
        raise ValueError("the path-metric network is defined for q = 1")
    if (mode == "diff" or scaled) and (probes or taps):
        raise ValueError("probes and taps exist in the unscaled path-norm network only")
    if mode == "diff" and scaled:
        raise ValueError("the path-metric network takes unscaled magnitudes")
    e = Emitter(mode, q, graph)
    e.scaled = scaled
    e.grad_frames = grad_frames
    e.probes = [] if probes else None
    e.tapped_inputs = [] if taps else None
    by_node = _arguments(e, graph, slots, scaled, taps)
    e.zero = e.buffer("zero", torch.zeros(()))

    def emit(rule: PathRule, n: Node, ins: list[Value]) -> Value:
        if not op_of(n).compact:  # compact values (`fxpath.layout`) are expanded first
            ins = [e.full(v, i) for v, i in zip(ins, n.inputs)]
        return rule(e, n, ins, by_node.get(n.name, []))

    walk(graph, "path_rule", emit)
    return fx.GraphModule(e.root, e.graph, class_name)
