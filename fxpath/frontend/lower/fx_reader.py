"""The torch.fx front end's graph reader: walk a traced fx graph, emitting IR through rules.

`FxLowering` walks the nodes of a traced GraphModule (`fxpath.frontend.tracer`) in order and
keeps what the rules need: the IR name of each activation, per-sample shapes read from
``node.meta["val"]``, the state_dict names of parameters and buffers (read through views, or
computed from model tensors: `core.derive`), and the messages that name a node. Each call is
looked up in one table from targets to rules (module types, functions, Tensor method names:
`fxpath.frontend.lower.fx_rules.RULES`), which `fxpath.frontend.lower.fx` passes in; a call
without a rule is refused with the reason `fxpath.frontend.refusals` gives, and the walk
(`core.Lowering.run`) turns a refusal into an ``unsupported`` node.

Ops returning several tensors (``split``, ``chunk``, ``tensor_split``, ``unbind``) are exact
re-indexings of their input. Such a call emits no IR node: a side table (`FxLowering.pieces`)
keeps its results as *pieces* ``(input IR node, index)``, and each piece the model uses
(``operator.getitem``, Python unpacking, a whole result passed to ``torch.cat`` or returned)
becomes the IR's re-indexing node, ``reshape`` with ``fn="getitem"``, exactly as the slicing
``x[:, a:b]`` (or ``x[:, i]`` for ``unbind``) that selects the same elements. Unused pieces emit
nothing.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.utils._pytree import tree_flatten_with_path, tree_leaves

from fxpath.errors import TraceError
from fxpath.frontend.lower import core
from fxpath.frontend.lower.core import ParamRef, Refuse, spatial_rank
from fxpath.frontend.lower.rule import Rule
from fxpath.frontend.refusals import FUNCTIONS as UNSUPPORTED_FUNCTIONS
from fxpath.frontend.refusals import METHODS as UNSUPPORTED_METHODS
from fxpath.frontend.refusals import MIXES_PARAMS, MIXES_SAMPLES, RUNTIME_WEIGHT
from fxpath.frontend.refusals import MODULES as UNSUPPORTED_MODULES
from fxpath.frontend.tracer import TRACE_BATCH, where
from fxpath.ir.graph import Node

__all__ = ["FxLowering", "GraphView", "call_args", "describe", "fn_name", "is_tensor", "lookup",
           "module_input", "module_nd", "module_rule", "per_sample"]

#: calls that view a tensor without changing its entries (how a parameter reaches arithmetic)
_VIEWS = frozenset({"view", "reshape", "unsqueeze", "squeeze", "flatten", "unflatten",
                    "contiguous", "clone", "detach", "view_as", "reshape_as"})


def fn_name(target: Any) -> str:
    """The name of a called function (``relu``, ``add``), else the target as a string."""
    return getattr(target, "__name__", str(target))


def lookup(table: Mapping[Any, Any], target: Any) -> Any:
    """``table.get(target)``, None for an unhashable target (a callable object)."""
    try:
        return table.get(target)
    except TypeError:
        return None


def call_args(n: fx.Node) -> tuple[tuple[Any, ...], dict[str, Any]]:
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


def module_input(n: fx.Node, extra_ok: bool = False) -> Any:
    """The tensor a module is called on: ``m(x)`` or ``m(input=x)`` (``extra_ok``: a module
    that ignores further arguments, such as nn.Identity)."""
    kwargs = dict(n.kwargs)
    x = n.args[0] if n.args else kwargs.pop("input", None)
    if x is None or (not extra_ok and (len(n.args) > 1 or kwargs)):
        raise Refuse("the module is called with other arguments than one input tensor")
    return x


def module_nd(m: nn.Module) -> int | None:
    """Spatial rank of a torch.nn pooling module (or a subclass of one)."""
    return next((nd for c in type(m).__mro__ if c.__module__.startswith("torch.nn")
                 and (nd := spatial_rank(c.__name__)) is not None), None)


def per_sample(val: torch.Tensor) -> tuple[int, ...]:
    """The per-sample shape of a batched activation; refuses one without the batch first."""
    if val.dim() == 0 or val.shape[0] != TRACE_BATCH:
        raise Refuse(MIXES_SAMPLES)
    return tuple(val.shape[1:])


def is_tensor(a: Any) -> bool:
    """Whether ``a`` is a graph node holding one tensor."""
    return isinstance(a, fx.Node) and isinstance(a.meta.get("val"), torch.Tensor)


def describe(gm: Any, n: fx.Node) -> str:
    """The op an fx node calls, as error messages name it (``Conv2d``, ``Tensor.view``, ``cat``)."""
    if n.op == "call_module":
        try:
            return type(gm.get_submodule(str(n.target))).__name__
        except AttributeError:
            return str(n.target)
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    if n.op == "call_function":
        return fn_name(n.target)
    return f"{n.op} {n.target}"


class FxLowering(core.Lowering):
    """One lowering of an fx graph with ``rules`` (the table from module types, functions and
    Tensor method names to rules); IR nodes take the fx nodes' names."""

    def __init__(self, gm: Any, rules: Mapping[Any, Callable]) -> None:
        super().__init__()
        self.gm, self.rules = gm, rules
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
        return per_sample(val)

    def where(self, n: fx.Node) -> str:
        return where(n)

    def what(self, n: fx.Node) -> str:
        return describe(self.gm, n)

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
                         f"{describe(self.gm, a)}(...) at {where(a)} as one tensor")
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
                and fn_name(node.target) in _VIEWS and isinstance(node.args[0], fx.Node):
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

    def record_pieces(self, n: fx.Node, op: str, x: Any, sizes: Any, dim: Any) -> None:
        """Keep the results of ``n = x.op(sizes, dim)`` (``split``, ``chunk``, ``tensor_split``,
        ``unbind``) as pieces ``(input, index)``: torch's own op applied to ``arange`` of the
        split dimension gives the element range of each piece, so every form of the arguments
        (int or list sizes, sections, indices, uneven chunks) means what torch means."""
        if not is_tensor(x):
            raise Refuse(f"{op} of a value that is not a tensor")
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise Refuse(f"{op} along dim {dim!r}: fxpath needs an integer dimension")
        shape = x.meta["val"].shape
        d = dim % len(shape)
        if d == 0:
            raise Refuse(f"{op} along the batch dimension (dim={dim}) separates the samples of "
                         "a batch; fxpath needs per-sample layers")
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
            per_sample(r)
        src, lead = self.src(x), (slice(None),) * d
        self.pieces[n] = [(src, (*lead, core.piece_index(p))) for p in parts]

    def piece(self, seq: fx.Node, k: int) -> str:
        """An IR node holding the ``k``-th piece of ``seq`` (a whole sequence passed to
        ``torch.cat`` or returned by the model; ``seq[k]`` lowers through `select`)."""
        src, index = self.pieces[seq][k]
        name = self.fresh(f"{seq.name}_piece{k}")
        return self.append(Node(name, "reshape", (src,), per_sample(seq.meta["val"][k]),
                                {"fn": "getitem", "index": index}, {},
                                f"{describe(self.gm, seq)}[{k}] at {where(seq)}"))

    def select(self, n: fx.Node, seq: fx.Node, index: Any) -> None:
        """``n = seq[index]`` of a sequence of pieces: ``seq[k]`` is the piece's re-indexing
        node, ``seq[a:b]`` a shorter sequence (no node)."""
        pieces = self.pieces[seq]
        if isinstance(index, slice):
            self.pieces[n] = pieces[index]
            return
        if not isinstance(index, int) or isinstance(index, bool):
            raise Refuse(f"selects a result of {seq.name} = {describe(self.gm, seq)}(...) with a "
                         f"non-integer index {index!r}")
        src, idx = pieces[index]
        if not n.users:
            return  # an unused result (``a, _ = x.chunk(2, 1)``): no node, no paths
        self.emit(n, "reshape", (src,), {"fn": "getitem", "index": idx},
                  what=f"{describe(self.gm, seq)}(...)[{index}]")

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

    def call_rule(self, n: fx.Node) -> Callable | None:
        """The table's rule of a function or Tensor method call (a module's: `module_rule`)."""
        if n.op == "call_method":
            return self.rules.get(str(n.target))
        if n.op == "call_function" and not isinstance(n.target, type):  # types: module rules
            return lookup(self.rules, n.target)
        return None

    def returns_pieces(self, n: fx.Node) -> bool:
        """A call returning several tensors that the lowering keeps as pieces: a multi-result
        op, or a slice ``seq[1:]`` of one's results."""
        if n.op == "call_function" and n.target is operator.getitem:
            return bool(n.args) and n.args[0] in self.pieces
        rule = self.call_rule(n)
        return isinstance(rule, Rule) and rule.pieces

    def lower_call(self, n: fx.Node) -> None:
        if n.op == "call_module":
            module = self.gm.get_submodule(str(n.target))
            rule = module_rule(self.rules, module)
            if rule is None:
                raise Refuse(f"no path-lifting rule for module type {type(module).__name__}",
                             type(module).__name__)
            rule(self, n, module)
            return
        args, kwargs = call_args(n)
        rule = self.call_rule(n)
        if rule is None and n.op == "call_function":
            raise Refuse(lookup(UNSUPPORTED_FUNCTIONS, n.target)
                         or f"no path-lifting rule for {fn_name(n.target)}")
        if rule is None and n.op == "call_method":
            raise Refuse(UNSUPPORTED_METHODS.get(str(n.target))
                         or f"no path-lifting rule for Tensor.{n.target}")
        if rule is not None:
            rule(self, n, *args, **kwargs)


