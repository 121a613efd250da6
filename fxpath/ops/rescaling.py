"""What the ops' rescaling rules share: channel ids and in-place scaling of model tensors."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.ir.graph import Node

__all__ = ["channel_ids", "per_channel", "scale_rows", "writable"]


def writable(model: nn.Module, name: str) -> Tensor:
    """The tensor behind state_dict ``name`` (``weight_orig`` of a pruned module)."""
    path, _, attr = name.rpartition(".")
    owner = model.get_submodule(path)
    orig = getattr(owner, f"{attr}_orig", None)
    return orig if orig is not None else getattr(owner, attr)


def channel_ids(node: Node, value: int | None = None) -> Tensor:
    """A batched tensor of ``node``'s shape holding 1 + channel index (or a constant)."""
    shape = (1, *node.shape)
    if value is not None:
        return torch.full(shape, float(value), dtype=torch.float64)
    dim = node.channel_dim()
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return (torch.arange(shape[dim], dtype=torch.float64) + 1).reshape(view).expand(shape)


def scale_rows(t: Tensor, lam: Tensor, dim: int) -> None:
    """Multiply ``t`` in place by ``lam`` along ``dim``."""
    shape = [1] * t.dim()
    shape[dim] = -1
    t.mul_(lam.to(t.dtype).reshape(shape))


def per_channel(factors: Tensor) -> Tensor:
    """The factor of each channel of a batched channels-first tensor of factors."""
    return factors.flatten(2).amax(2)[0] if factors.dim() > 2 else factors[0]
