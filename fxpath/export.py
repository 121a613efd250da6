"""The torch.export front end: lower an `ExportedProgram` (an ATen graph) into the fxpath IR.

`lower_exported(ep)` emits the IR that `fxpath.lower.lower` emits from a torch.fx trace (same
node kinds, same static attributes, parameters named by their state_dict names), so the
normalization passes, the code generator and everything downstream are shared. It reads the
graph as ``torch.export.export`` gives it (``aten.conv2d``, ``aten.linear``,
``aten.batch_norm``, in-place ``relu_``/``add_``...) and after ``ep.run_decompositions()``
(``aten.convolution``, ``addmm``/``mm``/``bmm`` on a transposed weight,
``_native_batch_norm_legit_no_training``, ``max_pool2d_with_indices``, PReLU as
``where(x > 0, x, w * x)``...). One rule per ATen op overload packet (`_RULES`); an op without
one becomes an ``unsupported`` node carrying `fxpath.lower`'s reasons, reported by the
pipeline's first pass with every other offending op.

Parameters and buffers are the graph's placeholders; ``ep.graph_signature`` names them
(``inputs_to_parameters``/``inputs_to_buffers``: the model's state_dict names). Shapes come
from ``node.meta["val"]`` without the batch dimension, which must stay first: export with a
batch of two or more (`trace_export` uses two, as the fx tracer does) so that it is never
confused with a squeezable size-1 dimension.

Node names come from module paths (``layer1_0_conv1`` for the conv of ``layer1.0.conv1``,
``layer1_0_add`` for an add in ``layer1.0``'s own forward, the ATen node's name at the top
level), unique with ``_1``, ``_2`` suffixes. They often but not always equal the fx front
end's names.

ATen-level patterns that need more than one node:

* a dense layer on a (B, ..., C) input may reach the graph as ``view`` to (B * ..., C),
  ``mm``/``addmm``, ``view`` back: the first view leaves the activation *folded* (the batch
  merged with leading dimensions; `_Lowering.folded`), only a dense product or a view
  restoring the batch may read it;
* ``bmm`` with a batch-expanded transposed weight, then ``add`` of the bias parameter: the add
  becomes the dense layer's bias;
* ops with several results (``_native_batch_norm_legit_no_training``, pools with indices,
  ``split``...) emit nothing themselves: each used ``getitem`` emits the IR node of its result.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils._pytree import tree_leaves

from .errors import ArgumentError, FxPathError, TraceError
from .ir import BatchNormRef, Graph, Node
from .refusals import ATEN_OPS as _UNSUPPORTED_OPS
from .refusals import (
    BN_STATS,
    LAYER_SCALE,
    MIXES_PARAMS,
    MIXES_SAMPLES,
    MODULES,
    PRODUCT,
    RUNTIME_WEIGHT,
)
from .tracer import TRACE_BATCH
from .validate import as_input_shapes, eval_mode

__all__ = ["lower_exported", "trace_export"]

aten = torch.ops.aten

Rule = Callable[["_Lowering", fx.Node, dict[str, Any]], None]

#: torch.nn module types the fx front end refuses as a whole (every op of their forward is
#: reported once, as the module), by qualified class name
_UNSUPPORTED_MODULES: dict[str, str] = {
    f"{t.__module__}.{t.__qualname__}": reason
    for t, reason in MODULES.items()}

#: torch.nn modules whose one op is a re-indexing or an identity: their node keeps their name
_SHAPE_MODULE = re.compile(r"(Flatten|Unflatten|Identity|Dropout|Pad)\w*$")

#: ops that only alias or re-index their input: how a transposed weight reaches a product
_WEIGHT_CHAIN = frozenset({"expand", "view", "_unsafe_view", "reshape", "clone", "contiguous",
                           "alias", "detach", "unsqueeze", "lift_fresh_copy"})
_TRANSPOSES = frozenset({"t", "permute", "transpose", "numpy_T"})
#: view ops: an in-place op on their result would write into their input
_VIEW_OPS = frozenset({"view", "permute", "transpose", "t", "slice", "select", "narrow", "expand",
                       "squeeze", "unsqueeze", "alias", "as_strided", "flatten", "unflatten",
                       "reshape", "view_as", "reshape_as", "detach", "split", "chunk",
                       "unbind", "split_with_sizes", "tensor_split", "diagonal"})
#: shape queries and run-time checks on activations: no neurons, no IR node
_NO_NEURONS = frozenset({"sym_size", "sym_numel", "sym_stride", "sym_storage_offset",
                         "_assert_tensor_metadata", "_assert_async", "_assert_scalar",
                         "_functional_assert_async", "_functional_assert_scalar",
                         "sym_constrain_range", "sym_constrain_range_for_size"})


class _Refuse(Exception):
    def __init__(self, reason: str, what: str = "") -> None:
        super().__init__(reason)
        self.reason, self.what = reason, what


# -- small helpers ----------------------------------------------------------------------------
def _packet_name(target: Any) -> str:
    """``relu_`` for ``aten.relu_.default``; ``getitem`` for ``operator.getitem``."""
    packet = getattr(target, "overloadpacket", target)
    return str(getattr(packet, "__name__", target))


def _op_name(n: fx.Node) -> str:
    """How messages name the op of a node: ``aten.conv2d``, ``getitem``."""
    if n.op != "call_function":
        return f"{n.op} {n.target}"
    packet = getattr(n.target, "overloadpacket", None)
    return str(packet) if packet is not None else _packet_name(n.target)


def _innermost(n: fx.Node) -> tuple[str, str]:
    """``(module path, qualified class name)`` of the innermost module a node runs in."""
    stack = n.meta.get("nn_module_stack")
    try:
        path, cls = list(stack.values())[-1] if stack else ("", "")
    except (AttributeError, IndexError, TypeError, ValueError):
        return "", ""
    if not isinstance(cls, str):
        cls = f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', cls)}"
    return str(path or ""), cls


def _where(n: fx.Node) -> str:
    """The model's module path of a node (``layer1.0.conv1``), else the node's name."""
    return _innermost(n)[0] or n.name


def _torch_nn(cls: str) -> bool:
    return cls.startswith("torch.nn.modules.")


def _ident(path: str) -> str:
    ident = re.sub(r"\W", "_", path)
    return f"_{ident}" if ident[:1].isdigit() else ident


def _ntuple(v: Any, n: int) -> tuple[Any, ...]:
    if isinstance(v, (tuple, list)):
        return tuple(v) * n if len(v) == 1 and n > 1 else tuple(v)
    return (v,) * n


def _val(a: Any) -> Any:
    return a.meta.get("val") if isinstance(a, fx.Node) else None


def _is_tensor(a: Any) -> bool:
    return isinstance(_val(a), torch.Tensor)


def _scalar(a: Any) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool)


def _x(a: dict[str, Any]) -> Any:
    """The tensor an op applies to: its ``self`` or ``input`` argument."""
    return a["self"] if "self" in a else a.get("input")


def _bind(n: fx.Node) -> dict[str, Any]:
    """The call's arguments by schema name, defaults filled in."""
    schema = getattr(n.target, "_schema", None)
    if schema is None:
        return {f"arg{i}": v for i, v in enumerate(n.args)} | dict(n.kwargs)
    out: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(n.args) and not arg.kwarg_only:
            out[arg.name] = n.args[i]
        elif arg.name in n.kwargs:
            out[arg.name] = n.kwargs[arg.name]
        else:
            out[arg.name] = arg.default_value if arg.has_default_value() else None
    return out


