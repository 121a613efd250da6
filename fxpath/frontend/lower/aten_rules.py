"""The torch.export front end's rule table: what each ATen op becomes in the IR.

`RULES` is the one table from ATen op overload packets (``aten.conv2d``, ``aten.addmm``,
``aten.relu_``...) to rules; the graph reader (`fxpath.frontend.lower.aten_reader`) looks each
call up there and passes the rule the call's arguments by schema name. A rule calls the op
builders of `fxpath.frontend.lower.core`, which emit the IR that the fx front end
(`fxpath.frontend.lower.fx_rules`) emits for the same model; it declares the IR ops it can emit
(`fxpath.frontend.lower.rule.builds`). An op without a rule is refused with its reason in
`fxpath.frontend.refusals`. Adding an op: its definition in `fxpath.ops`, one rule here, one in
`fxpath.frontend.lower.fx_rules`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx

from fxpath.frontend.lower import core
from fxpath.frontend.lower.aten_reader import (
    AtenLowering,
    input_of,
    int_shape,
    location,
    meta_val,
    op_name,
    packet_name,
)
from fxpath.frontend.lower.core import Refuse, ntuple, scalar, spatial_rank
from fxpath.frontend.lower.rule import Rule, builds
from fxpath.frontend.refusals import PRODUCT
from fxpath.ir.graph import BatchNormRef
from fxpath.ops.pre_norm import AVGPOOL
from fxpath.ops.resample import ATEN_KERNELS

__all__ = ["RULES"]

aten = torch.ops.aten


# -- rules ------------------------------------------------------------------------------------
def _weights(lw: AtenLowering, a: dict[str, Any]) -> dict[str, str]:
    params = {"weight": lw.param_name(a["weight"], "weight")}
    if a.get("bias") is not None:
        params["bias"] = lw.param_name(a["bias"], "bias")
    return params


def _conv(transposed: bool | None) -> Rule:
    """``conv{1,2,3}d`` (False), ``conv_transpose{1,2,3}d`` (True), ``convolution`` (None)."""
    @builds("linear")
    def rule(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
        kernel = int_shape(meta_val(a["weight"]).shape[2:])
        core.conv(lw, n, lw.src(input_of(a)), _weights(lw, a),
                  transposed=bool(a["transposed"]) if transposed is None else transposed,
                  nd=len(kernel), kernel=kernel, stride=a["stride"], padding=a["padding"],
                  dilation=a["dilation"], groups=a["groups"],
                  output_padding=a.get("output_padding", 0))
    return rule


@builds("linear")
def _linear(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.dense(lw, n, lw.src(input_of(a)), _weights(lw, a))


@builds("linear")
def _matmul(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``mm``/``addmm``/``bmm``/``matmul`` of an activation and a transposed weight."""
    x = a["mat1"] if "mat1" in a else a["self"]
    w = a["mat2"] if "mat2" in a else a["other"]
    if lw.is_activation(x) and lw.is_activation(w):
        raise Refuse(PRODUCT)
    if not lw.is_activation(x):
        raise Refuse("a matrix product with the activation on the right (W @ x) is not "
                     "supported")
    params = {"weight": lw.dense_weight(w)}
    if "mat1" in a and a["self"] is not None:  # addmm(bias, x, W.T)
        if a.get("beta", 1) != 1 or a.get("alpha", 1) != 1:
            raise Refuse("addmm with beta or alpha other than 1")
        params["bias"] = lw.param_name(a["self"], "bias")
    out = int_shape(meta_val(n).shape[1:])
    if x in lw.folded:  # (B * prod(lead), in) @ W.T: a dense layer on the last dim
        src, lead = lw.folded[x]
        name = core.dense(lw, n, src, params, shape=(*lead, *out))
        del lw.value[n]
        lw.folded[n] = (name, lead)
        return
    core.dense(lw, n, lw.src(x), params)


