"""The quantized copy of the model: a copy (fused like the reference) holding the quantized
tensors, written through pruning's ``<name>_orig`` where the model is pruned."""

from __future__ import annotations

import copy as copying
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.apps.quantize.folding import Reference, fuse
from fxpath.apps.quantize.layers import QuantizedLayer
from fxpath.apps.quantize.rounding import store
from fxpath.apps.quantize.targets import Target
from fxpath.apps.rescale import copy_model
from fxpath.program import PathProgram

__all__ = ["build_copy", "writable"]


def writable(model: nn.Module, name: str) -> Tensor:
    """The tensor behind the parameter or buffer ``name``: ``<name>_orig`` for a pruned one."""
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner)
    orig = getattr(module, f"{attr}_orig", None)
    return orig if isinstance(orig, Tensor) else getattr(module, attr)


def build_copy(model: nn.Module, reference: Reference, refprog: PathProgram,
               layers: Mapping[str, QuantizedLayer], targets: Sequence[Target],
               toward_zero: bool) -> nn.Module:
    """A copy of ``model`` (fused like the reference) holding the quantized tensors."""
    copy = _copy_with(model, layers, targets) if not reference.pairs else copy_model(model)
    fuse(copy, reference.pairs)
    fused = {conv for conv, _ in reference.pairs}
    with torch.no_grad():
        for t in targets:  # a fused bias left in float: its coordinate, rounded once
            if t.layer in fused and t.bias is None:
                v = refprog.parameter(f"{t.layer}.bias", torch.float64)
                dst = writable(copy, f"{t.layer}.bias")
                dst.copy_(store(v, v, t.dtype, toward_zero).reshape(dst.shape))
        for t in targets:
            layer = layers[t.layer]
            _write(copy, t.weight, layer.weight)
            if t.bias is not None and layer.bias is not None:
                _write(copy, t.bias, layer.bias)
    return copy


def _copy_with(model: nn.Module, layers: Mapping[str, QuantizedLayer],
               targets: Sequence[Target]) -> nn.Module:
    """`copy_model`, with the quantized weights taken as the copy's parameters instead of
    copying the model's and writing over them (a pruned model is left to `copy_model`)."""
    if any(k.endswith("_mask") for m in model.modules() for k in m._buffers):
        return copy_model(model)  # its care for pruning hooks
    memo: dict[int, object] = {}
    for t in targets:
        owner, _, attr = t.weight.rpartition(".")
        p = model.get_submodule(owner)._parameters.get(attr)
        q = layers[t.layer].weight
        if (type(p) is nn.Parameter and q.dtype == p.dtype and q.device == p.device
                and p.is_contiguous() and q.numel() == p.numel()):
            memo[id(p)] = nn.Parameter(q.reshape(p.shape), requires_grad=p.requires_grad)
    return copying.deepcopy(model, memo)


def _write(model: nn.Module, name: str, value: Tensor) -> None:
    """Copy ``value`` into the tensor behind ``name``; for a pruned one into ``<name>_orig``,
    with the masked ``<name>`` refreshed as the pruning hook would."""
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner)
    dst = writable(model, name)
    if dst.data_ptr() != value.data_ptr():  # (not the very tensor `_copy_with` took)
        dst.copy_(value.reshape(dst.shape))
    mask = getattr(module, f"{attr}_mask", None)
    if isinstance(mask, Tensor) and dst is not getattr(module, attr):
        setattr(module, attr, dst * mask)
