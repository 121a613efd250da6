"""Re-indexings without new weights: ``reshape`` (view, permute, pad, getitem) and
``concat``. Every output entry is one input entry (or a padding zero)."""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import Tensor

from fxpath import layout, runtime
from fxpath.ir.coordinates import Slot
from fxpath.ir.graph import Graph, Node
from fxpath.kernels.emit import Emitter, Value
from fxpath.kernels.geometry import Frame, widest
from fxpath.ops.core import (
    INT,
    INTS,
    REAL,
    Attr,
    Op,
    Rescaling,
    RunContext,
    When,
    does_not_apply,
    is_a,
    one_of,
    register,
)
from fxpath.ops.rescaling import channel_ids


def _reshape_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """The same re-indexing of every stream (``fn``: view, permute, getitem or pad)."""
    a = n.attrs
    fn = a["fn"]
    if fn == "view":
        return e.map(ins[0], lambda x: e.method("reshape", x, (1, *n.shape), name=n.name))
    if fn == "permute":
        return e.map(ins[0], lambda x: e.method("permute", x, a["dims"], name=n.name))
    if fn == "getitem":
        return e.map(ins[0], lambda x: e.call(operator.getitem, x, a["index"], name=n.name))
    value = a.get("value", 0.0)
    if value != 0.0 and value != -math.inf:  # constant entries: paths start at them
        mantissa, shift = e.power_split(value)
        packed = e.call(runtime.pad_const, ins[0].exp, list(ins[0].streams), list(a["pad"]),
                        mantissa, *((shift,) if shift else ()), name=f"{n.name}_pad")
        return e.packed(packed, n.name)
    # zero padding, or -inf in front of a max-pool that never selects it (check_supported)
    return e.map(ins[0], lambda x: e.call(F.pad, x, list(a["pad"]), a["mode"], name=n.name))


def _reshape_run(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """The re-indexing, per sample."""
    x, a = xs[0], n.attrs
    fn = a["fn"]
    if fn == "view":
        return x.reshape(x.shape[0], *n.shape)
    if fn == "permute":
        return x.permute(a["dims"])
    if fn == "getitem":
        return operator.getitem(x, a["index"])
    if a["mode"] == "constant":
        return F.pad(x, list(a["pad"]), "constant", a.get("value", 0.0))
    return F.pad(x, list(a["pad"]), a["mode"])


def _reshape_transit(graph: Graph, node: Node, src: str, ids: Tensor) -> Tensor | None:
    """Views pass the channel ids (re-indexed); permutes, slices and pads stop rescaling."""
    if node.attrs["fn"] != "view":
        return None
    return ids.reshape(1, *node.shape)


def _concat_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """The concatenation, each operand moved to a common exponent; along channels, compact
    operands are brought to one layout (others are expanded)."""
    target = layout.common([v.layout for v in ins]) if n.attrs["dim"] == 1 else None
    ins = e.aligned(ins, n.inputs, n.name, target)
    packed = e.call(runtime.cat, [v.exp for v in ins], [list(v.streams) for v in ins],
                    n.attrs["dim"], name=f"{n.name}_cat")
    return e.packed(packed, n.name, target)


def _concat_run(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``torch.cat`` along ``dim``."""
    return torch.cat(xs, n.attrs["dim"])


def _concat_frame(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]
                  ) -> Frame | None:
    """Along channels: constant where every operand is; else none known."""
    return widest(ins) if n.attrs["dim"] == 1 else None


def _concat_transit(graph: Graph, node: Node, src: str, ids: Tensor) -> Tensor | None:
    """Channels pass through; the other operands carry id 0 (not this producer)."""
    if node.inputs.count(src) != 1:
        return None
    parts = [ids if i == src else channel_ids(graph[i], 0) for i in node.inputs]
    return torch.cat(parts, node.attrs["dim"])


_PAD = When("fn", ("pad",))

RESHAPE = register(Op(
    name="reshape",
    doc="re-indexing without new weights: `fn` view, permute, pad or getitem (an `index` of "
        "slices and ints: slicing, and each used result of split/chunk/tensor_split/unbind); "
        "constant padding with `value` c != 0 starts paths of weight |c| at the padded "
        "entries, c = -inf only in front of max-pools that never select it",
    attrs={"fn": Attr(one_of("view", "permute", "pad", "getitem")),
           "dims": Attr(INTS, When("fn", ("permute",))),
           "pad": Attr(INTS, _PAD), "mode": Attr(is_a(str), _PAD),
           "value": Attr(REAL, required=False),
           "index": Attr(is_a(tuple), When("fn", ("getitem",)))},
    path_rule=_reshape_path, interpret_rule=_reshape_run,
    frame_rule=does_not_apply("a re-indexing moves positions: no frame is tracked through it"),
    rescale_rule=Rescaling("passes through views; stops at permute, pad and getitem",
                           transit=_reshape_transit),
    slots_rule=does_not_apply("no parameters"),
))

CONCAT = register(Op(
    name="concat",
    doc="concatenation along `dim` (never the batch)",
    attrs={"dim": Attr(INT)},
    path_rule=_concat_path, interpret_rule=_concat_run, frame_rule=_concat_frame,
    rescale_rule=Rescaling("passes: the producer's channels keep their ids, other operands "
                           "carry none", transit=_concat_transit),
    slots_rule=does_not_apply("no parameters"), compact=True,
))
