"""The torch.export front end's graph reader: walk an ATen graph, emitting IR through rules.

`AtenLowering` reads an `ExportedProgram` as ``torch.export.export`` gives it (``aten.conv2d``,
``aten.linear``, in-place ``relu_``/``add_``...) and after ``ep.run_decompositions()``
(``aten.convolution``, ``addmm``/``mm``/``bmm`` on a transposed weight, PReLU as
``where(x > 0, x, w * x)``...). It looks each call up in one table from ATen op overload packets
to rules (`fxpath.frontend.lower.aten_rules.RULES`, which `fxpath.frontend.lower.aten` passes
in); an op without a rule becomes an ``unsupported`` node carrying `fxpath.frontend.refusals`'
reasons, reported by the pipeline's first pass with every other offending op. Ops inside a
torch.nn module type the fx front end refuses as a whole are reported once, as the module.

Parameters and buffers are the graph's placeholders; ``ep.graph_signature`` names them
(``inputs_to_parameters``/``inputs_to_buffers``: the model's state_dict names). Shapes come
from ``node.meta["val"]`` without the batch dimension, which must stay first: export with a
batch of two or more (`trace_export` uses two, as the fx tracer does) so that it is never
confused with a squeezable size-1 dimension.

Node names come from module paths (``layer1_0_conv1`` for the conv of ``layer1.0.conv1``,
``layer1_0_add`` for an add in ``layer1.0``'s own forward, the ATen node's name at the top
level), unique with ``_1``, ``_2`` suffixes. They often but not always equal the fx front
end's names.

ATen-level patterns that need more than one node, kept here for the rules to read:

* a dense layer on a (B, ..., C) input may reach the graph as ``view`` to (B * ..., C),
  ``mm``/``addmm``, ``view`` back: the first view leaves the activation *folded* (the batch
  merged with leading dimensions; `AtenLowering.folded`), only a dense product or a view
  restoring the batch may read it;
* ``bmm`` with a batch-expanded transposed weight, then ``add`` of the bias parameter: the add
  becomes the dense layer's bias (`AtenLowering.fuse_bias`);
* ops with several results (``_native_batch_norm_legit_no_training``, pools with indices,
  ``split``...) emit nothing themselves: each used ``getitem`` emits the IR node of its result
  (`AtenLowering.multi`);
* a decomposed PReLU, ``where(x > 0, x, w * x)``, is one ``prelu`` node
  (`AtenLowering.find_prelu`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils._pytree import tree_flatten_with_path, tree_leaves, tree_unflatten

from fxpath.errors import ArgumentError, TraceError
from fxpath.frontend.lower import core
from fxpath.frontend.lower.core import ParamRef, Refuse
from fxpath.frontend.refusals import ATEN_OPS as UNSUPPORTED_OPS
from fxpath.frontend.refusals import MIXES_PARAMS, MIXES_SAMPLES, MODULES, PRODUCT, RUNTIME_WEIGHT
from fxpath.frontend.tracer import TRACE_BATCH
from fxpath.ops.core import op_of
from fxpath.ops.linear import LINEAR
from fxpath.ops.pre_norm import IDENTITY
from fxpath.ops.reindex import RESHAPE

__all__ = ["AtenLowering", "input_of", "int_shape", "location", "meta_val", "op_name",
           "packet_name"]

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
def packet_name(target: Any) -> str:
    """``relu_`` for ``aten.relu_.default``; ``getitem`` for ``operator.getitem``."""
    packet = getattr(target, "overloadpacket", target)
    return str(getattr(packet, "__name__", target))


def op_name(n: fx.Node) -> str:
    """How messages name the op of a node: ``aten.conv2d``, ``getitem``."""
    if n.op != "call_function":
        return f"{n.op} {n.target}"
    packet = getattr(n.target, "overloadpacket", None)
    return str(packet) if packet is not None else packet_name(n.target)


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


def location(n: fx.Node) -> str:
    """The model's module path of a node (``layer1.0.conv1``), else the node's name."""
    return _innermost(n)[0] or n.name


def _torch_nn(cls: str) -> bool:
    return cls.startswith("torch.nn.modules.")


def _ident(path: str) -> str:
    ident = re.sub(r"\W", "_", path)
    return f"_{ident}" if ident[:1].isdigit() else ident


def meta_val(a: Any) -> Any:
    """A graph node's ``meta["val"]`` (its tensor, or tuple of tensors, with the batch), else
    None."""
    return a.meta.get("val") if isinstance(a, fx.Node) else None


def _is_tensor(a: Any) -> bool:
    return isinstance(meta_val(a), torch.Tensor)


def input_of(a: dict[str, Any]) -> Any:
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


def int_shape(shape: Sequence[Any]) -> tuple[int, ...]:
    """A shape as a tuple of ints."""
    return tuple(int(s) for s in shape)


class AtenLowering(core.Lowering):
    """One lowering of an ATen graph with ``rules`` (the table from ATen op overload packets to
    rules); IR nodes are named after module paths."""

    def __init__(self, ep: ExportedProgram, rules: Mapping[Any, Callable]) -> None:
        super().__init__()
        self.rules = rules
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
                 if isinstance(v := meta_val(n), torch.Tensor) and v.dim() > 0]
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
        return int_shape(val.shape[1:])

    def is_activation(self, a: Any) -> bool:
        return isinstance(a, fx.Node) and (a in self.value or a in self.multi
                                           or a in self.folded)

    def src(self, a: Any) -> str:
        if isinstance(a, fx.Node) and a in self.value:
            return self.value[a]
        if isinstance(a, fx.Node) and a in self.folded:
            raise Refuse(MIXES_SAMPLES)
        if isinstance(a, fx.Node) and a in self.multi:
            raise Refuse(f"uses the tensors returned by {a.name} = {op_name(a)}(...) as one "
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
        opname = packet_name(n.target).strip("_") or "op"
        if not path:
            return n.name if n.op == "placeholder" else opname
        main = op not in (RESHAPE.name, IDENTITY.name) or _SHAPE_MODULE.search(cls) is not None
        return _ident(path) if _torch_nn(cls) and main else f"{_ident(path)}_{opname}"

    def what(self, n: fx.Node) -> str:
        cls = _innermost(n)[1]
        return cls.rpartition(".")[2] if _torch_nn(cls) else op_name(n)

    # -- what core.Lowering needs -------------------------------------------------------------
    def node_name(self, n: fx.Node, op: str) -> str:
        return self.fresh(self.base_name(n, op))

    def shape(self, n: fx.Node) -> tuple[int, ...]:
        return self.per_sample(meta_val(n))

    def where(self, n: fx.Node) -> str:
        return location(n)

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
        val = meta_val(n)
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
            if n in self.user_inputs and isinstance(meta_val(n), torch.Tensor):
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
        name = packet_name(n.target)
        if name in _NO_NEURONS:
            return
        if n in self.prelu:  # a decomposed PReLU (`find_prelu`)
            x, weight = self.prelu[n]
            core.prelu(self, n, self.src(x), weight, what="PReLU")
            return
        rule = self.rules.get(getattr(n.target, "overloadpacket", None))
        if rule is None:
            raise Refuse(UNSUPPORTED_OPS.get(name) or f"no path-lifting rule for {op_name(n)}")
        rule(self, n, _bind(n))
        x = _mutated(n)
        if x is not None and n in self.value:
            self._rebind(n, x)

    def _rebind(self, n: fx.Node, x: fx.Node) -> None:
        """After ``y = op_(x)``, later reads of ``x`` read ``y``. Refused when a tensor sharing
        ``x``'s memory (the tensor ``x`` views, or a view of ``x``) is read later: it changes
        too."""
        aliases = [u for u in x.users if self.order[u] < self.order[n]
                   and packet_name(u.target) in _VIEW_OPS]  # later views see y: fine
        if x.op == "call_function" and packet_name(x.target) in _VIEW_OPS and x.args \
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
            if n.op != "call_function" or packet_name(n.target) != "where" or len(n.args) != 3:
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
        if packet_name(cond.target) != "gt" or cond.args[:2] not in ((x, 0), (x, 0.0)):
            return None
        if packet_name(prod.target) != "mul" or x not in prod.args[:2]:
            return None
        w = prod.args[1] if prod.args[0] is x else prod.args[0]
        param = self.param_through(w, _WEIGHT_CHAIN)
        xval, wval = meta_val(x), meta_val(w)
        if param is None or not isinstance(xval, torch.Tensor) or wval.dim() > xval.dim():
            return None
        shape = [1] * (xval.dim() - wval.dim()) + list(wval.shape)
        if any(s != 1 for i, s in enumerate(shape) if i != 1):
            return None  # the slope must broadcast over the channel dimension (dim 1)
        return self.params[param]

    def param_through(self, a: Any, ops: frozenset[str]) -> fx.Node | None:
        """The parameter placeholder ``a`` is computed from through ``ops`` only, else None."""
        while isinstance(a, fx.Node) and a not in self.params:
            if a.op != "call_function" or packet_name(a.target) not in ops or not a.args:
                return None
            a = a.args[0]
        return a if isinstance(a, fx.Node) else None

    def param_ref(self, a: Any) -> ParamRef | None:
        """``a`` as a floating-point model tensor read through views, else None."""
        ph = self.param_through(a, _PARAM_VIEWS)
        val, pval = meta_val(a), meta_val(ph)
        if ph is None or not isinstance(val, torch.Tensor) or not isinstance(pval, torch.Tensor) \
                or not pval.is_floating_point() or val.numel() != pval.numel():
            return None
        return ParamRef(self.params[ph], int_shape(val.shape))

    def operand(self, v: Any) -> Any:
        """The IR name of an activation, a `ParamRef` for a model tensor read through views or
        computed from model tensors, else the value itself."""
        if self.is_activation(v):
            return self.src(v)
        return self.param_ref(v) or self.derived_ref(v) or v

    def derived_ref(self, v: Any) -> ParamRef | None:
        """A floating-point tensor computed from model tensors, as an operand, else None."""
        val = meta_val(v)
        if not isinstance(val, torch.Tensor) or not val.is_floating_point():
            return None
        try:
            return ParamRef(core.derive(self, v, self.params.get, self.root, self.order),
                            int_shape(val.shape))
        except Refuse:
            return None

    def dense_weight(self, w: Any) -> str:
        """State_dict name of the (out, in) weight ``W`` that a product reads as ``W.T``
        (``t``/``permute``/``transpose`` of the parameter, maybe expanded over a batch)."""
        transposes, a = 0, w
        want = tuple(meta_val(w).shape[-2:]) if _is_tensor(w) else None
        while isinstance(a, fx.Node) and a not in self.params:
            name = packet_name(a.target) if a.op == "call_function" else ""
            if name in _TRANSPOSES and meta_val(a).dim() == 2:
                transposes += 1
            elif transposes == 1 and not self.is_activation(a) and meta_val(a).dim() == 2 \
                    and want is not None and tuple(meta_val(a).shape[::-1]) == want:
                # W.T of a weight computed from parameters (a parametrization)
                return core.derive(self, a, self.params.get, self.root, self.order)
            elif name not in _WEIGHT_CHAIN or tuple(meta_val(a).shape[-2:]) != want:
                raise Refuse(PRODUCT if self.is_activation(a) else
                              "a matrix product with a tensor that is not a linear layer's "
                              "transposed weight")
            a = a.args[0]
        if not isinstance(a, fx.Node) or transposes != 1 or meta_val(a).dim() != 2 \
                or tuple(meta_val(a).shape[::-1]) != want:
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
        if node is None or op_of(node) is not LINEAR or node.attrs.get("kind") != "dense" \
                or "bias" in node.params or meta_val(bias).shape != (node.shape[-1],):
            return False
        holders = {m for m, v in self.value.items() if v == name}
        if any(set(m.users) - holders - {n} for m in holders) \
                or any(name in m.inputs for m in self.nodes):
            return False
        self.nodes[idx] = node.replace(params={**node.params, "bias": self.params[bias]})
        self.value[n] = name
        return True


def _output_names(ep: ExportedProgram, count: int) -> list[str]:
    """The name of each user output (`core.output_name`), from the program's output tree."""
    spec = getattr(getattr(ep, "call_spec", None), "out_spec", None)
    if spec is None or spec.num_leaves != count:
        return ["output"] if count == 1 else [str(i) for i in range(count)]
    tree = tree_unflatten(list(range(count)), spec)
    return [core.output_name(path) for path, _ in tree_flatten_with_path(tree)[0]]