def _same_forward(cls: type, base: type) -> bool:
    """A subclass that overrides forward (timm's BatchNormAct2d) is not its base class."""
    return issubclass(cls, base) and cls.forward is base.forward


def module_rule(rules: Mapping[Any, Callable], m: nn.Module) -> Callable | None:
    """The rule of module ``m``: that of the first module type in ``rules`` it is an instance of
    (without overriding its forward); for a type `fxpath.frontend.refusals.MODULES` lists, a
    rule that refuses it; else None (the tracer traces through it)."""
    if parametrize.is_parametrized(m):
        return None  # traced through: its weight is computed at run time (a derived one)
    for t, rule in rules.items():
        if isinstance(t, type) and isinstance(m, t) and _same_forward(type(m), t):
            return rule
    reason = next((r for t, r in UNSUPPORTED_MODULES.items() if isinstance(m, t)), None)
    if reason is not None:
        def refuse(lw: FxLowering, n: fx.Node, m: nn.Module) -> None:
            raise Refuse(reason, type(m).__name__)
        return refuse
    return None


class GraphView:
    """A traced graph with the model that owns its submodules (what lowering reads of a
    GraphModule, without building one)."""

    def __init__(self, graph: fx.Graph, root: nn.Module) -> None:
        self.graph, self.get_submodule, self.root = graph, root.get_submodule, root
