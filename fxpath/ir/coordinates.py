"""Coordinate tensors of the path network and the arithmetic that computes them.

`Slot` names one coordinate tensor; the ops' coordinate rules (`fxpath.ops`) list and compute
them, and `fxpath.codegen.lift` walks the graph with those rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fxpath.ir.graph import BatchNormRef, Node

__all__ = ["Factored", "Fetch", "Slot", "bn_affine", "channel_view", "fits", "ident",
           "multiplied", "power", "tensor_of"]

#: reads a model tensor by its state_dict name
Fetch = Callable[[str], Tensor]


@dataclass(frozen=True)
class Slot:
    """One coordinate tensor of the path network.

    Attributes:
        name: identifier used as the path network's argument name (``layer1_0_conv1_weight``).
        node: the IR node that reads it.
        role: ``weight``, ``bias``, ``scale`` or ``shift``.
        param: the model parameter (state_dict name) whose coordinates these are, entry for
            entry, or ``None`` when the coordinate is not a parameter of the model (a folded
            bias of a BatchNorm without ``bias``).
    """

    name: str
    node: str
    role: str
    param: str | None


@dataclass(frozen=True)
class Factored:
    """A coordinate tensor ``w * scale`` not multiplied out: ``w`` a model tensor, ``scale``
    broadcastable to it and varying along one dimension at most (a folded BatchNorm's
    ``s`` along the output channels). The path-metric's envelope multiplies it block by block
    (`fxpath.quantities.envelope`), so it is never written to memory whole."""

    w: Tensor
    scale: Tensor

    @property
    def shape(self) -> torch.Size:
        return self.w.shape

    def numel(self) -> int:
        return self.w.numel()

    def rows(self, start: int, stop: int, out: Tensor | None = None) -> Tensor:
        """Rows ``[start, stop)`` along dimension 0, multiplied out (into ``out``)."""
        scale = self.scale if self.scale.shape[0] == 1 else self.scale[start:stop]
        w = self.w[start:stop]
        return torch.mul(w, scale, out=out.view(w.shape)) if out is not None else w * scale

    def value(self) -> Tensor:
        """The coordinate tensor, multiplied out."""
        return self.w * self.scale


def multiplied(t: Tensor | Factored) -> Tensor:
    """``t`` as one tensor (a `Factored` product multiplied out)."""
    return t.value() if isinstance(t, Factored) else t


def tensor_of(t: Tensor | Factored) -> Tensor:
    """A tensor of ``t``'s shape, dtype and device, without multiplying anything out."""
    return t.w if isinstance(t, Factored) else t


def ident(name: str) -> str:
    """``name`` as a Python identifier (``layer1.0`` -> ``layer1_0``)."""
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def bn_affine(bn: BatchNormRef, fetch: Fetch) -> tuple[Tensor, Tensor]:
    """``(s, t)`` of a frozen BatchNorm: ``s = w / sqrt(var + eps)``, ``t = b - mean * s``."""
    s = torch.rsqrt(fetch(bn.running_var) + bn.eps)
    if bn.weight is not None:
        s = s * fetch(bn.weight)
    t = -fetch(bn.running_mean) * s
    if bn.bias is not None:
        t = t + fetch(bn.bias)
    return s, t


def channel_view(v: Tensor, node: Node) -> Tensor:
    """A per-channel vector shaped to broadcast over one sample of ``node``'s output."""
    if len(node.shape) <= 1 or node.channel_dim() == len(node.shape):  # channels last
        return v.reshape(-1)
    return v.reshape(-1, *([1] * (len(node.shape) - 1)))


def fits(out: Tensor | None, v: Tensor) -> bool:
    """Whether a result shaped like ``v`` can be written into ``out``: same shape, dtype and
    device, and no autograd graph to record through ``v``."""
    return out is not None and out.shape == v.shape and out.dtype == v.dtype \
        and out.device == v.device and not (v.requires_grad and torch.is_grad_enabled())


def power(v: Tensor, q: float | None, out: Tensor | None = None) -> Tensor:
    """``|v|^q`` (``v`` itself for ``q=None``), written into ``out`` when it fits."""
    if q is None:
        return v
    a = torch.abs(v, out=out) if fits(out, v) else v.abs()
    return a if q == 1.0 else a.pow_(q)
