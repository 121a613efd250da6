"""Lower a traced torch.fx graph into the fxpath IR, one rule per module type / function.

Each rule maps one fx node to one IR node. Rules read static attributes from the module or the
call's arguments and parameter *names* (state_dict names), never parameter values: the IR is
a description of the network, the parameters stay live in the model.

Ops that do not belong to a ReLU-DAG become ``unsupported`` nodes carrying the reason; the
pipeline's first pass reports all of them at once. So does a call whose rule fails on a form of
arguments it does not handle: the node becomes ``unsupported`` (the exception kept in
``attrs["error"]``, chained to the `UnsupportedModelError`), never a raw exception.

Ops returning several tensors (``split``, ``chunk``, ``tensor_split``, ``unbind``) are exact
re-indexings of their input. Such a call emits no IR node: a side table keeps its results as
*pieces* ``(input IR node, index)``, and each piece the model uses (``operator.getitem``, Python
unpacking, a whole result passed to ``torch.cat`` or returned) becomes the IR's re-indexing node,
``reshape`` with ``fn="getitem"``, exactly as the slicing ``x[:, a:b]`` (or ``x[:, i]`` for
``unbind``) that selects the same elements. Unused pieces emit nothing.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves

from .errors import FxPathError, TraceError
from .ir import BatchNormRef, Graph, Node
from .refusals import FUNCTIONS as _UNSUPPORTED_FUNCTIONS
from .refusals import METHODS as _UNSUPPORTED_METHODS
from .refusals import MODULES as _UNSUPPORTED_MODULES
from .refusals import PRODUCT
from .tracer import TRACE_BATCH, where

__all__ = ["has_rule", "lower"]

_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                     nn.AlphaDropout, nn.FeatureAlphaDropout)
_IDENTITY_METHODS = frozenset({"contiguous", "clone", "detach", "float", "double", "to", "type_as",
                               "requires_grad_"})
_RESHAPE_METHODS = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten",
                              "view_as", "reshape_as"})
_RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
                      torch.unflatten)
_PERMUTE = frozenset({"permute", "transpose", "swapaxes", "movedim"})
#: Ops returning several tensors that are exact re-indexings of their input (see `_pieces`).
_MULTI_RESULT_OPS = ("split", "chunk", "tensor_split", "unbind")


def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _fn_name(target: Any) -> str:
    return getattr(target, "__name__", str(target))


def _lookup(table: dict[Any, Any], target: Any) -> Any:
    """``table.get(target)``, None for an unhashable target (a callable object)."""
    try:
        return table.get(target)
    except TypeError:
        return None


def _call_args(n: fx.Node) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments, with torch's ``input=`` / ``other=`` keywords made positional.

    Rules name their tensor arguments ``x`` / ``a, b``; ``F.relu(input=x)`` and
    ``torch.add(x, other=y)`` are the same calls as ``F.relu(x)`` and ``torch.add(x, y)``.
    """
    args, kwargs = tuple(n.args), dict(n.kwargs)
    if "input" in kwargs:
        args = (kwargs.pop("input"), *args)
    if "other" in kwargs and len(args) == 1:
        args = (*args, kwargs.pop("other"))
    return args, kwargs


def _module_input(n: fx.Node, extra_ok: bool = False) -> Any:
    """The tensor a module is called on: ``m(x)`` or ``m(input=x)`` (``extra_ok``: a module
    that ignores further arguments, such as nn.Identity)."""
    kwargs = dict(n.kwargs)
    x = n.args[0] if n.args else kwargs.pop("input", None)
    if x is None or (not extra_ok and (len(n.args) > 1 or kwargs)):
        raise _Refuse("the module is called with other arguments than one input tensor")
    return x


def _pool_nd(name: str) -> int | None:
    """Spatial rank of a pooling op from its name (``MaxPool2d``, ``adaptive_avg_pool3d``)."""
    return int(name[-2]) if name[-2:] in ("1d", "2d", "3d") else None


def _module_nd(m: nn.Module) -> int | None:
    """Spatial rank of a torch.nn pooling module (or a subclass of one)."""
    return next((nd for c in type(m).__mro__ if c.__module__.startswith("torch.nn")
                 and (nd := _pool_nd(c.__name__)) is not None), None)


