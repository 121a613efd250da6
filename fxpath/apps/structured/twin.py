"""The zeroed twin: the dense model with the removed neurons zeroed, and the proof that the
small model computes the same function.

Removing output channel c of a conv (with its BatchNorm) and every read of it computes the same
function as zeroing, in the dense model, the conv's row c and bias c and the BatchNorm's scale
and shift c: the channel then outputs ``relu(0) = 0`` (zeroing the weights alone would not do:
the shift ``relu(b_c)`` would still flow). The twin's parameters are the dense ones or zero, so
the dense parameters dominate them and the path-metric between the two is exact. The twin is
checked against the small model in float64 on random inputs, layer by layer when they differ,
so a wrong cut is named, never certified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils._pytree import tree_leaves

from fxpath.apps.structured.ledger import LayerCut
from fxpath.errors import FxPathError
from fxpath.validate import eval_mode

__all__ = ["TOLERANCE", "check_twin", "zeroed_twin"]

#: largest difference allowed between the small model and its twin, relative to the output size
TOLERANCE = 1e-9


def zeroed_twin(dense: nn.Module, removed: Mapping[str, LayerCut]) -> nn.Module:
    """A copy of ``dense`` with the removed channels zeroed (``dense`` is not changed)."""
    twin = copy.deepcopy(dense)
    modules = dict(twin.named_modules())
    with torch.no_grad():
        for name, cut in removed.items():
            module = modules.get(name)
            if module is None:
                raise FxPathError(f"the pruned layer {name} is not in the dense model")
            _zero(module, name, sorted(cut.out), sorted(cut.inputs))
    return twin


def _zero(module: nn.Module, name: str, out: list[int], inputs: list[int]) -> None:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        rows = sorted(set(out) | set(inputs))
        if module.affine:
            module.weight[rows] = 0
            module.bias[rows] = 0
        elif module.running_mean is not None:  # (x - mean) / sd with x = 0 and mean = 0
            module.running_mean[rows] = 0
        return
    if isinstance(module, nn.Linear):
        module.weight[out] = 0
        module.weight[:, inputs] = 0
        if module.bias is not None:
            module.bias[out] = 0
        return
    if isinstance(module, nn.modules.conv._ConvNd):
        _zero_conv(module, out, inputs)
        return
    raise FxPathError(f"Torch-Pruning removed channels of layer {name} "
                      f"({type(module).__name__}), which fxpath cannot certify: only conv, "
                      f"linear and BatchNorm layers are; add it to ignored_layers")


def _zero_conv(conv: nn.modules.conv._ConvNd, out: list[int], inputs: list[int]) -> None:
    w, g = conv.weight, conv.groups
    if conv.transposed:  # weight (in, out / groups, ...)
        in_per, out_per = w.shape[0] // g, w.shape[1]
        for o in out:
            w[(o // out_per) * in_per:(o // out_per + 1) * in_per, o % out_per] = 0
        w[inputs] = 0
    else:  # weight (out, in / groups, ...)
        out_per, in_per = w.shape[0] // g, w.shape[1]
        w[out] = 0
        for i in inputs:
            w[(i // in_per) * out_per:(i // in_per + 1) * out_per, i % in_per] = 0
    if conv.bias is not None:
        conv.bias[out] = 0


def check_twin(small: nn.Module, twin: nn.Module, inputs: Sequence[Tensor],
               kept: Callable[[str], list[int] | None]) -> float:
    """Check that ``small`` and ``twin`` compute the same function on ``inputs`` (in float64,
    eval mode; ``small`` is copied, ``twin`` cast in place); returns the largest difference
    relative to the output size.

    Raises `FxPathError` naming the first layer (in execution order) whose kept output
    channels differ from the twin's when they do not."""
    a, b = copy.deepcopy(small).double(), twin.double()  # the twin is ours: cast in place
    xs = [x.detach().to(torch.float64) for x in inputs]
    with torch.no_grad(), eval_mode(a, b):
        ya, yb = tree_leaves(a(*xs)), tree_leaves(b(*xs))
    worst = _difference(ya, yb)
    if worst is not None and worst <= TOLERANCE:
        return worst
    raise FxPathError(f"Torch-Pruning's small model does not compute the dense model with the "
                      f"removed channels zeroed: {_first_difference(a, b, xs, kept)}")


def _difference(ya: list[Any], yb: list[Any]) -> float | None:
    if len(ya) != len(yb):
        return None
    worst = 0.0
    for p, q in zip(ya, yb):
        if not isinstance(p, Tensor) or not isinstance(q, Tensor):
            continue
        if p.shape != q.shape:
            return None
        scale = 1.0 + float(q.abs().max()) if q.numel() else 1.0
        gap = float((p - q).abs().max()) if q.numel() else 0.0
        if gap != gap:  # NaN
            return None
        worst = max(worst, gap / scale)
    return worst


def _first_difference(a: nn.Module, b: nn.Module, xs: list[Tensor],
                      kept: Callable[[str], list[int] | None]) -> str:
    """Where the two models first part, layer by layer (conv, linear, BatchNorm outputs)."""
    seen: dict[str, list[Tensor]] = {"a": [], "b": []}
    order: list[str] = []
    hooks = []
    kinds = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)
    for tag, model in (("a", a), ("b", b)):
        for name, m in model.named_modules():
            if isinstance(m, kinds):
                def hook(_m: nn.Module, _i: Any, out: Any, name: str = name, tag: str = tag
                         ) -> None:
                    if tag == "a":
                        order.append(name)
                    seen[tag].append(out)
                hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad(), eval_mode(a, b):
            a(*xs)
            b(*xs)
    finally:
        for h in hooks:
            h.remove()
    twin_out = dict(zip(order, seen["b"])) if len(seen["a"]) == len(seen["b"]) else {}
    for name, out in zip(order, seen["a"]):
        ref = twin_out.get(name)
        if ref is None:
            return f"layer {name} runs in the small model only"
        idx = kept(name)
        if idx is not None:
            ref = ref.index_select(1 if ref.dim() > 1 else 0, torch.as_tensor(idx))
        if ref.shape != out.shape:
            return (f"layer {name}'s output has shape {tuple(out.shape)}, expected "
                    f"{tuple(ref.shape)}")
        if float((ref - out).abs().max()) > TOLERANCE * (1.0 + float(ref.abs().max())):
            return f"layer {name}'s output differs from the twin's"
    return "the outputs differ (no single layer found)"
