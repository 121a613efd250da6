"""What a lowering rule is: a function of one front end, and the IR ops it can build.

A rule parses the arguments of one kind of call (a module type, a function, a Tensor method, an
ATen op) and calls the op builders of `fxpath.frontend.lower.core`. Each rule says which IR ops
(names in the registry, `fxpath.ops.REGISTRY`) it can emit:
``tests/frontend/test_frontend_coverage.py`` reads these declarations to check that every registered
op is built by a rule of each front end, so that an op added to the registry without front-end rules
is noticed. The walks only call the rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Rule", "builds"]


@dataclass(frozen=True, eq=False)
class Rule:
    """A lowering rule: ``fn(lowering, node, ...)``, emitting IR nodes of the ops in ``builds``.

    ``pieces``: the call returns several tensors that the fx walk keeps as pieces of their input
    (``split``, ``chunk``...) instead of one IR node.
    """

    fn: Callable[..., None]
    builds: frozenset[str]
    pieces: bool = False

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.fn(*args, **kwargs)


def builds(*ops: str, pieces: bool = False) -> Callable[[Callable[..., None]], Rule]:
    """Decorator: the function is a `Rule` that emits IR nodes of ``ops``."""
    def wrap(fn: Callable[..., None]) -> Rule:
        return Rule(fn, frozenset(ops), pieces)
    return wrap