class _Lowering:
    """State of one lowering: the fx graph, the IR nodes made so far, the fx->IR map."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.nodes: list[Node] = []
        self.value: dict[fx.Node, str] = {}  # fx node -> IR node name for tensor values
        # fx node -> pieces (input IR node name, getitem index) of an op returning several
        # tensors (split, chunk, tensor_split, unbind); no IR node holds the sequence itself
        self.pieces: dict[fx.Node, list[tuple[str, tuple[Any, ...]]]] = {}
        self.names = {n.name for n in gm.graph.nodes} | {"output"}

    # -- helpers used by the rules ------------------------------------------------------------
    def shape(self, n: fx.Node) -> tuple[int, ...]:
        val = n.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise TraceError(f"{n.format_node()} at {where(n)} is not a tensor")
        return _per_sample(val)

    def is_activation(self, a: fx.Node) -> bool:
        """Whether ``a`` is computed from the input: a tensor value or a sequence of pieces."""
        return a in self.value or a in self.pieces

    def src(self, a: Any) -> str:
        if isinstance(a, fx.Node) and a in self.value:
            return self.value[a]
        if isinstance(a, fx.Node) and a in self.pieces:
            raise _Refuse(f"uses the {len(self.pieces[a])} tensors returned by {a.name} = "
                          f"{_describe(self.gm, a)}(...) at {where(a)} as one tensor")
        if isinstance(a, fx.Node):
            raise _Refuse("mixes activations with a tensor computed from parameters or constants "
                          f"({a.name}, e.g. a class token or positional embedding)")
        raise _Refuse(f"expected an activation tensor, got {a!r}")

    def emit(self, n: fx.Node, op: str, inputs: tuple[str, ...] = (), attrs: dict | None = None,
             params: dict | None = None, what: str = "") -> None:
        node = Node(n.name, op, tuple(inputs), self.shape(n), attrs or {}, params or {},
                    f"{what or n.target} at {where(n)}")
        self.nodes.append(node)
        self.value[n] = node.name

    def piece(self, seq: fx.Node, k: int) -> str:
        """An IR node holding the ``k``-th piece of ``seq`` (a whole sequence passed to
        ``torch.cat`` or returned by the model; ``seq[k]`` lowers through `_getitem`)."""
        src, index = self.pieces[seq][k]
        base = name = f"{seq.name}_piece{k}"
        suffix = 0
        while name in self.names:
            suffix += 1
            name = f"{base}_{suffix}"
        self.names.add(name)
        node = Node(name, "reshape", (src,), _per_sample(seq.meta["val"][k]),
                    {"fn": "getitem", "index": index}, {},
                    f"{_describe(self.gm, seq)}[{k}] at {where(seq)}")
        self.nodes.append(node)
        return node.name

    def unsupported(self, n: fx.Node, what: str, reason: str,
                    error: BaseException | None = None) -> None:
        inputs = tuple(self.value[a] for a in n.all_input_nodes if a in self.value)
        val = n.meta.get("val")
        shape = tuple(val.shape[1:]) if isinstance(val, torch.Tensor) and val.dim() else ()
        attrs = {"what": what, "reason": reason, "where": where(n)}
        if error is not None:
            attrs["error"] = error
        node = Node(n.name, "unsupported", inputs, shape, attrs, {}, where(n))
        self.nodes.append(node)
        self.value[n] = node.name

    def param_name(self, a: Any, n: fx.Node, role: str) -> str | None:
        """State_dict name of a parameter argument (a get_attr node), None for None."""
        if a is None:
            return None
        if isinstance(a, fx.Node) and a.op == "get_attr":
            return str(a.target)
        raise _Refuse(f"its {role} is computed at run time (e.g. weight standardization), "
                      "not read from a parameter")

    # -- the walk -----------------------------------------------------------------------------
    def run(self) -> Graph:
        for n in self.gm.graph.nodes:
            mark = len(self.nodes)
            try:
                self.lower_node(n)
            except _Refuse as r:
                self._drop(n, mark)
                self.unsupported(n, r.what or _describe(self.gm, n), r.reason)
            except FxPathError:
                raise
            except Exception as exc:  # a rule met an argument form it does not handle
                self._drop(n, mark)
                self.unsupported(n, _describe(self.gm, n),
                                 f"fxpath cannot lower this call ({type(exc).__name__}: {exc})",
                                 error=exc)
        return Graph(tuple(self.nodes))

    def _drop(self, n: fx.Node, mark: int) -> None:
        """Forget whatever a failed rule emitted for ``n``."""
        del self.nodes[mark:]
        self.value.pop(n, None)
        self.pieces.pop(n, None)

    def lower_node(self, n: fx.Node) -> None:
        val = n.meta.get("val")
        if n.op == "placeholder":
            if isinstance(val, torch.Tensor):
                self.emit(n, "input", what=f"input {n.name}")
        elif n.op == "get_attr":
            return
        elif n.op == "output":
            self.lower_output(n)
        elif not any(self.is_activation(a) for a in n.all_input_nodes):
            return  # computes on parameters or constants only: not a layer of neurons
        elif not isinstance(val, torch.Tensor) and not self.returns_pieces(n):
            raise _Refuse(f"produces a non-tensor value ({type(val).__name__}) from activations")
        else:
            self.lower_call(n)

    def lower_output(self, n: fx.Node) -> None:
        outs: list[str] = []
        for a in tree_leaves(n.args[0]):
            if isinstance(a, fx.Node) and a in self.pieces:  # a returned split(...): each piece
                outs += [self.piece(a, k) for k in range(len(self.pieces[a]))]
            elif isinstance(a, fx.Node) and a in self.value:
                outs.append(self.value[a])
        if not outs:
            raise _Refuse("no output of the model is computed from its input: it has no "
                          "paths to analyse", "model output")
        self.nodes.append(Node("output", "output", tuple(outs), (), {}, {}, "model output"))

    def returns_pieces(self, n: fx.Node) -> bool:
        """A call returning several tensors that the lowering keeps as pieces: a multi-result
        op, or a slice ``seq[1:]`` of one's results."""
        if n.op == "call_method":
            return str(n.target) in _MULTI_RESULT_OPS
        if n.op != "call_function":
            return False
        if n.target is operator.getitem:
            return bool(n.args) and n.args[0] in self.pieces
        return _lookup(_MULTI_RESULT_FUNCTIONS, n.target) is not None

    def lower_call(self, n: fx.Node) -> None:
        if n.op == "call_module":
            module = self.gm.get_submodule(str(n.target))
            rule = _module_rule(module)
            if rule is None:
                raise _Refuse(f"no path-lifting rule for module type {type(module).__name__}",
                              type(module).__name__)
            rule(self, n, module)
            return
        args, kwargs = _call_args(n)
        if n.op == "call_function":
            rule = _lookup(_FUNCTION_RULES, n.target)
            if rule is None:
                raise _Refuse(_lookup(_UNSUPPORTED_FUNCTIONS, n.target)
                              or f"no path-lifting rule for {_fn_name(n.target)}")
            rule(self, n, *args, **kwargs)
        elif n.op == "call_method":
            rule = _METHOD_RULES.get(str(n.target))
            if rule is None:
                raise _Refuse(_UNSUPPORTED_METHODS.get(str(n.target))
                              or f"no path-lifting rule for Tensor.{n.target}")
            rule(self, n, *args, **kwargs)


