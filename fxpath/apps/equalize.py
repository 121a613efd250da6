"""Cross-layer equalization for any ReLU-DAG: balance the weight ranges around every free neuron.

Per-tensor quantization gives all entries of a tensor one step size, set by the largest one:
a channel whose weights are much smaller than the tensor's largest loses most of its bits. The
rescaling symmetry (``docs/mathematics.md#rescaling-symmetry``) moves weight mass between the
weights a neuron reads and those that read it without changing the function, so it can be
used to balance the two (Nagel et al., Data-Free Quantization, ICCV 2019), here for every
neuron `fxpath.rescale` can rescale: residual and concatenated branches, standalone
BatchNorms and any op whose rescaling rule lets a channel through. ``docs/quantization.md``
derives the factors.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.api import compile as compile_program
from fxpath.apps.quantize.targets import is_linear_layer
from fxpath.apps.rescale import (
    channel_count,
    channel_maps,
    copy_model,
    rescalable_neurons,
    rescale_channels,
)
from fxpath.errors import ArgumentError
from fxpath.ir.graph import Graph, Node
from fxpath.validate import check_model

__all__ = ["equalize"]


def _check_sweeps(sweeps: object) -> int:
    if isinstance(sweeps, bool) or not isinstance(sweeps, numbers.Integral) or sweeps < 1:
        raise ArgumentError(f"sweeps must be an integer >= 1, got {sweeps!r}")
    return int(sweeps)


def _shape(model: nn.Module, input_shape: Sequence[int] | None) -> Sequence[int]:
    if input_shape is not None:
        return input_shape
    cfg = getattr(model, "pretrained_cfg", None) or {}
    shape = cfg.get("input_size")
    if shape is None:
        raise ArgumentError("equalize needs input_shape (the model has no timm input_size)")
    return shape


class _Ranges:
    """Magnitudes of the conv/linear weights as they will be quantized: the raw weights, or
    (``fold_bn``) the coordinates ``W * s`` with the folded BatchNorm's ``s`` per row (which
    rescaling leaves alone: it scales the BatchNorm's mean and bias only)."""

    def __init__(self, model: nn.Module, graph: Graph, fold_bn: bool) -> None:
        self.model = model
        self.nodes: dict[str, Node] = {}
        self.gains: dict[str, Tensor] = {}
        for node in graph:
            if not is_linear_layer(node):
                continue
            name = node.params["weight"]
            self.nodes[name] = node
            bn = node.attrs.get("bn")
            if fold_bn and bn is not None:
                self.gains[name] = self._bn_gain(bn)

    def _tensor(self, name: str) -> Tensor:
        return self.model.state_dict(keep_vars=True)[name]

    def _bn_gain(self, bn: object) -> Tensor:
        s = torch.rsqrt(self._tensor(bn.running_var).to(torch.float64) + bn.eps)  # type: ignore
        if bn.weight is not None:  # type: ignore[attr-defined]
            s = s * self._tensor(bn.weight).to(torch.float64)  # type: ignore[attr-defined]
        return s.abs()

    def magnitude(self, key: str) -> tuple[Node, Tensor] | None:
        """The node and ``|coordinate|`` (float64) of the weight stored under state_dict
        ``key`` (``<name>_orig`` of a pruned one reads through its mask), or None."""
        name = key.removesuffix("_orig")
        node = self.nodes.get(name)
        if node is None:
            return None
        owner, _, attr = name.rpartition(".")
        module = self.model.get_submodule(owner)
        mask = getattr(module, f"{attr}_mask", None)
        w = getattr(module, f"{attr}_orig", None) if mask is not None else None
        w = (w * mask) if w is not None else getattr(module, attr)
        a = w.detach().to(torch.float64).abs()
        gain = self.gains.get(name)
        if gain is not None:
            shape = [1] * a.dim()
            shape[1 if node.attrs["kind"] == "conv_transpose" else 0] = -1
            a = a * gain.reshape(shape)
        return node, a


def _side_ranges(ranges: _Ranges, producer: str, maps: Mapping[str, Tensor], channels: int
                 ) -> tuple[Tensor | None, Tensor | None]:
    """Per channel of ``producer``: the largest weight it reads (incoming) and the largest
    weight that reads it (outgoing, over all consumers); None for a side with no quantized
    weight (a standalone BatchNorm)."""
    sides: list[Tensor | None] = [None, None]
    for key, idx in maps.items():
        found = ranges.magnitude(key)
        if found is None:
            continue
        node, a = found
        hit = idx >= 0
        r = torch.zeros(channels, dtype=torch.float64, device=a.device).scatter_reduce(
            0, idx[hit].long(), a[hit], "amax", include_self=True)
        side = 0 if node.name == producer else 1
        sides[side] = r if sides[side] is None else torch.maximum(sides[side], r)
    return sides[0], sides[1]


