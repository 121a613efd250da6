"""torch.export for fxpath: export a module the way the ATen front end reads it.

`trace_export` exports a module in eval mode at fixed per-sample shapes with a batch of two;
`lower_exported` (from `fxpath.frontend.lower.aten`) lowers an `ExportedProgram` into the IR. Every
public function of fxpath accepts an ExportedProgram where it accepts a module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.export import ExportedProgram

from fxpath.errors import ArgumentError, TraceError
from fxpath.frontend.lower.aten import lower_exported
from fxpath.frontend.tracer import TRACE_BATCH
from fxpath.validate import as_input_shapes, eval_mode

__all__ = ["lower_exported", "trace_export"]


def trace_export(model: nn.Module, shapes: Sequence[int] | Sequence[Sequence[int]],
                 batch: int = TRACE_BATCH, *, dtype: torch.dtype | None = None
                 ) -> ExportedProgram:
    """``torch.export.export`` of ``model`` as its eval-mode function, at per-sample ``shapes``.

    Exports non-strict with all-zero inputs of ``batch`` samples (two by default: never a
    squeezable size-1 dimension) in the dtype of the model's first floating parameter (or
    ``dtype``), on its device. Every module's ``training`` flag is restored afterwards.

    Raises:
        ArgumentError: malformed ``shapes`` or ``batch``.
        TraceError: torch.export could not export the model (the cause is chained).
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise ArgumentError(f"batch must be an int >= 2 (the batch dimension must not be "
                            f"confused with a size-1 one), got {batch!r}")
    input_shapes = as_input_shapes(shapes)
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = dtype or (first.dtype if first is not None else torch.get_default_dtype())
    device = first.device if first is not None else torch.device("cpu")
    inputs = tuple(torch.zeros((batch, *s), dtype=dtype, device=device) for s in input_shapes)
    with eval_mode(model):
        try:
            return torch.export.export(model, inputs, strict=False)
        except Exception as exc:
            shown = ", ".join(str(s) for s in input_shapes)
            message = str(exc).strip().split("\n", 1)[0][:300]
            raise TraceError(f"torch.export could not export {type(model).__name__} at input "
                             f"shape {shown}: {type(exc).__name__}: {message}") from exc
