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
  magnitudes ``lo <= hi``; it carries ``(lo, delta)`` with ``delta = hi-network - lo-network``
  computed as a sum of non-negative terms (``W_hi * delta + (W_hi - W_lo) * lo``), so the
  difference of two nearly equal huge path-norms keeps full relative precision. Returns
  ``(total_lo, total_delta, exponent)``.

Every value is carried with a power-of-two exponent (see `fxpath.runtime`). With
``scaled=True`` (the norm network for ``q != 1``) the inputs carry exponents too: each
coordinate tensor arrives as a mantissa tensor and a 0-dim exponent, and every fixed
coefficient ``c^q`` (pooling, rewrites) is split the same way, so that ``|w|^q`` neither
underflows nor overflows for large or small ``q``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from . import runtime
from .frame_conv import compression, frame_conv
from .interior import Frame, interior_frames, zero_padded_conv
from .ir import Graph, Node
from .lift import Slot

__all__ = ["generate", "tapped_nodes"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_ADAPTIVE = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


@dataclass(frozen=True)
class _Value:
    streams: tuple[fx.Node, ...]
    exp: fx.Node


class _Emitter:
    """Builds the fx graph; constants become buffers of the generated module."""

    def __init__(self, mode: str, q: float, graph: Graph, interior: bool,
                 interior_min_macs: int = 0) -> None:
        self.frames = interior_frames(graph) if interior else {}
        self.min_macs = interior_min_macs
        self.shapes = {n.name: n.shape for n in graph}
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.mode, self.q = mode, q
        self.args: dict[str, tuple[fx.Node, ...]] = {}
        self.exps: dict[str, fx.Node] = {}  # slot name -> its exponent input (scaled only)
        self.scaled = False
        self.taps: dict[str, fx.Node] = {}
        self.tapped_inputs: list[fx.Node] = []

    def call(self, fn: Callable, *args: Any, name: str | None = None) -> fx.Node:
        return self.graph.create_node("call_function", fn, args, {}, name)

    def method(self, meth: str, *args: Any, name: str | None = None) -> fx.Node:
        return self.graph.create_node("call_method", meth, args, {}, name)

    def unpack(self, packed: fx.Node, names: Sequence[str]) -> list[fx.Node]:
        return [self.call(operator.getitem, packed, i, name=nm) for i, nm in enumerate(names)]

    def buffer(self, name: str, value: torch.Tensor) -> fx.Node:
        self.root.register_buffer(name, value.to(torch.float64).clone(), persistent=False)
        return self.graph.get_attr(name)

    def map(self, node: Node, v: _Value, fn: Callable[[fx.Node], fx.Node]) -> _Value:
        return _Value(tuple(fn(s) for s in v.streams), v.exp)

    def rescaled(self, node: Node, raw: Sequence[fx.Node], exp: fx.Node,
                 biases: Sequence[fx.Node] | None = None,
                 bias_exp: fx.Node | None = None) -> _Value:
        names = self.stream_names(node.name)
        if biases and bias_exp is not None:
            packed = self.call(runtime.rescale_with_bias, exp, list(raw), list(biases),
                               bias_exp, name=f"{node.name}_scaled")
        elif biases:
            packed = self.call(runtime.rescale_with_bias, exp, list(raw), list(biases),
                               name=f"{node.name}_scaled")
        else:
            packed = self.call(runtime.rescale, exp, *raw, name=f"{node.name}_scaled")
        out = self.unpack(packed, [*names, f"{node.name}_exp"])
        return _Value(tuple(out[:-1]), out[-1])

    def stream_names(self, name: str) -> list[str]:
        return [name] if self.mode == "norm" else [f"{name}_lo", f"{name}_delta"]

    def power(self, c: float) -> float:
        return abs(c) ** self.q

    def shift(self, exp: fx.Node, by: fx.Node | float, name: str) -> fx.Node:
        """``exp + by`` (an exponent moved by a slot's or a constant's exponent)."""
        if isinstance(by, float) and by == 0.0:
            return exp
        return self.call(operator.add, exp, by, name=name)

    def power_split(self, c: float) -> tuple[float, float]:
        """``|c|^q`` as ``(mantissa, exponent)`` without leaving float range (scaled only)."""
        if c == 0.0 or not self.scaled:
            return self.power(c), 0.0
        log2 = self.q * math.log2(abs(c))
        whole = math.floor(log2)
        return 2.0 ** (log2 - whole), float(whole)

    def tensor_power_split(self, c: torch.Tensor) -> tuple[torch.Tensor, float]:
        """``|c|^q`` entrywise (float64) as ``(mantissa tensor, exponent)``."""
        c = c.to(torch.float64).abs()
        if not self.scaled:
            return c.pow(self.q), 0.0
        positive = c > 0
        if not bool(positive.any()):
            return torch.zeros_like(c), 0.0
        log2 = self.q * torch.log2(torch.where(positive, c, torch.ones_like(c)))
        whole = math.floor(float(log2[positive].max()))
        return torch.where(positive, torch.exp2(log2 - whole), torch.zeros_like(c)), float(whole)


#: a conv runs on the compressed image when that shrinks its output at least this much
#: (whole-model A/B: benchmarks/interior_ab.py)
MAX_KEPT = 0.5


def _frame_in(e: _Emitter, n: Node) -> Frame | None:
    """The input frame of a conv worth running on its compressed image, else None."""
    a = n.attrs
    f_in = e.frames.get(n.inputs[0])
    if f_in is None or not zero_padded_conv(n):
        return None
    cuts = compression(e.shapes[n.inputs[0]][1:], a["kernel"], a["stride"], a["padding"],
                       a["dilation"], f_in)
    kept = math.prod((c.size - c.count) / c.size for c in cuts)
    in_channels = e.shapes[n.inputs[0]][0] // a["groups"]
    macs = math.prod(n.shape) * in_channels * math.prod(a["kernel"])
    return f_in if kept <= MAX_KEPT and macs >= e.min_macs else None


# -- rules: one per IR op ---------------------------------------------------------------------
def _apply_linear(e: _Emitter, n: Node, x: fx.Node, w: fx.Node, name: str) -> fx.Node:
    a = n.attrs
    kind = a["kind"]
    if kind == "dense":
        return e.call(F.linear, x, w, name=name)
    frame = _frame_in(e, n)
    if frame is not None:  # constant interior: convolve the compressed image, expand
        return e.call(frame_conv, x, w, a["stride"], a["padding"], a["dilation"], a["groups"],
                      frame, name=name)
    padding = a["padding"]
    if "padding_mode" in a:
        x = e.call(F.pad, x, list(a["pad"]), a["padding_mode"], name=f"{name}_pad")
        padding = 0
    if kind == "conv":
        return e.call(_CONV[a["ndim"]], x, w, None, a["stride"], padding, a["dilation"],
                      a["groups"], name=name)
    return e.call(_CONV_T[a["ndim"]], x, w, None, a["stride"], padding, a["output_padding"],
                  a["groups"], a["dilation"], name=name)


def _parameterized(e: _Emitter, n: Node, v: _Value, slots: list[Slot],
                   apply: Callable[[fx.Node, fx.Node, str], fx.Node]) -> _Value:
    """Shared by linear and affine nodes: first slot multiplies, optional second adds."""
    weight, bias = e.args[slots[0].name], (e.args[slots[1].name] if len(slots) > 1 else None)
    if e.mode == "norm":
        raw = [apply(v.streams[0], weight[0], f"{n.name}_linear")]
        if n.name in e.taps:  # d total / d tap is the gradient at this layer's output
            e.tapped_inputs.append(v.streams[0])
            raw = [e.call(operator.add, raw[0], e.taps[n.name], name=f"{n.name}_tapped")]
        if e.scaled:  # mantissas in, exponents beside them
            exp = e.shift(v.exp, e.exps[slots[0].name], f"{n.name}_weight_exp")
            return e.rescaled(n, raw, exp, [bias[0]] if bias else None,
                              e.exps[slots[1].name] if bias else None)
        return e.rescaled(n, raw, v.exp, [bias[0]] if bias else None)
    lo, delta = v.streams
    w_lo, w_hi = weight
    w_gap = e.call(operator.sub, w_hi, w_lo, name=f"{n.name}_weight_gap")
    y_lo = apply(lo, w_lo, f"{n.name}_lo_linear")
    y_delta = e.call(operator.add, apply(delta, w_hi, f"{n.name}_delta_linear"),
                     apply(lo, w_gap, f"{n.name}_gap_linear"), name=f"{n.name}_delta_sum")
    biases = None
    if bias:
        b_gap = e.call(operator.sub, bias[1], bias[0], name=f"{n.name}_bias_gap")
        biases = [bias[0], b_gap]
    return e.rescaled(n, [y_lo, y_delta], v.exp, biases)


def _linear(e: _Emitter, n: Node, ins: list[_Value], slots: list[Slot]) -> _Value:
    return _parameterized(e, n, ins[0], slots,
                          lambda x, w, name: _apply_linear(e, n, x, w, name))


def _affine(e: _Emitter, n: Node, ins: list[_Value], slots: list[Slot]) -> _Value:
    return _parameterized(e, n, ins[0], slots,
                          lambda x, w, name: e.call(operator.mul, x, w, name=name))


def _relu(e: _Emitter, n: Node, ins: list[_Value], slots: list[Slot]) -> _Value:
    return ins[0]  # ReLU neurons are the identity in the path network


def _pool(e: _Emitter, n: Node, ins: list[_Value], slots: list[Slot]) -> _Value:
    a = n.attrs
    coeff, count = a.get("coeff"), a.get("count")
    shift = 0.0  # exponent of the coefficients (scaled networks)
    if a["window"] == "regular":
        def fn(x: fx.Node) -> fx.Node:
            return e.call(runtime.window_sum, x, a["kernel"], a["stride"], a["padding"],
                          a["ceil_mode"], name=f"{n.name}_window_sum")
        factor = None
        if coeff is not None:
            mantissa, shift = e.tensor_power_split(coeff)
            factor = e.buffer(f"{n.name}_coeff", mantissa)
    elif a["window"] == "adaptive":
        def fn(x: fx.Node) -> fx.Node:
            return e.call(_ADAPTIVE[a["ndim"]], x, a["output_size"], name=f"{n.name}_mean")
        weights, shift = (count, 0.0) if coeff is None else e.tensor_power_split(coeff)
        factor = e.buffer(f"{n.name}_coeff", weights if coeff is None else count * weights)
    else:
        def fn(x: fx.Node) -> fx.Node:
            return e.method("sum", x, a["dims"], a["keepdim"], name=f"{n.name}_sum")
        factor, shift = (None, 0.0) if coeff == 1.0 else e.power_split(float(coeff))
    out = e.map(n, ins[0], fn)
    if factor is not None:
        out = e.map(n, out, lambda s: e.call(operator.mul, s, factor, name=f"{n.name}_weighted"))
    return e.rescaled(n, out.streams, e.shift(out.exp, shift, f"{n.name}_coeff_exp"))


def _add(e: _Emitter, n: Node, ins: list[_Value], slots: list[Slot]) -> _Value:
    split = [e.power_split(c) for c in n.attrs["coeffs"]]
    coeffs = [m for m, _ in split]
    exps = [e.shift(v.exp, k, f"{n.name}_coeff{i}_exp") for i, (v, (_, k)) in
            enumerate(zip(ins, split))]
    const, const_exp = e.power_split(n.attrs["const"]) if n.attrs["const"] else (0.0, 0.0)
    extra = (const_exp,) if const_exp else ()
    packed = e.call(runtime.add, exps, [list(v.streams) for v in ins], coeffs,
                    const, *extra, name=f"{n.name}_sum")
    out = e.unpack(packed, [*e.stream_names(n.name), f"{n.name}_exp"])
    return _Value(tuple(out[:-1]), out[-1])


def _concat(e: _Emitter, n: Node, ins: list[_Value], slots: list[Slot]) -> _Value:
    packed = e.call(runtime.cat, [v.exp for v in ins], [list(v.streams) for v in ins],
                    n.attrs["dim"], name=f"{n.name}_cat")
    out = e.unpack(packed, [*e.stream_names(n.name), f"{n.name}_exp"])
    return _Value(tuple(out[:-1]), out[-1])


def _reshape(e: _Emitter, n: Node, ins: list[_Value], slots: list[Slot]) -> _Value:
    a = n.attrs
    fn = a["fn"]
    if fn == "view":
        return e.map(n, ins[0], lambda x: e.method("reshape", x, (1, *n.shape), name=n.name))
    if fn == "permute":
        return e.map(n, ins[0], lambda x: e.method("permute", x, a["dims"], name=n.name))
    if fn == "getitem":
        return e.map(n, ins[0], lambda x: e.call(operator.getitem, x, a["index"], name=n.name))
    return e.map(n, ins[0], lambda x: e.call(F.pad, x, list(a["pad"]), a["mode"], name=n.name))


_RULES: dict[str, Callable[[_Emitter, Node, list[_Value], list[Slot]], _Value]] = {
    "linear": _linear, "affine": _affine, "relu": _relu, "pool": _pool, "add": _add,
    "concat": _concat, "reshape": _reshape,
}


def tapped_nodes(graph: Graph) -> list[Node]:
    """Dense layers on vectors: their coordinate scores are ``a * outer(grad_out, input)``.

    With ``generate(..., taps=True)`` each takes a zero tap added to its output (shape
    ``(1, *node.shape)``) and the network returns the input it reads, so path-magnitude scores
    of these (often huge) matrices need no weight gradient from autograd.
    """
    return [n for n in graph if n.op == "linear" and n.attrs["kind"] == "dense"
            and len(n.shape) == 1]


def _arguments(e: _Emitter, graph: Graph, slots: Sequence[Slot], scaled: bool,
               taps: bool) -> dict[str, list[Slot]]:
    """The network's placeholders, in call order: coordinates (``_lo``/``_hi`` pairs in diff
    mode), then their exponents (scaled), then the taps; returns the slots of each node."""
    by_node: dict[str, list[Slot]] = {}
    for s in slots:
        suffixes = ("",) if e.mode == "norm" else ("_lo", "_hi")
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
             probes: bool = False, taps: bool = False, interior: bool = False,
             interior_min_macs: int = 0, scaled: bool = False,
             class_name: str = "PathNetwork") -> fx.GraphModule:
    """Emit the path network of a normalized IR as a GraphModule (float64 buffers).

    Args:
        graph: normalized IR (see `fxpath.passes.normalize`).
        slots: the coordinate tensors it takes, from `fxpath.lift.slots`.
        mode: ``"norm"`` (path-norm network) or ``"diff"`` (path-metric network, q = 1).
        q: the exponent of the l^q path-norm.
        probes: also return the scaled output of every linear/affine node (norm mode only).
        taps: take one extra zero argument per `tapped_nodes` entry, added to that layer's
            output, and also return the (scaled) inputs of those layers (norm mode only).
        interior: convs whose input is constant away from a thin frame (`fxpath.interior`)
            run on the compressed image (`fxpath.frame_conv`). Values and gradients to the
            coordinates are unchanged; gradients to an intermediate activation (a probe) are
            exact only summed against framed directions, e.g. over a channel's positions.
        interior_min_macs: with ``interior``, only convs of at least this many
            multiply-adds (dense) use it.
        scaled: take a 0-dim exponent argument per slot after the coordinate arguments
            (``|w|^q = mantissa * 2**exponent``) and split fixed coefficients alike (norm
            mode without probes or taps): for any ``q``, nothing underflows or overflows.
    """
    if mode == "diff" and q != 1.0:
        raise ValueError("the path-metric network is defined for q = 1")
    if (mode == "diff" or scaled) and (probes or taps):
        raise ValueError("probes and taps exist in the unscaled path-norm network only")
    if mode == "diff" and scaled:
        raise ValueError("the path-metric network takes unscaled magnitudes")
    e = _Emitter(mode, q, graph, interior, interior_min_macs)
    e.scaled = scaled
    by_node = _arguments(e, graph, slots, scaled, taps)
    zero = e.buffer("zero", torch.zeros(()))
    env: dict[str, _Value] = {}
    probe_nodes: list[fx.Node] = []
    for n in graph:
        if n.op == "input":
            ones = e.buffer(f"{n.name}_ones", torch.ones((1, *n.shape)))
            streams = (ones,) if mode == "norm" else (ones, e.call(torch.zeros_like, ones,
                                                                   name=f"{n.name}_delta"))
            env[n.name] = _Value(streams, zero)
            continue
        if n.op == "output":
            ins = [env[i] for i in n.inputs]
            packed = e.call(runtime.output_total, [v.exp for v in ins],
                            [list(v.streams) for v in ins], name="total")
            result: tuple[Any, ...] = tuple(e.unpack(packed, [*e.stream_names("total"),
                                                              "total_exp"]))
            if probes:
                result = (*result, probe_nodes)
            if taps:
                result = (*result, e.tapped_inputs)
            e.graph.output(result)
            continue
        env[n.name] = _RULES[n.op](e, n, [env[i] for i in n.inputs], by_node.get(n.name, []))
        if probes and n.op in ("linear", "affine"):
            probe_nodes.append(env[n.name].streams[0])
    return fx.GraphModule(e.root, e.graph, class_name)
