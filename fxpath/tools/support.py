"""``fxpath check``: the support report of a model. Every op kind of the traced model, how
often it occurs, what it lowers to or why it is not supported, and where the unsupported ones
sit; then the model is compiled to confirm the verdict.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fxpath.errors import FxPathError, UnsupportedModelError
from fxpath.ops.core import op_of
from fxpath.ops.io import INPUT, OUTPUT
from fxpath.ops.pre_norm import UNSUPPORTED

__all__ = ["SupportReport", "support_report", "support_text"]


@dataclass
class SupportReport:
    """``fxpath check``: every op kind of the traced model, how many, supported or why not.

    Attributes:
        supported: the whole model compiles (its path quantities are computable).
        rows: ``(op, ir_op, count, reason)`` per op kind in order of first appearance;
            ``reason`` empty when supported.
        where: module paths of the unsupported ops, per op kind.
        front_end: ``"fx"`` or ``"export"`` (when torch.fx could not trace the model).
        error: why the model is refused or cannot be analysed (one line), or ``""``.
    """

    supported: bool
    rows: list[tuple[str, str, int, str]] = field(default_factory=list)
    where: dict[str, list[str]] = field(default_factory=dict)
    front_end: str = "fx"
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"supported": self.supported, "front_end": self.front_end, "error": self.error,
                "ops": [{"op": op, "ir_op": ir, "count": n, "supported": not reason,
                         "reason": reason, "where": self.where.get(op, []) if reason else []}
                        for op, ir, n, reason in self.rows]}


def _lowered(model: Any, shape: Sequence[int]) -> tuple[Any, str]:
    """The IR straight from the lowering (before any pass) and the front end that made it."""
    from fxpath.frontend.build import is_exported
    from fxpath.frontend.lower.fx import has_rule, lower
    from fxpath.frontend.tracer import trace
    from fxpath.validate import eval_mode

    if is_exported(model):
        from fxpath.frontend.export import lower_exported

        return lower_exported(model), "export"
    with eval_mode(model):
        try:
            return lower(trace(model, [tuple(shape)], has_rule=has_rule)), "fx"
        except FxPathError:
            from fxpath.frontend.export import lower_exported, trace_export

            try:
                return lower_exported(trace_export(model, [tuple(shape)])), "export"
            except Exception as exc:
                raise FxPathError(f"neither torch.fx nor torch.export can trace the model: "
                                  f"{_first_line(exc)[:300]}") from exc


def support_report(model: Any, shape: Sequence[int]) -> SupportReport:
    """Trace ``model`` at ``shape`` and list every op: what it lowers to and whether it is
    supported; then compile it to confirm (the normalization passes can refuse more)."""
    import warnings

    from fxpath.api import compile as compile_program

    try:
        graph, front_end = _lowered(model, shape)
    except FxPathError as exc:
        return SupportReport(False, error=_first_line(exc))
    counts: Counter[tuple[str, str, str]] = Counter()
    where: dict[str, list[str]] = defaultdict(list)
    for n in graph:
        op = op_of(n)
        if op in (INPUT, OUTPUT):
            continue
        label = (n.source or n.op).split(" at ")[0]
        reason = n.attrs.get("reason", "") if op is UNSUPPORTED else ""
        if op is UNSUPPORTED:
            label = str(n.attrs.get("what") or label)
            where[label].append(str(n.attrs.get("where") or "<model>"))
        counts[label, n.op, reason] += 1
    rows = [(op, ir, n, reason) for (op, ir, reason), n in counts.items()]
    report = SupportReport(False, rows, dict(where), front_end)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile_program(model, tuple(shape), device="meta")
        report.supported = True
    except UnsupportedModelError as exc:
        report.error = f"{len(exc.ops)} unsupported op(s); the first: {exc.ops[0]}"
    except FxPathError as exc:
        report.error = _first_line(exc)
    return report


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def support_text(name: str, shape: Sequence[int], report: SupportReport) -> list[str]:
    """The lines ``fxpath check`` prints."""
    verdict = ("supported: a ReLU-DAG, its path quantities are computable" if report.supported
               else f"NOT supported: {report.error}")
    lines = [f"{name} at {tuple(shape)} ({report.front_end} front end): {verdict}"]
    if report.rows:
        width = max(len(op) for op, *_ in report.rows)
        lines.append(f"  {'op':<{width}}  {'count':>5}  status")
        for op, ir, n, reason in report.rows:
            status = f"supported ({ir})" if not reason else f"UNSUPPORTED: {reason}"
            lines.append(f"  {op:<{width}}  {n:>5}  {status}")
            if reason:
                spots = report.where.get(op, [])
                more = f" and {len(spots) - 5} more" if len(spots) > 5 else ""
                lines.append(f"  {'':<{width}}         at {', '.join(spots[:5])}{more}")
    return lines
