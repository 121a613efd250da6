"""The module a training helper compiles: a wrapper (DDP, DataParallel) unwrapped, and the
BatchNorm modules the compiled network reads, for the train-mode check of Path-SGD."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from fxpath.errors import ArgumentError
from fxpath.ir.graph import BatchNormRef, Graph
from fxpath.validate import check_model

__all__ = ["batchnorm_modules", "training_module"]


def training_module(model: Any, who: str) -> nn.Module:
    """The ``nn.Module`` being trained: ``model`` itself, or the ``.module`` of a
    ``DistributedDataParallel`` / ``DataParallel`` wrapper (the wrapper shares its parameters,
    so compiling the inner module reads the tensors the training loop updates)."""
    inner = model
    while isinstance(inner, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        inner = inner.module
    if not isinstance(inner, nn.Module):
        raise ArgumentError(f"{who} needs the torch.nn.Module being trained (or its "
                            f"DistributedDataParallel wrapper), got {type(model).__name__}")
    return check_model(inner, exported=False)


def batchnorm_modules(model: nn.Module, graph: Graph) -> dict[str, nn.Module]:
    """The BatchNorm modules whose running statistics the compiled network reads, by path."""
    found: dict[str, nn.Module] = {}
    for node in graph:
        bn = node.attrs.get("bn")
        if isinstance(bn, BatchNormRef):
            path = bn.running_mean.rpartition(".")[0]
            found.setdefault(path, model.get_submodule(path))
    return found
