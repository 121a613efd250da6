"""One layer quantized at one scheme: its stored tensors, scales and first-order estimate.

`quantize_layer` rounds a `Target`'s weight (and bias) with `quantize_tensor`; `estimate` is the
first-order relative path-metric of that rounding (``docs/quantization.md``), and `change` says
when it is the relative path-metric of quantizing the layer alone exactly (the path-norm is
affine in the coordinates of one layer); `quantized_state` is the reference's state dict with
quantized layers in place, for the certificate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.apps.quantize.rounding import BLOCK, Moved, quantize_tensor, quantize_weighted
from fxpath.apps.quantize.targets import Target, read
from fxpath.ir.coordinates import bn_affine
from fxpath.program import PathProgram

__all__ = ["Change", "Plan", "QuantizedLayer", "bias_estimate", "change",
           "estimate", "quantize_layer", "quantized_state"]


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
    toward_zero: bool = False  # rounded toward zero: no entry grew in magnitude
    moved: Moved | None = None  # how far the weights moved, weighted by their scores


def quantize_layer(ref: PathProgram, t: Target, scheme: str, plan: Plan,
                   scores: Mapping[str, Tensor] | None = None) -> QuantizedLayer:
    """The weight (and bias) of ``t`` quantized at ``scheme``, stored in ``t.dtype``; with
    ``scores``, how far the weights moved too (`change` reads it)."""
    w = read(ref, t.weight)
    kwargs = {"per_channel": plan.per_channel, "channel_dim": t.channel_dim,
              "rounding": plan.rounding, "dtype": t.dtype}
    moved = None
    if scores is not None and t.weight in scores:
        q, scale, moved = quantize_weighted(w, scheme, scores[t.weight], **kwargs)
    else:
        q, scale = quantize_tensor(w, scheme, **kwargs)
    layer = QuantizedLayer(scheme, q, scale, toward_zero=plan.rounding == "toward_zero",
                           moved=moved)
    if t.bias is not None:
        layer.bias, layer.bias_scale = quantize_tensor(
            read(ref, t.bias, torch.float64), scheme, per_channel=False,
            rounding=plan.rounding, dtype=t.dtype)
    return layer


@dataclass(frozen=True)
class Change:
    """What the score pass says about quantizing one layer alone (`change`).

    Attributes:
        relative: ``sum score_i |c'_i - c_i| / |c_i|`` over the quantized coordinates that
            have scores (0 where ``c_i`` is 0): the first-order estimate of the relative
            path-metric, and the relative path-metric itself when ``determined``.
        determined: the scores give the layer's metric exactly: every quantized coordinate has
            a score, no zero coordinate changed, and no path crosses the layer twice.
        exact: what `path_metric` reports for the pair: same signs, one set dominating.
    """

    relative: float
    determined: bool
    exact: bool


def change(ref: PathProgram, t: Target, layer: QuantizedLayer, scores: Mapping[str, Tensor]
           ) -> Change:
    """The `Change` of quantizing ``t`` alone, in float64, from the scores.

    No path crosses a layer twice, so the path-norm ``N`` is affine in the magnitudes ``a`` of
    one layer's coordinates: ``N(a') - N(a) = sum_i dN/da_i (a'_i - a_i)`` with ``dN/da_i =
    N score_i / a_i`` the same at every point. The certificate of `path_metric` for the pair,
    ``N(max) - N(min)`` (plus the second leg through zero where signs differ), is therefore
    ``N sum_i score_i |c'_i - c_i| / |c_i|``, exactly: the first-order estimate of one layer
    is its metric. A folded BatchNorm's gain ``s`` cancels in ``|W's - Ws| / |Ws|``; the
    flags are computed on the weights, and on the coordinates ``Ws`` when a zero gain could
    make them differ. Not determined: a weight read by several nodes (a path may cross it
    twice), a derived coordinate, a quantized tensor without scores, or a zero coordinate
    that changed (its score, 0, does not give its gradient).
    """
    determined = not (t.shared or t.derived) and t.weight in scores
    total, same, a_over, b_over = 0.0, True, True, True
    if t.weight in scores:
        # `quantize_tensor` keeps each weight's sign (or makes it 0) and a zero weight 0, and
        # toward zero no weight grows: the signs agree, and toward zero the model dominates
        moved = layer.moved or _moved(read(ref, t.weight), layer, scores[t.weight])
        total = moved.total
        if moved.spread:
            a_over, b_over = not moved.grew, not moved.shrank
    if t.bias is not None and layer.bias is not None:
        if t.bias_score is None:
            determined = False
        else:  # a bias folded with a kept BatchNorm may change sign: every flag is computed
            part, moved, flags = _blocked(*_bias_pair(ref, t, layer), t.bias_score)
            total += part
            determined = determined and not moved
            same, a_over, b_over = flags[0], a_over and flags[1], b_over and flags[2]
    exact = same and (a_over or b_over)
    if not exact and t.weight in scores and t.zero_gain:  # zero coordinates hide entries
        return Change(total, determined, _coordinate_flags(ref, t, layer))
    return Change(total, determined, exact)


def bias_estimate(ref: PathProgram, t: Target, scheme: str, plan: Plan) -> float:
    """The first-order estimate of quantizing ``t``'s bias alone at ``scheme`` (0 without a
    quantized bias or its score)."""
    if t.bias is None or t.bias_score is None:
        return 0.0
    q, _ = quantize_tensor(read(ref, t.bias, torch.float64), scheme, per_channel=False,
                           rounding=plan.rounding, dtype=t.dtype)
    layer = QuantizedLayer(scheme, q, q, q)  # only the bias is read
    return _blocked(*_bias_pair(ref, t, layer), t.bias_score)[0]


def estimate(ref: PathProgram, t: Target, layer: QuantizedLayer, scores: Mapping[str, Tensor]
             ) -> float:
    """First-order relative path-metric of quantizing this layer: sum over its coordinates of
    score * |change| / |value| (``docs/quantization.md``), in float64 (`change`)."""
    return change(ref, t, layer, scores).relative


@torch.no_grad()
def _moved(w: Tensor, layer: QuantizedLayer, score: Tensor) -> Moved:
    """`Moved` of a layer quantized without its scores, a block at a time."""
    moved = Moved(spread=not layer.toward_zero)
    v, q, s = w.reshape(-1), layer.weight.reshape(-1), score.reshape(-1)
    for i in range(0, v.numel(), BLOCK):
        moved.add(v[i:i + BLOCK].to(torch.float64, copy=True), q[i:i + BLOCK], s[i:i + BLOCK])
    return moved


@torch.no_grad()
def _blocked(a: Tensor, b: Tensor, score: Tensor) -> tuple[float, bool, tuple[bool, ...]]:
    """``sum(score |b - a| / |a|)`` (0 where ``a`` is 0) in float64, whether an entry with
    ``a == 0`` changed, and the envelope's flags (``a * sign(b) >= 0``, ``|a| >= |b|``,
    ``|b| >= |a|`` everywhere), for small tensors (biases)."""
    a, b = a.reshape(-1).to(torch.float64), b.reshape(-1).to(torch.float64)
    if a.numel() == 0:
        return 0.0, False, (True, True, True)
    d = torch.sub(b, a).abs_().div_(a.abs())  # inf where a zero entry changed
    gap = a.abs() - b.abs()
    total = torch.dot(d.nan_to_num(0.0, 0.0, 0.0), score.reshape(-1).to(torch.float64))
    values = torch.stack([total, torch.isinf(d).any().to(torch.float64),
                          (torch.sign(b) * a).amin(), gap.amin(), gap.amax()]).tolist()
    return values[0], bool(values[1]), (values[2] >= 0, values[3] >= 0, values[4] <= 0)


def _coordinate_flags(ref: PathProgram, t: Target, layer: QuantizedLayer) -> bool:
    """`path_metric`'s ``exact`` on the coordinates, the weights times the BatchNorm gain."""
    assert t.bn is not None
    gain, _ = bn_affine(t.bn, lambda n: read(ref, n, torch.float64))
    w = read(ref, t.weight, torch.float64)
    shape = [1] * w.dim()
    shape[t.channel_dim] = -1
    pairs = [(w * gain.reshape(shape),
              layer.weight.to(torch.float64).reshape(w.shape) * gain.reshape(shape))]
    if t.bias is not None and layer.bias is not None:
        pairs.append(_bias_pair(ref, t, layer))
    same, a_over, b_over = True, True, True
    for a, b in pairs:
        if a.numel():
            gap = a.abs() - b.abs()
            same = same and bool((torch.sign(b) * a).amin() >= 0)
            a_over, b_over = a_over and bool(gap.amin() >= 0), b_over and bool(gap.amax() <= 0)
    return same and (a_over or b_over)


def _bias_pair(ref: PathProgram, t: Target, layer: QuantizedLayer) -> tuple[Tensor, Tensor]:
    """The layer's bias coordinates before and after, in float64 (``shift + bias * s`` with a
    folded BatchNorm, as the path network computes them)."""
    assert t.bias is not None and layer.bias is not None
    c = read(ref, t.bias, torch.float64)
    c2 = layer.bias.to(torch.float64).reshape(c.shape)
    if t.bn is None:
        return c, c2
    s, shift = bn_affine(t.bn, lambda n: read(ref, n, torch.float64))
    return shift + c * s, shift + c2 * s


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