def _mutated(n: fx.Node) -> fx.Node | None:
    """The argument an in-place op (``relu_``, ``add_``) writes into, else None."""
    schema = getattr(n.target, "_schema", None)
    if schema is None or not n.args:
        return None
    info = schema.arguments[0].alias_info if schema.arguments else None
    if info is not None and info.is_write and isinstance(n.args[0], fx.Node):
        return n.args[0]
    return None


def _pool_nd(name: str) -> int | None:
    """Spatial rank of a pooling op from its name (``max_pool2d_with_indices`` -> 2)."""
    m = re.search(r"([123])d", name)
    return int(m.group(1)) if m else None


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)


def _numel(shape: Sequence[int]) -> int:
    total = 1
    for s in shape:
        total *= int(s)
    return total


class _Lowering:
    """State of one lowering: the ATen graph, the IR nodes made so far, the fx->IR maps."""

    def __init__(self, ep: ExportedProgram) -> None:
        self.graph = ep.graph
        self.nodes: list[Node] = []
        self.value: dict[fx.Node, str] = {}  # fx node -> IR node holding its tensor
        # fx node with several results -> emits the IR node of result k for a getitem
        self.multi: dict[fx.Node, Callable[[fx.Node, int], None]] = {}
        # fx node of shape (B * prod(lead), *rest) -> (IR node of shape (*lead, *rest), lead)
        self.folded: dict[fx.Node, tuple[str, tuple[int, ...]]] = {}
        self.names: set[str] = {"output"}
        self.refused: dict[tuple[str, str], str] = {}  # (module class, path) -> IR node
        self.order = {n: i for i, n in enumerate(self.graph.nodes)}
        self.prelu: dict[fx.Node, tuple[fx.Node, str]] = {}
        self.absorbed: set[fx.Node] = set()
        self._read_signature(ep)
        self.batch = self._batch()

    # -- the program's signature --------------------------------------------------------------
    def _read_signature(self, ep: ExportedProgram) -> None:
        by_name = {n.name: n for n in self.graph.nodes if n.op == "placeholder"}
        # placeholder -> state_dict name (a tensor attribute: its name in ``ep.constants``)
        self.params: dict[fx.Node, str] = {}
        self.user_inputs: list[fx.Node] = []
        for spec in ep.graph_signature.input_specs:
            node = by_name.get(getattr(spec.arg, "name", None))
            if node is None:
                continue
            if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                self.params[node] = str(spec.target)
            elif spec.kind == InputKind.USER_INPUT:
                self.user_inputs.append(node)
        self.user_output = [spec.kind == OutputKind.USER_OUTPUT
                            for spec in ep.graph_signature.output_specs]

    def _batch(self) -> int:
        sizes = [v.shape[0] for n in self.user_inputs
                 if isinstance(v := _val(n), torch.Tensor) and v.dim() > 0]
        if not sizes:
            raise TraceError("the exported program has no tensor input with a batch dimension")
        if not all(isinstance(s, int) for s in sizes):
            raise ArgumentError("the exported program has a dynamic batch size: export it with "
                                "static shapes (fxpath.export.trace_export does)")
        if sizes[0] < 2 or any(s != sizes[0] for s in sizes):
            raise ArgumentError(
                f"the exported program's inputs have batch sizes {sizes}: export it with one "
                f"batch size of at least 2 (fxpath.export.trace_export uses {TRACE_BATCH}), so "
                "that the batch dimension cannot be confused with a squeezable size-1 one")
        return sizes[0]

    # -- helpers used by the rules ------------------------------------------------------------
    def per_sample(self, val: Any) -> tuple[int, ...]:
        if not isinstance(val, torch.Tensor) or val.dim() == 0 or val.shape[0] != self.batch:
            raise _Refuse(MIXES_SAMPLES)
        return _dims(val.shape[1:])

    def is_activation(self, a: Any) -> bool:
        return isinstance(a, fx.Node) and (a in self.value or a in self.multi
                                           or a in self.folded)

    def src(self, a: Any) -> str:
        if isinstance(a, fx.Node) and a in self.value:
            return self.value[a]
        if isinstance(a, fx.Node) and a in self.folded:
            raise _Refuse(MIXES_SAMPLES)
        if isinstance(a, fx.Node) and a in self.multi:
            raise _Refuse(f"uses the tensors returned by {a.name} = {_op_name(a)}(...) as one "
                          "tensor")
        if isinstance(a, fx.Node):
            raise _Refuse(MIXES_PARAMS.format(a.name))
        raise _Refuse(f"expected an activation tensor, got {a!r}")

    def param_name(self, a: Any, role: str) -> str | None:
        """State_dict name of a parameter argument (a parameter/buffer placeholder)."""
        if a is None:
            return None
        if isinstance(a, fx.Node) and a in self.params:
            return self.params[a]
        raise _Refuse(RUNTIME_WEIGHT.format(role))

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def base_name(self, n: fx.Node, op: str) -> str:
        path, cls = _innermost(n)
        opname = _packet_name(n.target).strip("_") or "op"
        if not path:
            return n.name if n.op == "placeholder" else opname
        main = op not in ("reshape", "identity") or _SHAPE_MODULE.search(cls) is not None
        return _ident(path) if _torch_nn(cls) and main else f"{_ident(path)}_{opname}"

    def what(self, n: fx.Node) -> str:
        cls = _innermost(n)[1]
        return cls.rpartition(".")[2] if _torch_nn(cls) else _op_name(n)

    def emit(self, n: fx.Node, op: str, inputs: Sequence[str] = (), attrs: dict | None = None,
             params: dict | None = None, shape: tuple[int, ...] | None = None,
             what: str = "") -> str:
        shape = self.per_sample(_val(n)) if shape is None else shape
        name = self.fresh(self.base_name(n, op))
        self.nodes.append(Node(name, op, tuple(inputs), shape, attrs or {}, params or {},
                               f"{what or self.what(n)} at {_where(n)}"))
        self.value[n] = name
        return name

    def alias(self, n: fx.Node, x: Any) -> None:
        """``n`` is ``x`` (a no-op view or expand): no IR node."""
        if isinstance(x, fx.Node) and x in self.folded:
            self.folded[n] = self.folded[x]
        else:
            self.value[n] = self.src(x)

    def unsupported(self, n: fx.Node, what: str, reason: str,
                    error: BaseException | None = None, scope: tuple[str, str] | None = None
                    ) -> None:
        if scope is not None and scope in self.refused:  # one entry per refused module call
            self.value[n] = self.refused[scope]
            return
        inputs = tuple(self.value[a] for a in n.all_input_nodes if a in self.value)
        val = _val(n)
        shape = tuple(val.shape[1:]) if isinstance(val, torch.Tensor) and val.dim() else ()
        attrs: dict[str, Any] = {"what": what, "reason": reason, "where": _where(n)}
        if error is not None:
            attrs["error"] = error
        name = self.fresh(self.base_name(n, "unsupported"))
        self.nodes.append(Node(name, "unsupported", inputs, shape, attrs, {}, _where(n)))
        self.value[n] = name
        if scope is not None:
            self.refused[scope] = name

    # -- the walk -----------------------------------------------------------------------------
    def run(self) -> Graph:
        self._find_prelu()
        for n in self.graph.nodes:
            mark = len(self.nodes)
            try:
                self.lower_node(n)
            except _Refuse as r:
                self._drop(n, mark)
                self.unsupported(n, r.what or self.what(n), r.reason)
            except FxPathError:
                raise
            except Exception as exc:  # a rule met an argument form it does not handle
                self._drop(n, mark)
                self.unsupported(n, _op_name(n), f"fxpath cannot lower this call "
                                                 f"({type(exc).__name__}: {exc})", error=exc)
        return Graph(tuple(self.nodes))

    def _drop(self, n: fx.Node, mark: int) -> None:
        self.names -= {m.name for m in self.nodes[mark:]}
        del self.nodes[mark:]
        self.value.pop(n, None)
        self.multi.pop(n, None)
        self.folded.pop(n, None)

    def lower_node(self, n: fx.Node) -> None:
        if n.op == "placeholder":
            if n in self.user_inputs and isinstance(_val(n), torch.Tensor):
                self.emit(n, "input", what=f"input {n.name}")
            return
        if n.op == "output":
            self.lower_output(n)
            return
        if n.op != "call_function" or n in self.absorbed:
            return
        if not any(self.is_activation(a) for a in n.all_input_nodes):
            return  # computes on parameters or constants only: not a layer of neurons
        if self._refuse_module(n):
            return
        if n.target is operator.getitem:
            self.getitem(n)
            return
        self.lower_call(n)

    def _refuse_module(self, n: fx.Node) -> bool:
        """Any op inside a module type the fx front end refuses: one entry for the call."""
        path, cls = _innermost(n)
        reason = _UNSUPPORTED_MODULES.get(cls)
        if reason is None:
            return False
        self.unsupported(n, cls.rpartition(".")[2], reason, scope=(cls, path))
        return True

    def lower_call(self, n: fx.Node) -> None:
        name = _packet_name(n.target)
        if name in _NO_NEURONS:
            return
        rule = _RULES.get(getattr(n.target, "overloadpacket", None))
        if n in self.prelu:
            rule = _prelu_pattern
        if rule is None:
            raise _Refuse(_UNSUPPORTED_OPS.get(name) or f"no path-lifting rule for {_op_name(n)}")
        rule(self, n, _bind(n))
        x = _mutated(n)
        if x is not None and n in self.value:
            self._rebind(n, x)

    def _rebind(self, n: fx.Node, x: fx.Node) -> None:
        """After ``y = op_(x)``, later reads of ``x`` read ``y``. Refused when a tensor sharing
        ``x``'s memory (the tensor ``x`` views, or a view of ``x``) is read later: it changes
        too."""
        aliases = [u for u in x.users if self.order[u] < self.order[n]
                   and _packet_name(u.target) in _VIEW_OPS]  # later views see y: fine
        if x.op == "call_function" and _packet_name(x.target) in _VIEW_OPS and x.args \
                and isinstance(x.args[0], fx.Node):
            aliases.append(x.args[0])
        if any(self.order[u] > self.order[n] for a in aliases for u in [a, *a.users]):
            raise _Refuse("an in-place op on an activation that shares its memory with another "
                          "one read later (a view): both change")
        self.value[x] = self.value[n]

    def getitem(self, n: fx.Node) -> None:
        seq, index = n.args
        if seq in self.multi:
            self.multi[seq](n, index)
        elif seq in self.value:  # a result of a refused op: its own entry says why
            self.value[n] = self.value[seq]
        else:
            raise _Refuse("indexes a value fxpath could not lower")

    def lower_output(self, n: fx.Node) -> None:
        outs: list[str] = []
        for keep, arg in zip(self.user_output, n.args[0]):
            for a in tree_leaves(arg) if keep else ():
                if isinstance(a, fx.Node) and a in self.value:
                    outs.append(self.value[a])
                elif isinstance(a, fx.Node) and a in self.folded:
                    raise _Refuse(MIXES_SAMPLES, "model output")
        if not outs:
            raise _Refuse("no output of the model is computed from its input: it has no "
                          "paths to analyse", "model output")
        self.nodes.append(Node("output", "output", tuple(outs), (), {}, {}, "model output"))

    # -- ATen patterns ------------------------------------------------------------------------
    def _find_prelu(self) -> None:
        """Decomposed PReLU: ``where(x > 0, x, w * x)`` with ``w`` a (viewed) parameter."""
        for n in self.graph.nodes:
            if n.op != "call_function" or _packet_name(n.target) != "where" or len(n.args) != 3:
                continue
            cond, x, prod = n.args
            if not all(isinstance(a, fx.Node) and a.op == "call_function"
                       for a in (cond, prod)):
                continue
            weight = self._prelu_weight(cond, x, prod)
            if weight is not None and set(cond.users) == {n} and set(prod.users) == {n}:
                self.prelu[n] = (x, weight)
                self.absorbed |= {cond, prod}

    def _prelu_weight(self, cond: fx.Node, x: Any, prod: fx.Node) -> str | None:
        if _packet_name(cond.target) != "gt" or cond.args[:2] not in ((x, 0), (x, 0.0)):
            return None
        if _packet_name(prod.target) != "mul" or x not in prod.args[:2]:
            return None
        w = prod.args[1] if prod.args[0] is x else prod.args[0]
        param = self.param_through(w, _WEIGHT_CHAIN)
        xval, wval = _val(x), _val(w)
        if param is None or not isinstance(xval, torch.Tensor) or wval.dim() > xval.dim():
            return None
        shape = [1] * (xval.dim() - wval.dim()) + list(wval.shape)
        if any(s != 1 for i, s in enumerate(shape) if i != 1):
            return None  # the slope must broadcast over the channel dimension (dim 1)
        return self.params[param]

    def param_through(self, a: Any, ops: frozenset[str]) -> fx.Node | None:
        """The parameter placeholder ``a`` is computed from through ``ops`` only, else None."""
        while isinstance(a, fx.Node) and a not in self.params:
            if a.op != "call_function" or _packet_name(a.target) not in ops or not a.args:
                return None
            a = a.args[0]
        return a if isinstance(a, fx.Node) else None

    def dense_weight(self, w: Any) -> str:
        """State_dict name of the (out, in) weight ``W`` that a product reads as ``W.T``
        (``t``/``permute``/``transpose`` of the parameter, maybe expanded over a batch)."""
        transposes, a = 0, w
        want = tuple(_val(w).shape[-2:]) if _is_tensor(w) else None
        while isinstance(a, fx.Node) and a not in self.params:
            name = _packet_name(a.target) if a.op == "call_function" else ""
            if name in _TRANSPOSES and _val(a).dim() == 2:
                transposes += 1
            elif name not in _WEIGHT_CHAIN or tuple(_val(a).shape[-2:]) != want:
                raise _Refuse(PRODUCT if self.is_activation(a) else
                              "a matrix product with a tensor that is not a linear layer's "
                              "transposed weight")
            a = a.args[0]
        if not isinstance(a, fx.Node) or transposes != 1 or _val(a).dim() != 2 \
                or tuple(_val(a).shape[::-1]) != want:
            raise _Refuse("a matrix product with a parameter that is not read as a linear "
                          "layer's transposed (out, in) weight")
        return self.params[a]

    def fuse_bias(self, n: fx.Node, act: fx.Node, bias: fx.Node) -> bool:
        """``linear(x) + b`` (a decomposed dense layer's bias): the bias joins the layer."""
        name = self.value.get(act)
        if bias not in self.params or name is None:
            return False
        idx = next((i for i, m in enumerate(self.nodes) if m.name == name), None)
        node = self.nodes[idx] if idx is not None else None
        if node is None or node.op != "linear" or node.attrs.get("kind") != "dense" \
                or "bias" in node.params or _val(bias).shape != (node.shape[-1],):
            return False
        holders = {m for m, v in self.value.items() if v == name}
        if any(set(m.users) - holders - {n} for m in holders) \
                or any(name in m.inputs for m in self.nodes):
            return False
        self.nodes[idx] = node.replace(params={**node.params, "bias": self.params[bias]})
        self.value[n] = name
        return True


