"""The path-network builder that the ops' path rules write into (see `fxpath.codegen.generate`).

An `Emitter` holds the torch.fx graph being built, the generated module (whose buffers hold
the constants), the network's coordinate arguments and the mode (``norm`` or ``diff``). Each
value of the path network is a `Value`: its streams (one in ``norm`` mode, ``(lo, delta)`` in
``diff`` mode) and a power-of-two exponent (see `fxpath.runtime`).
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

from fxpath import layout, runtime
from fxpath.ir.graph import Graph, Node
from fxpath.kernels.frame_conv import Cut
from fxpath.layout import Layout

__all__ = ["Emitter", "Value"]


@dataclass(frozen=True)
class Value:
    """One path-network value: its streams, their common exponent and, for a compact value,
    its `fxpath.layout.Layout` (``None``: full tensors)."""

    streams: tuple[fx.Node, ...]
    exp: fx.Node
    layout: Layout | None = None


class Emitter:
    """Builds the fx graph; constants become buffers of the generated module.

    Attributes:
        args: slot name -> its placeholders (``(x,)``, or ``(lo, hi)`` in ``diff`` mode).
        exps: slot name -> its exponent placeholder (``scaled`` networks only).
        taps: node name -> the zero tap added to its output (``taps=True``).
        tapped_inputs: the inputs of the tapped nodes, returned by the network; ``None``
            without ``taps``.
        probes: the scaled output of every linear/affine node; ``None`` without ``probes``.
        zero: the 0-dim zero buffer, the exponent of the network inputs.
        grad_frames: emit `fxpath.kernels.grad_frame.conv` for the convs that qualify.
    """

    def __init__(self, mode: str, q: float, graph: Graph) -> None:
        self.shapes = {n.name: n.shape for n in graph}
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.mode, self.q = mode, q
        self.args: dict[str, tuple[fx.Node, ...]] = {}
        self.exps: dict[str, fx.Node] = {}
        self.scaled = False
        self.taps: dict[str, fx.Node] = {}
        self.tapped_inputs: list[fx.Node] | None = None
        self.probes: list[fx.Node] | None = None
        self.zero: fx.Node | None = None
        #: streams known to be all zeros (the input's delta in ``diff`` mode)
        self.zeros: set[fx.Node] = set()
        #: convs whose output gradient may have a frame run their backward on it
        #: (`fxpath.kernels.grad_frame`)
        self.grad_frames = False
        #: the full tensors of compact values already expanded, by their first stream
        self._full: dict[fx.Node, Value] = {}

    def call(self, fn: Callable, *args: Any, name: str | None = None) -> fx.Node:
        """Emit ``fn(*args)``."""
        return self.graph.create_node("call_function", fn, args, {}, name)

    def method(self, meth: str, *args: Any, name: str | None = None) -> fx.Node:
        """Emit ``args[0].meth(*args[1:])``."""
        return self.graph.create_node("call_method", meth, args, {}, name)

    def unpack(self, packed: fx.Node, names: Sequence[str]) -> list[fx.Node]:
        """The items of a tuple-valued node, one named node each."""
        return [self.call(operator.getitem, packed, i, name=nm) for i, nm in enumerate(names)]

    def buffer(self, name: str, value: torch.Tensor) -> fx.Node:
        """A float64 constant of the generated module."""
        self.root.register_buffer(name, value.to(torch.float64).clone(), persistent=False)
        return self.graph.get_attr(name)

    @staticmethod
    def index(idx: Sequence[Sequence[int] | None]) -> tuple[layout.Runs | None, ...]:
        """Rows per spatial axis as the constant runs `fxpath.layout.select` takes."""
        return layout.as_runs(idx)

    def relayout(self, v: Value, target: Layout | None, name: str) -> Value:
        """``v`` brought to layout ``target`` (``None``: full tensors)."""
        if v.layout == target or (not layout.is_compact(v.layout) and target is None):
            return v
        lay = v.layout if v.layout is not None else (None,) * len(target or ())
        idx = self.index(layout.relayout(lay, target))
        if all(i is None for i in idx):
            return Value(v.streams, v.exp, target)
        suffix = "full" if target is None else "aligned"
        streams = tuple(self.call(layout.select, s, *idx, name=f"{sn}_{suffix}")
                        for s, sn in zip(v.streams, self.stream_names(name)))
        return Value(streams, v.exp, target)

    def aligned(self, ins: Sequence[Value], names: Sequence[str], node: str,
                target: Layout | None) -> list[Value]:
        """Operands of one elementwise op (``node``) brought to layout ``target``, or expanded
        to full tensors where ``target`` is ``None``."""
        return [self.relayout(v, target, f"{i}_{node}") if target is not None
                else self.full(v, i) for v, i in zip(ins, names)]

    def compressed(self, v: Value, cuts: Sequence[Cut], size_in: Sequence[int]
                   ) -> tuple[tuple[layout.Runs | None, ...], tuple[layout.Runs | None, ...],
                              Layout | None]:
        """For a windowed op on its compressed image (`fxpath.kernels.frame_conv.compression`) that
        reads ``v``: the rows it reads, the rows of its small output to store, and their
        layout (`fxpath.layout.conv_indices`)."""
        in_rows, out_rows, out_layout = layout.conv_indices(v.layout, cuts, size_in)
        return self.index(in_rows), self.index(out_rows), out_layout

    def full(self, v: Value, name: str) -> Value:
        """``v`` as full tensors (expanded once, however many ops read it)."""
        if not layout.is_compact(v.layout):
            return v if v.layout is None else Value(v.streams, v.exp)
        if v.streams[0] not in self._full:
            self._full[v.streams[0]] = self.relayout(v, None, name)
        return self._full[v.streams[0]]

    def map(self, v: Value, fn: Callable[[fx.Node], fx.Node]) -> Value:
        """``fn`` applied to every stream of ``v`` (a linear map: the exponent is kept)."""
        return Value(tuple(fn(s) for s in v.streams), v.exp)

    def rescaled(self, node: Node, raw: Sequence[fx.Node], exp: fx.Node,
                 biases: Sequence[fx.Node] | None = None,
                 bias_exp: fx.Node | None = None, layout: Layout | None = None) -> Value:
        """``raw * 2**exp`` (plus the biases) renormalized into a fresh value of ``node``
        (of layout ``layout``: the renormalization is elementwise)."""
        if biases and bias_exp is not None:
            packed = self.call(runtime.rescale_with_bias, exp, list(raw), list(biases),
                               bias_exp, name=f"{node.name}_scaled")
        elif biases:
            packed = self.call(runtime.rescale_with_bias, exp, list(raw), list(biases),
                               name=f"{node.name}_scaled")
        else:
            packed = self.call(runtime.rescale, exp, *raw, name=f"{node.name}_scaled")
        return self.packed(packed, node.name, layout)

    def packed(self, packed: fx.Node, name: str, layout: Layout | None = None) -> Value:
        """A value (of layout ``layout``) from a node returning ``(*streams, exponent)``."""
        out = self.unpack(packed, [*self.stream_names(name), f"{name}_exp"])
        return Value(tuple(out[:-1]), out[-1], layout)

    def metric_step(self, v: Value, w_lo: fx.Node, w_gap: fx.Node,
                    apply: Callable[[fx.Node, fx.Node, str], fx.Node], name: str,
                    batch: bool, fused: tuple[Callable[..., Any], tuple[Any, ...]] | None = None
                    ) -> tuple[fx.Node, fx.Node]:
        """One parameterized layer of the path-metric network, before bias and rescaling.

        With ``hi = lo + gap`` entrywise and ``h = lo + delta`` the hi-network's input,
        ``W_hi h - W_lo lo = W_lo delta + W_gap h``: a sum of non-negative terms (no
        cancellation). ``W_lo`` reads ``lo`` and ``delta``; with ``batch`` they go through
        ``apply`` as one batch of two, so the weight is read once (a conv or dense layer).
        ``fused = (fn, extra)``, where given, replaces all of it with one call
        ``fn(lo, delta, w_lo, w_gap, *extra) -> (y_lo, y_delta)``
        (`fxpath.layout.compact_conv_metric`).
        """
        lo, delta = v.streams
        if delta in self.zeros:  # h = lo
            return (apply(lo, w_lo, f"{name}_lo_linear"),
                    apply(lo, w_gap, f"{name}_gap_linear"))
        if fused is not None:  # one call does it all (a conv on compressed images)
            fn, extra = fused
            return self.unpack(self.call(fn, lo, delta, w_lo, w_gap, *extra,
                                         name=f"{name}_metric"),
                               [f"{name}_lo_linear", f"{name}_delta_sum"])
        h = self.call(operator.add, lo, delta, name=f"{name}_hi_in")
        if batch:
            pair = self.call(torch.cat, [lo, delta], name=f"{name}_pair")
            both = apply(pair, w_lo, f"{name}_pair_linear")
            y_lo = self.method("narrow", both, 0, 0, 1, name=f"{name}_lo_linear")
            y_dl = self.method("narrow", both, 0, 1, 1, name=f"{name}_delta_linear")
        else:
            y_lo = apply(lo, w_lo, f"{name}_lo_linear")
            y_dl = apply(delta, w_lo, f"{name}_delta_linear")
        # in place: y_dl is fresh (a slice of the batch's output, or a product)
        y_delta = self.method("add_", y_dl, apply(h, w_gap, f"{name}_gap_linear"),
                              name=f"{name}_delta_sum")
        return y_lo, y_delta

    def stream_names(self, name: str) -> list[str]:
        """The fx names of a value's streams."""
        return [name] if self.mode == "norm" else [f"{name}_lo", f"{name}_delta"]

    def power(self, c: float) -> float:
        """``|c|^q``."""
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
