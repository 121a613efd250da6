"""The fxpath IR: a small DAG of typed nodes, one per neuron layer of the ReLU-DAG model.

A `Graph` is an immutable, topologically ordered tuple of `Node` records. Passes are pure
functions `Graph -> Graph`; analysis results live in side tables keyed by node name, never on
the nodes. Shapes never include the batch dimension.

Node ops are defined in `fxpath.ops`, one definition each (its attributes, checked by
`fxpath.ops.verify`, and the rules every interpreter of the IR looks up); ``docs/ops.md`` lists
them. After normalization (`fxpath.passes.pipeline`) a graph holds only ``input``,
``linear`` (or ``frame_conv``, a conv on its compressed image), ``affine``, ``scale``,
``relu``, ``add``, ``pool``, ``resample``, ``reshape``, ``concat`` and ``output`` nodes; the
lowering also emits ops that the passes rewrite away (``batchnorm``, ``maxpool``,
``avgpool``, ``adaptive_avgpool``, ``adaptive_maxpool``, ``mean``, the ReLU-like
activations ``relu6``, ``leaky_relu``, ``hardtanh`` and ``prelu``, ``identity`` and
``unsupported``). The op names are strings here (this layer sits below the registry); code
above it compares nodes with the registry's handles: ``fxpath.ops.core.op_of(n) is LINEAR``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx

__all__ = ["DERIVED", "BatchNormRef", "Derived", "Graph", "Node", "node_users"]

#: how the IR spells a coordinate computed from model tensors: ``conv.weight:derived``
DERIVED = ":derived"


@dataclass(frozen=True)
class BatchNormRef:
    """A frozen BatchNorm's per-channel affine map ``x * s + t``, by parameter name.

    ``s = weight / sqrt(running_var + eps)`` and ``t = bias - running_mean * s``. ``weight`` or
    ``bias`` is ``None`` when the BatchNorm has ``affine=False``.
    """

    running_mean: str
    running_var: str
    eps: float
    weight: str | None = None
    bias: str | None = None
    source: str = ""

    def names(self) -> tuple[str, ...]:
        """All state_dict names this affine map reads."""
        return tuple(n for n in (self.weight, self.bias, self.running_mean, self.running_var) if n)


@dataclass(frozen=True)
class Derived:
    """A coordinate tensor the model computes from its tensors at run time (weight
    standardization, ``torch.nn.utils.parametrize``, a gain times a weight...).

    Attributes:
        name: the IR's name for it, ``<report><DERIVED>``; nodes read it under this name.
        report: the name its scores are reported under (the parameter it stands for).
        inputs: the state_dict names it is computed from, in ``fn``'s argument order.
        shape: its shape.
        code: ``fn``'s source (what two networks are compared on).
        fn: computes it from the input tensors.
    """

    name: str
    report: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    code: str
    fn: Callable[..., Any] = field(compare=False, repr=False)


def _freeze(attrs: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(attrs or {}))


@dataclass(frozen=True)
class Node:
    """One layer of neurons.

    Attributes:
        name: unique name, taken from the traced model (``layer1_0_conv1``).
        op: the node kind, a name registered in `fxpath.ops`.
        inputs: names of the producing nodes, in argument order.
        shape: per-sample output shape (no batch dimension).
        attrs: static attributes of the op (stride, dims, coefficients...).
        params: role -> state_dict name of the model parameters the node reads.
        source: where the node comes from in the model (module path and op), for errors.
    """

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    shape: tuple[int, ...] = ()
    attrs: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "attrs", _freeze(self.attrs))
        object.__setattr__(self, "params", _freeze(self.params))

    def replace(self, **changes: Any) -> Node:
        """A copy of this node with some fields changed."""
        return dataclasses.replace(self, **changes)

    def with_attrs(self, **changes: Any) -> Node:
        """A copy of this node with some attributes added or changed."""
        return self.replace(attrs={**self.attrs, **changes})

    def channel_dim(self) -> int:
        """The channel dimension of the *batched* output: last for dense layers, else 1."""
        dense = self.op == "linear" and self.attrs["kind"] == "dense"
        return len(self.shape) if dense else 1

    def describe(self) -> str:
        """One line naming the node, its op and where it sits in the model."""
        where = f" at {self.source}" if self.source else ""
        return f"{self.name} = {self.op}({', '.join(self.inputs)}){where}"


@dataclass(frozen=True)
class Graph:
    """A topologically ordered DAG of nodes; immutable."""

    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "_index", {n.name: n for n in self.nodes})

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, name: str) -> Node:
        return self._index[name]  # type: ignore[attr-defined]

    def __contains__(self, name: object) -> bool:
        return name in self._index  # type: ignore[attr-defined]

    @property
    def inputs(self) -> tuple[Node, ...]:
        """The input nodes, in model argument order."""
        return tuple(n for n in self.nodes if n.op == "input")

    @property
    def output(self) -> Node:
        """The output node."""
        return next(n for n in self.nodes if n.op == "output")

    def users(self) -> dict[str, list[str]]:
        """Map each node name to the names of the nodes that read it."""
        return node_users(self.nodes)

    def derived(self) -> dict[str, Derived]:
        """The derived coordinates nodes read (``attrs["derived"]``), by IR name."""
        return {d.name: d for n in self.nodes for d in n.attrs.get("derived", ())}

    def param_names(self) -> tuple[str, ...]:
        """Every state_dict name read by some node, in first-use order (a derived coordinate
        contributes the names it is computed from)."""
        seen: dict[str, None] = {}
        for node in self.nodes:
            derived = {d.name: d for d in node.attrs.get("derived", ())}
            for name in node.params.values():
                for read in derived[name].inputs if name in derived else (name,):
                    seen.setdefault(read, None)
            bn = node.attrs.get("bn")
            if isinstance(bn, BatchNormRef):
                for name in bn.names():
                    seen.setdefault(name, None)
        return tuple(seen)

    def to_networkx(self) -> nx.DiGraph:
        """A networkx view: one vertex per node (op, shape, attrs, params); edges = data flow."""
        import networkx as nx  # on first use: it costs about 0.1 s to import

        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.name, op=n.op, shape=n.shape, attrs=dict(n.attrs), params=dict(n.params),
                       source=n.source)
        for n in self.nodes:
            for i, src in enumerate(n.inputs):
                g.add_edge(src, n.name, index=i)
        return g

    def format(self) -> str:
        """A readable listing of the graph, one node per line."""
        lines = []
        for n in self.nodes:
            extra = {k: v for k, v in n.attrs.items() if k != "coeff"}
            line = f"{n.name}: {n.op}({', '.join(n.inputs)}) -> {list(n.shape)}"
            line += f" {extra}" if extra else ""
            lines.append(line + (f" {dict(n.params)}" if n.params else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def node_users(nodes: Iterable[Node]) -> dict[str, list[str]]:
    """Map each node name to the names of its consumers."""
    nodes = tuple(nodes)
    users: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for src in n.inputs:
            users[src].append(n.name)
    return users
