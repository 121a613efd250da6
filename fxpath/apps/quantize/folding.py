"""``fold_bn``: torch's conv-BatchNorm fusion, and the reference network of the certificate.

With ``fold_bn`` the certificate is computed on a float64 copy of the model whose foldable
BatchNorms are fused into their convs (`make_reference`); `fuse` applies the same fusion to the
quantized copy, so the two have the same module tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.utils.fusion as torch_fusion

from fxpath.api import compile as compile_program
from fxpath.apps.quantize.targets import is_linear_layer, owner
from fxpath.apps.rescale import copy_model
from fxpath.errors import ArgumentError
from fxpath.ir.graph import Node

__all__ = ["Reference", "fuse", "make_reference"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _fusable(model: nn.Module, node: Node) -> tuple[str, str] | None:
    """(conv path, BN path) of a conv/linear node with a folded BatchNorm that torch's fusion
    can merge (plain modules, no pruning), else None."""
    bn = node.attrs.get("bn")
    if bn is None:
        return None
    conv_path, bn_path = owner(node.params["weight"]), owner(bn.running_mean)
    conv, norm = model.get_submodule(conv_path), model.get_submodule(bn_path)
    if not isinstance(conv, (*_CONVS, *_TRANSPOSED, nn.Linear)) or not isinstance(
            norm, nn.modules.batchnorm._BatchNorm):
        return None
    if hasattr(conv, "weight_orig") or hasattr(conv, "bias_orig"):
        raise ArgumentError(f"fold_bn=True cannot fuse the pruned layer {conv_path!r}: make "
                            "the pruning permanent first (torch.nn.utils.prune.remove)")
    return conv_path, bn_path


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def fuse(model: nn.Module, pairs: Sequence[tuple[str, str]]) -> None:
    """Replace each (conv, BN) pair by torch's fused conv and an ``nn.Identity``, in place."""
    for conv_path, bn_path in pairs:
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        training = conv.training
        conv.eval()
        bn.eval()
        if isinstance(conv, nn.Linear):
            fused = torch_fusion.fuse_linear_bn_eval(conv, bn)
        else:
            fused = torch_fusion.fuse_conv_bn_eval(conv, bn,
                                                   transpose=isinstance(conv, _TRANSPOSED))
        fused.train(training)
        _set_module(model, conv_path, fused)
        _set_module(model, bn_path, nn.Identity())


@dataclass
class Reference:
    """The network the certificate is computed on: the model itself, or (``fold_bn``) a float64
    copy with each foldable BatchNorm fused into its conv, the fused tensors set to fxpath's
    own float64 coordinates of the model (so both have the same path-lifting)."""

    model: nn.Module
    pairs: list[tuple[str, str]] = field(default_factory=list)


def make_reference(model: nn.Module, input_shape: object, fold_bn: bool) -> Reference:
    """The `Reference` of ``model``: itself, or with ``fold_bn`` its fused float64 copy."""
    if not fold_bn:
        return Reference(model)
    prog = compile_program(model, input_shape, dtype=torch.float64)
    pairs, nodes = [], {}
    for node in prog.graph:
        if is_linear_layer(node):
            pair = _fusable(model, node)
            if pair is not None and pair not in pairs:
                pairs.append(pair)
                nodes[node.name] = pair[0]
    ref = copy_model(model).to(torch.float64)
    fuse(ref, pairs)
    coords = prog.coordinates()
    with torch.no_grad():
        for slot in prog.slots:
            if slot.node in nodes and slot.role in ("weight", "bias"):
                t = getattr(ref.get_submodule(nodes[slot.node]), slot.role)
                t.copy_(coords[slot.name].reshape(t.shape))
    return Reference(ref, pairs)
