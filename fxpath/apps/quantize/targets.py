"""What `quantize` rounds: the conv/linear layers of the compiled network and their tensors.

`is_linear_layer` recognises the IR's parameterized linear maps; `find_targets` lists them once
each, in graph order, with what the first-order estimate and the per-layer metric need: the
BatchNorm folded into the layer, the score of its bias coordinate, and whether the weight is
read by more than one node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from fxpath.ir.coordinates import bn_affine
from fxpath.ir.graph import BatchNormRef, Node
from fxpath.program import PathProgram

__all__ = ["LINEAR_KINDS", "Target", "find_targets", "is_linear_layer", "owner", "read"]

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
    bias_score: Tensor | None = None  # of the bias coordinate (folded with a kept BatchNorm)
    bn: BatchNormRef | None = None  # the BatchNorm folded into this layer's coordinates
    zero_gain: bool = False  # that BatchNorm has channels with gain 0 (zero coordinates)
    shared: bool = False  # the weight is read by several nodes (a module called twice)
    derived: bool = False  # the weight is a coordinate computed from model tensors


def owner(name: str) -> str:
    """The module path owning the parameter or buffer ``name`` (``"a.b.weight"`` -> ``"a.b"``)."""
    return name.rpartition(".")[0]


def read(prog: PathProgram, name: str, dtype: torch.dtype | None = None) -> Tensor:
    """``prog.parameter(name, dtype)``, ``dtype`` by default the model's own, without reading
    the module tree again: for the many reads of one `quantize` call, which compiled ``prog``
    itself and leaves the model alone."""
    dtype = dtype or prog.stored_dtype(name)
    return prog.live_source(check=False).fetch(name, dtype, prog.device)


def is_linear_layer(node: Node) -> bool:
    """A conv, transposed conv or dense node of the IR (whatever pass renamed its op)."""
    return "weight" in node.params and node.attrs.get("kind") in LINEAR_KINDS


def find_targets(prog: PathProgram, biases: bool, scores: Mapping[str, Tensor]
                 ) -> list[Target]:
    """The conv/linear layers of the compiled network, once each, in graph order."""
    bias_slot = {s.node: s for s in prog.slots if s.role == "bias"}
    readers: dict[str, int] = {}
    for node in prog.graph:
        if is_linear_layer(node):
            readers[node.params["weight"]] = readers.get(node.params["weight"], 0) + 1
    derived = prog.graph.derived()
    out: dict[str, Target] = {}
    for node in prog.graph:
        if not is_linear_layer(node) or node.params["weight"] in out:
            continue
        name = node.params["weight"]
        t = Target(owner(name), name, 1 if node.attrs["kind"] == "conv_transpose" else 0,
                   bn=node.attrs.get("bn"), shared=readers[name] > 1, derived=name in derived)
        if t.bn is not None:
            s, _ = bn_affine(t.bn, lambda n: read(prog, n, torch.float64))
            t.zero_gain = bool((s == 0).any())
        if biases and "bias" in node.params:
            slot = bias_slot[node.name]
            t.bias = node.params["bias"]
            t.bias_score = None if slot.param is None else scores.get(slot.param)
        out[name] = t
    return list(out.values())
