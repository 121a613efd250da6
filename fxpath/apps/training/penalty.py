"""`PathNormPenalty`: the l^q path-norm as a differentiable regularizer for training loops."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.apps.training.modules import training_module
from fxpath.errors import ArgumentError, FxPathError
from fxpath.program import PathProgram
from fxpath.validate import check_q

__all__ = ["PathNormPenalty"]


class PathNormPenalty:
    """A callable returning ``log ||Phi(theta)||_q`` (default) or ``||Phi(theta)||_q`` of the
    model's live weights, as a 0-dim tensor with gradients to them.

    The model is traced and compiled once; every call reads the current parameters (after any
    optimizer step) and costs one pass of the path network, its backward one backward of it
    and one pass over the weights: measured 1.15x a warm ``prog.path_norm(q)`` plus one
    backward on a ResNet-18 at 224x224 and 1.67x at 32x32, where that pass over the weights
    weighs most (``benchmarks/penalty_cost.py``, docs/training.md: the aim of at most 1x is
    not met). The program keeps one set of buffers the size of the weights for it.

    Log or value: the l^q path-norm of a deep network is huge (6e30 for a random ResNet-18 at
    224x224, 4e73 for a ResNet-50): its value overflows float32 (3.4e38), and its gradient is
    the value times that of the log. ``log=True`` (the default) penalizes the log, which never
    overflows and weighs every relative decrease alike; ``log=False`` penalizes the value
    itself (fine for small networks; a value past the compute dtype's range raises
    `fxpath.FxPathError` rather than return ``inf``).

    Train mode and BatchNorm: the penalty works in train mode. The path-lifting is that of the
    network with BatchNorm folded with its *running* statistics (the eval-mode network, the one
    that is deployed): what is penalized is that network's path-norm, with gradients to the
    conv/linear weights and biases and to BatchNorm's weight and bias (not to the running
    statistics, which the training forward updates and the next call reads). Batch statistics
    have no path-lifting (they depend on the data).

    Args:
        model: the model being trained, or its ``DistributedDataParallel`` wrapper (the
            penalty's gradient is the same on every rank; DDP's backward averages it with the
            data gradients, which leaves it unchanged).
        input_shape: per-sample input shape (the path-norm depends on it).
        q: exponent of the l^q path-norm, a finite ``q > 0`` (1 by default).
        log: penalize ``log ||Phi||_q`` (default) or ``||Phi||_q``.
        **compile_options: passed to `fxpath.compile` (``dtype``, ``device``, ``output``...).

    Example:
        >>> penalty = fxpath.PathNormPenalty(model, (1, 28, 28), q=1)
        >>> loss = F.cross_entropy(model(x), y) + lam * penalty()
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int] | Sequence[Sequence[int]],
                 q: float = 1.0, *, log: bool = True, **compile_options: Any) -> None:
        module = training_module(model, "PathNormPenalty")
        self.q = check_q(q)
        if not isinstance(log, bool):
            raise ArgumentError(f"log must be True (penalize log ||Phi||_q) or False (the "
                                f"value), got {log!r}")
        self.log = log
        self.program = PathProgram(module, input_shape, **compile_options)

    @property
    def model(self) -> nn.Module:
        """The module whose path-norm is penalized (a DDP wrapper's ``.module``)."""
        return self.program.model

    def __call__(self) -> Tensor:
        """The penalty of the live weights (a differentiable 0-dim tensor)."""
        norm = self.program.path_norm(self.q, differentiable=True)
        log_tensor = norm.log_tensor
        assert log_tensor is not None
        if self.log:
            return log_tensor
        top = math.log2(torch.finfo(log_tensor.dtype).max)
        if norm.log2 >= top:
            raise FxPathError(f"the l^{self.q:g} path-norm is 2^{norm.log2:.1f}, past "
                              f"{log_tensor.dtype}'s range: penalize its log (log=True), or "
                              "compile in float64 (dtype=torch.float64)")
        # the value, computed from log2 in float64 (no exp(log) rounding), its gradient
        # value * d log: exp(t - t) is 1 with the gradient of t
        return (log_tensor - log_tensor.detach()).exp() * norm.value
