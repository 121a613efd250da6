"""The op record: one definition per IR op, holding its schema and every rule read about it.

Each interpreter of the IR walks the graph (`fxpath.ops.walk`) and looks a rule up by the
node's op: the code generator (`path_rule`), the reference interpreter (`interpret_rule`), the
constant-interior analysis (`frame_rule`), neuron rescaling (`rescale_rule`) and the
path-lifting coordinates (`slots_rule`). A rule that does not apply to an op is a
`NotApplicable` that says why. `register` returns the `Op`: each family module keeps it as a
typed handle (``LINEAR``, ``RELU``...), and code asks ``op_of(node) is LINEAR`` rather than
comparing op names.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch.nn as nn
from torch import Tensor

from fxpath.errors import IRVerificationError
from fxpath.ir.coordinates import Factored, Fetch, Slot
from fxpath.ir.graph import Graph, Node
from fxpath.kernels.emit import Emitter, Value
from fxpath.kernels.geometry import Frame

__all__ = ["INT", "INTS", "REAL", "REGISTRY", "RULES", "Attr", "Check", "Coordinates",
           "NotApplicable", "Op", "Rescaling", "RunContext", "When", "does_not_apply", "get",
           "is_a", "no_rule", "one_of", "op_of", "register", "rule_of", "summary"]


@dataclass(frozen=True)
class NotApplicable:
    """A rule that does not apply to an op, and the reason."""

    reason: str


def does_not_apply(reason: str) -> NotApplicable:
    """Mark a rule slot as deliberately empty: ``does_not_apply("no parameters")``."""
    return NotApplicable(reason)


# -- attribute schemas --------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """A named test of an attribute value (the name is what errors and docs print)."""

    name: str
    test: Callable[[Any], bool]

    def __call__(self, value: Any) -> bool:
        return bool(self.test(value))


def is_a(*types: type) -> Check:
    """Instances of ``types`` (``bool`` counts as an int only where ``bool`` is listed)."""
    def test(v: Any) -> bool:
        return isinstance(v, types) and (bool in types or not isinstance(v, bool))
    return Check("|".join("None" if t is type(None) else t.__name__ for t in types), test)


def one_of(*values: Any) -> Check:
    """One of a few literal values."""
    return Check("|".join(repr(v) for v in values), lambda v: v in values)


def _ints(v: Any) -> bool:
    return isinstance(v, tuple) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)


INT = is_a(int)
REAL = Check("float", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool))
INTS = Check("tuple[int]", _ints)


@dataclass(frozen=True)
class When:
    """An attribute required only when another one takes one of some values."""

    key: str
    values: tuple[Any, ...]

    def __call__(self, attrs: Mapping[str, Any]) -> bool:
        return attrs.get(self.key) in self.values

    def __str__(self) -> str:
        return f"{self.key} {'|'.join(map(str, self.values))}"


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its value test and whether every node must carry it."""

    check: Check
    required: bool | When = True

    def describe(self, name: str) -> str:
        """``name: type``, marked ``?`` when optional, with its condition when conditional."""
        if isinstance(self.required, When):
            return f"`{name}`: {self.check.name} (if {self.required})"
        return f"`{name}{'' if self.required else '?'}`: {self.check.name}"


# -- rule records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rescaling:
    """How neuron rescaling (``docs/mathematics.md``) crosses an op.

    Attributes:
        summary: one line for the docs.
        transit: channel ids at the op's output from those at one input (``graph, node,
            input name, ids``), or ``None`` where rescaling cannot cross; ``None`` (the
            field): the op stops rescaling.
        absorbs: whether a node of the op divides its incoming weights by ``lam`` (consumer).
        divide: divide the consumer's weights: ``(model, node, factors)``, ``factors`` a
            batched input-shaped tensor of ``lam`` (1 where no rescaled channel arrives).
        produces: whether the node's output channels can be rescaled (producer).
        scale: multiply the producer's incoming weights and bias: ``(model, node, lam)``.
        join: like ``transit``, for an op that sums its operands position by position (a
            residual add): it passes only when every operand is rescaled alike, so a single
            neuron stops there (``transit`` is ``None``) and a residual stream
            (``fxpath.apps.rescale``, ``streams=True``) joins its operands' channels.
        scale_bn: multiply the producer's output by ``lam`` through its folded BatchNorm's
            weight and bias (the incoming weights untouched): ``(model, node, lam)``; a
            producer without a BatchNorm weight scales as ``scale`` does.
    """

    summary: str
    transit: Callable[[Graph, Node, str, Tensor], Tensor | None] | None = None
    absorbs: Callable[[Node], bool] | None = None
    divide: Callable[[nn.Module, Node, Tensor], None] | None = None
    produces: Callable[[Node], bool] | None = None
    scale: Callable[[nn.Module, Node, Tensor], None] | None = None
    join: Callable[[Graph, Node, str, Tensor], Tensor | None] | None = None
    scale_bn: Callable[[nn.Module, Node, Tensor], None] | None = None


@dataclass(frozen=True)
class Coordinates:
    """The coordinate tensors an op reads (`fxpath.codegen.lift`).

    Attributes:
        summary: one line for the docs.
        slots: the node's slots, in network argument order.
        lift: their tensors from live parameters: ``(node, fetch, q, out)`` -> one tensor per
            slot, signed (``q=None``) or ``|c|^q``; ``out`` may receive the first one.
        factored: the signed tensors with products of a model tensor and a per-channel
            scale left as `fxpath.ir.coordinates.Factored` (``(node, fetch)`` -> one per slot);
            ``None``: ``lift`` computes them all.
    """

    summary: str
    slots: Callable[[Node], list[Slot]]
    lift: Callable[[Node, Fetch, float | None, Tensor | None], list[Tensor]]
    factored: Callable[[Node, Fetch], list[Tensor | Factored]] | None = None


