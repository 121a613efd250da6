"""One row of the zoo sweep: `ZooResult` (the CSV columns), the statuses, and how a refusal or
a failure becomes a row (`classify_refusal`, `record_refusal`, `failed`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from fxpath.errors import FxPathError, UnsupportedModelError, UnsupportedOp
from fxpath.frontend.refusals import BN_STATS, DATA_NORM, NOT_HOMOGENEOUS, PRODUCT
from fxpath.tools.zoo.catalogue import ZooModel

__all__ = ["FIELDS", "GENUINE_REASONS", "STATUSES", "ZooResult", "classify_refusal", "clean",
           "failed", "is_genuine", "record_refusal"]

#: ``supported``: compiles (and, in full mode, passes its self-checks or says which failed);
#: ``refused``: at least one op that no ReLU-DAG has (`GENUINE_REASONS`); ``gap``: refused or
#: failed for a reason that means fxpath lacks something (no rule yet, a trace failure, a
#: timeout, a crash); ``skipped``: the registry cannot build it, or it is above --max-params.
STATUSES = ("supported", "refused", "gap", "skipped")

#: refusal reasons that make a model genuinely not a ReLU-DAG (``fxpath.frontend.refusals``); every
#: other refusal reason ("no path-lifting rule", "not supported yet", ...) is a gap of fxpath
GENUINE_REASONS = (NOT_HOMOGENEOUS, DATA_NORM, PRODUCT, BN_STATS,
                   "division by an activation or a tensor is not positively homogeneous")

#: the columns of the CSV, in order
FIELDS = ("model", "source", "family", "arch", "params", "input_size", "status", "reason",
          "where", "log10_path_norm", "forward_ms", "path_norm_x", "scores_x", "function_err",
          "rescale_err", "lipschitz_ratio", "checks", "seconds")


@dataclass
class ZooResult:
    """One row of the sweep (`FIELDS`); unset measurements are ``None``."""

    model: str
    source: str
    family: str = ""
    arch: str = ""
    params: int | None = None
    input_size: str = ""
    status: str = "gap"
    reason: str = ""
    where: str = ""
    log10_path_norm: float | None = None
    forward_ms: float | None = None
    path_norm_x: float | None = None
    scores_x: float | None = None
    function_err: float | None = None
    rescale_err: float | None = None
    lipschitz_ratio: float | None = None
    checks: str = ""
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, m: ZooModel, **values: Any) -> ZooResult:
        """A result for catalog entry ``m``."""
        return cls(m.name, m.source, m.family, m.arch, **values)

    def row(self) -> dict[str, str]:
        """The CSV row: floats with 6 significant digits (log10 with 6 decimals)."""
        out = {}
        for f in FIELDS:
            v = getattr(self, f)
            if v is None:
                out[f] = ""
            elif isinstance(v, float):
                out[f] = f"{v:.6f}" if f == "log10_path_norm" else f"{v:.6g}"
            else:
                out[f] = str(v)
        return out

    @classmethod
    def from_row(cls, row: dict[str, str]) -> ZooResult:
        """Parse a CSV row written by `row`."""
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for f in FIELDS:
            text = row.get(f, "") or ""
            kind = str(kinds[f])
            if "float" in kind:
                values[f] = float(text) if text else None
            elif "int" in kind:
                values[f] = int(text) if text else None
            else:
                values[f] = text
        return cls(**values)


def is_genuine(reason: str) -> bool:
    """Whether a refusal reason says the op is not of a ReLU-DAG (`GENUINE_REASONS`), rather
    than that fxpath lacks a rule for it."""
    return reason in GENUINE_REASONS


def classify_refusal(ops: Sequence[UnsupportedOp]) -> tuple[str, UnsupportedOp]:
    """``("refused", first genuine op)`` when any op is genuinely not of a ReLU-DAG, otherwise
    ``("gap", first op)``: a model with one sigmoid is no ReLU-DAG whatever else it holds."""
    genuine = next((op for op in ops if is_genuine(op.reason)), None)
    if genuine is not None:
        return "refused", genuine
    if not ops:
        return "gap", UnsupportedOp("?", "", "refused without a reason")
    return "gap", ops[0]


def clean(text: str, limit: int = 240) -> str:
    """One line, no memory addresses, no absolute paths, at most ``limit`` characters."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    line = re.sub(r"0x[0-9a-fA-F]+", "0x...", line)
    line = re.sub(r"(/[\w.+-]+){2,}/", ".../", line)
    return line[:limit]


def record_refusal(result: ZooResult, exc: BaseException) -> ZooResult:
    """Fill ``status``/``reason``/``where`` from an exception raised while compiling."""
    if isinstance(exc, UnsupportedModelError):
        result.status, op = classify_refusal(exc.ops)
        result.reason, result.where = clean(f"{op.op}: {op.reason}"), op.where
    elif isinstance(exc, FxPathError):
        result.status, result.reason = "gap", clean(f"{type(exc).__name__}: {exc}")
    else:
        result.status = "gap"
        result.reason = clean(f"internal error {type(exc).__name__}: {exc}")
    return result


def failed(m: ZooModel, why: str) -> ZooResult:
    """The row of a model whose worker timed out or died: a gap, with the reason."""
    return ZooResult.of(m, status="gap", reason=clean(why))