def _batch_norm_ref(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> BatchNormRef:
    stats = None if a["running_mean"] is None else lw.param_name(a["running_mean"],
                                                                 "running_mean")
    return core.batchnorm_ref(bool(a.get("training")), stats,
                              lw.param_name(a["running_var"], "running_var"), a["eps"],
                              lw.param_name(a["weight"], "weight"),
                              lw.param_name(a["bias"], "bias"), location(n))


@builds("batchnorm")
def _batch_norm(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.batchnorm(lw, n, lw.src(input_of(a)), _batch_norm_ref(lw, n, a))


def _first_result(emit: Callable[[fx.Node], Any], rest: str) -> Callable[[fx.Node, int], None]:
    """A getitem handler: result 0 emits; the others (indices, statistics) only if unused."""
    def handler(item: fx.Node, k: int) -> None:
        if k == 0:
            emit(item)
        elif item.users:
            raise Refuse(rest)
    return handler


@builds("batchnorm")
def _batch_norm_tuple(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``_native_batch_norm_legit_no_training`` / ``native_batch_norm``: (out, stats...)."""
    bn, x = _batch_norm_ref(lw, n, a), lw.src(input_of(a))
    lw.multi[n] = _first_result(lambda item: core.batchnorm(lw, item, x, bn),
                                "uses the batch statistics a BatchNorm returns")


@builds("relu")
def _relu(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.relu(lw, n, lw.src(input_of(a)))


@builds("relu6", "hardtanh")
def _hardtanh(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``hardtanh``, and ``relu6`` (no ``min_val``/``max_val``: 0 and 6)."""
    lo, hi = float(a.get("min_val", 0.0)), float(a.get("max_val", 6.0))
    if (lo, hi) == (0.0, 6.0):
        core.relu6(lw, n, lw.src(input_of(a)))
    else:
        core.hardtanh(lw, n, lw.src(input_of(a)), lo, hi)


@builds("relu", "hardtanh")
def _clamp(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.clamp(lw, n, lw.src(input_of(a)), a.get("min"), a.get("max"))


@builds("leaky_relu")
def _leaky(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.leaky_relu(lw, n, lw.src(input_of(a)), a["negative_slope"])


@builds("prelu")
def _prelu(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.prelu(lw, n, lw.src(input_of(a)), lw.param_name(a["weight"], "slope"))


def _pool_args(a: dict[str, Any], op: str) -> dict[str, Any]:
    extra = {}
    if op == AVGPOOL.name:
        extra = {"count_include_pad": bool(a["count_include_pad"]),
                 "divisor_override": a.get("divisor_override")}
    return dict(kernel=a["kernel_size"], stride=a["stride"], padding=a["padding"],
                dilation=a.get("dilation", 1), ceil_mode=a["ceil_mode"], **extra)


def _pool(op: str) -> Rule:
    @builds(op)
    def rule(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
        core.pool(lw, n, lw.src(input_of(a)), op, spatial_rank(packet_name(n.target)),
                  **_pool_args(a, op))
    return rule


@builds("maxpool")
def _max_pool_indices(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    x, nd = lw.src(input_of(a)), spatial_rank(packet_name(n.target))
    shape = lw.per_sample(meta_val(n)[0])
    core.pool_rank(len(shape) - 1, nd)  # refuse now, not at the getitem
    lw.multi[n] = _first_result(lambda item: core.pool(lw, item, x, "maxpool", nd,
                                                       **_pool_args(a, "maxpool")),
                                "max-pooling with return_indices is not supported")


def _adaptive(op: str) -> Rule:
    @builds(op)
    def rule(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
        x, nd = lw.src(input_of(a)), spatial_rank(packet_name(n.target))
        if isinstance(meta_val(n), torch.Tensor):
            core.adaptive_pool(lw, n, x, op, nd)
            return
        core.pool_rank(len(lw.per_sample(meta_val(n)[0])) - 1, nd)  # adaptive max: (out, indices)
        lw.multi[n] = _first_result(lambda item: core.adaptive_pool(lw, item, x, op, nd),
                                    "adaptive max-pooling with return_indices is not supported")
    return rule


def _mean(reduce: str) -> Rule:
    @builds("mean")
    def rule(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
        x = input_of(a)
        ndim = meta_val(x).dim()
        dim = a.get("dim")
        dims = tuple(range(ndim)) if dim in (None, [], ()) else ntuple(dim, 1)
        core.mean(lw, n, lw.src(x), dims, ndim, bool(a.get("keepdim")), reduce)
    return rule


def _add(sign: float) -> Rule:
    @builds("add", "scale")
    def rule(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
        x, y, alpha = a["self"], a["other"], a.get("alpha", 1)
        if lw.is_activation(x) and scalar(y):
            core.add(lw, n, lw.src(x), y, sign, alpha)
        elif lw.is_activation(x) and lw.is_activation(y):
            core.add(lw, n, lw.src(x), lw.src(y), sign, alpha)
        elif sign > 0 and alpha == 1 and lw.is_activation(x) and lw.fuse_bias(n, x, y):
            return
        elif lw.is_activation(x) and lw.param_ref(y) is not None:
            core.add(lw, n, lw.src(x), lw.param_ref(y), sign, alpha)
        elif lw.is_activation(y) and lw.param_ref(x) is not None:
            core.add(lw, n, lw.param_ref(x), lw.src(y), sign, alpha)
        else:
            lw.src(y if lw.is_activation(x) else x)
            raise Refuse("adds a tensor that is not an activation (e.g. a parameter)")
    return rule


@builds("add")
def _rsub(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``other - alpha * self`` (``2 - x``)."""
    if not scalar(a["other"]):
        raise Refuse("subtracts an activation from a tensor that is not an activation")
    core.add(lw, n, a["other"], lw.src(a["self"]), -1.0, a.get("alpha", 1))


@builds("add", "scale")
def _mul(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.multiply(lw, n, lw.operand(a["self"]), lw.operand(a["other"]))


@builds("add")
def _div(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    if a.get("rounding_mode") is not None:
        raise Refuse(f"division with rounding_mode={a['rounding_mode']!r} is not linear")
    core.divide(lw, n, lw.operand(a["self"]), lw.operand(a["other"]))


@builds("add")
def _neg(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.add_scaled(lw, n, lw.src(input_of(a)), -1.0)


@builds("identity")
def _identity(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    """clone, contiguous, alias, detach, eval-mode dropout, same-dtype copies."""
    x = input_of(a)
    out = meta_val(n)
    core.identity(lw, n, lw.src(x), training=a.get("train") is True,
                  dtypes=(meta_val(x).dtype, out.dtype if isinstance(out, torch.Tensor) else None))


@builds("identity")
def _native_dropout(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    if a.get("train") is not False:
        raise Refuse("dropout in training mode is random; call model.eval() first")
    x = lw.src(input_of(a))
    lw.multi[n] = _first_result(lambda item: core.identity(lw, item, x), "uses the dropout mask")


def _numel(shape: Sequence[int]) -> int:
    total = 1
    for s in shape:
        total *= int(s)
    return total


def _fold_lead(in_shape: tuple[int, ...], out_shape: tuple[int, ...],
               batch: int) -> tuple[int, ...] | None:
    """``lead`` when ``out_shape`` is ``in_shape`` with ``(batch, *lead)`` merged, else None."""
    for j in range(1, len(in_shape)):
        if (batch * _numel(in_shape[1:j + 1]), *in_shape[j + 1:]) == out_shape:
            return in_shape[1:j + 1]
    return None


@builds("reshape")
def _reshape(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    """view/reshape/flatten/squeeze/unsqueeze...: row-major re-indexing."""
    x = input_of(a)
    out = int_shape(meta_val(n).shape)
    if x in lw.folded:  # (B * prod(lead), ...) back to (B, ...)
        src, _lead = lw.folded[x]
        shape = lw.per_sample(meta_val(n))
        if shape == next(m.shape for m in reversed(lw.nodes) if m.name == src):
            lw.value[n] = src
        else:
            lw.emit(n, "reshape", (src,), {"fn": "view"}, shape=shape)
        return
    in_shape = int_shape(meta_val(x).shape)
    if out == in_shape:
        lw.alias(n, x)
        return
    lead = _fold_lead(in_shape, out, lw.batch) if out[:1] != (lw.batch,) else None
    if lead is not None and x in lw.value:
        lw.folded[n] = (lw.value[x], lead)
        return
    lw.emit(n, "reshape", (lw.src(x),), {"fn": "view"})


@builds("reshape")
def _permute(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    x = input_of(a)
    ndim = meta_val(x).dim()
    perm = list(range(ndim))
    if "dims" in a:
        perm = [d % ndim for d in a["dims"]]
    elif "dim0" in a:
        d0, d1 = a["dim0"] % ndim, a["dim1"] % ndim
        perm[d0], perm[d1] = perm[d1], perm[d0]
    else:  # t / numpy_T
        perm = perm[::-1]
    if not core.permute(lw, n, lw.src(x), perm):
        lw.alias(n, x)


@builds()
def _expand(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``expand``/``as_strided`` that change nothing (decompositions emit them)."""
    x = input_of(a)
    same = int_shape(meta_val(n).shape) == int_shape(meta_val(x).shape)
    if "stride" in a and same:  # as_strided: same strides wherever the size is not 1
        xv = meta_val(x)
        same = (a.get("storage_offset") in (None, xv.storage_offset()) and all(
            s == 1 or st == xst for s, st, xst in zip(xv.shape, a["stride"], xv.stride())))
    if not same:
        raise Refuse(f"{packet_name(n.target)} of an activation to another shape or layout "
                     "(broadcasting) is not supported")
    lw.alias(n, x)


def _index(lw: AtenLowering, n: fx.Node, x: Any, d: int, idx: int | slice, what: str = "") -> None:
    """``x[:, ..., idx]`` with ``idx`` at dimension ``d`` >= 1 (a reshape ``getitem``)."""
    core.getitem(lw, n, lw.src(x), (*(slice(None),) * d, idx), what)


@builds("reshape")
def _slice(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    x = input_of(a)
    xv = meta_val(x)
    d = a["dim"] % xv.dim()
    if "length" in a:  # narrow
        a = {**a, "end": a["start"] + a["length"], "step": 1}
    size = int(xv.shape[d])
    start, stop, step = slice(a["start"], a["end"], a["step"]).indices(size)
    if (start, stop, step) == (0, size, 1):
        lw.alias(n, x)
        return
    if d == 0:
        raise Refuse("slices the batch dimension; fxpath needs per-sample layers")
    # Python's spelling: ``x[:, :4]`` is slice(None, 4, None), as the fx front end has it
    _index(lw, n, x, d, slice(start or None, None if stop == size else stop,
                              None if step == 1 else step))


@builds("reshape")
def _select(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    x = input_of(a)
    xv = meta_val(x)
    d = a["dim"] % xv.dim()
    if d == 0:
        raise Refuse("selects one sample of the batch; fxpath needs per-sample layers")
    _index(lw, n, x, d, a["index"] % int(xv.shape[d]))


@builds("reshape")
def _split(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    """split/chunk/tensor_split/unbind: each used result is a slice (an index for unbind)."""
    x = input_of(a)
    xv = meta_val(x)
    d = a.get("dim", 0) % xv.dim()
    if d == 0:
        raise Refuse(f"{packet_name(n.target)} along the batch dimension separates the "
                     "samples of a batch; fxpath needs per-sample layers")
    unbind = packet_name(n.target) == "unbind"
    starts = [0]
    for r in meta_val(n):
        starts.append(starts[-1] + (1 if unbind else int(r.shape[d])))

    def handler(item: fx.Node, k: int) -> None:
        idx = k if unbind else slice(starts[k], starts[k + 1])
        _index(lw, item, x, d, idx, f"{op_name(n)}(...)[{k}]")
    lw.src(x)
    lw.multi[n] = handler


@builds("resample", "adaptive_avgpool")
def _resample(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``upsample_*`` kernels (``.vec``: the scale factors as a list; the default overload:
    one scale per axis), as `core.resample` takes them."""
    mode, antialias = ATEN_KERNELS[packet_name(n.target)]
    x = input_of(a)
    in_shape = lw.per_sample(meta_val(x))
    nd = len(in_shape) - 1
    if "scale_factors" in a:
        factors = a["scale_factors"]
        scales = (None,) * nd if factors is None else tuple(factors)
    else:
        scales = tuple(v for k, v in a.items() if k.startswith("scales"))
    core.resample(lw, n, lw.src(x), mode, in_shape, a.get("align_corners", False), scales,
                  antialias)


def _pixel_shuffle(inverse: bool) -> Rule:
    @builds("reshape")
    def rule(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
        x = input_of(a)
        factor = a["downscale_factor" if inverse else "upscale_factor"]
        core.pixel_shuffle(lw, n, lw.src(x), lw.per_sample(meta_val(x)), factor, inverse)
    return rule


@builds("concat")
def _cat(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.cat(lw, n, [lw.src(t) for t in a["tensors"]], a["dim"], meta_val(n).dim())


def _pad(mode: str | None) -> Rule:
    @builds("reshape")
    def rule(lw: AtenLowering, n: fx.Node, a: dict[str, Any]) -> None:
        core.pad(lw, n, lw.src(input_of(a)), a["pad"] if "pad" in a else a["padding"],
                 mode or a.get("mode", "constant"), a.get("value"))
    return rule


def _by_packet(names: dict[Rule, tuple[str, ...]]) -> dict[Any, Rule]:
    """Each rule under the ATen op overload packets it lowers (names this torch lacks are
    skipped)."""
    return {getattr(aten, name): rule for rule, packets in names.items() for name in packets
            if hasattr(aten, name)}


#: The rule of each ATen op overload packet (written as each rule with the packets it lowers).
RULES: dict[Any, Rule] = _by_packet({
    _conv(False): ("conv1d", "conv2d", "conv3d"),
    _conv(True): ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"),
    _conv(None): ("convolution", "_convolution"),
    _linear: ("linear",),
    _matmul: ("mm", "addmm", "bmm", "matmul"),
    _batch_norm: ("batch_norm",),
    _batch_norm_tuple: ("_native_batch_norm_legit_no_training", "native_batch_norm"),
    _relu: ("relu", "relu_"),
    _hardtanh: ("hardtanh", "hardtanh_", "relu6", "relu6_"),
    _clamp: ("clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "clip"),
    _leaky: ("leaky_relu", "leaky_relu_"),
    _prelu: ("prelu", "_prelu_kernel"),
    _pool("maxpool"): ("max_pool1d", "max_pool2d", "max_pool3d"),
    _max_pool_indices: ("max_pool1d_with_indices", "max_pool2d_with_indices",
                        "max_pool3d_with_indices"),
    _pool("avgpool"): ("avg_pool1d", "avg_pool2d", "avg_pool3d"),
    _adaptive("adaptive_avgpool"): ("adaptive_avg_pool1d", "adaptive_avg_pool2d",
                                    "adaptive_avg_pool3d", "_adaptive_avg_pool2d",
                                    "_adaptive_avg_pool3d"),
    _adaptive("adaptive_maxpool"): ("adaptive_max_pool1d", "adaptive_max_pool2d",
                                    "adaptive_max_pool3d"),
    _mean("mean"): ("mean",),
    _mean("sum"): ("sum",),
    _add(1.0): ("add", "add_"),
    _add(-1.0): ("sub", "sub_"),
    _rsub: ("rsub",),
    _mul: ("mul", "mul_"),
    _div: ("div", "div_"),
    _neg: ("neg", "neg_"),
    _identity: ("clone", "contiguous", "alias", "detach", "dropout", "feature_dropout",
                "alpha_dropout", "feature_alpha_dropout", "_to_copy", "to", "type_as",
                "lift_fresh_copy"),
    _native_dropout: ("native_dropout",),
    _reshape: ("view", "_unsafe_view", "reshape", "flatten", "unflatten", "squeeze",
               "unsqueeze", "view_as", "reshape_as"),
    _permute: ("permute", "transpose", "t", "numpy_T"),
    _expand: ("expand", "as_strided"),
    _slice: ("slice", "narrow"),
    _select: ("select",),
    _split: ("split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "chunk",
             "tensor_split", "unbind"),
    _cat: ("cat", "concat", "concatenate"),
    _pad(None): ("pad", "constant_pad_nd"),
    _pad("reflect"): ("reflection_pad1d", "reflection_pad2d", "reflection_pad3d"),
    _pad("replicate"): ("replication_pad1d", "replication_pad2d", "replication_pad3d"),
    _pad("circular"): ("_pad_circular",),
    _resample: tuple(ATEN_KERNELS),
    _pixel_shuffle(False): ("pixel_shuffle",),
    _pixel_shuffle(True): ("pixel_unshuffle",),
})
