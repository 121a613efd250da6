"""``scale``: an activation multiplied by a parameter and/or shifted by one, by broadcasting.

``y = x * w.view(weight_view) + bias_coeff * b.view(bias_view)`` with ``w``, ``b`` tensors of
the model's state dict (a learnable scalar or per-channel affine, a layer scale, a learnable
bias; either may be absent). Every output entry reads one input entry through an edge whose
weight is one entry of ``w``, and gets one entry of ``b`` as its bias: a linear map whose
coordinates are the entries of ``w`` and ``b``, each shared by the edges it weights. The path
network applies the same broadcast with ``|w|^q`` and ``|b|^q``, so the gradient with respect
to a parameter entry sums over the edges that share it: its path mass.
"""

from __future__ import annotations

import operator

from torch import Tensor

from fxpath.ir.coordinates import Fetch, Slot, ident, power
from fxpath.ir.graph import Node
from fxpath.kernels.emit import Emitter, Value
from fxpath.kernels.geometry import Frame
from fxpath.ops.core import INTS, REAL, Attr, Coordinates, Op, Rescaling, RunContext, is_a, register

__all__ = ["SCALE"]


def _weight(n: Node, fetch: Fetch) -> Tensor | None:
    if "weight" not in n.params:
        return None
    return fetch(n.params["weight"]).reshape(n.attrs["weight_view"])


def _bias(n: Node, fetch: Fetch) -> Tensor | None:
    if "bias" not in n.params:
        return None
    b = fetch(n.params["bias"]).reshape(n.attrs["bias_view"])
    coeff = n.attrs.get("bias_coeff", 1.0)
    return b if coeff == 1.0 else b * coeff


def _scale_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """``x * |w|^q + |c b|^q``, broadcast as the model broadcasts."""
    v = ins[0]
    role = {s.role: s for s in slots}
    w, b = role.get("weight"), role.get("bias")
    if e.mode == "norm":
        raw, exp = v.streams[0], v.exp
        if w is not None:
            raw = e.call(operator.mul, raw, e.args[w.name][0], name=f"{n.name}_mul")
            if e.scaled:
                exp = e.shift(exp, e.exps[w.name], f"{n.name}_weight_exp")
        biases = [e.args[b.name][0]] if b is not None else None
        bias_exp = e.exps[b.name] if b is not None and e.scaled else None
        return e.rescaled(n, [raw], exp, biases, bias_exp)
    lo, delta = v.streams
    if w is not None:
        w_lo, w_gap = e.args[w.name]
        lo, delta = e.metric_step(v, w_lo, w_gap, lambda x, t, name: e.call(
            operator.mul, x, t, name=name), n.name, batch=False)
    biases = [*e.args[b.name]] if b is not None else None
    return e.rescaled(n, [lo, delta], v.exp, biases)


def _scale_run(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``x * w + c * b`` on the model's tensors."""
    y = xs[0]
    w, b = _weight(n, ctx.fetch), _bias(n, ctx.fetch)
    if w is not None:
        y = y * w
    return y if b is None else y + b


def _scale_frame(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]
                 ) -> Frame | None:
    """The input's frame when every factor is constant over the spatial positions (one per
    channel at most) and nothing broadcasts the input; else none known."""
    if ins[0] is None or shapes[0] != n.shape or len(n.shape) < 2 or n.channel_dim() != 1:
        return None
    spatial = len(n.shape) - 1
    for key in ("weight_view", "bias_view"):
        view = n.attrs.get(key)
        if view is not None and any(s != 1 for s in view[len(view) - spatial:]):
            return None
    return ins[0]


def _scale_slots(n: Node) -> list[Slot]:
    base = ident(n.name)
    return [Slot(f"{base}_{role}", n.name, role, n.params[role])
            for role in ("weight", "bias") if role in n.params]


def _scale_lift(n: Node, fetch: Fetch, q: float | None, out: Tensor | None = None
                ) -> list[Tensor]:
    w, b = _weight(n, fetch), _bias(n, fetch)
    lifted = [] if w is None else [power(w, q, out)]
    return lifted if b is None else [*lifted, power(b, q)]


SCALE = register(Op(
    name="scale",
    doc="`x * w + bias_coeff * b`, `w` and `b` model tensors (either may be absent) viewed as "
        "`weight_view` / `bias_view` and broadcast: a learnable scalar or per-channel affine, "
        "a layer scale, a learnable bias",
    attrs={"weight_view": Attr(INTS, required=False), "bias_view": Attr(INTS, required=False),
           "bias_coeff": Attr(REAL, required=False),
           "derived": Attr(is_a(tuple), required=False)},
    path_rule=_scale_path, interpret_rule=_scale_run, frame_rule=_scale_frame,
    rescale_rule=Rescaling("stops: a factor shared by several channels cannot absorb a "
                           "per-channel rescaling"),
    slots_rule=Coordinates("`weight` and/or `bias`, in the parameters' own entries "
                           "(each shared by the edges it weights)", _scale_slots, _scale_lift),
))