def _per_sample(val: torch.Tensor) -> tuple[int, ...]:
    """The per-sample shape of a batched activation; refuses one without the batch first."""
    if val.dim() == 0 or val.shape[0] != TRACE_BATCH:
        raise _Refuse("mixes samples: its output does not keep the batch dimension first "
                      "(e.g. windows folded into the batch); fxpath needs per-sample layers")
    return tuple(val.shape[1:])


class _Refuse(Exception):
    def __init__(self, reason: str, what: str = "") -> None:
        super().__init__(reason)
        self.reason, self.what = reason, what


def _describe(gm: fx.GraphModule, n: fx.Node) -> str:
    """The op an fx node calls, as error messages name it (``Conv2d``, ``Tensor.view``, ``cat``)."""
    if n.op == "call_module":
        try:
            return type(gm.get_submodule(str(n.target))).__name__
        except AttributeError:
            return str(n.target)
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    if n.op == "call_function":
        return _fn_name(n.target)
    return f"{n.op} {n.target}"


# -- module rules -----------------------------------------------------------------------------
def _conv(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    transpose = isinstance(m, nn.modules.conv._ConvTransposeNd)
    if transpose and (len(n.args) > 1 or n.kwargs):
        raise _Refuse("ConvTranspose called with output_size is not supported yet")
    nd = len(m.kernel_size)
    attrs = {"kind": "conv_transpose" if transpose else "conv", "ndim": nd,
             "kernel": tuple(m.kernel_size), "stride": tuple(m.stride),
             "dilation": tuple(m.dilation), "groups": m.groups,
             "padding": m.padding if isinstance(m.padding, str) else tuple(m.padding)}
    if transpose:
        attrs["output_padding"] = tuple(m.output_padding)
    if getattr(m, "padding_mode", "zeros") != "zeros":
        attrs["padding_mode"] = m.padding_mode
        attrs["pad"] = tuple(m._reversed_padding_repeated_twice)
    params = {"weight": f"{n.target}.weight"}
    if m.bias is not None:
        params["bias"] = f"{n.target}.bias"
    lw.emit(n, "linear", (lw.src(_module_input(n)),), attrs, params, type(m).__name__)


def _dense(lw: _Lowering, n: fx.Node, m: nn.Linear) -> None:
    params = {"weight": f"{n.target}.weight"}
    if m.bias is not None:
        params["bias"] = f"{n.target}.bias"
    lw.emit(n, "linear", (lw.src(_module_input(n)),), {"kind": "dense"}, params, "Linear")


def _batchnorm_ref(lw: _Lowering, n: fx.Node, prefix: str, m: nn.Module) -> BatchNormRef:
    if m.training or m.running_mean is None:
        raise _Refuse("BatchNorm uses batch statistics (training mode or no running stats); "
                      "call model.eval() first: fxpath analyses the frozen (eval) network")
    return BatchNormRef(f"{prefix}running_mean", f"{prefix}running_var", float(m.eps),
                        f"{prefix}weight" if m.weight is not None else None,
                        f"{prefix}bias" if m.bias is not None else None, where(n))


def _batchnorm(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    bn = _batchnorm_ref(lw, n, f"{n.target}.", m)
    lw.emit(n, "batchnorm", (lw.src(_module_input(n)),), {"bn": bn}, {}, type(m).__name__)


def _simple(op: str, **fixed: Any) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
        attrs = {k: (getattr(m, v) if isinstance(v, str) else v) for k, v in fixed.items()}
        lw.emit(n, op, (lw.src(_module_input(n)),), attrs, {}, type(m).__name__)
    return rule


def _prelu(lw: _Lowering, n: fx.Node, m: nn.PReLU) -> None:
    lw.emit(n, "prelu", (lw.src(_module_input(n)),), {}, {"weight": f"{n.target}.weight"}, "PReLU")


def _maxpool(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    if m.return_indices:
        raise _Refuse("max-pooling with return_indices is not supported")
    _pool_attrs(lw, n, _module_input(n), "maxpool", _module_nd(m), m.kernel_size, m.stride,
                m.padding, m.dilation, m.ceil_mode, type(m).__name__)


def _avgpool(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    _pool_attrs(lw, n, _module_input(n), "avgpool", _module_nd(m), m.kernel_size, m.stride,
                m.padding, 1, m.ceil_mode, type(m).__name__,
                count_include_pad=m.count_include_pad,
                divisor_override=getattr(m, "divisor_override", None))


def _pool_rank(lw: _Lowering, n: fx.Node, nd: int | None, what: str) -> int:
    """Spatial rank of a pooling output; refuses a pool that takes the batch for channels."""
    rank = len(lw.shape(n)) - 1
    if nd is not None and rank != nd:
        raise _Refuse(f"{nd}-d pooling of a {rank + 1}-d tensor: without a channel dimension "
                      "torch pools the batch as channels; fxpath needs (N, C, *spatial) input",
                      what)
    return rank


def _pool_attrs(lw: _Lowering, n: fx.Node, x: Any, op: str, nd: int | None, kernel: Any,
                stride: Any, padding: Any, dilation: Any, ceil_mode: bool, what: str,
                **extra: Any) -> None:
    nd = _pool_rank(lw, n, nd, what)
    stride = stride if stride not in (None, ()) else kernel
    attrs = {"ndim": nd, "kernel": _ntuple(kernel, nd), "stride": _ntuple(stride, nd),
             "padding": _ntuple(padding, nd), "dilation": _ntuple(dilation, nd),
             "ceil_mode": bool(ceil_mode), **extra}
    lw.emit(n, op, (lw.src(x),), attrs, {}, what)


def _adaptive(op: str) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
        if getattr(m, "return_indices", False):
            raise _Refuse("adaptive max-pooling with return_indices is not supported")
        what = type(m).__name__
        lw.emit(n, op, (lw.src(_module_input(n)),),
                {"ndim": _pool_rank(lw, n, _module_nd(m), what)}, {}, what)
    return rule


def _identity_module(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    x = _module_input(n, extra_ok=isinstance(m, nn.Identity))
    lw.emit(n, "identity", (lw.src(x),), {}, {}, type(m).__name__)


def _reshape_module(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    lw.emit(n, "reshape", (lw.src(_module_input(n)),), {"fn": "view"}, {}, type(m).__name__)


def _pad_module(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    if float(getattr(m, "value", 0.0)) != 0.0:
        raise _Refuse("constant padding with a non-zero value is not supported")
    mode = {nn.ReflectionPad1d: "reflect", nn.ReflectionPad2d: "reflect",
            nn.ReplicationPad1d: "replicate", nn.ReplicationPad2d: "replicate",
            nn.ReplicationPad3d: "replicate"}.get(type(m), "constant")
    lw.emit(n, "reshape", (lw.src(_module_input(n)),), {"fn": "pad", "pad": tuple(m.padding),
                                                        "mode": mode}, {}, type(m).__name__)


_MODULE_RULES: list[tuple[type | tuple[type, ...], Callable]] = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
      nn.ConvTranspose3d), _conv),
    (nn.Linear, _dense),
    (nn.modules.batchnorm._BatchNorm, _batchnorm),
    (nn.ReLU, _simple("relu")),
    (nn.ReLU6, _simple("relu6")),
    (nn.LeakyReLU, _simple("leaky_relu", slope="negative_slope")),
    (nn.Hardtanh, _simple("hardtanh", lo="min_val", hi="max_val")),
    (nn.PReLU, _prelu),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), _maxpool),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _avgpool),
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d),
     _adaptive("adaptive_avgpool")),
    ((nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d),
     _adaptive("adaptive_maxpool")),
    (_IDENTITY_MODULES, _identity_module),
    ((nn.Flatten, nn.Unflatten), _reshape_module),
    ((nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
      nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d,
      nn.ReplicationPad2d, nn.ReplicationPad3d), _pad_module),
]


