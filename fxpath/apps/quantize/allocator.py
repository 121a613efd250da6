"""The bit allocator of ``quantize(..., budget=eps)``: integer bits per layer that make the copy
small while the certified relative path-metric stays at most the budget.

`allocate` solves the multiple-choice knapsack on first-order estimates; `fit_budget` certifies
its allocations and tightens the estimated target until the certificate meets the budget
(``docs/quantization.md``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from torch import Tensor

from fxpath.apps.quantize.folding import Reference
from fxpath.apps.quantize.layers import (
    Plan,
    QuantizedLayer,
    estimate,
    quantize_layer,
    quantized_state,
)
from fxpath.apps.quantize.targets import Target
from fxpath.errors import ArgumentError
from fxpath.program import PathProgram

__all__ = ["allocate", "fit_budget"]


def allocate(estimates: Mapping[str, Mapping[int, float]], sizes: Mapping[str, int],
             target: float) -> dict[str, int]:
    """Greedy multiple-choice knapsack: from the widest bits everywhere, repeatedly narrow the
    layer that saves the most bits per unit of estimated metric, while the estimated total
    stays at most ``target``."""
    bits = {layer: max(e) for layer, e in estimates.items()}
    total = sum(estimates[layer][b] for layer, b in bits.items())
    while True:
        best, best_rate = None, -1.0
        for layer, b in bits.items():
            lower = [c for c in estimates[layer] if c < b]
            if not lower:
                continue
            c = max(lower)
            cost = estimates[layer][c] - estimates[layer][b]
            if total + cost > target:
                continue
            rate = math.inf if cost <= 0 else sizes[layer] * (b - c) / cost
            if rate > best_rate:
                best, best_rate = (layer, c, cost), rate
        if best is None:
            return bits
        layer, c, cost = best
        bits[layer] = c
        total += cost


def fit_budget(refprog: PathProgram, reference: Reference, targets: Sequence[Target],
               scores: Mapping[str, Tensor], plan: Plan, budget: float,
               widths: Sequence[int]) -> tuple[dict[str, QuantizedLayer], int]:
    """Allocate bits from first-order estimates, then certify; while the certified relative
    metric exceeds the budget, allocate again for a proportionally smaller estimate.

    Returns the quantized layers and the number of certified checks run; an `ArgumentError`
    when even the widest bits everywhere miss the budget."""
    estimates = {t.layer: {b: estimate(refprog, t, quantize_layer(refprog, t, f"int{b}", plan),
                                       scores) for b in widths} for t in targets}
    sizes = {t.layer: refprog.parameter(t.weight).numel() for t in targets}
    tightest = allocate(estimates, sizes, 0.0)
    target, rounds, tried = budget, 0, set()
    for _ in range(2000):  # each pass narrows the target; the tightest allocation ends it
        bits = allocate(estimates, sizes, target)
        key = tuple(sorted(bits.items()))
        if key in tried:  # a smaller target gave an allocation already certified
            target *= 0.5
            continue
        tried.add(key)
        layers = {t.layer: quantize_layer(refprog, t, f"int{bits[t.layer]}", plan)
                  for t in targets}
        rounds += 1
        relative = refprog.path_metric(quantized_state(reference.model, layers, targets)).relative
        if relative <= budget:
            return layers, rounds
        if bits == tightest:
            break
        target *= min(0.9, 0.95 * budget / relative)
    raise ArgumentError(
        f"budget {budget:g} cannot be met: with {max(widths)} bits in every layer the certified "
        f"relative path-metric is {relative:.6g}; raise the budget, allow wider bits, use "
        "per_channel=True or rounding='nearest'")
