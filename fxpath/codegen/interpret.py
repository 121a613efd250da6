"""A reference interpreter: run the IR as the *model* (real ReLUs and max-pools) on real inputs.

Used to check that tracing and every pass preserve the function the model computes: for any
IR ``g`` of ``model``, ``run(g, model, x)`` must equal ``model(x)``. It accepts IR before and
after normalization: each node is computed by its op's interpret rule (`fxpath.ops`). It is a
test and debugging tool, not a fast path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fxpath.ir.graph import Graph
from fxpath.ir.params import ParamSource
from fxpath.ops.core import RunContext
from fxpath.ops.walk import walk

__all__ = ["run"]


def run(graph: Graph, model: torch.nn.Module, inputs: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """Evaluate the IR as a network with the model's live parameters; returns the outputs."""
    xs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    source = ParamSource(model, graph.param_names(), derived=graph.derived())
    ref = xs[0]

    def fetch(name: str) -> Tensor:
        return source.fetch(name, ref.dtype, ref.device)

    ctx = RunContext(fetch, iter(xs))
    env = walk(graph, "interpret_rule", lambda rule, n, ins: rule(n, ins, ctx))
    return list(env[graph.output.name])
