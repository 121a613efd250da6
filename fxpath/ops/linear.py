"""Parameterized ops: ``linear`` (conv, transposed conv, dense; with a folded BatchNorm) and
``affine`` (a standalone per-channel map: an unfoldable frozen BatchNorm, a PReLU slope).

These are the ops with coordinates: each output channel is a neuron whose incoming weights
(and bias) are slots of the path network, so they are also where neuron rescaling starts
(producers) and ends (consumers).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fxpath import layout
from fxpath.ir.coordinates import (
    Factored,
    Fetch,
    Slot,
    bn_affine,
    channel_view,
    fits,
    ident,
    power,
)
from fxpath.ir.graph import BatchNormRef, Node
from fxpath.kernels import grad_frame
from fxpath.kernels.emit import Emitter, Value
from fxpath.kernels.frame_conv import compression
from fxpath.kernels.geometry import Frame, window_frame
from fxpath.layout import Layout
from fxpath.ops.core import (
    INT,
    INTS,
    Attr,
    Check,
    Coordinates,
    Op,
    Rescaling,
    RunContext,
    When,
    is_a,
    one_of,
    op_of,
    register,
)
from fxpath.ops.rescaling import per_channel, scale_rows, writable

__all__ = ["AFFINE", "FRAME_CONV", "LINEAR", "LINEAR_OPS", "MAX_KEPT", "bn_forward", "tapped",
           "zero_padded_conv"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}

#: a conv runs on the compressed image when that shrinks its output at least this much
#: (whole-model A/B: benchmarks/interior_ab.py)
MAX_KEPT = 0.5


def zero_padded_conv(n: Node) -> bool:
    """A conv with explicit zero padding: the windowed op `window_frame` describes."""
    a = n.attrs
    return (op_of(n) in LINEAR_OPS and a["kind"] == "conv"
            and "padding_mode" not in a and not isinstance(a["padding"], str))


def tapped(n: Node) -> bool:
    """A dense layer on vectors (see `fxpath.codegen.generate.tapped_nodes`)."""
    return op_of(n) is LINEAR and n.attrs["kind"] == "dense" and len(n.shape) == 1


def bn_forward(x: Tensor, bn: BatchNormRef, fetch: Fetch) -> Tensor:
    """A frozen BatchNorm applied as the model applies it."""
    return F.batch_norm(x, fetch(bn.running_mean), fetch(bn.running_var),
                        fetch(bn.weight) if bn.weight else None,
                        fetch(bn.bias) if bn.bias else None, False, 0.0, bn.eps)


# -- path rules -------------------------------------------------------------------------------
def _apply_linear(e: Emitter, n: Node, x: fx.Node, w: fx.Node, name: str) -> fx.Node:
    a = n.attrs
    kind = a["kind"]
    if kind == "dense":
        return e.call(F.linear, x, w, name=name)
    padding = a["padding"]
    if "padding_mode" in a:
        x = e.call(F.pad, x, list(a["pad"]), a["padding_mode"], name=f"{name}_pad")
        padding = 0
    if kind == "conv" and e.mode == "norm" and e.grad_frames and grad_frame.eligible(
            a["kernel"], a["stride"], padding, a["dilation"], a["groups"], n.shape):
        # scores: its backward runs on the frame of the output gradient, where it has one
        return e.call(grad_frame.conv, x, w, padding, a["dilation"], name=name)
    if kind == "conv":
        return e.call(_CONV[a["ndim"]], x, w, None, a["stride"], padding, a["dilation"],
                      a["groups"], name=name)
    return e.call(_CONV_T[a["ndim"]], x, w, None, a["stride"], padding, a["output_padding"],
                  a["groups"], a["dilation"], name=name)


def _parameterized(e: Emitter, n: Node, v: Value, slots: list[Slot],
                   apply: Callable[[fx.Node, fx.Node, str], fx.Node],
                   apply_batched: bool,
                   fused: tuple[Callable[..., Any], tuple[Any, ...]] | None = None,
                   out_layout: Layout | None = None) -> Value:
    """Shared by linear and affine nodes: first slot multiplies, optional second adds
    (``apply_batched``: in the metric network, run ``lo`` and ``delta`` as one batch;
    ``fused``: one call does the metric step, see `Emitter.metric_step`). ``out_layout``: the
    layout of what ``apply`` returns (`fxpath.layout`)."""
    weight, bias = e.args[slots[0].name], (e.args[slots[1].name] if len(slots) > 1 else None)
    if e.mode == "norm":
        raw = [apply(v.streams[0], weight[0], f"{n.name}_linear")]
        if n.name in e.taps and e.tapped_inputs is not None:  # d total / d tap is the
            e.tapped_inputs.append(v.streams[0])  # gradient at this layer's output
            raw = [e.call(operator.add, raw[0], e.taps[n.name], name=f"{n.name}_tapped")]
        if e.scaled:  # mantissas in, exponents beside them
            exp = e.shift(v.exp, e.exps[slots[0].name], f"{n.name}_weight_exp")
            return e.rescaled(n, raw, exp, [bias[0]] if bias else None,
                              e.exps[slots[1].name] if bias else None, layout=out_layout)
        return e.rescaled(n, raw, v.exp, [bias[0]] if bias else None, layout=out_layout)
    w_lo, w_gap = weight
    y_lo, y_delta = e.metric_step(v, w_lo, w_gap, apply, n.name, batch=apply_batched,
                                  fused=fused)
    biases = list(bias) if bias else None
    return e.rescaled(n, [y_lo, y_delta], v.exp, biases, layout=out_layout)


def _probed(e: Emitter, out: Value, name: str) -> Value:
    if e.probes is not None:  # the scaled output of every parameterized node: full size, and
        out = e.full(out, name)  # what the rest of the network reads (its gradient is asked)
        e.probes.append(out.streams[0])
    return out


def _linear_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """``|W|^q`` applied by the same conv/dense op, plus ``|b|^q``."""
    return _probed(e, _parameterized(e, n, ins[0], slots,
                                     lambda x, w, name: _apply_linear(e, n, x, w, name), True),
                   n.name)


def _affine_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """``x * |s|^q + |t|^q`` per channel; a compact value stays compact (channels first)."""
    v = ins[0]
    if len(n.shape) > 1 and n.channel_dim() != 1:
        v = e.full(v, n.inputs[0])  # channels last: the factor varies along a stored axis
    return _probed(e, _parameterized(e, n, v, slots,
                                     lambda x, w, name: e.call(operator.mul, x, w, name=name),
                                     False, out_layout=v.layout), n.name)


# -- reference semantics ----------------------------------------------------------------------
def _linear_run(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """The conv/dense op on the lifted (BatchNorm-folded) weight and bias."""
    a, x = n.attrs, xs[0]
    w, *b = _linear_lift(n, ctx.fetch, None)
    if a["kind"] == "dense":
        y = F.linear(x, w)
    else:
        padding = a["padding"]
        if "padding_mode" in a:
            x, padding = F.pad(x, list(a["pad"]), a["padding_mode"]), 0
        if a["kind"] == "conv":
            y = _CONV[a["ndim"]](x, w, None, a["stride"], padding, a["dilation"], a["groups"])
        else:
            y = _CONV_T[a["ndim"]](x, w, None, a["stride"], padding, a["output_padding"],
                                   a["groups"], a["dilation"])
    return y + b[0] if b else y


def _affine_run(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """The frozen BatchNorm, or ``x * (-a)`` for a PReLU's negative part."""
    x = xs[0]
    if n.attrs["kind"] == "batchnorm":
        return bn_forward(x, n.attrs["bn"], ctx.fetch)
    slope = -ctx.fetch(n.params["weight"])
    return x * (slope.reshape(-1, *([1] * (x.dim() - 2))) if x.dim() > 2 else slope.reshape(-1))