def _same_forward(cls: type, types: type | tuple[type, ...]) -> bool:
    """A subclass that overrides forward (timm's BatchNormAct2d) is not its base class."""
    bases = types if isinstance(types, tuple) else (types,)
    return any(issubclass(cls, b) and cls.forward is b.forward for b in bases)


def _module_rule(m: nn.Module) -> Callable | None:
    for types, rule in _MODULE_RULES:
        if isinstance(m, types) and _same_forward(type(m), types):
            return rule
    reason = next((r for t, r in _UNSUPPORTED_MODULES.items() if isinstance(m, t)), None)
    if reason is not None:
        def refuse(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
            raise _Refuse(reason, type(m).__name__)
        return refuse
    return None


# -- function and method rules ----------------------------------------------------------------
def _is_tensor(a: Any) -> bool:
    return isinstance(a, fx.Node) and isinstance(a.meta.get("val"), torch.Tensor)


def _scalar(a: Any) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool)


def _add(sign: float) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, a: Any, b: Any, alpha: float = 1.0, **_: Any) -> None:
        if _is_tensor(a) and _is_tensor(b):
            lw.emit(n, "add", (lw.src(a), lw.src(b)), {"coeffs": (1.0, sign * alpha), "const": 0.0})
        elif _is_tensor(a) and _scalar(b):
            lw.emit(n, "add", (lw.src(a),), {"coeffs": (1.0,), "const": sign * alpha * b})
        elif _is_tensor(b) and _scalar(a):
            lw.emit(n, "add", (lw.src(b),), {"coeffs": (sign * alpha,), "const": float(a)})
        else:
            raise _Refuse("adds a tensor that is not an activation (e.g. a parameter)")
    return rule


