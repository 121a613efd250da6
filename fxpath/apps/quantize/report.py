"""What `quantize` reports: `LayerQuantization` per layer and the `QuantizeReport`.

`layer_reports` builds the per-layer entries (bits, scales, estimate and, with
``layer_metrics``, the certified metric of each layer quantized alone, from the score pass where
it determines it exactly); `model_bytes` the size of the quantized copy against float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch.nn as nn
from torch import Tensor

from fxpath.apps.quantize.build import writable
from fxpath.apps.quantize.folding import Reference
from fxpath.apps.quantize.layers import Change, QuantizedLayer, change, quantized_state
from fxpath.apps.quantize.rounding import scheme_bits
from fxpath.apps.quantize.targets import Target
from fxpath.program import PathProgram
from fxpath.quantities.results import PathMetric
from fxpath.validate import check_batch, input_scale

__all__ = ["LayerQuantization", "QuantizeReport", "layer_reports", "model_bytes"]


@dataclass(frozen=True)
class LayerQuantization:
    """How one conv/linear layer was quantized.

    Attributes:
        layer: module path of the layer (in the quantized copy).
        bits: bits per stored weight entry.
        scale: float64 scale of the weight, 0-dim (per tensor) or one per output channel.
        numel: number of weight entries (plus bias entries when biases are quantized).
        estimate: first-order estimate of the relative path-metric of quantizing this layer
            alone, from the path-magnitude scores (``docs/quantization.md``); for one layer
            it is that relative metric itself (``metric.relative``) wherever the scores
            determine it.
        metric: certified path-metric between the model and the model with only this layer
            quantized (``None`` when ``layer_metrics=False``). The scores give it exactly
            (the path-norm is affine in one layer's coordinates); a layer whose weight is read
            by several nodes is certified by a path-metric of its own.
        share: ``metric`` as a fraction of the whole model's metric (``None`` without
            ``metric``). Rounding toward zero, the shares of all layers sum to 1 or more (a
            path through several quantized layers counts in each of their metrics); to
            nearest they may sum to less.
        bias_scale: scale of the quantized bias, or ``None``.
    """

    layer: str
    bits: int
    scale: Tensor
    numel: int
    estimate: float
    metric: PathMetric | None = None
    share: float | None = None
    bias_scale: Tensor | None = None


@dataclass(frozen=True)
class QuantizeReport:
    """What `quantize` did and what it certifies.

    Attributes:
        scheme: the scheme (for a budget: the integer family, bits per layer in ``layers``).
        per_channel: one scale per output channel (else per tensor).
        rounding: ``"nearest"`` or ``"toward_zero"``.
        biases: whether biases were quantized.
        fold_bn: whether foldable BatchNorms were fused into their convs first.
        metric: certified l^1 path-metric between the model and the quantized copy;
            ``metric.exact`` says whether it is the metric itself or an upper bound.
        layers: per layer (module path), bits, scale, estimate and certified metric.
        average_bits: bits per quantized entry, averaged over all of them.
        estimate: first-order estimate of ``metric.relative`` (sum over layers).
        budget: the requested bound on ``metric.relative``, or ``None``.
        rounds: certified checks the bit allocator ran (0 without a budget).
        size_bytes: bytes to store the quantized copy: each quantized tensor at its bits per
            entry (rounded up to whole bytes per tensor) plus 4 bytes per scale, every other
            floating-point parameter and buffer at 4 bytes (pruning masks left out).
        float32_bytes: the same copy in float32: 4 bytes per entry.
    """

    scheme: str
    per_channel: bool
    rounding: str
    biases: bool
    fold_bn: bool
    metric: PathMetric
    layers: dict[str, LayerQuantization]
    average_bits: float
    estimate: float
    budget: float | None = None
    rounds: int = 0
    size_bytes: int = 0
    float32_bytes: int = 0

    @property
    def compression(self) -> float:
        """``float32_bytes / size_bytes``: how many times smaller than float32."""
        return self.float32_bytes / self.size_bytes if self.size_bytes else math.nan

    @property
    def relative(self) -> float:
        """``metric / ||Phi(theta)||_1``."""
        return self.metric.relative

    @property
    def exact(self) -> bool:
        """Whether ``metric`` is the path-metric itself (rounding toward zero)."""
        return self.metric.exact

    @property
    def margin(self) -> float | None:
        """``budget - relative`` (>= 0: the budget is met), ``None`` without a budget."""
        return None if self.budget is None else self.budget - self.relative

    def lipschitz_bound(self, x: Tensor) -> Tensor:
        """Per-sample certified bound ``max(1, ||x_n||_inf) * metric`` on the l^1 distance
        between the outputs of the model and of its quantized copy (float64, shape ``(N,)``).

        Example:
            >>> q, report = fxpath.quantize(model, (3, 32, 32), "int8")
            >>> report.lipschitz_bound(images)
        """
        return input_scale([check_batch(x)]) * self.metric.value


def layer_reports(refprog: PathProgram, reference: Reference, targets: Sequence[Target],
                  layers: Mapping[str, QuantizedLayer], scores: Mapping[str, Tensor],
                  metric: PathMetric, layer_metrics: bool) -> dict[str, LayerQuantization]:
    """One `LayerQuantization` per target layer; with ``layer_metrics`` each layer's certified
    metric alone (from the scores, `change`, or else a path-metric of its own) and its share of
    the whole ``metric``."""
    out: dict[str, LayerQuantization] = {}
    for t in targets:
        layer = layers[t.layer]
        found = change(refprog, t, layer, scores)
        metric_alone, share = None, None
        if layer_metrics:
            metric_alone = _alone(refprog, reference, t, layer, found, metric)
            share = metric_alone.value / metric.value if metric.value > 0 else 0.0
        numel = layer.weight.numel() + (0 if layer.bias is None else layer.bias.numel())
        out[t.layer] = LayerQuantization(t.layer, scheme_bits(layer.scheme), layer.scale.cpu(),
                                         numel, found.relative, metric_alone, share,
                                         None if layer.bias_scale is None
                                         else layer.bias_scale.cpu())
    return out


def _alone(refprog: PathProgram, reference: Reference, t: Target, layer: QuantizedLayer,
           found: Change, metric: PathMetric) -> PathMetric:
    """The certified metric of quantizing ``t`` alone: from the scores where they determine
    it (``metric.norm`` is the model's path-norm), else a path-metric of its own."""
    if not found.determined:
        return refprog.path_metric(quantized_state(reference.model, {t.layer: layer}, [t]))
    log2 = math.log2(found.relative) + metric.norm.log2 if found.relative > 0 else -math.inf
    return PathMetric(log2, found.exact, metric.norm)


def model_bytes(copy: nn.Module, layers: Mapping[str, QuantizedLayer],
                targets: Sequence[Target]) -> tuple[int, int]:
    """``(size_bytes, float32_bytes)`` of the quantized copy (see `QuantizeReport`)."""
    quantized: dict[int, int] = {}  # id of the stored tensor -> its bytes at its bits
    for t in targets:
        layer = layers[t.layer]
        bits = scheme_bits(layer.scheme)
        stored = [(t.weight, layer.weight, layer.scale)]
        if t.bias is not None and layer.bias is not None:
            stored.append((t.bias, layer.bias, layer.bias_scale))
        for name, value, scale in stored:
            scales = 0 if scale is None else scale.numel()
            quantized[id(writable(copy, name))] = -(-value.numel() * bits // 8) + 4 * scales
    size = whole = 0
    for name, tensor in copy.state_dict(keep_vars=True).items():
        if not tensor.is_floating_point() or name.endswith("_mask"):
            continue
        whole += 4 * tensor.numel()
        size += quantized.get(id(tensor), 4 * tensor.numel())
    return size, whole
