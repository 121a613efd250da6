"""The torch.export front end: lower an `ExportedProgram` (an ATen graph) into the fxpath IR.

`lower_exported(ep)` emits the IR that `fxpath.frontend.lower.fx` emits from a torch.fx trace (same
node kinds, same static attributes, parameters named by their state_dict names), so the
normalization passes, the code generator and everything downstream are shared. It reads the
graph as ``torch.export.export`` gives it (``aten.conv2d``, ``aten.linear``,
``aten.batch_norm``, in-place ``relu_``/``add_``...) and after ``ep.run_decompositions()``
(``aten.convolution``, ``addmm``/``mm``/``bmm`` on a transposed weight,
``_native_batch_norm_legit_no_training``, ``max_pool2d_with_indices``, PReLU as
``where(x > 0, x, w * x)``...). One rule per ATen op overload packet (`_RULES`); an op without
one becomes an ``unsupported`` node carrying `fxpath.frontend.refusals`' reasons, reported by the
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
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils._pytree import tree_flatten_with_path, tree_leaves, tree_unflatten

from fxpath.errors import ArgumentError, TraceError
from fxpath.frontend.lower import core
from fxpath.frontend.lower.core import ParamRef, Refuse, ntuple, scalar, spatial_rank
from fxpath.frontend.refusals import ATEN_OPS as _UNSUPPORTED_OPS
from fxpath.frontend.refusals import (
    MIXES_PARAMS,
    MIXES_SAMPLES,
    MODULES,
    PRODUCT,
    RUNTIME_WEIGHT,
)
from fxpath.frontend.tracer import TRACE_BATCH
from fxpath.ir.graph import BatchNormRef, Graph
from fxpath.ops.resample import ATEN_KERNELS

__all__ = ["lower_exported"]

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
#: ops that view a model tensor without changing or repeating its entries
_PARAM_VIEWS = frozenset({"view", "_unsafe_view", "reshape", "clone", "contiguous", "alias",
                          "detach", "unsqueeze", "squeeze", "flatten", "unflatten",
                          "lift_fresh_copy"})
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


def _val(a: Any) -> Any:
    return a.meta.get("val") if isinstance(a, fx.Node) else None


def _is_tensor(a: Any) -> bool:
    return isinstance(_val(a), torch.Tensor)


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


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)


def _numel(shape: Sequence[int]) -> int:
    total = 1
    for s in shape:
        total *= int(s)
    return total


class _Lowering(core.Lowering):
    """One lowering of an ATen graph; IR nodes are named after module paths."""

    def __init__(self, ep: ExportedProgram) -> None:
        super().__init__()
        self.graph = ep.graph
        self.root = ep.graph_module
        # fx node with several results -> emits the IR node of result k for a getitem
        self.multi: dict[fx.Node, Callable[[fx.Node, int], None]] = {}
        # fx node of shape (B * prod(lead), *rest) -> (IR node of shape (*lead, *rest), lead)
        self.folded: dict[fx.Node, tuple[str, tuple[int, ...]]] = {}
        self.scoped: dict[tuple[str, str], str] = {}  # (module class, path) -> IR node
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
        self.output_names = _output_names(ep, sum(self.user_output))

    def _batch(self) -> int:
        sizes = [v.shape[0] for n in self.user_inputs
                 if isinstance(v := _val(n), torch.Tensor) and v.dim() > 0]
        if not sizes:
            raise TraceError("the exported program has no tensor input with a batch dimension")
        if not all(isinstance(s, int) for s in sizes):
            raise ArgumentError("the exported program has a dynamic batch size: export it with "
                                "static shapes (fxpath.frontend.export.trace_export does)")
        if sizes[0] < 2 or any(s != sizes[0] for s in sizes):
            raise ArgumentError(
                f"the exported program's inputs have batch sizes {sizes}: export it with one "
                f"batch size of at least 2 (fxpath.frontend.export.trace_export uses "
                f"{TRACE_BATCH}), so that the batch dimension cannot be confused with a "
                "squeezable size-1 one")
        return sizes[0]

    # -- helpers used by the rules ------------------------------------------------------------
    def per_sample(self, val: Any) -> tuple[int, ...]:
        if not isinstance(val, torch.Tensor) or val.dim() == 0 or val.shape[0] != self.batch:
            raise Refuse(MIXES_SAMPLES)
        return _dims(val.shape[1:])

    def is_activation(self, a: Any) -> bool:
        return isinstance(a, fx.Node) and (a in self.value or a in self.multi
                                           or a in self.folded)

    def src(self, a: Any) -> str:
        if isinstance(a, fx.Node) and a in self.value:
            return self.value[a]
        if isinstance(a, fx.Node) and a in self.folded:
            raise Refuse(MIXES_SAMPLES)
        if isinstance(a, fx.Node) and a in self.multi:
            raise Refuse(f"uses the tensors returned by {a.name} = {_op_name(a)}(...) as one "
                          "tensor")
        if isinstance(a, fx.Node):
            raise Refuse(MIXES_PARAMS.format(a.name))
        raise Refuse(f"expected an activation tensor, got {a!r}")

    def param_name(self, a: Any, role: str) -> str | None:
        """State_dict name of a parameter argument (a parameter/buffer placeholder)."""
        if a is None:
            return None
        if isinstance(a, fx.Node) and a in self.params:
            return self.params[a]
        if isinstance(a, fx.Node) and not self.is_activation(a):
            return core.derive(self, a, self.params.get, self.root, self.order)
        raise Refuse(RUNTIME_WEIGHT.format(role))

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

    # -- what core.Lowering needs -------------------------------------------------------------
    def node_name(self, n: fx.Node, op: str) -> str:
        return self.fresh(self.base_name(n, op))

    def shape(self, n: fx.Node) -> tuple[int, ...]:
        return self.per_sample(_val(n))

    def where(self, n: fx.Node) -> str:
        return _where(n)

    def alias(self, n: fx.Node, x: Any) -> None:
        """``n`` is ``x`` (a no-op view or expand): no IR node."""
        if isinstance(x, fx.Node) and x in self.folded:
            self.folded[n] = self.folded[x]
        else:
            self.value[n] = self.src(x)

    def refused(self, n: fx.Node, what: str, reason: str,
                error: BaseException | None = None, scope: tuple[str, str] | None = None
                ) -> None:
        """The ``unsupported`` node of ``n``; one per refused module call (``scope``)."""
        if scope is not None and scope in self.scoped:
            self.value[n] = self.scoped[scope]
            return
        val = _val(n)
        shape = tuple(val.shape[1:]) if isinstance(val, torch.Tensor) and val.dim() else ()
        name = self.unsupported(n, what, reason, [self.value[a] for a in n.all_input_nodes
                                                  if a in self.value], shape, error)
        if scope is not None:
            self.scoped[scope] = name

    def forget(self, n: fx.Node, mark: int) -> None:
        super().forget(n, mark)
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
        self.refused(n, cls.rpartition(".")[2], reason, scope=(cls, path))
        return True

    def lower_call(self, n: fx.Node) -> None:
        name = _packet_name(n.target)
        if name in _NO_NEURONS:
            return
        rule = _RULES.get(getattr(n.target, "overloadpacket", None))
        if n in self.prelu:
            rule = _prelu_pattern
        if rule is None:
            raise Refuse(_UNSUPPORTED_OPS.get(name) or f"no path-lifting rule for {_op_name(n)}")
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
            raise Refuse("an in-place op on an activation that shares its memory with another "
                          "one read later (a view): both change")
        self.value[x] = self.value[n]

    def getitem(self, n: fx.Node) -> None:
        seq, index = n.args
        if seq in self.multi:
            self.multi[seq](n, index)
        elif seq in self.value:  # a result of a refused op: its own entry says why
            self.value[n] = self.value[seq]
        else:
            raise Refuse("indexes a value fxpath could not lower")

    def lower_output(self, n: fx.Node) -> None:
        outs: list[str] = []
        names: list[str] = []
        user = [arg for keep, arg in zip(self.user_output, n.args[0]) if keep]
        for name, arg in zip(self.output_names, user):
            for a in tree_leaves(arg):
                if isinstance(a, fx.Node) and a in self.value:
                    outs.append(self.value[a])
                    names.append(name)
                elif isinstance(a, fx.Node) and a in self.folded:
                    raise Refuse(MIXES_SAMPLES, "model output")
        self.output(outs, names)

    # -- ATen patterns ------------------------------------------------------------------------
    def find_prelu(self) -> None:
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

    def param_ref(self, a: Any) -> ParamRef | None:
        """``a`` as a floating-point model tensor read through views, else None."""
        ph = self.param_through(a, _PARAM_VIEWS)
        val, pval = _val(a), _val(ph)
        if ph is None or not isinstance(val, torch.Tensor) or not isinstance(pval, torch.Tensor) \
                or not pval.is_floating_point() or val.numel() != pval.numel():
            return None
        return ParamRef(self.params[ph], _dims(val.shape))

    def dense_weight(self, w: Any) -> str:
        """State_dict name of the (out, in) weight ``W`` that a product reads as ``W.T``
        (``t``/``permute``/``transpose`` of the parameter, maybe expanded over a batch)."""
        transposes, a = 0, w
        want = tuple(_val(w).shape[-2:]) if _is_tensor(w) else None
        while isinstance(a, fx.Node) and a not in self.params:
            name = _packet_name(a.target) if a.op == "call_function" else ""
            if name in _TRANSPOSES and _val(a).dim() == 2:
                transposes += 1
            elif transposes == 1 and not self.is_activation(a) and _val(a).dim() == 2 \
                    and want is not None and tuple(_val(a).shape[::-1]) == want:
                # W.T of a weight computed from parameters (a parametrization)
                return core.derive(self, a, self.params.get, self.root, self.order)
            elif name not in _WEIGHT_CHAIN or tuple(_val(a).shape[-2:]) != want:
                raise Refuse(PRODUCT if self.is_activation(a) else
                              "a matrix product with a tensor that is not a linear layer's "
                              "transposed weight")
            a = a.args[0]
        if not isinstance(a, fx.Node) or transposes != 1 or _val(a).dim() != 2 \
                or tuple(_val(a).shape[::-1]) != want:
            raise Refuse("a matrix product with a parameter that is not read as a linear "
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
def _weights(lw: _Lowering, a: dict[str, Any]) -> dict[str, str]:
    params = {"weight": lw.param_name(a["weight"], "weight")}
    if a.get("bias") is not None:
        params["bias"] = lw.param_name(a["bias"], "bias")
    return params


def _conv(transposed: bool | None) -> Rule:
    """``conv{1,2,3}d`` (False), ``conv_transpose{1,2,3}d`` (True), ``convolution`` (None)."""
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        kernel = _dims(_val(a["weight"]).shape[2:])
        core.conv(lw, n, lw.src(_x(a)), _weights(lw, a),
                  transposed=bool(a["transposed"]) if transposed is None else transposed,
                  nd=len(kernel), kernel=kernel, stride=a["stride"], padding=a["padding"],
                  dilation=a["dilation"], groups=a["groups"],
                  output_padding=a.get("output_padding", 0))
    return rule


def _linear(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.dense(lw, n, lw.src(_x(a)), _weights(lw, a))


def _matmul(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
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
    out = _dims(_val(n).shape[1:])
    if x in lw.folded:  # (B * prod(lead), in) @ W.T: a dense layer on the last dim
        src, lead = lw.folded[x]
        name = core.dense(lw, n, src, params, shape=(*lead, *out))
        del lw.value[n]
        lw.folded[n] = (name, lead)
        return
    core.dense(lw, n, lw.src(x), params)


def _batch_norm_ref(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> BatchNormRef:
    stats = None if a["running_mean"] is None else lw.param_name(a["running_mean"],
                                                                 "running_mean")
    return core.batchnorm_ref(bool(a.get("training")), stats,
                              lw.param_name(a["running_var"], "running_var"), a["eps"],
                              lw.param_name(a["weight"], "weight"),
                              lw.param_name(a["bias"], "bias"), _where(n))


def _batch_norm(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.batchnorm(lw, n, lw.src(_x(a)), _batch_norm_ref(lw, n, a))


def _first_result(emit: Callable[[fx.Node], Any], rest: str) -> Callable[[fx.Node, int], None]:
    """A getitem handler: result 0 emits; the others (indices, statistics) only if unused."""
    def handler(item: fx.Node, k: int) -> None:
        if k == 0:
            emit(item)
        elif item.users:
            raise Refuse(rest)
    return handler


def _batch_norm_tuple(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``_native_batch_norm_legit_no_training`` / ``native_batch_norm``: (out, stats...)."""
    bn, x = _batch_norm_ref(lw, n, a), lw.src(_x(a))
    lw.multi[n] = _first_result(lambda item: core.batchnorm(lw, item, x, bn),
                                "uses the batch statistics a BatchNorm returns")


