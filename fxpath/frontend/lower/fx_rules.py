"""The torch.fx front end's rule table: what each module type, function and method becomes.

`RULES` is the one table from the targets of a traced fx graph (torch.nn module types,
functions such as ``torch.cat`` or ``F.relu``, Tensor method names) to rules; the graph reader
(`fxpath.frontend.lower.fx_reader`) looks each call up there. A rule parses the call's arguments
into plain values (IR names of the input activations, state_dict names of parameters, ints and
tuples) and calls the op builder of `fxpath.frontend.lower.core` that emits the IR node; it
declares the IR ops it can emit (`fxpath.frontend.lower.rule.builds`). Rules read static
attributes and parameter *names*, never parameter values: the IR is a description of the
network, the parameters stay live in the model.

A target without a rule is refused with its reason in `fxpath.frontend.refusals`; so is a call
whose rule fails on a form of arguments it does not handle (the exception is kept in
``attrs["error"]`` and chained to the `UnsupportedModelError`). Adding an op: its definition in
`fxpath.ops`, one rule here, one in `fxpath.frontend.lower.aten_rules`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from fxpath.frontend.lower import core
from fxpath.frontend.lower.core import Refuse, ntuple, spatial_rank
from fxpath.frontend.lower.fx_reader import (
    FxLowering,
    describe,
    fn_name,
    is_tensor,
    module_input,
    module_nd,
    per_sample,
)
from fxpath.frontend.lower.rule import Rule, builds
from fxpath.frontend.tracer import where
from fxpath.ops.pre_norm import AVGPOOL, MAXPOOL

__all__ = ["RULES"]

_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                     nn.AlphaDropout, nn.FeatureAlphaDropout)
_IDENTITY_METHODS = frozenset({"contiguous", "clone", "detach", "float", "double", "to", "type_as",
                               "requires_grad_"})
_RESHAPE_METHODS = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten",
                              "view_as", "reshape_as"})
_RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
                      torch.unflatten)
#: Ops returning several tensors that are exact re-indexings of their input
#: (`FxLowering.record_pieces`).
_MULTI_RESULT_OPS = ("split", "chunk", "tensor_split", "unbind")


# -- module rules -----------------------------------------------------------------------------
def _weights(n: fx.Node, m: nn.Module) -> dict[str, str]:
    params = {"weight": f"{n.target}.weight"}
    if getattr(m, "bias", None) is not None:
        params["bias"] = f"{n.target}.bias"
    return params


def _output_size_padding(n: fx.Node, m: nn.Module) -> tuple[int, ...]:
    """``ConvTranspose(x, output_size)``: the output padding that reaches the output size."""
    kwargs = dict(n.kwargs)
    kwargs.pop("input", None)
    if len(n.args) > 2 or set(kwargs) - {"output_size"}:
        raise Refuse("ConvTranspose called with other arguments than an input and output_size")
    x = n.args[0] if n.args else n.kwargs["input"]
    return core.transposed_output_padding(
        tuple(x.meta["val"].shape[2:]), tuple(n.meta["val"].shape[2:]), m.kernel_size,
        m.stride, m.padding, m.dilation)


@builds("linear")
def _conv(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    output_padding = getattr(m, "output_padding", 0)
    with_size = transposed and bool(len(n.args) > 1 or set(n.kwargs) - {"input"})
    if with_size:
        output_padding = _output_size_padding(n, m)
    core.conv(lw, n, lw.src(module_input(n, extra_ok=with_size)), _weights(n, m),
              transposed=transposed, nd=len(m.kernel_size), kernel=m.kernel_size,
              stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
              output_padding=output_padding,
              padding_mode=getattr(m, "padding_mode", "zeros"),
              pad=getattr(m, "_reversed_padding_repeated_twice", ()), what=type(m).__name__)


@builds("linear")
def _dense(lw: FxLowering, n: fx.Node, m: nn.Linear) -> None:
    core.dense(lw, n, lw.src(module_input(n)), _weights(n, m), "Linear")


@builds("batchnorm")
def _batchnorm(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
    p = f"{n.target}."
    bn = core.batchnorm_ref(m.training, None if m.running_mean is None else f"{p}running_mean",
                            f"{p}running_var", m.eps, f"{p}weight" if m.weight is not None
                            else None, f"{p}bias" if m.bias is not None else None, where(n))
    core.batchnorm(lw, n, lw.src(module_input(n)), bn, type(m).__name__)


def _simple(build: Callable, op: str, *fields: str) -> Rule:
    """A module rule calling ``build(lw, n, x, *module fields)``, which emits ``op``."""
    @builds(op)
    def rule(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
        build(lw, n, lw.src(module_input(n)), *(getattr(m, f) for f in fields),
              what=type(m).__name__)
    return rule


@builds("prelu")
def _prelu(lw: FxLowering, n: fx.Node, m: nn.PReLU) -> None:
    core.prelu(lw, n, lw.src(module_input(n)), f"{n.target}.weight", "PReLU")


@builds("maxpool")
def _maxpool(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
    if m.return_indices:
        raise Refuse("max-pooling with return_indices is not supported")
    core.pool(lw, n, lw.src(module_input(n)), "maxpool", module_nd(m), m.kernel_size,
              m.stride, m.padding, m.dilation, m.ceil_mode, type(m).__name__)


@builds("avgpool")
def _avgpool(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
    core.pool(lw, n, lw.src(module_input(n)), "avgpool", module_nd(m), m.kernel_size,
              m.stride, m.padding, 1, m.ceil_mode, type(m).__name__,
              count_include_pad=m.count_include_pad,
              divisor_override=getattr(m, "divisor_override", None))


def _adaptive(op: str) -> Rule:
    @builds(op)
    def rule(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
        if getattr(m, "return_indices", False):
            raise Refuse("adaptive max-pooling with return_indices is not supported")
        core.adaptive_pool(lw, n, lw.src(module_input(n)), op, module_nd(m),
                           type(m).__name__)
    return rule


@builds("identity")
def _identity_module(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
    x = module_input(n, extra_ok=isinstance(m, nn.Identity))
    core.identity(lw, n, lw.src(x), what=type(m).__name__)


@builds("reshape")
def _reshape_module(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
    lw.emit(n, "reshape", (lw.src(module_input(n)),), {"fn": "view"}, {}, type(m).__name__)


_PAD_MODES = {nn.ReflectionPad1d: "reflect", nn.ReflectionPad2d: "reflect",
              nn.ReflectionPad3d: "reflect",
              nn.ReplicationPad1d: "replicate", nn.ReplicationPad2d: "replicate",
              nn.ReplicationPad3d: "replicate",
              nn.CircularPad1d: "circular", nn.CircularPad2d: "circular",
              nn.CircularPad3d: "circular"}


@builds("reshape")
def _pad_module(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
    core.pad(lw, n, lw.src(module_input(n)), m.padding, _PAD_MODES.get(type(m), "constant"),
             getattr(m, "value", None), type(m).__name__)


def _interpolate(lw: FxLowering, n: fx.Node, x: Any, size: Any, scale_factor: Any, mode: Any,
                 align_corners: Any, recompute_scale_factor: Any, antialias: Any,
                 what: str) -> None:
    """``F.interpolate``'s arguments as its kernel receives them (`core.resample`): the scale
    factors reach the kernel unless ``recompute_scale_factor`` (or ``size``) is given."""
    if not is_tensor(x):
        raise Refuse("interpolates a value that is not a tensor")
    in_shape = per_sample(x.meta["val"])
    nd = len(in_shape) - 1
    given = scale_factor is not None and not recompute_scale_factor and size is None
    scales = ntuple(scale_factor, nd) if given else (None,) * nd
    core.resample(lw, n, lw.src(x), mode, in_shape, align_corners, scales, antialias, what)


@builds("resample", "adaptive_avgpool")
def _upsample(lw: FxLowering, n: fx.Node, m: nn.Upsample) -> None:
    _interpolate(lw, n, module_input(n), m.size, m.scale_factor, m.mode, m.align_corners,
                 m.recompute_scale_factor, False, type(m).__name__)


@builds("reshape")
def _pixel_shuffle_module(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
    inverse = isinstance(m, nn.PixelUnshuffle)
    x = module_input(n)
    core.pixel_shuffle(lw, n, lw.src(x), per_sample(x.meta["val"]),
                       m.downscale_factor if inverse else m.upscale_factor, inverse,
                       type(m).__name__)


# -- function and method rules ----------------------------------------------------------------
def _arith(build: Callable, *ops: str, **fixed: Any) -> Rule:
    """``a op b`` rules: activations by IR name, numbers as numbers, other tensors as nodes
    (``build`` emits ``ops``)."""
    @builds(*ops)
    def rule(lw: FxLowering, n: fx.Node, a: Any, b: Any, alpha: float = 1.0, **_: Any) -> None:
        x, y = lw.operand(a), lw.operand(b)
        if build is not core.add:
            build(lw, n, x, y, what=fn_name(n.target))
            return
        for v in (x, y):
            if isinstance(v, fx.Node):
                lw.src(v)  # a tensor computed from parameters or constants: says which
        core.add(lw, n, x, y, what=fn_name(n.target), alpha=alpha, **fixed)
    return rule


@builds("add")
def _neg(lw: FxLowering, n: fx.Node, a: Any) -> None:
    core.add_scaled(lw, n, lw.src(a), -1.0, "neg")


def _one_input(build: Callable, op: str, *names: str, **defaults: Any) -> Rule:
    """``f(x, *names)`` rules (``relu``, ``leaky_relu(x, slope)``...); ``build`` emits ``op``."""
    @builds(op)
    def rule(lw: FxLowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
        values = dict(defaults) | dict(zip(names, args))
        values |= {k: v for k, v in kwargs.items() if k in names}
        build(lw, n, lw.src(x), *(values[k] for k in names), what=fn_name(n.target))
    return rule


@builds("relu", "hardtanh")
def _clamp(lw: FxLowering, n: fx.Node, x: Any, min: Any = None, max: Any = None) -> None:  # noqa: A002
    core.clamp(lw, n, lw.src(x), min, max, "clamp")


@builds("prelu")
def _prelu_fn(lw: FxLowering, n: fx.Node, x: Any, weight: Any) -> None:
    core.prelu(lw, n, lw.src(x), lw.param_name(weight, "slope"), "prelu")


@builds("identity")
def _identity_fn(lw: FxLowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
    training = kwargs.get("training") is True or (len(args) > 1 and args[1] is True)
    src = x.meta.get("val") if isinstance(x, fx.Node) else None
    dtypes = (src.dtype if isinstance(src, torch.Tensor) else None, n.meta["val"].dtype)
    core.identity(lw, n, lw.src(x), training=training, dtypes=dtypes, what=fn_name(n.target))


@builds("reshape")
def _reshape(lw: FxLowering, n: fx.Node, x: Any, *_: Any, **__: Any) -> None:
    lw.emit(n, "reshape", (lw.src(x),), {"fn": "view"}, what=fn_name(n.target))


@builds("reshape")
def _permute(lw: FxLowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
    ndim = x.meta["val"].dim()
    perm = list(range(ndim))
    name = n.target if isinstance(n.target, str) else fn_name(n.target)
    if name in ("transpose", "swapaxes"):
        d0, d1 = (args[0], args[1]) if len(args) >= 2 else (kwargs["dim0"], kwargs["dim1"])
        d0, d1 = d0 % ndim, d1 % ndim
        perm[d0], perm[d1] = perm[d1], perm[d0]
    elif name == "permute":
        dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        perm = [d % ndim for d in (dims or kwargs["dims"])]
    if not core.permute(lw, n, lw.src(x), perm, name):
        lw.emit(n, "reshape", (lw.src(x),), {"fn": "permute", "dims": tuple(perm)}, what=name)


@builds("concat", "reshape")
def _cat(lw: FxLowering, n: fx.Node, tensors: Any, dim: int = 0, **kwargs: Any) -> None:
    dim = kwargs.get("axis", dim)
    if isinstance(tensors, fx.Node) and tensors in lw.pieces:
        # torch.cat(torch.split(x, 1, dim=1), dim=3): the tensors are one node's sequence
        # value; each piece becomes its own re-indexing node
        srcs = tuple(lw.piece(tensors, k) for k in range(len(lw.pieces[tensors])))
    elif isinstance(tensors, fx.Node):
        raise Refuse(f"concatenates the tensors of {tensors.name} = "
                     f"{describe(lw.gm, tensors)}(...) at {where(tensors)}, a sequence "
                     "value fxpath could not lower (see its own entry)")
    elif isinstance(tensors, (tuple, list)):
        srcs = tuple(lw.src(t) for t in tensors)
    else:
        raise Refuse(f"expected a list of tensors, got {type(tensors).__name__}")
    core.cat(lw, n, srcs, dim, n.meta["val"].dim(), "cat")


@builds("reshape")
def _getitem(lw: FxLowering, n: fx.Node, x: Any, index: Any) -> None:
    if isinstance(x, fx.Node) and x in lw.pieces:
        lw.select(n, x, index)
        return
    if isinstance(x, fx.Node) and x in lw.value and isinstance(x.meta.get("val"), (tuple, list)):
        raise Refuse(f"selects a result of {x.name} = {describe(lw.gm, x)}(...) at {where(x)}, "
                     "a sequence value fxpath could not lower (see its own entry)")
    if not is_tensor(x):
        raise Refuse("indexes a non-tensor value produced from activations")
    core.getitem(lw, n, lw.src(x), index if isinstance(index, tuple) else (index,), "getitem")


# keyword of the sizes / sections argument of the multi-result ops (torch.* and Tensor.*)
_SIZE_KEYWORDS = ("split_size_or_sections", "split_size", "chunks", "indices_or_sections",
                  "sections", "indices", "tensor_indices_or_sections")


def _multi_result(op: str) -> Rule:
    """``split`` / ``chunk`` / ``tensor_split`` / ``unbind``: record the pieces, emit nothing
    (each piece used becomes a ``reshape``: `FxLowering.select`, `FxLowering.piece`)."""
    @builds("reshape", pieces=True)
    def rule(lw: FxLowering, n: fx.Node, *args: Any, **kwargs: Any) -> None:
        rest, sizes = list(args), None
        x = rest.pop(0) if rest else kwargs.pop("tensor", None)  # torch.split(tensor=x, ...)
        if op != "unbind":
            key = next((k for k in _SIZE_KEYWORDS if k in kwargs), None)
            if not rest and key is None:
                raise Refuse(f"{op} without sizes or sections")
            sizes = rest.pop(0) if rest else kwargs.pop(key)
        dim = rest.pop(0) if rest else kwargs.pop("dim", 0)
        if rest or kwargs:
            raise Refuse(f"{op} called with unexpected arguments {rest or sorted(kwargs)}")
        lw.record_pieces(n, op, x, sizes, dim)
    return rule


def _mean(reduce: str) -> Rule:
    @builds("mean")
    def rule(lw: FxLowering, n: fx.Node, x: Any, dim: Any = None, keepdim: bool = False,
             *_: Any, **kwargs: Any) -> None:
        ndim = x.meta["val"].dim()
        dims = tuple(range(1, ndim)) if dim is None else ntuple(dim, 1)
        core.mean(lw, n, lw.src(x), dims, ndim, keepdim, reduce, reduce)
    return rule


_POOL_ARGS = {"maxpool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                          "return_indices"),
              "avgpool": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                          "divisor_override")}


def _pool_fn(op: str) -> Rule:
    @builds(op)
    def rule(lw: FxLowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
        a = dict(zip(_POOL_ARGS[op], args)) | kwargs
        name = fn_name(n.target)
        extra = {}
        if op == MAXPOOL.name and a.get("return_indices"):
            raise Refuse("max-pooling with return_indices is not supported")
        if op == AVGPOOL.name:
            extra = {"count_include_pad": a.get("count_include_pad", True),
                     "divisor_override": a.get("divisor_override")}
        core.pool(lw, n, lw.src(x), op, spatial_rank(name), a["kernel_size"], a.get("stride"),
                  a.get("padding", 0), a.get("dilation", 1), a.get("ceil_mode", False), name,
                  **extra)
    return rule


def _adaptive_fn(op: str) -> Rule:
    @builds(op)
    def rule(lw: FxLowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("return_indices") or (len(args) > 1 and args[1]):
            raise Refuse("adaptive max-pooling with return_indices is not supported")
        name = fn_name(n.target)
        core.adaptive_pool(lw, n, lw.src(x), op, spatial_rank(name), name)
    return rule


_CONV_ARGS = ("stride", "padding", "dilation", "groups")
_CONV_T_ARGS = ("stride", "padding", "output_padding", "groups", "dilation")


def _conv_fn(kind: str) -> Rule:
    @builds("linear")
    def rule(lw: FxLowering, n: fx.Node, x: Any, weight: Any, bias: Any = None, *args: Any,
             **kwargs: Any) -> None:
        params = {"weight": lw.param_name(weight, "weight")}
        if bias is not None:
            params["bias"] = lw.param_name(bias, "bias")
        if kind == "dense":
            core.dense(lw, n, lw.src(x), params, fn_name(n.target))
            return
        transposed = kind == "conv_transpose"
        a = dict(zip(_CONV_T_ARGS if transposed else _CONV_ARGS, args)) | kwargs
        kernel = tuple(weight.meta["val"].shape[2:])
        core.conv(lw, n, lw.src(x), params, transposed=transposed, nd=len(kernel),
                  kernel=kernel, stride=a.get("stride", 1), padding=a.get("padding", 0),
                  dilation=a.get("dilation", 1), groups=a.get("groups", 1),
                  output_padding=a.get("output_padding", 0), what=fn_name(n.target))
    return rule


@builds("batchnorm")
def _batch_norm_fn(lw: FxLowering, n: fx.Node, x: Any, running_mean: Any, running_var: Any,
                   weight: Any = None, bias: Any = None, training: bool = False,
                   momentum: float = 0.1, eps: float = 1e-5) -> None:
    stats = None if running_mean is None else lw.param_name(running_mean, "running_mean")
    bn = core.batchnorm_ref(training, stats, lw.param_name(running_var, "running_var"), eps,
                            lw.param_name(weight, "weight"), lw.param_name(bias, "bias"),
                            where(n))
    core.batchnorm(lw, n, lw.src(x), bn, "batch_norm")


@builds("reshape")
def _pad_fn(lw: FxLowering, n: fx.Node, x: Any, pad: Any, mode: str = "constant",
            value: Any = None) -> None:
    core.pad(lw, n, lw.src(x), pad, mode, value, "pad")


_INTERPOLATE_ARGS = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                     "antialias")


@builds("resample", "adaptive_avgpool")
def _interpolate_fn(lw: FxLowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
    a = dict(zip(_INTERPOLATE_ARGS, args)) | kwargs
    _interpolate(lw, n, x, a.get("size"), a.get("scale_factor"), a.get("mode", "nearest"),
                 a.get("align_corners"), a.get("recompute_scale_factor"),
                 a.get("antialias", False), "interpolate")


def _pixel_shuffle_fn(inverse: bool) -> Rule:
    key = "downscale_factor" if inverse else "upscale_factor"

    @builds("reshape")
    def rule(lw: FxLowering, n: fx.Node, x: Any, factor: Any = None, **kwargs: Any) -> None:
        factor = kwargs.get(key, factor)
        if not is_tensor(x):
            raise Refuse("shuffles a value that is not a tensor")
        core.pixel_shuffle(lw, n, lw.src(x), per_sample(x.meta["val"]), factor, inverse,
                           fn_name(n.target))
    return rule


_ADD = _arith(core.add, "add", "scale", sign=1.0)
_SUB = _arith(core.add, "add", "scale", sign=-1.0)
_MUL, _DIV = _arith(core.multiply, "add", "scale"), _arith(core.divide, "add")
_RELU, _RELU6 = _one_input(core.relu, "relu"), _one_input(core.relu6, "relu6")
_LEAKY = _one_input(core.leaky_relu, "leaky_relu", "negative_slope", negative_slope=0.01)
_HARDTANH = _one_input(core.hardtanh, "hardtanh", "min_val", "max_val", min_val=-1.0,
                       max_val=1.0)

#: The rule of each target: torch.nn module types (in this order, a subclass taking its base's
#: rule unless it overrides forward: `fx_reader.module_rule`), functions, and Tensor methods by
#: name.
RULES: dict[Any, Rule] = {
    # -- torch.nn modules
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                     nn.ConvTranspose3d), _conv),
    nn.Linear: _dense,
    nn.modules.batchnorm._BatchNorm: _batchnorm,
    nn.ReLU: _simple(core.relu, "relu"),
    nn.ReLU6: _simple(core.relu6, "relu6"),
    nn.LeakyReLU: _simple(core.leaky_relu, "leaky_relu", "negative_slope"),
    nn.Hardtanh: _simple(core.hardtanh, "hardtanh", "min_val", "max_val"),
    nn.PReLU: _prelu,
    **dict.fromkeys((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), _maxpool),
    **dict.fromkeys((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _avgpool),
    **dict.fromkeys((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d),
                    _adaptive("adaptive_avgpool")),
    **dict.fromkeys((nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
                    _adaptive("adaptive_maxpool")),
    **dict.fromkeys(_IDENTITY_MODULES, _identity_module),
    **dict.fromkeys((nn.Flatten, nn.Unflatten), _reshape_module),
    **dict.fromkeys((nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d,
                     nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d,
                     nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
                     nn.ReflectionPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d),
                    _pad_module),
    nn.Upsample: _upsample,
    **dict.fromkeys((nn.PixelShuffle, nn.PixelUnshuffle), _pixel_shuffle_module),
    # -- functions
    operator.add: _ADD, operator.iadd: _ADD, torch.add: _ADD,
    operator.sub: _SUB, operator.isub: _SUB, torch.sub: _SUB,
    operator.mul: _MUL, operator.imul: _MUL, torch.mul: _MUL,
    operator.truediv: _DIV, operator.itruediv: _DIV, torch.div: _DIV,
    operator.neg: _neg, torch.neg: _neg,
    F.relu: _RELU, torch.relu: _RELU, F.relu_: _RELU, torch.relu_: _RELU,
    F.relu6: _RELU6, F.leaky_relu: _LEAKY, F.hardtanh: _HARDTANH,
    torch.clamp: _clamp, torch.clip: _clamp, F.prelu: _prelu_fn,
    F.dropout: _identity_fn, F.dropout1d: _identity_fn, F.dropout2d: _identity_fn,
    F.dropout3d: _identity_fn, F.alpha_dropout: _identity_fn,
    torch.cat: _cat, torch.concat: _cat, torch.concatenate: _cat,
    torch.permute: _permute, torch.transpose: _permute,
    operator.getitem: _getitem,
    torch.mean: _mean("mean"), torch.sum: _mean("sum"),
    F.max_pool1d: _pool_fn("maxpool"), F.max_pool2d: _pool_fn("maxpool"),
    F.max_pool3d: _pool_fn("maxpool"),
    F.avg_pool1d: _pool_fn("avgpool"), F.avg_pool2d: _pool_fn("avgpool"),
    F.avg_pool3d: _pool_fn("avgpool"),
    F.adaptive_avg_pool1d: _adaptive_fn("adaptive_avgpool"),
    F.adaptive_avg_pool2d: _adaptive_fn("adaptive_avgpool"),
    F.adaptive_avg_pool3d: _adaptive_fn("adaptive_avgpool"),
    F.adaptive_max_pool1d: _adaptive_fn("adaptive_maxpool"),
    F.adaptive_max_pool2d: _adaptive_fn("adaptive_maxpool"),
    F.adaptive_max_pool3d: _adaptive_fn("adaptive_maxpool"),
    F.conv1d: _conv_fn("conv"), F.conv2d: _conv_fn("conv"), F.conv3d: _conv_fn("conv"),
    F.linear: _conv_fn("dense"), F.batch_norm: _batch_norm_fn, F.pad: _pad_fn,
    F.conv_transpose1d: _conv_fn("conv_transpose"), F.conv_transpose2d: _conv_fn("conv_transpose"),
    F.conv_transpose3d: _conv_fn("conv_transpose"), F.interpolate: _interpolate_fn,
    F.pixel_shuffle: _pixel_shuffle_fn(False), F.pixel_unshuffle: _pixel_shuffle_fn(True),
    **dict.fromkeys(_RESHAPE_FUNCTIONS, _reshape),
    **{f: _multi_result(op) for op in _MULTI_RESULT_OPS
       for f in (getattr(torch, op), getattr(torch.Tensor, op))},
    # -- Tensor methods, by name
    "add": _ADD, "add_": _ADD, "__add__": _ADD, "__radd__": _ADD,
    "sub": _SUB, "sub_": _SUB, "mul": _MUL, "mul_": _MUL, "div": _DIV,
    "div_": _DIV, "neg": _neg, "relu": _RELU, "relu_": _RELU, "clamp": _clamp,
    "clamp_": _clamp, "clip": _clamp, "mean": _mean("mean"), "sum": _mean("sum"),
    "permute": _permute, "transpose": _permute, "swapaxes": _permute,
    **dict.fromkeys(_IDENTITY_METHODS, _identity_fn),
    **dict.fromkeys(_RESHAPE_METHODS, _reshape),
    **{m: _multi_result(m) for m in _MULTI_RESULT_OPS},
}