# -- constant interiors -----------------------------------------------------------------------
def _linear_frame(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]
                  ) -> Frame | None:
    """Zero-padded convs: the window geometry of the input frame; else none known."""
    a = n.attrs
    if not zero_padded_conv(n) or ins[0] is None:
        return None
    return window_frame(ins[0], shapes[0][1:], n.shape[1:], a["kernel"], a["stride"],
                        a["padding"], a["dilation"])


def _affine_frame(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]
                  ) -> Frame | None:
    """The input's frame (one factor per channel), unless channels are last."""
    if len(n.shape) > 1 and n.channel_dim() != 1:
        return None  # channels last: the per-channel factor varies along a "spatial" dim
    return ins[0]


# -- rescaling --------------------------------------------------------------------------------
def _free_bn(n: Node) -> bool:
    return n.attrs["kind"] == "batchnorm" and n.attrs["bn"].weight is not None


def _plain(n: Node) -> bool:
    """Weights read as stored: a derived weight (standardized, parametrized) would not
    scale with its parameters."""
    return "derived" not in n.attrs


def _scale_linear(model: nn.Module, node: Node, lam: Tensor) -> None:
    bn = node.attrs.get("bn")
    out_dim = 1 if node.attrs["kind"] == "conv_transpose" else 0
    scale_rows(writable(model, node.params["weight"]), lam, out_dim)
    if "bias" in node.params:
        scale_rows(writable(model, node.params["bias"]), lam, 0)
    if bn is not None:  # BN(lam z) with mean * lam and bias * lam is lam * BN(z)
        scale_rows(writable(model, bn.running_mean), lam, 0)
        if bn.bias is not None:
            scale_rows(writable(model, bn.bias), lam, 0)


