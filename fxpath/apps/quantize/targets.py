"""What `quantize` rounds: the conv/linear layers of the compiled network and their tensors.

`is_linear_layer` recognises the IR's parameterized linear maps; `find_targets` lists them once
each, in graph order, with the bias coordinate and the BatchNorm gain (`bn_gain`) a quantized
bias needs for its first-order estimate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from fxpath.ir.graph import BatchNormRef, Node
from fxpath.program import PathProgram

__all__ = ["LINEAR_KINDS", "Target", "bn_gain", "find_targets", "is_linear_layer", "owner"]

#: the ``kind`` of the IR's parameterized linear maps
LINEAR_KINDS = ("conv", "conv_transpose", "dense")


@dataclass
class Target:
    """One conv/linear layer of the reference network and its tensors to quantize."""

    layer: str
    weight: str
    channel_dim: int
    dtype: torch.dtype = torch.float32  # the model's dtype for this layer's tensors
    bias: str | None = None
    gain: Tensor | None = None      # per-channel factor from the bias to its coordinate
    bias_coord: Tensor | None = None  # the bias coordinate (folded with a kept BatchNorm)
    bias_score: Tensor | None = None


def owner(name: str) -> str:
    """The module path owning the parameter or buffer ``name`` (``"a.b.weight"`` -> ``"a.b"``)."""
    return name.rpartition(".")[0]


def is_linear_layer(node: Node) -> bool:
    """A conv, transposed conv or dense node of the IR (whatever pass renamed its op)."""
    return "weight" in node.params and node.attrs.get("kind") in LINEAR_KINDS


def bn_gain(prog: PathProgram, bn: BatchNormRef) -> Tensor:
    """``s = weight / sqrt(running_var + eps)`` of a folded BatchNorm, in float64."""
    s = torch.rsqrt(prog.parameter(bn.running_var, torch.float64) + bn.eps)
    if bn.weight is not None:
        s = s * prog.parameter(bn.weight, torch.float64)
    return s


def find_targets(prog: PathProgram, biases: bool, scores: Mapping[str, Tensor]
                 ) -> list[Target]:
    """The conv/linear layers of the compiled network, once each, in graph order."""
    coords = prog.coordinates() if biases else {}
    bias_slot = {s.node: s for s in prog.slots if s.role == "bias"}
    out: dict[str, Target] = {}
    for node in prog.graph:
        if not is_linear_layer(node) or node.params["weight"] in out:
            continue
        name = node.params["weight"]
        t = Target(owner(name), name, 1 if node.attrs["kind"] == "conv_transpose" else 0)
        if biases and "bias" in node.params:
            slot = bias_slot[node.name]
            t.bias = node.params["bias"]
            bn = node.attrs.get("bn")
            t.gain = bn_gain(prog, bn) if bn is not None else None
            t.bias_coord = coords[slot.name].to(torch.float64).reshape(-1)
            t.bias_score = None if slot.param is None else scores.get(slot.param)
        out[name] = t
    return list(out.values())
