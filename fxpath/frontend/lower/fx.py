"""The torch.fx front end: lower a traced fx graph into the fxpath IR.

`lower` walks the graph with the graph reader (`fxpath.frontend.lower.fx_reader`) and the rule
table (`fxpath.frontend.lower.fx_rules.RULES`); `has_rule` tells the tracer which modules to keep
as leaves. Ops that do not belong to a ReLU-DAG become ``unsupported`` nodes carrying the reason
(`fxpath.frontend.refusals`); the pipeline's first pass reports all of them at once.
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx
import torch.nn as nn

from fxpath.frontend.lower.fx_reader import FxLowering, GraphView, module_rule
from fxpath.frontend.lower.fx_rules import RULES
from fxpath.ir.graph import Graph

__all__ = ["has_rule", "lower"]


def has_rule(module: nn.Module) -> bool:
    """Whether a module type has a lowering rule (the tracer keeps such modules as leaves)."""
    return module_rule(RULES, module) is not None


def lower(traced: fx.GraphModule | fx.Graph) -> Graph:
    """Lower a traced GraphModule (`fxpath.frontend.tracer.trace`) or graph (`trace_graph`) to
    the IR."""
    if isinstance(traced, fx.Graph):
        if traced.owning_module is None:
            raise TypeError("lower() needs a GraphModule or a graph whose owning_module is set")
        gm: Any = GraphView(traced, traced.owning_module)
    else:
        gm = traced
    lw = FxLowering(gm, RULES)
    return lw.run(list(gm.graph.nodes))