def _scale_linear_bn(model: nn.Module, node: Node, lam: Tensor) -> None:
    bn = node.attrs.get("bn")  # s * lam and t * lam: lam * BN(z), the conv untouched
    if bn is None or bn.weight is None:
        _scale_linear(model, node, lam)
        return
    scale_rows(writable(model, bn.weight), lam, 0)
    if bn.bias is not None:
        scale_rows(writable(model, bn.bias), lam, 0)


def _scale_affine(model: nn.Module, node: Node, lam: Tensor) -> None:
    bn = node.attrs["bn"]  # standalone BN: y = s x + t, scale s (its weight) and t (its bias)
    scale_rows(writable(model, bn.weight), lam, 0)
    if bn.bias is not None:
        scale_rows(writable(model, bn.bias), lam, 0)


def _divide_linear(model: nn.Module, node: Node, factors: Tensor) -> None:
    w = writable(model, node.params["weight"])
    kind = node.attrs["kind"]
    if kind == "dense":
        f = factors.reshape(-1, factors.shape[-1])[0]
        w.div_(f.to(w.dtype).reshape(1, -1))
        return
    f = per_channel(factors)
    if kind == "conv_transpose":
        scale_rows(w, 1.0 / f, 0)
        return
    cin_g = w.shape[1]
    cout_g = w.shape[0] // node.attrs["groups"]
    group_of_out = torch.arange(w.shape[0]) // cout_g
    index = group_of_out[:, None] * cin_g + torch.arange(cin_g)[None, :]
    w.div_(f[index].to(w.dtype).reshape(*index.shape, *([1] * (w.dim() - 2))))


def _divide_affine(model: nn.Module, node: Node, factors: Tensor) -> None:
    f = per_channel(factors)  # standalone BN absorbs 1/lam: weight / lam, mean * lam
    scale_rows(writable(model, node.attrs["bn"].weight), 1.0 / f, 0)
    scale_rows(writable(model, node.attrs["bn"].running_mean), f, 0)


# -- coordinates ------------------------------------------------------------------------------
def _linear_slots(n: Node) -> list[Slot]:
    base, bn = ident(n.name), n.attrs.get("bn")
    out = [Slot(f"{base}_weight", n.name, "weight", n.params["weight"])]
    if bn is not None:
        out.append(Slot(f"{base}_bias", n.name, "bias", bn.bias or n.params.get("bias")))
    elif "bias" in n.params:
        out.append(Slot(f"{base}_bias", n.name, "bias", n.params["bias"]))
    return out


#: entries per block of `_Magnitude`'s backward (cache-sized: the block's four passes read
#: memory once)
_BLOCK = 1 << 16
#: up to this many entries, a weight without a folded BatchNorm takes its gradient in place
#: in two calls (per-call overhead dominates: an MLP's layers)
_SMALL = 1 << 20


