"""The torch.fx front end: lower a traced fx graph into the fxpath IR.

One rule per module type, function or Tensor method. A rule parses the call's arguments into
plain values (IR names of the input activations, state_dict names of parameters, ints and
tuples) and calls the op builder of `fxpath.frontend.lower.core` that emits the IR node. Rules read
static attributes and parameter *names*, never parameter values: the IR is a description of
the network, the parameters stay live in the model.

Ops that do not belong to a ReLU-DAG become ``unsupported`` nodes carrying the reason
(`fxpath.frontend.refusals`); the pipeline's first pass reports all of them at once. So does a call
whose rule fails on a form of arguments it does not handle (the exception is kept in
``attrs["error"]`` and chained to the `UnsupportedModelError`).

Ops returning several tensors (``split``, ``chunk``, ``tensor_split``, ``unbind``) are exact
re-indexings of their input. Such a call emits no IR node: a side table keeps its results as
*pieces* ``(input IR node, index)``, and each piece the model uses (``operator.getitem``, Python
unpacking, a whole result passed to ``torch.cat`` or returned) becomes the IR's re-indexing node,
``reshape`` with ``fn="getitem"``, exactly as the slicing ``x[:, a:b]`` (or ``x[:, i]`` for
``unbind``) that selects the same elements. Unused pieces emit nothing.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.utils._pytree import tree_flatten_with_path, tree_leaves

from fxpath.errors import TraceError
from fxpath.frontend.lower import core
from fxpath.frontend.lower.core import ParamRef, Refuse, ntuple, spatial_rank
from fxpath.frontend.refusals import FUNCTIONS as _UNSUPPORTED_FUNCTIONS
from fxpath.frontend.refusals import METHODS as _UNSUPPORTED_METHODS
from fxpath.frontend.refusals import MIXES_PARAMS, MIXES_SAMPLES, RUNTIME_WEIGHT
from fxpath.frontend.refusals import MODULES as _UNSUPPORTED_MODULES
from fxpath.frontend.tracer import TRACE_BATCH, where
from fxpath.ir.graph import Graph, Node

__all__ = ["has_rule", "lower"]

_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                     nn.AlphaDropout, nn.FeatureAlphaDropout)
_IDENTITY_METHODS = frozenset({"contiguous", "clone", "detach", "float", "double", "to", "type_as",
                               "requires_grad_"})
_RESHAPE_METHODS = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten",
                              "view_as", "reshape_as"})
_RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze,
                      torch.unflatten)
#: calls that view a tensor without changing its entries (how a parameter reaches arithmetic)
_VIEWS = frozenset({"view", "reshape", "unsqueeze", "squeeze", "flatten", "unflatten",
                    "contiguous", "clone", "detach", "view_as", "reshape_as"})
#: Ops returning several tensors that are exact re-indexings of their input (see `_pieces`).
_MULTI_RESULT_OPS = ("split", "chunk", "tensor_split", "unbind")


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
        raise Refuse("the module is called with other arguments than one input tensor")
    return x


def _module_nd(m: nn.Module) -> int | None:
    """Spatial rank of a torch.nn pooling module (or a subclass of one)."""
    return next((nd for c in type(m).__mro__ if c.__module__.startswith("torch.nn")
                 and (nd := spatial_rank(c.__name__)) is not None), None)


def _per_sample(val: torch.Tensor) -> tuple[int, ...]:
    """The per-sample shape of a batched activation; refuses one without the batch first."""
    if val.dim() == 0 or val.shape[0] != TRACE_BATCH:
        raise Refuse(MIXES_SAMPLES)
    return tuple(val.shape[1:])


def _describe(gm: Any, n: fx.Node) -> str:
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


class _Lowering(core.Lowering):
    """One lowering of an fx graph; IR nodes take the fx nodes' names."""

    def __init__(self, gm: Any) -> None:
        super().__init__()
        self.gm = gm
        # fx node -> pieces (input IR node name, getitem index) of an op returning several
        # tensors (split, chunk, tensor_split, unbind); no IR node holds the sequence itself
        self.pieces: dict[fx.Node, list[tuple[str, tuple[Any, ...]]]] = {}
        self.names |= {n.name for n in gm.graph.nodes}
        self.root: nn.Module = gm if isinstance(gm, nn.Module) else gm.root
        self.order = {n: i for i, n in enumerate(gm.graph.nodes)}

    # -- what core.Lowering needs -------------------------------------------------------------
    def node_name(self, n: fx.Node, op: str) -> str:
        return n.name

    def shape(self, n: fx.Node) -> tuple[int, ...]:
        val = n.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise TraceError(f"{n.format_node()} at {where(n)} is not a tensor")
        return _per_sample(val)

    def where(self, n: fx.Node) -> str:
        return where(n)

    def what(self, n: fx.Node) -> str:
        return _describe(self.gm, n)

    def refused(self, n: fx.Node, what: str, reason: str,
                error: BaseException | None = None) -> None:
        val = n.meta.get("val")
        shape = tuple(val.shape[1:]) if isinstance(val, torch.Tensor) and val.dim() else ()
        self.unsupported(n, what, reason, [self.value[a] for a in n.all_input_nodes
                                           if a in self.value], shape, error)

    def forget(self, n: fx.Node, mark: int) -> None:
        super().forget(n, mark)
        self.names.add(n.name)  # fx names stay reserved
        self.pieces.pop(n, None)

    # -- helpers used by the rules ------------------------------------------------------------
    def is_activation(self, a: fx.Node) -> bool:
        """Whether ``a`` is computed from the input: a tensor value or a sequence of pieces."""
        return a in self.value or a in self.pieces

    def src(self, a: Any) -> str:
        if isinstance(a, fx.Node) and a in self.value:
            return self.value[a]
        if isinstance(a, fx.Node) and a in self.pieces:
            raise Refuse(f"uses the {len(self.pieces[a])} tensors returned by {a.name} = "
                         f"{_describe(self.gm, a)}(...) at {where(a)} as one tensor")
        if isinstance(a, fx.Node):
            raise Refuse(MIXES_PARAMS.format(a.name))
        raise Refuse(f"expected an activation tensor, got {a!r}")

    def operand(self, a: Any) -> Any:
        """An arithmetic operand: the IR name of an activation, a `ParamRef` for a model
        tensor (maybe viewed), else the value itself."""
        if isinstance(a, fx.Node) and self.is_activation(a):
            return self.src(a)
        return self.param_ref(a) or self.derived_ref(a) or a

    def param_ref(self, a: Any) -> ParamRef | None:
        """``a`` as a parameter or persistent buffer of the model, read through views
        (``gamma.view(1, -1, 1, 1)``), else None."""
        if not isinstance(a, fx.Node) or not isinstance(a.meta.get("val"), torch.Tensor):
            return None
        view, node = tuple(a.meta["val"].shape), a
        while node.op in ("call_method", "call_function") and node.args \
                and _fn_name(node.target) in _VIEWS and isinstance(node.args[0], fx.Node):
            node = node.args[0]
        if node.op != "get_attr" or not self._in_state_dict(str(node.target)):
            return None
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or not val.is_floating_point() \
                or val.numel() != math.prod(view):
            return None
        return ParamRef(str(node.target), view)

    def _in_state_dict(self, target: str) -> bool:
        path, _, attr = target.rpartition(".")
        try:
            owner = self.gm.get_submodule(path)
        except AttributeError:
            return False
        return attr in owner._parameters or (attr in owner._buffers
                                             and attr not in owner._non_persistent_buffers_set)

    def piece(self, seq: fx.Node, k: int) -> str:
        """An IR node holding the ``k``-th piece of ``seq`` (a whole sequence passed to
        ``torch.cat`` or returned by the model; ``seq[k]`` lowers through `_getitem`)."""
        src, index = self.pieces[seq][k]
        name = self.fresh(f"{seq.name}_piece{k}")
        return self.append(Node(name, "reshape", (src,), _per_sample(seq.meta["val"][k]),
                                {"fn": "getitem", "index": index}, {},
                                f"{_describe(self.gm, seq)}[{k}] at {where(seq)}"))

    def param_name(self, a: Any, role: str) -> str | None:
        """State_dict name of a parameter argument (a get_attr node), None for None."""
        if a is None:
            return None
        if isinstance(a, fx.Node) and a.op == "get_attr":
            return str(a.target)
        if isinstance(a, fx.Node) and not self.is_activation(a):
            return self.derive(a)  # weight standardization, a parametrization...
        raise Refuse(RUNTIME_WEIGHT.format(role))

    def _state_leaf(self, m: fx.Node) -> str | None:
        target = str(m.target)
        return target if m.op == "get_attr" and self._in_state_dict(target) else None

    def derive(self, a: fx.Node) -> str:
        """The IR name of a tensor computed from the model's tensors (`core.derive`)."""
        return core.derive(self, a, self._state_leaf, self.root, self.order)

    def derived_ref(self, a: Any) -> ParamRef | None:
        """A tensor computed from model tensors, as an operand, else None."""
        if not isinstance(a, fx.Node) or not isinstance(a.meta.get("val"), torch.Tensor) \
                or not a.meta["val"].is_floating_point() or self.is_activation(a):
            return None
        try:
            return ParamRef(self.derive(a), tuple(a.meta["val"].shape))
        except Refuse:
            return None

    # -- the walk -----------------------------------------------------------------------------
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
            if "with_indices" in getattr(n.target, "__name__", str(n.target)):
                # F.max_poolNd(..., return_indices=True) traces to max_poolNd_with_indices
                raise Refuse("max-pooling with return_indices is not supported")
            raise Refuse(f"produces a non-tensor value ({type(val).__name__}) from activations")
        else:
            self.lower_call(n)

    def lower_output(self, n: fx.Node) -> None:
        outs: list[str] = []
        names: list[str] = []  # each output's name: its key path in the returned structure
        for path, a in tree_flatten_with_path(n.args[0])[0]:
            if isinstance(a, fx.Node) and a in self.pieces:  # a returned split(...): each piece
                count = len(self.pieces[a])
                outs += [self.piece(a, k) for k in range(count)]
                names += [core.output_name(path, k) for k in range(count)]
            elif isinstance(a, fx.Node) and a in self.value:
                outs.append(self.value[a])
                names.append(core.output_name(path))
        self.output(outs, names)

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
                raise Refuse(f"no path-lifting rule for module type {type(module).__name__}",
                             type(module).__name__)
            rule(self, n, module)
            return
        args, kwargs = _call_args(n)
        if n.op == "call_function":
            rule = _lookup(_FUNCTION_RULES, n.target)
            if rule is None:
                raise Refuse(_lookup(_UNSUPPORTED_FUNCTIONS, n.target)
                             or f"no path-lifting rule for {_fn_name(n.target)}")
            rule(self, n, *args, **kwargs)
        elif n.op == "call_method":
            rule = _METHOD_RULES.get(str(n.target))
            if rule is None:
                raise Refuse(_UNSUPPORTED_METHODS.get(str(n.target))
                             or f"no path-lifting rule for Tensor.{n.target}")
            rule(self, n, *args, **kwargs)


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


