"""fxpath's exceptions: every error a user can meet is one of these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ArchitectureMismatchError", "ArgumentError", "FxPathError", "IRVerificationError",
           "NonFiniteError", "TraceError", "UnsupportedModelError", "UnsupportedOp"]


class FxPathError(Exception):
    """Base class of all fxpath errors."""


class ArgumentError(FxPathError, ValueError):
    """An argument of an fxpath function is malformed; the message says what to pass instead."""


class ArchitectureMismatchError(FxPathError):
    """Two parameter sets are not of one network, or the model changed since it was compiled.

    The message names the first difference (a node, a parameter name or a shape).
    """


class NonFiniteError(FxPathError):
    """NaN or inf in a weight, a BatchNorm statistic or an input; ``.names`` lists the tensors."""

    def __init__(self, message: str, names: Sequence[str] = ()) -> None:
        self.names = tuple(names)
        super().__init__(message)


class TraceError(FxPathError):
    """The model could not be traced into the fxpath IR."""


class IRVerificationError(FxPathError):
    """An IR invariant broke after a pass (a bug in fxpath: please report it)."""


@dataclass(frozen=True)
class UnsupportedOp:
    """One op that keeps a model from being a ReLU-DAG: what, where, and why."""

    op: str
    where: str
    reason: str

    def __str__(self) -> str:
        where = self.where or "<model>"
        return f"{self.op} at {where}: {self.reason}"


class UnsupportedModelError(FxPathError):
    """The model is not a ReLU-DAG network; ``.ops`` lists every offending op."""

    def __init__(self, ops: Sequence[UnsupportedOp], model_name: str = "model") -> None:
        self.ops = tuple(ops)
        lines = "\n".join(f"  - {op}" for op in self.ops)
        super().__init__(
            f"{model_name} is not a ReLU-DAG network; fxpath refuses rather than approximate. "
            f"{len(self.ops)} unsupported op(s):\n{lines}"
        )
