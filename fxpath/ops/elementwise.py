"""Neurons applied position by position: ``relu`` and ``add`` (identity neurons
``sum_k coeffs[k] * x_k + const``: residual adds and the exact ReLU rewrites)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from fxpath import layout, runtime
from fxpath.ir.coordinates import Slot
from fxpath.ir.graph import Graph, Node
from fxpath.kernels.emit import Emitter, Value
from fxpath.kernels.geometry import Frame, widest
from fxpath.ops.core import REAL, Attr, Check, Op, Rescaling, RunContext, does_not_apply, register


def _relu_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """The identity: a ReLU neuron passes every path through."""
    return ins[0]


def _relu_run(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``max(x, 0)``."""
    return F.relu(xs[0])


def _relu_frame(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]
                ) -> Frame | None:
    """The input's frame."""
    return ins[0]


def _relu_transit(graph: Graph, node: Node, src: str, ids: Tensor) -> Tensor:
    """Channels pass through unchanged (ReLU is positively homogeneous)."""
    return ids


def _add_join(graph: Graph, node: Node, src: str, ids: Tensor) -> Tensor | None:
    """A residual stream's channels cross (``const`` 0: positively homogeneous) when ``src``
    is one operand, once, of the output's shape; the other operands must carry the same
    channels, rescaled alike."""
    if node.attrs["const"] != 0.0 or node.inputs.count(src) != 1 \
            or graph[src].shape != node.shape:
        return None
    return ids


def _add_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """``sum_k |coeffs[k]|^q x_k + |const|^q`` (the constant starts paths of its own); compact
    operands of one shape are brought to one layout, others are expanded."""
    same = all(e.shapes[i] == n.shape for i in n.inputs)
    target = layout.common([v.layout for v in ins]) if same else None
    ins = e.aligned(ins, n.inputs, n.name, target)
    split = [e.power_split(c) for c in n.attrs["coeffs"]]
    coeffs = [m for m, _ in split]
    exps = [e.shift(v.exp, k, f"{n.name}_coeff{i}_exp") for i, (v, (_, k)) in
            enumerate(zip(ins, split))]
    const, const_exp = e.power_split(n.attrs["const"]) if n.attrs["const"] else (0.0, 0.0)
    extra = (const_exp,) if const_exp else ()
    packed = e.call(runtime.add, exps, [list(v.streams) for v in ins], coeffs,
                    const, *extra, name=f"{n.name}_sum")
    return e.packed(packed, n.name, target)


def _add_run(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``sum_k coeffs[k] * x_k + const``."""
    return sum(c * x for c, x in zip(n.attrs["coeffs"], xs)) + n.attrs["const"]


def _add_frame(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]
               ) -> Frame | None:
    """Constant where every operand is (no broadcasting)."""
    return widest(ins) if all(s == n.shape for s in shapes) else None


_NO_PARAMS = "no parameters"

RELU = register(Op(
    name="relu",
    doc="ReLU neurons",
    attrs={},
    path_rule=_relu_path, interpret_rule=_relu_run, frame_rule=_relu_frame,
    rescale_rule=Rescaling("passes: channel ids unchanged", transit=_relu_transit),
    slots_rule=does_not_apply(_NO_PARAMS), compact=True,
))

ADD = register(Op(
    name="add",
    doc="identity neurons `sum_k coeffs[k] * x_k + const` (residual adds, scalar arithmetic, "
        "the ReLU rewrites)",
    attrs={"coeffs": Attr(Check("tuple[float]", lambda v: isinstance(v, tuple)
                                and all(REAL(c) for c in v))),
           "const": Attr(REAL)},
    path_rule=_add_path, interpret_rule=_add_run, frame_rule=_add_frame,
    rescale_rule=Rescaling("stops a single neuron (the sum mixes it with other paths); with "
                           "`const` 0 and no broadcasting, joins the channels of a residual "
                           "stream (every operand rescaled alike)", join=_add_join),
    slots_rule=does_not_apply("fixed coefficients: no parameters"), compact=True,
))