def _conv(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    transposed = isinstance(m, nn.modules.conv._ConvTransposeNd)
    output_padding = getattr(m, "output_padding", 0)
    with_size = transposed and bool(len(n.args) > 1 or set(n.kwargs) - {"input"})
    if with_size:
        output_padding = _output_size_padding(n, m)
    core.conv(lw, n, lw.src(_module_input(n, extra_ok=with_size)), _weights(n, m),
              transposed=transposed, nd=len(m.kernel_size), kernel=m.kernel_size,
              stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
              output_padding=output_padding,
              padding_mode=getattr(m, "padding_mode", "zeros"),
              pad=getattr(m, "_reversed_padding_repeated_twice", ()), what=type(m).__name__)


def _dense(lw: _Lowering, n: fx.Node, m: nn.Linear) -> None:
    core.dense(lw, n, lw.src(_module_input(n)), _weights(n, m), "Linear")


def _batchnorm(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    p = f"{n.target}."
    bn = core.batchnorm_ref(m.training, None if m.running_mean is None else f"{p}running_mean",
                            f"{p}running_var", m.eps, f"{p}weight" if m.weight is not None
                            else None, f"{p}bias" if m.bias is not None else None, where(n))
    core.batchnorm(lw, n, lw.src(_module_input(n)), bn, type(m).__name__)


def _simple(build: Callable, *fields: str) -> Callable:
    """A module rule calling ``build(lw, n, x, *module fields)``."""
    def rule(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
        build(lw, n, lw.src(_module_input(n)), *(getattr(m, f) for f in fields),
              what=type(m).__name__)
    return rule


def _prelu(lw: _Lowering, n: fx.Node, m: nn.PReLU) -> None:
    core.prelu(lw, n, lw.src(_module_input(n)), f"{n.target}.weight", "PReLU")


def _maxpool(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    if m.return_indices:
        raise Refuse("max-pooling with return_indices is not supported")
    core.pool(lw, n, lw.src(_module_input(n)), "maxpool", _module_nd(m), m.kernel_size,
              m.stride, m.padding, m.dilation, m.ceil_mode, type(m).__name__)


def _avgpool(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    core.pool(lw, n, lw.src(_module_input(n)), "avgpool", _module_nd(m), m.kernel_size,
              m.stride, m.padding, 1, m.ceil_mode, type(m).__name__,
              count_include_pad=m.count_include_pad,
              divisor_override=getattr(m, "divisor_override", None))


def _adaptive(op: str) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
        if getattr(m, "return_indices", False):
            raise Refuse("adaptive max-pooling with return_indices is not supported")
        core.adaptive_pool(lw, n, lw.src(_module_input(n)), op, _module_nd(m),
                           type(m).__name__)
    return rule


def _identity_module(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    x = _module_input(n, extra_ok=isinstance(m, nn.Identity))
    core.identity(lw, n, lw.src(x), what=type(m).__name__)


def _reshape_module(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    lw.emit(n, "reshape", (lw.src(_module_input(n)),), {"fn": "view"}, {}, type(m).__name__)


_PAD_MODES = {nn.ReflectionPad1d: "reflect", nn.ReflectionPad2d: "reflect",
              nn.ReflectionPad3d: "reflect",
              nn.ReplicationPad1d: "replicate", nn.ReplicationPad2d: "replicate",
              nn.ReplicationPad3d: "replicate",
              nn.CircularPad1d: "circular", nn.CircularPad2d: "circular",
              nn.CircularPad3d: "circular"}


def _pad_module(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    core.pad(lw, n, lw.src(_module_input(n)), m.padding, _PAD_MODES.get(type(m), "constant"),
             getattr(m, "value", None), type(m).__name__)


def _interpolate(lw: _Lowering, n: fx.Node, x: Any, size: Any, scale_factor: Any, mode: Any,
                 align_corners: Any, recompute_scale_factor: Any, antialias: Any,
                 what: str) -> None:
    """``F.interpolate``'s arguments as its kernel receives them (`core.resample`): the scale
    factors reach the kernel unless ``recompute_scale_factor`` (or ``size``) is given."""
    if not _is_tensor(x):
        raise Refuse("interpolates a value that is not a tensor")
    in_shape = _per_sample(x.meta["val"])
    nd = len(in_shape) - 1
    given = scale_factor is not None and not recompute_scale_factor and size is None
    scales = ntuple(scale_factor, nd) if given else (None,) * nd
    core.resample(lw, n, lw.src(x), mode, in_shape, align_corners, scales, antialias, what)


def _upsample(lw: _Lowering, n: fx.Node, m: nn.Upsample) -> None:
    _interpolate(lw, n, _module_input(n), m.size, m.scale_factor, m.mode, m.align_corners,
                 m.recompute_scale_factor, False, type(m).__name__)


def _pixel_shuffle_module(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
    inverse = isinstance(m, nn.PixelUnshuffle)
    x = _module_input(n)
    core.pixel_shuffle(lw, n, lw.src(x), _per_sample(x.meta["val"]),
                       m.downscale_factor if inverse else m.upscale_factor, inverse,
                       type(m).__name__)


_MODULE_RULES: list[tuple[type | tuple[type, ...], Callable]] = [
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
      nn.ConvTranspose3d), _conv),
    (nn.Linear, _dense),
    (nn.modules.batchnorm._BatchNorm, _batchnorm),
    (nn.ReLU, _simple(core.relu)),
    (nn.ReLU6, _simple(core.relu6)),
    (nn.LeakyReLU, _simple(core.leaky_relu, "negative_slope")),
    (nn.Hardtanh, _simple(core.hardtanh, "min_val", "max_val")),
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
    ((nn.ReflectionPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d), _pad_module),
    (nn.Upsample, _upsample),
    ((nn.PixelShuffle, nn.PixelUnshuffle), _pixel_shuffle_module),
]


def _same_forward(cls: type, types: type | tuple[type, ...]) -> bool:
    """A subclass that overrides forward (timm's BatchNormAct2d) is not its base class."""
    bases = types if isinstance(types, tuple) else (types,)
    return any(issubclass(cls, b) and cls.forward is b.forward for b in bases)


def _module_rule(m: nn.Module) -> Callable | None:
    if parametrize.is_parametrized(m):
        return None  # traced through: its weight is computed at run time (a derived one)
    for types, rule in _MODULE_RULES:
        if isinstance(m, types) and _same_forward(type(m), types):
            return rule
    reason = next((r for t, r in _UNSUPPORTED_MODULES.items() if isinstance(m, t)), None)
    if reason is not None:
        def refuse(lw: _Lowering, n: fx.Node, m: nn.Module) -> None:
            raise Refuse(reason, type(m).__name__)
        return refuse
    return None


# -- function and method rules ----------------------------------------------------------------
def _is_tensor(a: Any) -> bool:
    return isinstance(a, fx.Node) and isinstance(a.meta.get("val"), torch.Tensor)


def _arith(build: Callable, **fixed: Any) -> Callable:
    """``a op b`` rules: activations by IR name, numbers as numbers, other tensors as nodes."""
    def rule(lw: _Lowering, n: fx.Node, a: Any, b: Any, alpha: float = 1.0, **_: Any) -> None:
        x, y = lw.operand(a), lw.operand(b)
        if build is not core.add:
            build(lw, n, x, y, what=_fn_name(n.target))
            return
        for v in (x, y):
            if isinstance(v, fx.Node):
                lw.src(v)  # a tensor computed from parameters or constants: says which
        core.add(lw, n, x, y, what=_fn_name(n.target), alpha=alpha, **fixed)
    return rule


def _neg(lw: _Lowering, n: fx.Node, a: Any) -> None:
    core.scale(lw, n, lw.src(a), -1.0, "neg")


def _one_input(build: Callable, *names: str, **defaults: Any) -> Callable:
    """``f(x, *names)`` rules (``relu``, ``leaky_relu(x, slope)``...)."""
    def rule(lw: _Lowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
        values = dict(defaults) | dict(zip(names, args))
        values |= {k: v for k, v in kwargs.items() if k in names}
        build(lw, n, lw.src(x), *(values[k] for k in names), what=_fn_name(n.target))
    return rule


def _clamp(lw: _Lowering, n: fx.Node, x: Any, min: Any = None, max: Any = None) -> None:  # noqa: A002
    core.clamp(lw, n, lw.src(x), min, max, "clamp")


def _prelu_fn(lw: _Lowering, n: fx.Node, x: Any, weight: Any) -> None:
    core.prelu(lw, n, lw.src(x), lw.param_name(weight, "slope"), "prelu")


def _identity_fn(lw: _Lowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
    training = kwargs.get("training") is True or (len(args) > 1 and args[1] is True)
    src = x.meta.get("val") if isinstance(x, fx.Node) else None
    dtypes = (src.dtype if isinstance(src, torch.Tensor) else None, n.meta["val"].dtype)
    core.identity(lw, n, lw.src(x), training=training, dtypes=dtypes, what=_fn_name(n.target))


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
    if not core.permute(lw, n, lw.src(x), perm, name):
        lw.emit(n, "reshape", (lw.src(x),), {"fn": "permute", "dims": tuple(perm)}, what=name)


def _cat(lw: _Lowering, n: fx.Node, tensors: Any, dim: int = 0, **kwargs: Any) -> None:
    dim = kwargs.get("axis", dim)
    if isinstance(tensors, fx.Node) and tensors in lw.pieces:
        # torch.cat(torch.split(x, 1, dim=1), dim=3): the tensors are one node's sequence
        # value; each piece becomes its own re-indexing node
        srcs = tuple(lw.piece(tensors, k) for k in range(len(lw.pieces[tensors])))
    elif isinstance(tensors, fx.Node):
        raise Refuse(f"concatenates the tensors of {tensors.name} = "
                     f"{_describe(lw.gm, tensors)}(...) at {where(tensors)}, a sequence "
                     "value fxpath could not lower (see its own entry)")
    elif isinstance(tensors, (tuple, list)):
        srcs = tuple(lw.src(t) for t in tensors)
    else:
        raise Refuse(f"expected a list of tensors, got {type(tensors).__name__}")
    core.cat(lw, n, srcs, dim, n.meta["val"].dim(), "cat")


def _getitem(lw: _Lowering, n: fx.Node, x: Any, index: Any) -> None:
    if isinstance(x, fx.Node) and x in lw.pieces:
        _select(lw, n, x, index)
        return
    if isinstance(x, fx.Node) and x in lw.value and isinstance(x.meta.get("val"), (tuple, list)):
        raise Refuse(f"selects a result of {x.name} = {_describe(lw.gm, x)}(...) at {where(x)}, "
                     "a sequence value fxpath could not lower (see its own entry)")
    if not _is_tensor(x):
        raise Refuse("indexes a non-tensor value produced from activations")
    core.getitem(lw, n, lw.src(x), index if isinstance(index, tuple) else (index,), "getitem")


def _select(lw: _Lowering, n: fx.Node, seq: fx.Node, index: Any) -> None:
    """``seq[k]``: the piece's re-indexing node; ``seq[a:b]``: a shorter sequence (no node)."""
    pieces = lw.pieces[seq]
    if isinstance(index, slice):
        lw.pieces[n] = pieces[index]
        return
    if not isinstance(index, int) or isinstance(index, bool):
        raise Refuse(f"selects a result of {seq.name} = {_describe(lw.gm, seq)}(...) with a "
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
                raise Refuse(f"{op} without sizes or sections")
            sizes = rest.pop(0) if rest else kwargs.pop(key)
        dim = rest.pop(0) if rest else kwargs.pop("dim", 0)
        if rest or kwargs:
            raise Refuse(f"{op} called with unexpected arguments {rest or sorted(kwargs)}")
        lw.pieces[n] = _pieces(lw, n, op, x, sizes, dim)
    return rule


def _pieces(lw: _Lowering, n: fx.Node, op: str, x: Any, sizes: Any,
            dim: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """The (input, index) of each result: torch's own op applied to ``arange`` of the split
    dimension gives the element range of each piece, so every form of the arguments (int or
    list sizes, sections, indices, uneven chunks) means what torch means."""
    if not _is_tensor(x):
        raise Refuse(f"{op} of a value that is not a tensor")
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise Refuse(f"{op} along dim {dim!r}: fxpath needs an integer dimension")
    shape = x.meta["val"].shape
    d = dim % len(shape)
    if d == 0:
        raise Refuse(f"{op} along the batch dimension (dim={dim}) separates the samples of a "
                     "batch; fxpath needs per-sample layers")
    if any(isinstance(a, fx.Node) for a in tree_leaves(sizes)):
        raise Refuse(f"{op} with sizes or indices given as a tensor; fxpath needs them as "
                     "Python ints")
    positions = torch.arange(shape[d])
    parts = positions.unbind(0) if op == "unbind" else getattr(positions, op)(sizes, 0)
    results = n.meta["val"]
    if not isinstance(results, (tuple, list)) or len(results) != len(parts):
        raise Refuse(f"{op} returned a {type(results).__name__}, not the {len(parts)} "
                     "tensors fxpath expects")
    for r in results:
        _per_sample(r)
    src, lead = lw.src(x), (slice(None),) * d
    return [(src, (*lead, core.piece_index(p))) for p in parts]


def _mean(reduce: str) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, x: Any, dim: Any = None, keepdim: bool = False,
             *_: Any, **kwargs: Any) -> None:
        ndim = x.meta["val"].dim()
        dims = tuple(range(1, ndim)) if dim is None else ntuple(dim, 1)
        core.mean(lw, n, lw.src(x), dims, ndim, keepdim, reduce, reduce)
    return rule


_POOL_ARGS = {"maxpool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                          "return_indices"),
              "avgpool": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                          "divisor_override")}


def _pool_fn(op: str) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
        a = dict(zip(_POOL_ARGS[op], args)) | kwargs
        name = _fn_name(n.target)
        extra = {}
        if op == "maxpool" and a.get("return_indices"):
            raise Refuse("max-pooling with return_indices is not supported")
        if op == "avgpool":
            extra = {"count_include_pad": a.get("count_include_pad", True),
                     "divisor_override": a.get("divisor_override")}
        core.pool(lw, n, lw.src(x), op, spatial_rank(name), a["kernel_size"], a.get("stride"),
                  a.get("padding", 0), a.get("dilation", 1), a.get("ceil_mode", False), name,
                  **extra)
    return rule


def _adaptive_fn(op: str) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("return_indices") or (len(args) > 1 and args[1]):
            raise Refuse("adaptive max-pooling with return_indices is not supported")
        name = _fn_name(n.target)
        core.adaptive_pool(lw, n, lw.src(x), op, spatial_rank(name), name)
    return rule


_CONV_ARGS = ("stride", "padding", "dilation", "groups")
_CONV_T_ARGS = ("stride", "padding", "output_padding", "groups", "dilation")


def _conv_fn(kind: str) -> Callable:
    def rule(lw: _Lowering, n: fx.Node, x: Any, weight: Any, bias: Any = None, *args: Any,
             **kwargs: Any) -> None:
        params = {"weight": lw.param_name(weight, "weight")}
        if bias is not None:
            params["bias"] = lw.param_name(bias, "bias")
        if kind == "dense":
            core.dense(lw, n, lw.src(x), params, _fn_name(n.target))
            return
        transposed = kind == "conv_transpose"
        a = dict(zip(_CONV_T_ARGS if transposed else _CONV_ARGS, args)) | kwargs
        kernel = tuple(weight.meta["val"].shape[2:])
        core.conv(lw, n, lw.src(x), params, transposed=transposed, nd=len(kernel),
                  kernel=kernel, stride=a.get("stride", 1), padding=a.get("padding", 0),
                  dilation=a.get("dilation", 1), groups=a.get("groups", 1),
                  output_padding=a.get("output_padding", 0), what=_fn_name(n.target))
    return rule


def _batch_norm_fn(lw: _Lowering, n: fx.Node, x: Any, running_mean: Any, running_var: Any,
                   weight: Any = None, bias: Any = None, training: bool = False,
                   momentum: float = 0.1, eps: float = 1e-5) -> None:
    stats = None if running_mean is None else lw.param_name(running_mean, "running_mean")
    bn = core.batchnorm_ref(training, stats, lw.param_name(running_var, "running_var"), eps,
                            lw.param_name(weight, "weight"), lw.param_name(bias, "bias"),
                            where(n))
    core.batchnorm(lw, n, lw.src(x), bn, "batch_norm")


def _pad_fn(lw: _Lowering, n: fx.Node, x: Any, pad: Any, mode: str = "constant",
            value: Any = None) -> None:
    core.pad(lw, n, lw.src(x), pad, mode, value, "pad")


_INTERPOLATE_ARGS = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                     "antialias")


def _interpolate_fn(lw: _Lowering, n: fx.Node, x: Any, *args: Any, **kwargs: Any) -> None:
    a = dict(zip(_INTERPOLATE_ARGS, args)) | kwargs
    _interpolate(lw, n, x, a.get("size"), a.get("scale_factor"), a.get("mode", "nearest"),
                 a.get("align_corners"), a.get("recompute_scale_factor"),
                 a.get("antialias", False), "interpolate")


def _pixel_shuffle_fn(inverse: bool) -> Callable:
    key = "downscale_factor" if inverse else "upscale_factor"

    def rule(lw: _Lowering, n: fx.Node, x: Any, factor: Any = None, **kwargs: Any) -> None:
        factor = kwargs.get(key, factor)
        if not _is_tensor(x):
            raise Refuse("shuffles a value that is not a tensor")
        core.pixel_shuffle(lw, n, lw.src(x), _per_sample(x.meta["val"]), factor, inverse,
                           _fn_name(n.target))
    return rule


_ADD, _SUB = _arith(core.add, sign=1.0), _arith(core.add, sign=-1.0)
_MUL, _DIV = _arith(core.multiply), _arith(core.divide)
_RELU, _RELU6 = _one_input(core.relu), _one_input(core.relu6)
_LEAKY = _one_input(core.leaky_relu, "negative_slope", negative_slope=0.01)
_HARDTANH = _one_input(core.hardtanh, "min_val", "max_val", min_val=-1.0, max_val=1.0)

_FUNCTION_RULES: dict[Any, Callable] = {
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
    **{f: _reshape for f in _RESHAPE_FUNCTIONS},
}
_MULTI_RESULT_FUNCTIONS: dict[Any, Callable] = {
    f: _multi_result(op) for op in _MULTI_RESULT_OPS
    for f in (getattr(torch, op), getattr(torch.Tensor, op))}
_FUNCTION_RULES.update(_MULTI_RESULT_FUNCTIONS)
_METHOD_RULES: dict[str, Callable] = {
    "add": _ADD, "add_": _ADD, "__add__": _ADD, "__radd__": _ADD,
    "sub": _SUB, "sub_": _SUB, "mul": _MUL, "mul_": _MUL, "div": _DIV,
    "div_": _DIV, "neg": _neg, "relu": _RELU, "relu_": _RELU, "clamp": _clamp,
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
    """Lower a traced GraphModule (`fxpath.frontend.tracer.trace`) or graph (`trace_graph`) to the
    IR."""
    if isinstance(traced, fx.Graph):
        if traced.owning_module is None:
            raise TypeError("lower() needs a GraphModule or a graph whose owning_module is set")
        gm: Any = _GraphView(traced, traced.owning_module)
    else:
        gm = traced
    lw = _Lowering(gm)
    return lw.run(list(gm.graph.nodes))


class _GraphView:
    """A traced graph with the model that owns its submodules (what lowering reads of a
    GraphModule, without building one)."""

    def __init__(self, graph: fx.Graph, root: nn.Module) -> None:
        self.graph, self.get_submodule, self.root = graph, root.get_submodule, root