# -- rules ------------------------------------------------------------------------------------
def _conv(transposed: bool | None) -> Rule:
    """``conv{1,2,3}d`` (False), ``conv_transpose{1,2,3}d`` (True), ``convolution`` (None)."""
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        w = a["weight"]
        is_t = bool(a["transposed"]) if transposed is None else transposed
        nd = _val(w).dim() - 2
        pad = a["padding"]
        attrs: dict[str, Any] = {
            "kind": "conv_transpose" if is_t else "conv", "ndim": nd,
            "kernel": _dims(_val(w).shape[2:]), "stride": _ntuple(a["stride"], nd),
            "dilation": _ntuple(a["dilation"], nd), "groups": int(a["groups"]),
            "padding": pad if isinstance(pad, str) else _ntuple(pad, nd)}
        if is_t:
            attrs["output_padding"] = _ntuple(a["output_padding"], nd)
        params = {"weight": lw.param_name(w, "weight")}
        if a.get("bias") is not None:
            params["bias"] = lw.param_name(a["bias"], "bias")
        lw.emit(n, "linear", (lw.src(_x(a)),), attrs, params)
    return rule


def _linear(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    params = {"weight": lw.param_name(a["weight"], "weight")}
    if a.get("bias") is not None:
        params["bias"] = lw.param_name(a["bias"], "bias")
    lw.emit(n, "linear", (lw.src(_x(a)),), {"kind": "dense"}, params)


def _matmul(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``mm``/``addmm``/``bmm``/``matmul`` of an activation and a transposed weight."""
    x = a["mat1"] if "mat1" in a else a["self"]
    w = a["mat2"] if "mat2" in a else a["other"]
    if lw.is_activation(x) and lw.is_activation(w):
        raise _Refuse(PRODUCT)
    if not lw.is_activation(x):
        raise _Refuse("a matrix product with the activation on the right (W @ x) is not "
                      "supported")
    params = {"weight": lw.dense_weight(w)}
    if "mat1" in a and a["self"] is not None:  # addmm(bias, x, W.T)
        if a.get("beta", 1) != 1 or a.get("alpha", 1) != 1:
            raise _Refuse("addmm with beta or alpha other than 1")
        params["bias"] = lw.param_name(a["self"], "bias")
    out = _dims(_val(n).shape[1:])
    if x in lw.folded:  # (B * prod(lead), in) @ W.T: a dense layer on the last dim
        src, lead = lw.folded[x]
        name = lw.emit(n, "linear", (src,), {"kind": "dense"}, params, shape=(*lead, *out))
        del lw.value[n]
        lw.folded[n] = (name, lead)
        return
    lw.emit(n, "linear", (lw.src(x),), {"kind": "dense"}, params)


def _batch_norm_ref(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> BatchNormRef:
    if a.get("training") or a["running_mean"] is None:
        raise _Refuse(BN_STATS)
    return BatchNormRef(lw.param_name(a["running_mean"], "running_mean"),
                        lw.param_name(a["running_var"], "running_var"), float(a["eps"]),
                        lw.param_name(a["weight"], "weight"), lw.param_name(a["bias"], "bias"),
                        _where(n))


def _batch_norm(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    bn = _batch_norm_ref(lw, n, a)
    lw.emit(n, "batchnorm", (lw.src(_x(a)),), {"bn": bn})


def _first_result(emit: Callable[[fx.Node], None], rest: str) -> Callable[[fx.Node, int], None]:
    """A getitem handler: result 0 emits; the others (indices, statistics) only if unused."""
    def handler(item: fx.Node, k: int) -> None:
        if k == 0:
            emit(item)
        elif item.users:
            raise _Refuse(rest)
    return handler


def _batch_norm_tuple(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``_native_batch_norm_legit_no_training`` / ``native_batch_norm``: (out, stats...)."""
    bn, x = _batch_norm_ref(lw, n, a), lw.src(_x(a))
    lw.multi[n] = _first_result(lambda item: lw.emit(item, "batchnorm", (x,), {"bn": bn}),
                                "uses the batch statistics a BatchNorm returns")


def _relu(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    lw.emit(n, "relu", (lw.src(_x(a)),))


def _hardtanh(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``hardtanh``, and ``relu6`` (no ``min_val``/``max_val``: 0 and 6)."""
    lo, hi = float(a.get("min_val", 0.0)), float(a.get("max_val", 6.0))
    if (lo, hi) == (0.0, 6.0):
        lw.emit(n, "relu6", (lw.src(_x(a)),))
    else:
        lw.emit(n, "hardtanh", (lw.src(_x(a)),), {"lo": lo, "hi": hi})


def _clamp(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    lo, hi = a.get("min"), a.get("max")
    if not all(v is None or _scalar(v) for v in (lo, hi)):
        raise _Refuse("clamp with tensor bounds is not supported")
    lo = None if lo is None else float(lo)
    hi = None if hi is None else float(hi)
    if lo == 0.0 and hi is None:
        lw.emit(n, "relu", (lw.src(_x(a)),))
    elif lo is None:
        raise _Refuse("clamp with only an upper bound (min(x, c)) is not supported yet")
    else:
        lw.emit(n, "hardtanh", (lw.src(_x(a)),), {"lo": lo, "hi": hi})


def _leaky(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    lw.emit(n, "leaky_relu", (lw.src(_x(a)),), {"slope": float(a["negative_slope"])})


def _prelu(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    lw.emit(n, "prelu", (lw.src(_x(a)),), {}, {"weight": lw.param_name(a["weight"], "slope")})


def _prelu_pattern(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    x, weight = lw.prelu[n]
    lw.emit(n, "prelu", (lw.src(x),), {}, {"weight": weight}, what="PReLU")


def _pool_rank(lw: _Lowering, n: fx.Node, val: Any, nd: int | None) -> int:
    rank = len(lw.per_sample(val)) - 1
    if nd is not None and rank != nd:
        raise _Refuse(f"{nd}-d pooling of a {rank + 1}-d tensor: without a channel dimension "
                      "torch pools the batch as channels; fxpath needs (N, C, *spatial) input")
    return rank


def _pool_attrs(lw: _Lowering, n: fx.Node, a: dict[str, Any], op: str,
                val: Any) -> dict[str, Any]:
    nd = _pool_rank(lw, n, val, _pool_nd(_packet_name(n.target)))
    kernel = a["kernel_size"]
    stride = a["stride"] if a["stride"] not in (None, [], ()) else kernel
    attrs = {"ndim": nd, "kernel": _ntuple(kernel, nd), "stride": _ntuple(stride, nd),
             "padding": _ntuple(a["padding"], nd), "dilation": _ntuple(a.get("dilation", 1), nd),
             "ceil_mode": bool(a["ceil_mode"])}
    if op == "avgpool":
        attrs.update(count_include_pad=bool(a["count_include_pad"]),
                     divisor_override=a.get("divisor_override"))
    return attrs


def _pool(op: str) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        lw.emit(n, op, (lw.src(_x(a)),), _pool_attrs(lw, n, a, op, _val(n)))
    return rule


def _max_pool_indices(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    x = lw.src(_x(a))
    attrs = _pool_attrs(lw, n, a, "maxpool", _val(n)[0])
    lw.multi[n] = _first_result(lambda item: lw.emit(item, "maxpool", (x,), attrs),
                                "max-pooling with return_indices is not supported")


def _adaptive(op: str) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        val = _val(n)
        x, nd = lw.src(_x(a)), _pool_nd(_packet_name(n.target))
        if isinstance(val, torch.Tensor):
            lw.emit(n, op, (x,), {"ndim": _pool_rank(lw, n, val, nd)})
            return
        attrs = {"ndim": _pool_rank(lw, n, val[0], nd)}  # adaptive max: (out, indices)
        lw.multi[n] = _first_result(lambda item: lw.emit(item, op, (x,), attrs),
                                    "adaptive max-pooling with return_indices is not supported")
    return rule


def _mean(reduce: str) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        x = _x(a)
        ndim = _val(x).dim()
        dim = a.get("dim")
        dims = tuple(range(ndim)) if dim in (None, [], ()) else _ntuple(dim, 1)
        dims = tuple(sorted(d % ndim for d in dims))
        if 0 in dims:
            raise _Refuse(f"{reduce} over the batch dimension")
        lw.emit(n, "mean", (lw.src(x),), {"dims": dims, "keepdim": bool(a.get("keepdim")),
                                          "reduce": reduce})
    return rule


def _add(sign: float) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        x, y, alpha = a["self"], a["other"], a.get("alpha", 1)
        if lw.is_activation(x) and lw.is_activation(y):
            lw.emit(n, "add", (lw.src(x), lw.src(y)),
                    {"coeffs": (1.0, sign * alpha), "const": 0.0})
        elif lw.is_activation(x) and _scalar(y):
            lw.emit(n, "add", (lw.src(x),), {"coeffs": (1.0,), "const": sign * alpha * y})
        elif sign > 0 and alpha == 1 and lw.is_activation(x) and lw.fuse_bias(n, x, y):
            return
        else:
            lw.src(y if lw.is_activation(x) else x)
            raise _Refuse("adds a tensor that is not an activation (e.g. a parameter)")
    return rule


def _rsub(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``other - alpha * self`` (``2 - x``)."""
    if not _scalar(a["other"]):
        raise _Refuse("subtracts an activation from a tensor that is not an activation")
    lw.emit(n, "add", (lw.src(a["self"]),),
            {"coeffs": (-1.0 * a.get("alpha", 1),), "const": float(a["other"])})


def _mul(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    x, y = a["self"], a["other"]
    if lw.is_activation(y) and _scalar(x):
        x, y = y, x
    if lw.is_activation(x) and _scalar(y):
        lw.emit(n, "add", (lw.src(x),), {"coeffs": (float(y),), "const": 0.0})
    elif lw.is_activation(x) and lw.is_activation(y):
        raise _Refuse(PRODUCT)
    else:
        raise _Refuse(LAYER_SCALE)


def _div(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    x, y = a["self"], a["other"]
    if a.get("rounding_mode") is not None:
        raise _Refuse(f"division with rounding_mode={a['rounding_mode']!r} is not linear")
    if lw.is_activation(x) and _scalar(y) and y != 0:
        lw.emit(n, "add", (lw.src(x),), {"coeffs": (1.0 / y,), "const": 0.0})
    elif lw.is_activation(x) and _scalar(y):
        raise _Refuse("division by zero")
    else:
        raise _Refuse("division by an activation or a tensor is not positively homogeneous")


def _neg(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    lw.emit(n, "add", (lw.src(_x(a)),), {"coeffs": (-1.0,), "const": 0.0})


def _identity(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """clone, contiguous, alias, detach, eval-mode dropout, same-dtype copies."""
    if a.get("train") is True:
        raise _Refuse("dropout in training mode is random; call model.eval() first")
    x = _x(a)
    if isinstance(_val(n), torch.Tensor) and _val(x).dtype != _val(n).dtype:
        raise _Refuse("changes the dtype inside the model; fxpath keeps one dtype")
    lw.emit(n, "identity", (lw.src(x),))


def _native_dropout(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    if a.get("train") is not False:
        raise _Refuse("dropout in training mode is random; call model.eval() first")
    x = lw.src(_x(a))
    lw.multi[n] = _first_result(lambda item: lw.emit(item, "identity", (x,)),
                                "uses the dropout mask")


def _fold_lead(in_shape: tuple[int, ...], out_shape: tuple[int, ...],
               batch: int) -> tuple[int, ...] | None:
    """``lead`` when ``out_shape`` is ``in_shape`` with ``(batch, *lead)`` merged, else None."""
    for j in range(1, len(in_shape)):
        if (batch * _numel(in_shape[1:j + 1]), *in_shape[j + 1:]) == out_shape:
            return in_shape[1:j + 1]
    return None


def _reshape(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """view/reshape/flatten/squeeze/unsqueeze...: row-major re-indexing."""
    x = _x(a)
    out = _dims(_val(n).shape)
    if x in lw.folded:  # (B * prod(lead), ...) back to (B, ...)
        src, _lead = lw.folded[x]
        shape = lw.per_sample(_val(n))
        if shape == next(m.shape for m in reversed(lw.nodes) if m.name == src):
            lw.value[n] = src
        else:
            lw.emit(n, "reshape", (src,), {"fn": "view"}, shape=shape)
        return
    in_shape = _dims(_val(x).shape)
    if out == in_shape:
        lw.alias(n, x)
        return
    lead = _fold_lead(in_shape, out, lw.batch) if out[:1] != (lw.batch,) else None
    if lead is not None and x in lw.value:
        lw.folded[n] = (lw.value[x], lead)
        return
    lw.emit(n, "reshape", (lw.src(x),), {"fn": "view"})


def _permute(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    x = _x(a)
    ndim = _val(x).dim()
    perm = list(range(ndim))
    if "dims" in a:
        perm = [d % ndim for d in a["dims"]]
    elif "dim0" in a:
        d0, d1 = a["dim0"] % ndim, a["dim1"] % ndim
        perm[d0], perm[d1] = perm[d1], perm[d0]
    else:  # t / numpy_T
        perm = perm[::-1]
    if perm[0] != 0:
        raise _Refuse("moves the batch dimension")
    if perm == list(range(ndim)):
        lw.alias(n, x)
        return
    lw.emit(n, "reshape", (lw.src(x),), {"fn": "permute", "dims": tuple(perm)})


def _expand(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``expand``/``as_strided`` that change nothing (decompositions emit them)."""
    x = _x(a)
    same = _dims(_val(n).shape) == _dims(_val(x).shape)
    if "stride" in a and same:  # as_strided: same strides wherever the size is not 1
        xv = _val(x)
        same = (a.get("storage_offset") in (None, xv.storage_offset()) and all(
            s == 1 or st == xst for s, st, xst in zip(xv.shape, a["stride"], xv.stride())))
    if not same:
        raise _Refuse(f"{_packet_name(n.target)} of an activation to another shape or layout "
                      "(broadcasting) is not supported")
    lw.alias(n, x)


def _index(lw: _Lowering, n: fx.Node, x: Any, d: int, idx: int | slice) -> None:
    """``x[:, ..., idx]`` with ``idx`` at dimension ``d`` >= 1 (a reshape ``getitem``)."""
    lw.emit(n, "reshape", (lw.src(x),), {"fn": "getitem", "index": (*(slice(None),) * d, idx)})


def _slice(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    x = _x(a)
    xv = _val(x)
    d = a["dim"] % xv.dim()
    if "length" in a:  # narrow
        a = {**a, "end": a["start"] + a["length"], "step": 1}
    size = int(xv.shape[d])
    start, stop, step = slice(a["start"], a["end"], a["step"]).indices(size)
    if (start, stop, step) == (0, size, 1):
        lw.alias(n, x)
        return
    if d == 0:
        raise _Refuse("slices the batch dimension; fxpath needs per-sample layers")
    # Python's spelling: ``x[:, :4]`` is slice(None, 4, None), as the fx front end has it
    _index(lw, n, x, d, slice(start or None, None if stop == size else stop,
                              None if step == 1 else step))


def _select(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    x = _x(a)
    xv = _val(x)
    d = a["dim"] % xv.dim()
    if d == 0:
        raise _Refuse("selects one sample of the batch; fxpath needs per-sample layers")
    _index(lw, n, x, d, a["index"] % int(xv.shape[d]))


def _split(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """split/chunk/tensor_split/unbind: each used result is a slice (an index for unbind)."""
    x = _x(a)
    xv = _val(x)
    d = a.get("dim", 0) % xv.dim()
    if d == 0:
        raise _Refuse(f"{_packet_name(n.target)} along the batch dimension separates the "
                      "samples of a batch; fxpath needs per-sample layers")
    src, unbind = lw.src(x), _packet_name(n.target) == "unbind"
    starts = [0]
    for r in _val(n):
        starts.append(starts[-1] + (1 if unbind else int(r.shape[d])))

    def handler(item: fx.Node, k: int) -> None:
        idx = k if unbind else slice(starts[k], starts[k + 1])
        lw.emit(item, "reshape", (src,), {"fn": "getitem", "index": (*(slice(None),) * d, idx)},
                what=f"{_op_name(n)}(...)[{k}]")
    lw.multi[n] = handler


def _cat(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    ndim = _val(n).dim()
    dim = a["dim"] % ndim
    if dim == 0:
        raise _Refuse("concatenates along the batch dimension")
    lw.emit(n, "concat", tuple(lw.src(t) for t in a["tensors"]), {"dim": dim})


def _pad(mode: str | None) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        how = mode or a.get("mode", "constant")
        if how == "constant" and a.get("value") not in (None, 0, 0.0):
            raise _Refuse("constant padding with a non-zero value is not supported")
        pad = a["pad"] if "pad" in a else a["padding"]
        lw.emit(n, "reshape", (lw.src(_x(a)),), {"fn": "pad", "pad": tuple(pad), "mode": how})
    return rule


_RULE_NAMES: dict[Rule, tuple[str, ...]] = {
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
}

#: the lowering rule of each ATen op overload packet
_RULES: dict[Any, Rule] = {
    getattr(aten, name): rule for rule, names in _RULE_NAMES.items() for name in names
    if hasattr(aten, name)}


def lower_exported(ep: ExportedProgram) -> Graph:
    """Lower an ExportedProgram (as exported, or after ``run_decompositions()``) to the IR.

    The IR is the one `fxpath.lower.lower` makes of the same model (before normalization):
    feed it to `fxpath.passes.normalize`. Parameters are named by their state_dict names.

    Raises:
        ArgumentError: ``ep`` is not an ExportedProgram, or was exported with a batch of 1 or
            a dynamic batch (export with a batch of 2: `trace_export`).
        TraceError: the program has no tensor input.
    """
    if not isinstance(ep, ExportedProgram):
        raise ArgumentError(f"expected a torch.export.ExportedProgram, got {type(ep).__name__}")
    return _Lowering(ep).run()


def trace_export(model: nn.Module, shapes: Sequence[int] | Sequence[Sequence[int]],
                 batch: int = TRACE_BATCH, *, dtype: torch.dtype | None = None
                 ) -> ExportedProgram:
    """``torch.export.export`` of ``model`` as its eval-mode function, at per-sample ``shapes``.

    Exports non-strict with all-zero inputs of ``batch`` samples (two by default: never a
    squeezable size-1 dimension) in the dtype of the model's first floating parameter (or
    ``dtype``), on its device. Every module's ``training`` flag is restored afterwards.

    Raises:
        ArgumentError: malformed ``shapes`` or ``batch``.
        TraceError: torch.export could not export the model (the cause is chained).
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise ArgumentError(f"batch must be an int >= 2 (the batch dimension must not be "
                            f"confused with a size-1 one), got {batch!r}")
    input_shapes = as_input_shapes(shapes)
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = dtype or (first.dtype if first is not None else torch.get_default_dtype())
    device = first.device if first is not None else torch.device("cpu")
    inputs = tuple(torch.zeros((batch, *s), dtype=dtype, device=device) for s in input_shapes)
    with eval_mode(model):
        try:
            return torch.export.export(model, inputs, strict=False)
        except Exception as exc:
            shown = ", ".join(str(s) for s in input_shapes)
            message = str(exc).strip().split("\n", 1)[0][:300]
            raise TraceError(f"torch.export could not export {type(model).__name__} at input "
                             f"shape {shown}: {type(exc).__name__}: {message}") from exc