def _blocked_backward(w: Tensor, g: Tensor, s: Tensor | None, want_s: bool,
                      into: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """``sgn(W) g |s|`` and ``sum(g |W|)`` per output channel (dim 0 of contiguous ``W``),
    a block of rows at a time: memory read once; written into ``into`` (which may be ``g``
    itself: each block of ``g`` is read before it is overwritten), else one fresh tensor."""
    n = w.shape[0]
    if into is not None and s is None and w.numel() <= _SMALL:  # few calls, one temporary
        return into.mul_(torch.sgn(w)), None
    gw = torch.empty_like(w) if into is None else into
    rows = max(1, _BLOCK // max(1, w[0].numel()))
    blocks = [t.reshape(n, -1).split(rows) for t in (gw, w, g.contiguous())]
    sums = w.new_empty(n) if want_s else None
    sum_blocks = sums.split(rows) if sums is not None else [None] * len(blocks[0])
    scales = s.abs().reshape(n, 1).split(rows) if s is not None else [None] * len(blocks[0])
    signs = w.new_empty(min(rows, n), w[0].numel()) if into is not None else None
    for block, wb, gb, sb, scale in zip(*blocks, sum_blocks, scales):
        if signs is None:
            torch.sgn(wb, out=block).mul_(gb)
        else:  # g * sgn(W) is sgn(W) * g bit for bit
            block.mul_(torch.sgn(wb, out=signs[:len(wb)]))
        if sb is not None:  # sum(sgn(W) g W) = sum(g |W|)
            torch.linalg.vecdot(block, wb, out=sb)
        if scale is not None:
            block.mul_(scale)
    return gw, sums


def _writable_like(t: Tensor | None, w: Tensor) -> bool:
    return t is not None and t.shape == w.shape and t.dtype == w.dtype \
        and t.device == w.device and t.is_contiguous()


class _Magnitude(torch.autograd.Function):
    """``|W| * |s|`` (``|W|`` when ``s`` is None; ``s`` shaped to broadcast along the output
    dim ``dim``) with autograd, written once each way.

    Autograd's own chain for ``power(w, 1).mul_(power(s, 1))`` clones ``|W|`` before the
    in-place multiply (it needs it for the gradient of ``s``) and, backward, writes four
    weight-sized temporaries (``g * |s|``, ``g * |W|``, ``sgn(W)``, their product): fresh
    memory, whose page faults cost more than the arithmetic. Here the forward writes the
    result once and saves nothing new (``W`` and ``s`` are alive anyway); the backward writes
    ``sgn(W) g |s|`` once and sums ``g |W|`` per channel for ``s``, block by block
    (`_blocked_backward`). Values are bit for bit those of the product, the gradient of ``W``
    too; that of ``s`` up to the order of the sum. A double backward takes plain autograd ops.

    ``out``: a runner's buffer (`fxpath.engine.runner.Runner.grad_magnitudes`): the forward
    writes into it and returns an alias of it (its version counter is the
    buffer's: a rewrite before the backward makes autograd raise); the path network is then
    the result's only reader, and the gradient it hands back is its own fresh tensor, which
    the backward turns into ``W``'s gradient in place (no weight-sized allocation either way).
    """

    @staticmethod
    def forward(ctx: Any, w: Tensor, s: Tensor | None, dim: int,
                out: Tensor | None = None) -> Tensor:
        ctx.dim = dim
        ctx.save_for_backward(w, s)
        ctx.owned = dim == 0 and w.dim() >= 2 and w.is_contiguous() and _writable_like(out, w)
        y = torch.abs(w, out=out) if ctx.owned else torch.abs(w)
        if s is not None:
            y.mul_(s.abs())
        return y.detach() if ctx.owned else y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        w, s = ctx.saved_tensors
        want_s = s is not None and ctx.needs_input_grad[1]
        if torch.is_grad_enabled() or ctx.dim != 0 or not w.is_contiguous() or w.dim() < 2:
            gw = torch.sgn(w) * g  # recorded (a double backward) or an unusual layout
            sums = (gw * w).sum([d for d in range(w.dim()) if d != ctx.dim]) if want_s \
                else None
            if s is not None:
                gw = gw * s.abs()
        else:  # in place into the network's own gradient tensor: all of its memory
            own = ctx.owned and not g.requires_grad and _writable_like(g, w) \
                and g.storage_offset() == 0 \
                and g.untyped_storage().nbytes() == g.numel() * g.element_size()
            gw, sums = _blocked_backward(w, g, s, want_s, g if own else None)
        gs = sums.reshape(s.shape) * torch.sgn(s) if sums is not None else None
        return (gw if ctx.needs_input_grad[0] else None), gs, None, None


def _magnitude(w: Tensor, s: Tensor | None, dim: int, q: float | None,
               out: Tensor | None) -> Tensor:
    """``|W|^q * |s|^q`` (``|W|^q`` when ``s`` is None), into ``out`` when it fits; through
    `_Magnitude` when autograd records it (q = 1; ``out`` then a buffer of the differentiable
    path, see there), else out of place (no clone)."""
    grad = torch.is_grad_enabled()
    recorded = grad and (w.requires_grad or (s is not None and s.requires_grad))
    if recorded and q == 1.0:
        return _Magnitude.apply(w, s, dim, out)
    weight = power(w, q, None if grad else out)  # a buffer is written under autograd only
    if s is None:                                # through `_Magnitude` (as an alias)
        return weight
    factor = power(s, q)
    # |W s|^q = |W|^q |s|^q: one pass over the weights, no signed temporary
    return weight * factor if recorded else weight.mul_(factor)


def _linear_lift(n: Node, fetch: Fetch, q: float | None, out: Tensor | None = None
                 ) -> list[Tensor]:
    w = fetch(n.params["weight"])
    c = fetch(n.params["bias"]) if "bias" in n.params else None
    bn: BatchNormRef | None = n.attrs.get("bn")
    out_dim = 1 if n.attrs["kind"] == "conv_transpose" else 0
    if bn is None:
        weight = power(w, q, out) if q is None else _magnitude(w, None, out_dim, q, out)
        return [weight] if c is None else [weight, power(channel_view(c, n), q)]
    s, t = bn_affine(bn, fetch)
    shape = [1] * w.dim()
    shape[out_dim] = -1
    bias = power(channel_view(t if c is None else t + c * s, n), q)
    if q is None:  # into ``out`` when it fits: a runner's buffer, reused from call to call
        if fits(out, w):
            return [torch.mul(w, s.reshape(shape), out=out), bias]
        return [w * s.reshape(shape), bias]
    return [_magnitude(w, s.reshape(shape), out_dim, q, out), bias]


def _linear_factored(n: Node, fetch: Fetch) -> list[Tensor | Factored]:
    """Signed coordinates; a BatchNorm-folded weight as ``W`` and ``s`` not multiplied out."""
    bn: BatchNormRef | None = n.attrs.get("bn")
    if bn is None:
        return _linear_lift(n, fetch, None)
    w = fetch(n.params["weight"])
    c = fetch(n.params["bias"]) if "bias" in n.params else None
    s, t = bn_affine(bn, fetch)
    shape = [1] * w.dim()
    shape[1 if n.attrs["kind"] == "conv_transpose" else 0] = -1
    return [Factored(w, s.reshape(shape)), channel_view(t if c is None else t + c * s, n)]


def _affine_slots(n: Node) -> list[Slot]:
    base = ident(n.name)
    if n.attrs["kind"] == "batchnorm":
        bn = n.attrs["bn"]
        return [Slot(f"{base}_scale", n.name, "scale", bn.weight),
                Slot(f"{base}_shift", n.name, "shift", bn.bias)]
    return [Slot(f"{base}_scale", n.name, "scale", n.params["weight"])]


def _affine_lift(n: Node, fetch: Fetch, q: float | None, out: Tensor | None = None
                 ) -> list[Tensor]:
    if n.attrs["kind"] == "batchnorm":
        s, t = bn_affine(n.attrs["bn"], fetch)
        return [power(channel_view(s, n), q), power(channel_view(t, n), q)]
    # prelu: the negative part's edge weight is -a
    return [power(channel_view(-fetch(n.params["weight"]), n), q)]


# -- definitions ------------------------------------------------------------------------------
_CONVS = When("kind", ("conv", "conv_transpose"))

LINEAR = register(Op(
    name="linear",
    doc="a parameterized linear map (conv, transposed conv, dense), optionally with a folded "
        "frozen BatchNorm `bn` scaling its output channels",
    attrs={"kind": Attr(one_of("conv", "conv_transpose", "dense")),
           "ndim": Attr(INT, _CONVS), "kernel": Attr(INTS, _CONVS),
           "stride": Attr(INTS, _CONVS), "dilation": Attr(INTS, _CONVS),
           "groups": Attr(INT, _CONVS),
           "padding": Attr(Check("tuple[int]|str", lambda v: INTS(v) or isinstance(v, str)),
                           _CONVS),
           "output_padding": Attr(INTS, When("kind", ("conv_transpose",))),
           "padding_mode": Attr(is_a(str), required=False),
           "pad": Attr(INTS, When("padding_mode", ("reflect", "replicate", "circular"))),
           "bn": Attr(is_a(BatchNormRef), required=False),
           "derived": Attr(is_a(tuple), required=False)},
    path_rule=_linear_path, interpret_rule=_linear_run, frame_rule=_linear_frame,
    rescale_rule=Rescaling("consumer (divides its input weights by lam) and producer (its "
                           "weights, bias and folded BatchNorm scale by lam, or its "
                           "BatchNorm's weight and bias), unless its weights are `derived` "
                           "(computed from parameters at run time)",
                           absorbs=_plain, divide=_divide_linear, produces=_plain,
                           scale=_scale_linear, scale_bn=_scale_linear_bn),
    slots_rule=Coordinates("`weight` (`W * s` with a folded BatchNorm), `bias` if any",
                           _linear_slots, _linear_lift, _linear_factored),
))

def _is_frame(v: object) -> bool:
    return isinstance(v, tuple) and all(isinstance(p, tuple) and len(p) == 2 and INTS(p)
                                        for p in v)


def _frame_conv_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """The conv on its compressed image (`fxpath.kernels.frame_conv`): ``|W|^q`` convolves the
    frame and a few interior rows per axis, read straight from a compact input; the output
    is stored compact (`fxpath.layout`); plus ``|b|^q``."""
    a = n.attrs
    size_in = e.shapes[n.inputs[0]][1:]
    cuts = compression(size_in, a["kernel"], a["stride"], a["padding"], a["dilation"],
                       a["frame"])
    in_idx, out_idx, out_layout = e.compressed(ins[0], cuts, size_in)
    geometry = (a["stride"], a["padding"], a["dilation"], a["groups"])

    def apply(x: fx.Node, w: fx.Node, name: str) -> fx.Node:
        return e.call(layout.compact_conv, x, w, *geometry, in_idx, out_idx, name=name)

    fused = (layout.compact_conv_metric, (*geometry, in_idx, out_idx))
    return _probed(e, _parameterized(e, n, ins[0], slots, apply, True, fused, out_layout),
                   n.name)


FRAME_CONV = register(Op(
    name="frame_conv",
    doc="a zero-padded conv whose path-network input is constant away from the border "
        "`frame` (per spatial axis, the widths (lo, hi) that vary): it runs on the compressed "
        "image (`passes.frame_convs`); in every other rule it is the `linear` conv it was",
    attrs={**{k: v for k, v in LINEAR.attrs.items()
              if k not in ("output_padding", "padding_mode", "pad")},
           "kind": Attr(one_of("conv")), "padding": Attr(INTS),
           "frame": Attr(Check("tuple[(int, int)]", _is_frame))},
    path_rule=_frame_conv_path, interpret_rule=_linear_run, frame_rule=_linear_frame,
    rescale_rule=LINEAR.rescale_rule, slots_rule=LINEAR.slots_rule, compact=True,
))

AFFINE = register(Op(
    name="affine",
    doc="a standalone per-channel affine map: a frozen BatchNorm that cannot be folded "
        "(`kind` batchnorm) or a PReLU's negative slope (`kind` prelu, parameter `weight`)",
    attrs={"kind": Attr(one_of("batchnorm", "prelu")),
           "bn": Attr(is_a(BatchNormRef), When("kind", ("batchnorm",))),
           "derived": Attr(is_a(tuple), required=False)},
    path_rule=_affine_path, interpret_rule=_affine_run, frame_rule=_affine_frame,
    rescale_rule=Rescaling("consumer and producer when a BatchNorm with a weight (it absorbs "
                           "1/lam in weight and mean); a PReLU slope stops it",
                           absorbs=_free_bn, divide=_divide_affine, produces=_free_bn,
                           scale=_scale_affine),
    slots_rule=Coordinates("BatchNorm: `scale` s and `shift` t; PReLU: `scale` -a",
                           _affine_slots, _affine_lift), compact=True,
))

#: the ops of parameterized linear maps (``frame_conv`` is a ``linear`` conv, compressed)
LINEAR_OPS = frozenset({LINEAR, FRAME_CONV})