def _mul(lw: _Lowering, n: fx.Node, a: Any, b: Any, **_: Any) -> None:
    if _is_tensor(a) and _scalar(b):
        a, b = b, a
    if _scalar(a) and _is_tensor(b):
        lw.emit(n, "add", (lw.src(b),), {"coeffs": (float(a),), "const": 0.0}, what="mul")
    elif _is_tensor(a) and _is_tensor(b) and (a in lw.value) and (b in lw.value):
        raise _Refuse(PRODUCT)
    else:
        raise _Refuse("multiplication by a parameter or constant tensor (e.g. layer scale) is "
                      "not supported yet")


def _div(lw: _Lowering, n: fx.Node, a: Any, b: Any, **_: Any) -> None:
    if _is_tensor(a) and _scalar(b) and b != 0:
        lw.emit(n, "add", (lw.src(a),), {"coeffs": (1.0 / b,), "const": 0.0}, what="div")
    elif _is_tensor(a) and _scalar(b):
        raise _Refuse("division by zero")
    else:
        raise _Refuse("division by an activation or a tensor is not positively homogeneous")


def _neg(lw: _Lowering, n: fx.Node, a: Any) -> None:
    lw.emit(n, "add", (lw.src(a),), {"coeffs": (-1.0,), "const": 0.0}, what="neg")


def _relu(lw: _Lowering, n: fx.Node, x: Any, *_: Any, **__: Any) -> None:
    lw.emit(n, "relu", (lw.src(x),), what="relu")


def _relu6(lw: _Lowering, n: fx.Node, x: Any, *_: Any, **__: Any) -> None:
    lw.emit(n, "relu6", (lw.src(x),), what="relu6")


def _leaky(lw: _Lowering, n: fx.Node, x: Any, negative_slope: float = 0.01, *_: Any,
           **__: Any) -> None:
    lw.emit(n, "leaky_relu", (lw.src(x),), {"slope": float(negative_slope)}, what="leaky_relu")


def _hardtanh(lw: _Lowering, n: fx.Node, x: Any, min_val: float = -1.0, max_val: float = 1.0,
              *_: Any, **__: Any) -> None:
    lw.emit(n, "hardtanh", (lw.src(x),), {"lo": float(min_val), "hi": float(max_val)},
            what="hardtanh")


def _clamp(lw: _Lowering, n: fx.Node, x: Any, min: Any = None, max: Any = None) -> None:  # noqa: A002
    if not all(v is None or _scalar(v) for v in (min, max)):
        raise _Refuse("clamp with tensor bounds is not supported")
    lo = None if min is None else float(min)
    hi = None if max is None else float(max)
    if lo == 0.0 and hi is None:
        lw.emit(n, "relu", (lw.src(x),), what="clamp")
    elif lo is None:
        raise _Refuse("clamp with only an upper bound (min(x, c)) is not supported yet")
    else:
        lw.emit(n, "hardtanh", (lw.src(x),), {"lo": lo, "hi": hi}, what="clamp")


def _prelu_fn(lw: _Lowering, n: fx.Node, x: Any, weight: Any) -> None:
    lw.emit(n, "prelu", (lw.src(x),), {}, {"weight": lw.param_name(weight, n, "slope")},
            what="prelu")