def _relu(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.relu(lw, n, lw.src(_x(a)))


def _hardtanh(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``hardtanh``, and ``relu6`` (no ``min_val``/``max_val``: 0 and 6)."""
    lo, hi = float(a.get("min_val", 0.0)), float(a.get("max_val", 6.0))
    if (lo, hi) == (0.0, 6.0):
        core.relu6(lw, n, lw.src(_x(a)))
    else:
        core.hardtanh(lw, n, lw.src(_x(a)), lo, hi)


def _clamp(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.clamp(lw, n, lw.src(_x(a)), a.get("min"), a.get("max"))


def _leaky(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.leaky_relu(lw, n, lw.src(_x(a)), a["negative_slope"])


def _prelu(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.prelu(lw, n, lw.src(_x(a)), lw.param_name(a["weight"], "slope"))


def _prelu_pattern(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    x, weight = lw.prelu[n]
    core.prelu(lw, n, lw.src(x), weight, what="PReLU")


def _pool_args(a: dict[str, Any], op: str) -> dict[str, Any]:
    extra = {}
    if op == "avgpool":
        extra = {"count_include_pad": bool(a["count_include_pad"]),
                 "divisor_override": a.get("divisor_override")}
    return dict(kernel=a["kernel_size"], stride=a["stride"], padding=a["padding"],
                dilation=a.get("dilation", 1), ceil_mode=a["ceil_mode"], **extra)


def _pool(op: str) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        core.pool(lw, n, lw.src(_x(a)), op, spatial_rank(_packet_name(n.target)),
                  **_pool_args(a, op))
    return rule


def _max_pool_indices(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    x, nd = lw.src(_x(a)), spatial_rank(_packet_name(n.target))
    shape = lw.per_sample(_val(n)[0])
    core.pool_rank(len(shape) - 1, nd)  # refuse now, not at the getitem
    lw.multi[n] = _first_result(lambda item: core.pool(lw, item, x, "maxpool", nd,
                                                       **_pool_args(a, "maxpool")),
                                "max-pooling with return_indices is not supported")


def _adaptive(op: str) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        x, nd = lw.src(_x(a)), spatial_rank(_packet_name(n.target))
        if isinstance(_val(n), torch.Tensor):
            core.adaptive_pool(lw, n, x, op, nd)
            return
        core.pool_rank(len(lw.per_sample(_val(n)[0])) - 1, nd)  # adaptive max: (out, indices)
        lw.multi[n] = _first_result(lambda item: core.adaptive_pool(lw, item, x, op, nd),
                                    "adaptive max-pooling with return_indices is not supported")
    return rule


def _mean(reduce: str) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        x = _x(a)
        ndim = _val(x).dim()
        dim = a.get("dim")
        dims = tuple(range(ndim)) if dim in (None, [], ()) else ntuple(dim, 1)
        core.mean(lw, n, lw.src(x), dims, ndim, bool(a.get("keepdim")), reduce)
    return rule


def _add(sign: float) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
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


def _rsub(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``other - alpha * self`` (``2 - x``)."""
    if not scalar(a["other"]):
        raise Refuse("subtracts an activation from a tensor that is not an activation")
    core.add(lw, n, a["other"], lw.src(a["self"]), -1.0, a.get("alpha", 1))


def _operand(lw: _Lowering, v: Any) -> Any:
    """The IR name of an activation, a `ParamRef` for a model tensor read through views or
    computed from model tensors, else the value itself."""
    if lw.is_activation(v):
        return lw.src(v)
    return lw.param_ref(v) or _derived_ref(lw, v) or v


def _derived_ref(lw: _Lowering, v: Any) -> ParamRef | None:
    val = _val(v)
    if not isinstance(val, torch.Tensor) or not val.is_floating_point():
        return None
    try:
        return ParamRef(core.derive(lw, v, lw.params.get, lw.root, lw.order), _dims(val.shape))
    except Refuse:
        return None


def _mul(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.multiply(lw, n, _operand(lw, a["self"]), _operand(lw, a["other"]))


def _div(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    if a.get("rounding_mode") is not None:
        raise Refuse(f"division with rounding_mode={a['rounding_mode']!r} is not linear")
    core.divide(lw, n, _operand(lw, a["self"]), _operand(lw, a["other"]))


def _neg(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.scale(lw, n, lw.src(_x(a)), -1.0)


def _identity(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """clone, contiguous, alias, detach, eval-mode dropout, same-dtype copies."""
    x = _x(a)
    out = _val(n)
    core.identity(lw, n, lw.src(x), training=a.get("train") is True,
                  dtypes=(_val(x).dtype, out.dtype if isinstance(out, torch.Tensor) else None))


def _native_dropout(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    if a.get("train") is not False:
        raise Refuse("dropout in training mode is random; call model.eval() first")
    x = lw.src(_x(a))
    lw.multi[n] = _first_result(lambda item: core.identity(lw, item, x), "uses the dropout mask")


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
    if not core.permute(lw, n, lw.src(x), perm):
        lw.alias(n, x)


def _expand(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``expand``/``as_strided`` that change nothing (decompositions emit them)."""
    x = _x(a)
    same = _dims(_val(n).shape) == _dims(_val(x).shape)
    if "stride" in a and same:  # as_strided: same strides wherever the size is not 1
        xv = _val(x)
        same = (a.get("storage_offset") in (None, xv.storage_offset()) and all(
            s == 1 or st == xst for s, st, xst in zip(xv.shape, a["stride"], xv.stride())))
    if not same:
        raise Refuse(f"{_packet_name(n.target)} of an activation to another shape or layout "
                     "(broadcasting) is not supported")
    lw.alias(n, x)


def _index(lw: _Lowering, n: fx.Node, x: Any, d: int, idx: int | slice, what: str = "") -> None:
    """``x[:, ..., idx]`` with ``idx`` at dimension ``d`` >= 1 (a reshape ``getitem``)."""
    core.getitem(lw, n, lw.src(x), (*(slice(None),) * d, idx), what)


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
        raise Refuse("slices the batch dimension; fxpath needs per-sample layers")
    # Python's spelling: ``x[:, :4]`` is slice(None, 4, None), as the fx front end has it
    _index(lw, n, x, d, slice(start or None, None if stop == size else stop,
                              None if step == 1 else step))


def _select(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    x = _x(a)
    xv = _val(x)
    d = a["dim"] % xv.dim()
    if d == 0:
        raise Refuse("selects one sample of the batch; fxpath needs per-sample layers")
    _index(lw, n, x, d, a["index"] % int(xv.shape[d]))


def _split(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """split/chunk/tensor_split/unbind: each used result is a slice (an index for unbind)."""
    x = _x(a)
    xv = _val(x)
    d = a.get("dim", 0) % xv.dim()
    if d == 0:
        raise Refuse(f"{_packet_name(n.target)} along the batch dimension separates the "
                     "samples of a batch; fxpath needs per-sample layers")
    unbind = _packet_name(n.target) == "unbind"
    starts = [0]
    for r in _val(n):
        starts.append(starts[-1] + (1 if unbind else int(r.shape[d])))

    def handler(item: fx.Node, k: int) -> None:
        idx = k if unbind else slice(starts[k], starts[k + 1])
        _index(lw, item, x, d, idx, f"{_op_name(n)}(...)[{k}]")
    lw.src(x)
    lw.multi[n] = handler


def _output_names(ep: ExportedProgram, count: int) -> list[str]:
    """The name of each user output (`core.output_name`), from the program's output tree."""
    spec = getattr(getattr(ep, "call_spec", None), "out_spec", None)
    if spec is None or spec.num_leaves != count:
        return ["output"] if count == 1 else [str(i) for i in range(count)]
    tree = tree_unflatten(list(range(count)), spec)
    return [core.output_name(path) for path, _ in tree_flatten_with_path(tree)[0]]


def _resample(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    """``upsample_*`` kernels (``.vec``: the scale factors as a list; the default overload:
    one scale per axis), as `core.resample` takes them."""
    mode, antialias = ATEN_KERNELS[_packet_name(n.target)]
    x = _x(a)
    in_shape = lw.per_sample(_val(x))
    nd = len(in_shape) - 1
    if "scale_factors" in a:
        factors = a["scale_factors"]
        scales = (None,) * nd if factors is None else tuple(factors)
    else:
        scales = tuple(v for k, v in a.items() if k.startswith("scales"))
    core.resample(lw, n, lw.src(x), mode, in_shape, a.get("align_corners", False), scales,
                  antialias)


def _pixel_shuffle(inverse: bool) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        x = _x(a)
        factor = a["downscale_factor" if inverse else "upscale_factor"]
        core.pixel_shuffle(lw, n, lw.src(x), lw.per_sample(_val(x)), factor, inverse)
    return rule


def _cat(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
    core.cat(lw, n, [lw.src(t) for t in a["tensors"]], a["dim"], _val(n).dim())


def _pad(mode: str | None) -> Rule:
    def rule(lw: _Lowering, n: fx.Node, a: dict[str, Any]) -> None:
        core.pad(lw, n, lw.src(_x(a)), a["pad"] if "pad" in a else a["padding"],
                 mode or a.get("mode", "constant"), a.get("value"))
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
    _pad("circular"): ("_pad_circular",),
    _resample: tuple(ATEN_KERNELS),
    _pixel_shuffle(False): ("pixel_shuffle",),
    _pixel_shuffle(True): ("pixel_unshuffle",),
}

#: the lowering rule of each ATen op overload packet
_RULES: dict[Any, Rule] = {
    getattr(aten, name): rule for rule, names in _RULE_NAMES.items() for name in names
    if hasattr(aten, name)}


def lower_exported(ep: ExportedProgram) -> Graph:
    """Lower an ExportedProgram (as exported, or after ``run_decompositions()``) to the IR.

    The IR is the one `fxpath.frontend.lower.lower` makes of the same model (before normalization):
    feed it to `fxpath.passes.pipeline.normalize`. Parameters are named by their state_dict names.

    Raises:
        ArgumentError: ``ep`` is not an ExportedProgram, or was exported with a batch of 1 or
            a dynamic batch (export with a batch of 2: `trace_export`).
        TraceError: the program has no tensor input.
    """
    if not isinstance(ep, ExportedProgram):
        raise ArgumentError(f"expected a torch.export.ExportedProgram, got {type(ep).__name__}")
    lw = _Lowering(ep)
    lw.find_prelu()
    return lw.run(list(lw.graph.nodes))