@dataclass
class RunContext:
    """What the reference interpreter's rules read besides their inputs."""

    fetch: Fetch
    inputs: Iterator[Tensor]


PathRule = Callable[[Emitter, Node, list[Value], list[Slot]], Value]
InterpretRule = Callable[[Node, list[Tensor], RunContext], Any]
FrameRule = Callable[[Node, list[Frame | None], list[tuple[int, ...]]], Frame | None]

#: the rule slots of an op, in docs order
RULES = ("path_rule", "interpret_rule", "frame_rule", "rescale_rule", "slots_rule")


@dataclass(frozen=True, eq=False)
class Op:
    """One IR op: its attributes and its rules.

    Attributes:
        name: the ``Node.op`` string.
        doc: one line: what a node of this op is.
        attrs: attribute name -> `Attr`; nodes carry no other attributes.
        path_rule: emit the node's path-network value (`fxpath.codegen.generate`).
        interpret_rule: compute the node as the model does (`fxpath.codegen.interpret`).
        frame_rule: the node's constant-interior frame from its inputs' (`fxpath.codegen.frames`).
        rescale_rule: how neuron rescaling crosses it (`fxpath.apps.rescale`).
        slots_rule: its coordinate tensors (`fxpath.codegen.lift`).
        lowered_by: for ops that exist only before normalization, the pass that rewrites
            them away (`fxpath.passes.pipeline`); ``None`` for the ops codegen accepts.
        compact: its path rule takes compact values (`fxpath.layout`); every other op's
            rule gets full tensors.
    """

    name: str
    doc: str
    attrs: Mapping[str, Attr]
    path_rule: PathRule | NotApplicable
    interpret_rule: InterpretRule | NotApplicable
    frame_rule: FrameRule | NotApplicable
    rescale_rule: Rescaling | NotApplicable
    slots_rule: Coordinates | NotApplicable
    lowered_by: str | None = None
    compact: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "attrs", MappingProxyType(dict(self.attrs)))

    @property
    def final(self) -> bool:
        """Whether the op survives normalization (the code generator accepts it)."""
        return self.lowered_by is None

    def check_attrs(self, attrs: Mapping[str, Any]) -> list[str]:
        """Every way ``attrs`` break the schema, one phrase each (empty when they fit)."""
        problems = [f"attribute {k!r} is not one of {self.name}'s ({', '.join(self.attrs)})"
                    for k in attrs if k not in self.attrs]
        for key, spec in self.attrs.items():
            required = spec.required(attrs) if isinstance(spec.required, When) \
                else spec.required
            if key not in attrs:
                if required:
                    problems.append(f"attribute {key!r} is missing")
            elif not spec.check(attrs[key]):
                problems.append(f"attribute {key!r} = {attrs[key]!r} is not {spec.check.name}")
        return problems


REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Add ``op`` to the registry (names are unique); returns it."""
    if op.name in REGISTRY:
        raise ValueError(f"IR op {op.name!r} is already registered")
    REGISTRY[op.name] = op
    return op


def _unknown(name: str) -> str:
    return (f"unknown IR op {name!r}: no definition in fxpath.ops "
            f"(registered: {', '.join(sorted(REGISTRY))})")


def get(name: str) -> Op:
    """The definition of op ``name``; `IRVerificationError` naming the known ops if none."""
    op = REGISTRY.get(name)
    if op is None:
        raise IRVerificationError(_unknown(name))
    return op


def op_of(node: Node) -> Op:
    """The registered `Op` of ``node``, to compare with the family modules' handles
    (``op_of(n) is LINEAR``); `IRVerificationError` naming the node if its op is unknown."""
    op = REGISTRY.get(node.op)
    if op is None:
        raise IRVerificationError(f"{node.describe()}: {_unknown(node.op)}")
    return op


#: `rule_of` without a default: raise where the rule does not apply
_REQUIRED: Any = object()


def rule_of(node: Node, slot: str, default: Any = _REQUIRED) -> Any:
    """``node``'s op's rule ``slot``. Where it does not apply: ``default`` when given, else
    `IRVerificationError` naming the node and the reason."""
    rule = getattr(op_of(node), slot)
    if isinstance(rule, NotApplicable):
        if default is not _REQUIRED:
            return default
        raise no_rule(node, slot, rule)
    return rule


def no_rule(node: Node, slot: str, rule: NotApplicable) -> IRVerificationError:
    """The error for a node whose op's rule ``slot`` does not apply: names both, and why."""
    return IRVerificationError(f"{node.describe()}: op {node.op!r} has no {slot} "
                               f"({rule.reason})")


def summary(rule: Any) -> str:
    """One line describing a rule: its reason, its summary or its docstring's summary."""
    if isinstance(rule, NotApplicable):
        return f"does not apply: {rule.reason}"
    if isinstance(rule, (Rescaling, Coordinates)):
        return rule.summary
    doc = (getattr(rule, "__doc__", None) or "").strip()
    return " ".join(doc.split("\n\n")[0].split())  # the first paragraph, on one line