def _identity_fn(lw: _Lowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
    if kwargs.get("training") is True or (len(args) > 1 and args[1] is True):
        raise _Refuse("dropout in training mode is random; call model.eval() first")
    val, src = n.meta["val"], x.meta.get("val")
    if isinstance(src, torch.Tensor) and src.dtype != val.dtype:
        raise _Refuse("changes the dtype inside the model; fxpath keeps one dtype")
    lw.emit(n, "identity", (lw.src(x),), what=_fn_name(n.target))


def _reshape(lw: _Lowering, n: fx.Node, x: Any, *_: Any, **__: Any) -> None:
    lw.emit(n, "reshape", (lw.src(x),), {"fn": "view"}, what=_fn_name(n.target))


def _permute(lw: _Lowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
    ndim = x.meta["val"].dim()
    perm = list(range(ndim))
    name = n.target if isinstance(n.target, str) else _fn_name(n.target)
    if name in ("transpose", "swapaxes"):
        d0, d1 = (args[0], args[1]) if len(args) >= 2 else (kwargs["dim0"], kwargs["dim1"])
        d0, d1 = d0 % ndim, d1 % ndim
        perm[d0], perm[d1] = perm[d1], perm[d0]
    elif name == "permute":
        dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        perm = [d % ndim for d in (dims or kwargs["dims"])]
    else:
        raise _Refuse(f"no path-lifting rule for {name}")
    if perm[0] != 0:
        raise _Refuse("moves the batch dimension")
    lw.emit(n, "reshape", (lw.src(x),), {"fn": "permute", "dims": tuple(perm)}, what=name)


def _cat(lw: _Lowering, n: fx.Node, tensors: Any, dim: int = 0, **kwargs: Any) -> None:
    dim = kwargs.get("axis", dim)
    ndim = n.meta["val"].dim()
    dim = dim % ndim
    if dim == 0:
        raise _Refuse("concatenates along the batch dimension")
    if isinstance(tensors, fx.Node) and tensors in lw.pieces:
        # torch.cat(torch.split(x, 1, dim=1), dim=3): the tensors are one node's sequence
        # value; each piece becomes its own re-indexing node
        srcs = tuple(lw.piece(tensors, k) for k in range(len(lw.pieces[tensors])))
    elif isinstance(tensors, fx.Node):
        raise _Refuse(f"concatenates the tensors of {tensors.name} = "
                      f"{_describe(lw.gm, tensors)}(...) at {where(tensors)}, a sequence "
                      "value fxpath could not lower (see its own entry)")
    elif isinstance(tensors, (tuple, list)):
        srcs = tuple(lw.src(t) for t in tensors)
    else:
        raise _Refuse(f"expected a list of tensors, got {type(tensors).__name__}")
    lw.emit(n, "concat", srcs, {"dim": dim}, what="cat")


def _getitem(lw: _Lowering, n: fx.Node, x: Any, index: Any) -> None:
    if isinstance(x, fx.Node) and x in lw.pieces:
        _select(lw, n, x, index)
        return
    if isinstance(x, fx.Node) and x in lw.value and isinstance(x.meta.get("val"), (tuple, list)):
        raise _Refuse(f"selects a result of {x.name} = {_describe(lw.gm, x)}(...) at {where(x)}, "
                      "a sequence value fxpath could not lower (see its own entry)")
    if not _is_tensor(x):
        raise _Refuse("indexes a non-tensor value produced from activations")
    index = index if isinstance(index, tuple) else (index,)
    ok = all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in index)
    if not ok or not index or index[0] != slice(None):
        raise _Refuse("indexing other than basic slicing that keeps the batch dimension")
    lw.emit(n, "reshape", (lw.src(x),), {"fn": "getitem", "index": index}, what="getitem")


def _select(lw: _Lowering, n: fx.Node, seq: fx.Node, index: Any) -> None:
    """``seq[k]``: the piece's re-indexing node; ``seq[a:b]``: a shorter sequence (no node)."""
    pieces = lw.pieces[seq]
    if isinstance(index, slice):
        lw.pieces[n] = pieces[index]
        return
    if not isinstance(index, int) or isinstance(index, bool):
        raise _Refuse(f"selects a result of {seq.name} = {_describe(lw.gm, seq)}(...) with a "
                      f"non-integer index {index!r}")
    src, idx = pieces[index]
    if not n.users:
        return  # an unused result (``a, _ = x.chunk(2, 1)``): no node, no paths
    lw.emit(n, "reshape", (src,), {"fn": "getitem", "index": idx},
            what=f"{_describe(lw.gm, seq)}(...)[{index}]")


# keyword of the sizes / sections argument of the multi-result ops (torch.* and Tensor.*)
_SIZE_KEYWORDS = ("split_size_or_sections", "split_size", "chunks", "indices_or_sections",
                  "sections", "indices", "tensor_indices_or_sections")


def _multi_result(op: str) -> Callable:
    """``split`` / ``chunk`` / ``tensor_split`` / ``unbind``: record the pieces, emit nothing."""
    def rule(lw: _Lowering, n: fx.Node, *args: Any, **kwargs: Any) -> None:
        rest, sizes = list(args), None
        x = rest.pop(0) if rest else kwargs.pop("tensor", None)  # torch.split(tensor=x, ...)
        if op != "unbind":
            key = next((k for k in _SIZE_KEYWORDS if k in kwargs), None)
            if not rest and key is None:
                raise _Refuse(f"{op} without sizes or sections")
            sizes = rest.pop(0) if rest else kwargs.pop(key)
        dim = rest.pop(0) if rest else kwargs.pop("dim", 0)
        if rest or kwargs:
            raise _Refuse(f"{op} called with unexpected arguments {rest or sorted(kwargs)}")
        lw.pieces[n] = _pieces(lw, n, op, x, sizes, dim)
    return rule


def _pieces(lw: _Lowering, n: fx.Node, op: str, x: Any, sizes: Any,
            dim: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """The (input, index) of each result: torch's own op applied to ``arange`` of the split
    dimension gives the element range of each piece, so every form of the arguments (int or
    list sizes, sections, indices, uneven chunks) means what torch means."""
    if not _is_tensor(x):
        raise _Refuse(f"{op} of a value that is not a tensor")
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise _Refuse(f"{op} along dim {dim!r}: fxpath needs an integer dimension")
    shape = x.meta["val"].shape
    d = dim % len(shape)
    if d == 0:
        raise _Refuse(f"{op} along the batch dimension (dim={dim}) separates the samples of a "
                      "batch; fxpath needs per-sample layers")
    if any(isinstance(a, fx.Node) for a in tree_leaves(sizes)):
        raise _Refuse(f"{op} with sizes or indices given as a tensor; fxpath needs them as "
                      "Python ints")
    positions = torch.arange(shape[d])
    parts = positions.unbind(0) if op == "unbind" else getattr(positions, op)(sizes, 0)
    results = n.meta["val"]
    if not isinstance(results, (tuple, list)) or len(results) != len(parts):
        raise _Refuse(f"{op} returned a {type(results).__name__}, not the {len(parts)} "
                      "tensors fxpath expects")
    for r in results:
        _per_sample(r)
    src, lead = lw.src(x), (slice(None),) * d
    return [(src, (*lead, _piece_index(p))) for p in parts]


def _piece_index(positions: torch.Tensor) -> int | slice:
    """The index along the split dimension selecting ``positions`` (a contiguous range)."""
    if positions.dim() == 0:
        return int(positions)  # unbind: the dimension is removed, as by x[:, i]
    if positions.numel() == 0:
        return slice(0, 0)
    start = int(positions[0])
    if not torch.equal(positions, torch.arange(start, start + positions.numel())):
        raise _Refuse("a piece that is not a contiguous range of its input")
    return slice(start, start + positions.numel())


def _mean(reduce: str) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, x: Any, dim: Any = None, keepdim: bool = False,
             *_: Any, **kwargs: Any) -> None:
        ndim = x.meta["val"].dim()
        dims = tuple(range(1, ndim)) if dim is None else _ntuple(dim, 1)
        dims = tuple(sorted(d % ndim for d in dims))
        if 0 in dims:
            raise _Refuse(f"{reduce} over the batch dimension")
        lw.emit(n, "mean", (lw.src(x),), {"dims": dims, "keepdim": bool(keepdim),
                                          "reduce": reduce}, what=reduce)
    return rule


def _pool_fn(op: str) -> Callable:
    names = {"maxpool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                         "return_indices"),
             "avgpool": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                         "divisor_override")}[op]

    def rule(lw: _Lowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
        a = dict(zip(names, args)) | kwargs
        k, name = a["kernel_size"], _fn_name(n.target)
        if op == "maxpool":
            if a.get("return_indices"):
                raise _Refuse("max-pooling with return_indices is not supported")
            _pool_attrs(lw, n, x, op, _pool_nd(name), k, a.get("stride"), a.get("padding", 0),
                        a.get("dilation", 1), a.get("ceil_mode", False), name)
        else:
            _pool_attrs(lw, n, x, op, _pool_nd(name), k, a.get("stride"), a.get("padding", 0), 1,
                        a.get("ceil_mode", False), name,
                        count_include_pad=a.get("count_include_pad", True),
                        divisor_override=a.get("divisor_override"))
    return rule


def _adaptive_fn(op: str) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("return_indices") or (len(args) > 1 and args[1]):
            raise _Refuse("adaptive max-pooling with return_indices is not supported")
        name = _fn_name(n.target)
        lw.emit(n, op, (lw.src(x),), {"ndim": _pool_rank(lw, n, _pool_nd(name), name)},
                what=name)
    return rule


def _conv_fn(kind: str) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, x: Any, weight: Any, bias: Any = None, *args: Any,
             **kwargs: Any) -> None:
        nd = weight.meta["val"].dim() - 2 if kind != "dense" else 0
        params = {"weight": lw.param_name(weight, n, "weight")}
        if bias is not None:
            params["bias"] = lw.param_name(bias, n, "bias")
        attrs: dict[str, Any] = {"kind": kind}
        if kind == "conv":
            names = ("stride", "padding", "dilation", "groups")
            a = dict(zip(names, args)) | kwargs
            attrs.update(ndim=nd, kernel=tuple(weight.meta["val"].shape[2:]),
                         stride=_ntuple(a.get("stride", 1), nd),
                         dilation=_ntuple(a.get("dilation", 1), nd), groups=a.get("groups", 1))
            pad = a.get("padding", 0)
            attrs["padding"] = pad if isinstance(pad, str) else _ntuple(pad, nd)
        lw.emit(n, "linear", (lw.src(x),), attrs, params, what=_fn_name(n.target))
    return rule


