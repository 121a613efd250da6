"""The choice of front end: a model (an ``nn.Module`` or an ``ExportedProgram``) into the IR.

Two front ends produce the same IR nodes: `fxpath.frontend.lower.fx` lowers a torch.fx trace of
a module (`fxpath.frontend.tracer`), `fxpath.frontend.lower.aten` an ATen graph (exported by
`fxpath.frontend.export`). A module goes through torch.fx by default (``front_end="fx"``) and
through torch.export on request (``front_end="export"``) or when torch.fx cannot follow its
forward (with a warning). An ``ExportedProgram`` always goes through its own graph; its
parameters are read live from its ``state_dict`` (and ``constants``). `build_ir` then normalizes
the IR (`fxpath.passes.pipeline.normalize`).
"""

from __future__ import annotations

import warnings
from collections import ChainMap
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch import Tensor

from fxpath.errors import ArgumentError, FxPathError, TraceError
from fxpath.frontend.lower.fx import has_rule, lower
from fxpath.frontend.tracer import trace_graph
from fxpath.ir.graph import Graph
from fxpath.passes.pipeline import normalize
from fxpath.validate import check_input_count, eval_mode, shape_advice

__all__ = ["FRONT_ENDS", "Model", "build_ir", "canonical_ir", "exported_shapes", "is_exported",
           "param_store", "state_keys"]

Model = nn.Module | torch.export.ExportedProgram

#: the front ends a module can be sent through
FRONT_ENDS = ("fx", "export")


def is_exported(model: Any) -> bool:
    """Whether ``model`` is a ``torch.export.ExportedProgram``."""
    return isinstance(model, torch.export.ExportedProgram)


def param_store(model: Model) -> nn.Module | Mapping[str, Tensor]:
    """Where the live parameters of ``model`` are read by state_dict name: the module itself,
    or a live view of an exported program's ``state_dict`` and ``constants``."""
    if is_exported(model):
        return ChainMap(model.state_dict, dict(model.constants))
    return model


def state_keys(model: Model) -> list[str]:
    """The state_dict names of ``model``."""
    if is_exported(model):
        return [*model.state_dict, *model.constants]
    return list(model.state_dict(keep_vars=True))


def tensors_of(model: Model) -> list[Tensor]:
    """Every parameter and buffer of ``model`` (to choose a dtype and a device)."""
    if is_exported(model):
        return [t for t in param_store(model).values() if isinstance(t, Tensor)]
    return [*model.parameters(), *model.buffers()]


def exported_shapes(ep: torch.export.ExportedProgram) -> list[tuple[int, ...]]:
    """The per-sample shapes of an exported program's user inputs (batch dimension dropped)."""
    user = set(ep.graph_signature.user_inputs)
    shapes = []
    for n in ep.graph.nodes:
        val = n.meta.get("val")
        if n.op == "placeholder" and n.name in user and isinstance(val, Tensor):
            if val.dim() < 1:
                raise ArgumentError(f"exported input {n.name} has no batch dimension")
            shapes.append(tuple(int(d) for d in val.shape[1:]))
    return shapes


def _via_export(model: nn.Module | torch.export.ExportedProgram,
                shapes: Sequence[tuple[int, ...]], **passes: Any) -> Graph:
    try:
        from fxpath.frontend.export import lower_exported, trace_export

        ep = model if is_exported(model) else trace_export(model, shapes)
        graph = lower_exported(ep)
    except FxPathError:
        raise
    except Exception as exc:  # torch.export's own failures: name the model, keep the cause
        raise TraceError(f"torch.export could not export {type(model).__name__}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
    return normalize(graph, **passes)


def build_ir(model: Model, shapes: Sequence[tuple[int, ...]], *, fold_bn: bool = True,
             frame_min_macs: int | None = None, debug: bool = False,
             front_end: str = "fx", outputs: Sequence[str] | None = None
             ) -> tuple[fx.Graph | None, Graph]:
    """Lower ``model`` as its eval-mode function and normalize it: ``(fx graph or None, IR)``.

    A module in train mode is traced in eval mode (BatchNorm with running statistics, Dropout
    off); every module's own ``training`` flag is restored afterwards. ``fold_bn``,
    ``frame_min_macs``, ``outputs`` (the names of the outputs to keep) and ``debug`` go to
    `fxpath.passes.pipeline.normalize`.

    Raises:
        ArgumentError: ``shapes`` cannot fit the model's first layer (the message says what to
            change), a module is given fewer shapes than its forward's required inputs or more
            than it names (`fxpath.validate.check_input_count`), or an unknown ``front_end``.
        TraceError, UnsupportedModelError: the model cannot be traced, or is no ReLU-DAG.
    """
    if front_end not in FRONT_ENDS:
        raise ArgumentError(f"front_end must be one of {FRONT_ENDS}, got {front_end!r}")
    passes = {"fold_bn": fold_bn, "frame_min_macs": frame_min_macs, "debug": debug,
              "outputs": outputs}
    if is_exported(model):
        return None, _via_export(model, shapes, **passes)
    check_input_count(model, len(shapes))
    with eval_mode(model):
        if front_end == "export":
            return None, _via_export(model, shapes, **passes)
        try:
            fx_graph = trace_graph(model, shapes, has_rule=has_rule)
        except TraceError as exc:
            advice = shape_advice(model, shapes)
            if advice is not None:
                shown = ", ".join(str(s) for s in shapes)
                raise ArgumentError(f"input_shape {shown} does not fit the model: "
                                    f"{advice}") from exc
            return None, _fallback(model, shapes, exc, passes)
        graph = normalize(lower(fx_graph), **passes)
    return fx_graph, graph


def _fallback(model: nn.Module, shapes: Sequence[tuple[int, ...]], fx_error: TraceError,
              passes: dict[str, Any]) -> Graph:
    """torch.fx failed: try torch.export, say so; if that fails too, the fx error stands."""
    try:
        graph = _via_export(model, shapes, **passes)
    except FxPathError as exc:
        if isinstance(exc, TraceError):
            raise fx_error from exc
        raise
    first = str(fx_error).split("\n", 1)[0][:200]
    warnings.warn(f"fxpath: torch.fx could not trace {type(model).__name__} ({first}); it was "
                  "analysed through torch.export instead", UserWarning, stacklevel=4)
    return graph


def canonical_ir(model: Model, shapes: Sequence[tuple[int, ...]], *, fold_bn: bool = True) -> Graph:
    """The IR of ``model``'s fully decomposed ATen graph: the common ground on which a module,
    its exported program and that program after ``run_decompositions()`` are compared (the
    front ends spell a few ops differently: a global average pool, for one, is an adaptive
    pool as exported and a mean once decomposed)."""
    try:
        from fxpath.frontend.export import lower_exported, trace_export

        with eval_mode(*([] if is_exported(model) else [model])):
            ep = model if is_exported(model) else trace_export(model, shapes)
            graph = lower_exported(ep.run_decompositions())
    except FxPathError:
        raise
    except Exception as exc:
        raise TraceError(f"torch.export could not export {type(model).__name__}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
    return normalize(graph, fold_bn=fold_bn)