def _factors(r_in: Tensor | None, r_out: Tensor | None, channels: int) -> Tensor:
    """``lam`` balancing each channel: ``lam * r_in = r_out / lam``, i.e.
    ``lam = sqrt(r_out / r_in)``; with one quantized side only, the channels of that side are
    brought to its largest range. Channels with a zero range keep ``lam = 1``."""
    known = r_in if r_in is not None else r_out
    one = torch.ones(channels, dtype=torch.float64,
                     device=None if known is None else known.device)
    if r_in is not None and r_out is not None:
        ok = (r_in > 0) & (r_out > 0)
        return torch.where(ok, torch.sqrt(r_out / r_in.clamp_min(1e-300)), one)
    if r_in is not None:
        ok = r_in > 0
        return torch.where(ok, r_in.amax() / r_in.clamp_min(1e-300), one)
    if r_out is not None:
        ok = r_out > 0
        return torch.where(ok, r_out / r_out.amax().clamp_min(1e-300), one)
    return one


def equalize(model: nn.Module, input_shape: Sequence[int] | None = None, *,
             fold_bn: bool = False, sweeps: int = 16, tol: float = 1e-3,
             power_of_two: bool = False) -> nn.Module:
    """A copy of ``model`` computing the same function, with the weight ranges balanced around
    every neuron fxpath can rescale (cross-layer equalization).

    For a neuron whose incoming weights (its row, in the weights that will be quantized) reach
    ``r_in`` and whose outgoing weights (its columns, in every consumer) reach ``r_out``,
    ``lam = sqrt(r_out / r_in)`` makes both ``sqrt(r_in * r_out)``: a product the rescaling
    symmetry leaves fixed, so the result does not depend on how the model was rescaled before.
    Neurons are balanced one producer at a time, for up to ``sweeps`` passes, until no factor
    of a pass differs from 1 by more than ``tol``. Path-norms, path-metrics and path-magnitude
    scores are unchanged.

    Args:
        model: a ReLU network (left untouched).
        input_shape: per-sample input shape; default: timm's ``pretrained_cfg["input_size"]``.
        fold_bn: balance the folded coordinates ``W * s`` (what ``quantize(fold_bn=True)``
            quantizes) instead of the raw conv/linear weights (what ``quantize`` quantizes by
            default, with the BatchNorms kept in float).
        sweeps: the largest number of passes over all neurons.
        tol: stop after a pass whose factors all lie in ``[1 / (1 + tol), 1 + tol]``.
        power_of_two: round each factor to a power of two: the copy then computes bit for bit
            what the model computes (multiplying by 2**k is exact in floating point).

    Example:
        >>> balanced = fxpath.equalize(model.eval(), (3, 224, 224))
        >>> q, report = fxpath.quantize(balanced, (3, 224, 224), "int8")
    """
    check_model(model, exported=False)
    shape = _shape(model, input_shape)
    sweeps = _check_sweeps(sweeps)
    if (isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol)
            or tol < 0):
        raise ArgumentError(f"tol must be a finite number >= 0, got {tol!r}")
    for flag, what in ((fold_bn, "fold_bn"), (power_of_two, "power_of_two")):
        if not isinstance(flag, bool):
            raise ArgumentError(f"{what} must be True or False, got {flag!r}")
    twin = copy_model(model)
    graph = compile_program(twin, shape).graph
    neurons = rescalable_neurons(graph)
    maps = channel_maps(twin, graph, neurons)
    ranges = _Ranges(twin, graph, fold_bn)
    with torch.no_grad():
        for _ in range(sweeps):
            moved = 0.0
            for producer, consumers in neurons.items():
                channels = channel_count(graph[producer])
                lam = _factors(*_side_ranges(ranges, producer, maps[producer], channels),
                               channels)
                if power_of_two:
                    lam = torch.exp2(torch.round(torch.log2(lam)))
                if bool((lam == 1).all()):
                    continue
                rescale_channels(twin, graph, producer, consumers, lam)
                moved = max(moved, float(torch.log(lam).abs().max()))
            if moved <= math.log1p(tol):
                break
    return twin