def _batch_norm_fn(lw: _Lowering, n: fx.Node, x: Any, running_mean: Any, running_var: Any,
                   weight: Any = None, bias: Any = None, training: bool = False,
                   momentum: float = 0.1, eps: float = 1e-5) -> None:
    if training or running_mean is None:
        raise _Refuse("BatchNorm uses batch statistics (training mode or no running stats); "
                      "call model.eval() first")
    bn = BatchNormRef(lw.param_name(running_mean, n, "running_mean"),
                      lw.param_name(running_var, n, "running_var"), float(eps),
                      lw.param_name(weight, n, "weight"), lw.param_name(bias, n, "bias"), where(n))
    lw.emit(n, "batchnorm", (lw.src(x),), {"bn": bn}, what="batch_norm")


def _pad_fn(lw: _Lowering, n: fx.Node, x: Any, pad: Any, mode: str = "constant",
            value: Any = None) -> None:
    if mode == "constant" and value not in (None, 0, 0.0):
        raise _Refuse("constant padding with a non-zero value is not supported")
    lw.emit(n, "reshape", (lw.src(x),), {"fn": "pad", "pad": tuple(pad), "mode": mode},
            what="pad")


_FUNCTION_RULES: dict[Any, Callable] = {
    operator.add: _add(1.0), operator.iadd: _add(1.0), torch.add: _add(1.0),
    operator.sub: _add(-1.0), operator.isub: _add(-1.0), torch.sub: _add(-1.0),
    operator.mul: _mul, operator.imul: _mul, torch.mul: _mul,
    operator.truediv: _div, operator.itruediv: _div, torch.div: _div,
    operator.neg: _neg, torch.neg: _neg,
    F.relu: _relu, torch.relu: _relu, F.relu_: _relu, torch.relu_: _relu,
    F.relu6: _relu6, F.leaky_relu: _leaky, F.hardtanh: _hardtanh,
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
    **{f: _reshape for f in _RESHAPE_FUNCTIONS},
}
_MULTI_RESULT_FUNCTIONS: dict[Any, Callable] = {
    f: _multi_result(op) for op in _MULTI_RESULT_OPS
    for f in (getattr(torch, op), getattr(torch.Tensor, op))}
