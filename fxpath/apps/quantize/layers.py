"""One layer quantized at one scheme: its stored tensors, scales and first-order estimate.

`quantize_layer` rounds a `Target`'s weight (and bias) with `quantize_tensor`; `estimate` is the
first-order relative path-metric of that rounding (``docs/quantization.md``); `quantized_state`
is the reference's state dict with quantized layers in place, for the certificate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.apps.quantize.rounding import quantize_tensor
from fxpath.apps.quantize.targets import Target
from fxpath.program import PathProgram

__all__ = ["Plan", "QuantizedLayer", "estimate", "quantize_layer", "quantized_state"]


@dataclass
class Plan:
    """Settings shared by every tensor of one quantization."""

    per_channel: bool
    rounding: str


@dataclass
class QuantizedLayer:
    """One layer quantized at some scheme: its stored tensors and scales."""

    scheme: str
    weight: Tensor
    scale: Tensor
    bias: Tensor | None = None
    bias_scale: Tensor | None = None


def quantize_layer(ref: PathProgram, t: Target, scheme: str, plan: Plan) -> QuantizedLayer:
    """The weight (and bias) of ``t`` quantized at ``scheme``, stored in ``t.dtype``."""
    w = ref.parameter(t.weight, ref.stored_dtype(t.weight))
    q, scale = quantize_tensor(w, scheme, per_channel=plan.per_channel,
                               channel_dim=t.channel_dim, rounding=plan.rounding,
                               dtype=t.dtype)
    layer = QuantizedLayer(scheme, q, scale)
    if t.bias is not None:
        layer.bias, layer.bias_scale = quantize_tensor(
            ref.parameter(t.bias, torch.float64), scheme, per_channel=False,
            rounding=plan.rounding, dtype=t.dtype)
    return layer


def estimate(ref: PathProgram, t: Target, layer: QuantizedLayer, scores: Mapping[str, Tensor]
             ) -> float:
    """First-order relative path-metric of quantizing this layer: sum over its coordinates of
    score * |change| / |value| (``docs/quantization.md``), in the weights' own dtype."""
    total = 0.0
    s = scores.get(t.weight)
    if s is not None:
        w = ref.parameter(t.weight, ref.stored_dtype(t.weight))
        total += _weighted_ratio(s, layer.weight.to(w.dtype) - w, w)
    if t.bias is not None and t.bias_score is not None and layer.bias is not None:
        db = layer.bias.to(torch.float64) - ref.parameter(t.bias, torch.float64)
        if t.gain is not None:
            db = db * t.gain
        total += _weighted_ratio(t.bias_score.reshape(-1), db.reshape(-1), t.bias_coord)
    return total


def _weighted_ratio(score: Tensor, change: Tensor, value: Tensor) -> float:
    """``sum(score * |change| / |value|)`` (0 where ``value`` is 0), one temporary."""
    r = change.abs_().div_(value.abs()).nan_to_num_(0.0, 0.0, 0.0)  # where value is 0
    return float(r.mul_(score.reshape(r.shape).to(r.dtype)).sum(dtype=torch.float64))


def quantized_state(ref: nn.Module, layers: Mapping[str, QuantizedLayer],
                    targets: Sequence[Target]) -> dict[str, Tensor]:
    """The reference's state dict with the quantized tensors of ``layers`` in place."""
    state = dict(ref.state_dict(keep_vars=True))
    for t in targets:
        layer = layers.get(t.layer)
        if layer is None:
            continue
        _put(state, t.weight, layer.weight)
        if t.bias is not None and layer.bias is not None:
            _put(state, t.bias, layer.bias)
    return state


def _put(state: dict[str, Tensor], name: str, value: Tensor) -> None:
    key = f"{name}_orig" if f"{name}_orig" in state else name  # a pruned tensor: its mask stays
    state[key] = value.reshape(state[key].shape)
