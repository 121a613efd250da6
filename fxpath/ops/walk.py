"""The one walk over the IR: every driver of the registry is this loop with its own rule slot.

The code generator (`fxpath.codegen.generate`), the reference interpreter
(`fxpath.codegen.interpret`), the constant-interior analysis (`fxpath.codegen.frames`), the
coordinates (`fxpath.codegen.lift`) and neuron rescaling (`fxpath.apps.rescale`) each visit
the graph in topological order, look up the node's op rule of one slot (`fxpath.ops.core.RULES`)
and feed it the values their walk gave the node's inputs. `walk` is that loop; a driver says
what to do with a rule (``apply``), which nodes have a value without one (``fixed``) and what
an op whose rule does not apply gives (``otherwise``; by default it is an error naming the
node and the reason, as `fxpath.ops.core.rule_of` raises).

Example:
    >>> shapes = walk(graph, "interpret_rule", lambda rule, n, ins: n.shape)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fxpath.errors import IRVerificationError
from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import NotApplicable, no_rule, op_of

__all__ = ["BY_RULE", "Apply", "Fixed", "Otherwise", "walk"]


class _ByRule:
    """The answer of a ``fixed`` hook for a node whose value its op's rule computes."""

    def __repr__(self) -> str:
        return "BY_RULE"


#: what a ``fixed`` hook returns for a node whose value its op's rule computes
BY_RULE: Any = _ByRule()

#: ``(rule, node, the values of its inputs) -> the node's value``
Apply = Callable[[Any, Node, list[Any]], Any]
#: ``node -> its value``, or `BY_RULE` to look its rule up
Fixed = Callable[[Node], Any]
#: ``(node, why its rule does not apply) -> its value``
Otherwise = Callable[[Node, NotApplicable], Any]


def _inputs(env: dict[str, Any], node: Node) -> list[Any]:
    try:
        return [env[i] for i in node.inputs]
    except KeyError as missing:
        raise IRVerificationError(f"{node.describe()}: input {missing.args[0]!r} has no value "
                                  f"yet (the graph is not in topological order)") from None


def _value(env: dict[str, Any], node: Node, slot: str, apply: Apply,
           otherwise: Otherwise | None) -> Any:
    rule = getattr(op_of(node), slot)
    if isinstance(rule, NotApplicable):
        if otherwise is None:
            raise no_rule(node, slot, rule)
        return otherwise(node, rule)
    ins = _inputs(env, node)
    try:
        return apply(rule, node, ins)
    except Exception as exc:
        if hasattr(exc, "add_note"):  # Python >= 3.11
            exc.add_note(f"fxpath: while applying the {slot} of {node.describe()}")
        raise


def walk(graph: Graph, slot: str, apply: Apply, *, fixed: Fixed | None = None,
         otherwise: Otherwise | None = None) -> dict[str, Any]:
    """The value of every node of ``graph``, by name, in topological order.

    Each node's value is ``fixed(node)`` unless that is `BY_RULE` (or ``fixed`` is None);
    else ``apply(rule, node, input values)`` with its op's rule ``slot`` (see
    `fxpath.ops.core.Op`) and the values of its inputs, in order; where that rule does not
    apply, ``otherwise(node, the NotApplicable)`` or, without ``otherwise``,
    `IRVerificationError` naming the node and the reason. An exception a rule raises gets a
    note naming the node (Python >= 3.11; its message is unchanged).
    """
    env: dict[str, Any] = {}
    for n in graph:
        value = BY_RULE if fixed is None else fixed(n)
        if value is BY_RULE:
            value = _value(env, n, slot, apply, otherwise)
        env[n.name] = value
    return env