_FUNCTION_RULES.update(_MULTI_RESULT_FUNCTIONS)
_METHOD_RULES: dict[str, Callable] = {
    "add": _add(1.0), "add_": _add(1.0), "__add__": _add(1.0), "__radd__": _add(1.0),
    "sub": _add(-1.0), "sub_": _add(-1.0), "mul": _mul, "mul_": _mul, "div": _div,
    "div_": _div, "neg": _neg, "relu": _relu, "relu_": _relu, "clamp": _clamp,
    "clamp_": _clamp, "clip": _clamp, "mean": _mean("mean"), "sum": _mean("sum"),
    "permute": _permute, "transpose": _permute, "swapaxes": _permute,
    **{m: _identity_fn for m in _IDENTITY_METHODS},
    **{m: _reshape for m in _RESHAPE_METHODS},
    **{m: _multi_result(m) for m in _MULTI_RESULT_OPS},
}


def has_rule(module: nn.Module) -> bool:
    """Whether a module type has a lowering rule (the tracer keeps such modules as leaves)."""
    return _module_rule(module) is not None


def lower(traced: fx.GraphModule | fx.Graph) -> Graph:
    """Lower a traced GraphModule (`fxpath.tracer.trace`) or graph (`trace_graph`) to the IR."""
    if isinstance(traced, fx.Graph):
        if traced.owning_module is None:
            raise TypeError("lower() needs a GraphModule or a graph whose owning_module is set")
        return _Lowering(_GraphView(traced, traced.owning_module)).run()
    return _Lowering(traced).run()


class _GraphView:
    """A traced graph with the model that owns its submodules (what lowering reads of a
    GraphModule, without building one)."""

    def __init__(self, graph: fx.Graph, root: nn.Module) -> None:
        self.graph, self.get_submodule = graph, root.get_submodule
