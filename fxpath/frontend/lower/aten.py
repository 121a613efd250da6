"""The torch.export front end: lower an `ExportedProgram` (an ATen graph) into the fxpath IR.

`lower_exported(ep)` emits the IR that `fxpath.frontend.lower.fx` emits from a torch.fx trace
(same node kinds, same static attributes, parameters named by their state_dict names), so the
normalization passes, the code generator and everything downstream are shared. It walks the
graph with the graph reader (`fxpath.frontend.lower.aten_reader`) and the rule table
(`fxpath.frontend.lower.aten_rules.RULES`).
"""

from __future__ import annotations

from torch.export import ExportedProgram

from fxpath.errors import ArgumentError
from fxpath.frontend.lower.aten_reader import AtenLowering
from fxpath.frontend.lower.aten_rules import RULES
from fxpath.ir.graph import Graph

__all__ = ["lower_exported"]


def lower_exported(ep: ExportedProgram) -> Graph:
    """Lower an ExportedProgram (as exported, or after ``run_decompositions()``) to the IR.

    The IR is the one `fxpath.frontend.lower.fx.lower` makes of the same model (before
    normalization): feed it to `fxpath.passes.pipeline.normalize`. Parameters are named by their
    state_dict names.

    Raises:
        ArgumentError: ``ep`` is not an ExportedProgram, or was exported with a batch of 1 or
            a dynamic batch (export with a batch of 2: `trace_export`).
        TraceError: the program has no tensor input.
    """
    if not isinstance(ep, ExportedProgram):
        raise ArgumentError(f"expected a torch.export.ExportedProgram, got {type(ep).__name__}")
    lw = AtenLowering(ep, RULES)
    lw.find_prelu()
    return lw.run(list(lw.graph.nodes))
