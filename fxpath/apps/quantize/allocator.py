"""The bit allocator of ``quantize(..., budget=eps)``: integer bits per layer that make the copy
small while the certified relative path-metric stays at most the budget.

`fxpath.apps.quantize.pricing.price` gives every (layer, width) its first-order estimate from
the one score pass; `allocate` solves the multiple-choice knapsack on those estimates;
`fit_budget` certifies the allocation and, when the certificate misses the budget, allocates
again for a target calibrated on the miss (``docs/quantization.md``).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence

import torch.nn as nn
from torch import Tensor

from fxpath.apps.quantize.layers import Plan, QuantizedLayer, quantize_layer
from fxpath.apps.quantize.pricing import price
from fxpath.apps.quantize.targets import Target, read
from fxpath.errors import ArgumentError
from fxpath.program import PathProgram
from fxpath.quantities.results import PathMetric

__all__ = ["Certify", "allocate", "fit_budget"]

#: quantized layers -> (the quantized copy, its certified path-metric to the model)
Certify = Callable[[dict[str, QuantizedLayer]], tuple[nn.Module, PathMetric]]

#: the fraction of the calibrated target kept after a certificate missed the budget
_SAFETY = 0.999
#: the first target's room below the budget when rounding to nearest: the certificate counts
#: the higher-order terms the estimate leaves out (about 0.1% of it at int8 on a ResNet), and
#: a first allocation filled to the budget itself would miss by that and cost a second check
_FIRST_MARGIN = 0.01
#: certified checks at most: the last one is the widest bits everywhere
_ROUNDS = 8


def allocate(estimates: Mapping[str, Mapping[int, float]], sizes: Mapping[str, int],
             target: float) -> dict[str, int]:
    """Greedy multiple-choice knapsack: from the widest bits everywhere, repeatedly take the
    narrowing (of one layer, by one or more widths) that saves the most bits per unit of
    estimated metric, while the estimated total stays at most ``target``.

    A layer whose estimate barely grows (little path mass through it) is narrowed first, to
    the narrowest width when nothing it saves costs more. The room left only shrinks, so a
    move that does not fit now never will: a heap of the moves, each tried once.
    """
    bits = {layer: max(e) for layer, e in estimates.items()}
    total = sum(estimates[layer][b] for layer, b in bits.items())
    order = {layer: i for i, layer in enumerate(estimates)}
    heap: list[tuple[float, float, int, int, int, str]] = []

    def push(layer: str) -> None:
        e, b = estimates[layer], bits[layer]
        for c in e:
            if c < b:
                cost = e[c] - e[b]
                saved = sizes[layer] * (b - c)
                rate = math.inf if cost <= 0 else saved / cost
                heapq.heappush(heap, (-rate, -saved, order[layer], b, c, layer))

    for layer in estimates:
        push(layer)
    while heap:
        _, _, _, b, c, layer = heapq.heappop(heap)
        if bits[layer] != b:  # the layer moved since: a stale move
            continue
        cost = estimates[layer][c] - estimates[layer][b]
        if total + cost > target:
            continue
        bits[layer] = c
        total += cost
        push(layer)
    return bits


def fit_budget(refprog: PathProgram, targets: Sequence[Target], scores: Mapping[str, Tensor],
               plan: Plan, budget: float, widths: Sequence[int], certify: Certify
               ) -> tuple[dict[str, QuantizedLayer], nn.Module, PathMetric, int]:
    """Allocate bits from the first-order estimates and certify the copy; while the
    certified relative metric exceeds the budget, allocate again for a target scaled by the
    certified/estimated ratio just measured. To nearest the first target leaves 1% of the
    budget for the higher-order terms.

    Returns the quantized layers, the copy, its certificate and the number of certified
    checks run (1 when the first allocation meets the budget, as it always does toward zero,
    where the estimate is an upper bound); an `ArgumentError` when even the widest bits
    everywhere miss the budget."""
    estimates = price(refprog, targets, scores, plan, widths)
    sizes = {t.layer: read(refprog, t.weight).numel() for t in targets}
    widest = {layer: max(e) for layer, e in estimates.items()}
    toward_zero = plan.rounding == "toward_zero"  # the estimate bounds the metric: no margin
    target, rounds, tried = budget * (1.0 if toward_zero else 1.0 - _FIRST_MARGIN), 0, []
    while True:
        bits = allocate(estimates, sizes, target)
        if bits in tried or rounds >= _ROUNDS - 1:  # estimates that do not see the miss
            bits = widest
        layers = {t.layer: quantize_layer(refprog, t, f"int{bits[t.layer]}", plan, scores)
                  for t in targets}
        copy, metric = certify(layers)
        rounds += 1
        relative = metric.relative
        if relative <= budget:
            return layers, copy, metric, rounds
        if bits == widest:
            break
        tried.append(bits)
        # aim below this allocation's estimate by the factor the certificate missed by
        estimated = sum(estimates[layer][b] for layer, b in bits.items())
        target = min(target, estimated) * min(budget / relative, 1.0) * _SAFETY
    raise ArgumentError(
        f"budget {budget:g} cannot be met: with {max(widths)} bits in every layer the certified "
        f"relative path-metric is {relative:.6g}; raise the budget, allow wider bits, use "
        "per_channel=True or rounding='nearest'")
