"""The ledger of a channel pruning: which channels of the dense model each cut removed.

Torch-Pruning names channels by their position in the model as it is at the time of each cut;
after a few cuts those positions no longer match the dense model's. The ledger keeps, for every
layer, the dense indices of the channels still present, so each cut is recorded in the dense
model's coordinates: what the zeroed twin needs (`fxpath.apps.structured.twin`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from fxpath.errors import FxPathError

__all__ = ["GroupCut", "Ledger", "LayerCut"]


@dataclass(frozen=True)
class GroupCut:
    """One coupled group removed at once.

    Attributes:
        root: the layer Torch-Pruning cut the group from (module path).
        channels: the root's removed output channels, as dense-model indices.
        layers: every layer the cut touched (module paths), in the group's order.
        mass: the group score of the removed channels when they were cut (their summed
            channel path mass, a fraction of the path-norm of the model at that step; see
            `fxpath.apps.structured.mass`), or None when it was not computed.
    """

    root: str
    channels: tuple[int, ...]
    layers: tuple[str, ...]
    mass: float | None = None


@dataclass
class LayerCut:
    """The dense-model indices removed from one layer's output and input channels."""

    out: set[int] = field(default_factory=set)
    inputs: set[int] = field(default_factory=set)


class Ledger:
    """Records Torch-Pruning cuts in dense-model coordinates.

    Args:
        model: the model being cut (a copy of the dense one, same module paths).
        graph: its Torch-Pruning ``DependencyGraph``.
    """

    def __init__(self, model: nn.Module, graph: Any) -> None:
        self.names = {m: n for n, m in model.named_modules()}
        self.graph = graph
        self.layers: dict[str, LayerCut] = {}
        self.groups: list[GroupCut] = []
        self.spared: tuple[str, ...] = ()
        self._kept_out: dict[str, list[int]] = {}
        self._kept_in: dict[str, list[int]] = {}

    def record(self, group: Any, mass: float | None = None) -> None:
        """Record the cut ``group`` is about to make (call before ``group.prune()``)."""
        graph = self.graph
        touched: list[str] = []
        root_channels: tuple[int, ...] = ()
        done: set[tuple[str, bool]] = set()
        for i, item in enumerate(group):
            dep, idxs = item.dep, [int(j) for j in item.idxs]
            module = dep.target.module
            name = self.names.get(module)
            if name is None:
                if isinstance(module, nn.Parameter):
                    raise FxPathError("Torch-Pruning cut a bare nn.Parameter, which fxpath "
                                      "cannot certify; wrap it in a module or ignore its layer")
                continue  # an operation without parameters (add, concat, reshape)
            out = graph.is_out_channel_pruning_fn(dep.handler) or _is_norm(module)
            if (name, out) in done:
                continue  # a BatchNorm reached as both input and output: one set of channels
            done.add((name, out))
            if out:
                removed = _take(self._kept_out, name, idxs, graph.get_out_channels(module))
                self.layers.setdefault(name, LayerCut()).out.update(removed)
                if i == 0:
                    root_channels = tuple(sorted(removed))
            elif graph.is_in_channel_pruning_fn(dep.handler):
                removed = _take(self._kept_in, name, idxs, graph.get_in_channels(module))
                self.layers.setdefault(name, LayerCut()).inputs.update(removed)
            else:
                continue
            if name not in touched:
                touched.append(name)
        root = self.names.get(group[0].dep.target.module, "?")
        self.groups.append(GroupCut(root, root_channels, tuple(touched), mass))

    def kept_out(self, name: str) -> list[int] | None:
        """The dense indices of ``name``'s output channels still present (None: never cut)."""
        return self._kept_out.get(name)

    def removed(self) -> Mapping[str, LayerCut]:
        """Layer -> its removed channels, dense indices."""
        return self.layers


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def _take(kept: dict[str, list[int]], name: str, idxs: list[int], count: int | None) -> list[int]:
    """Remove positions ``idxs`` from ``name``'s kept list; return their dense indices."""
    if name not in kept:
        if count is None:
            raise FxPathError(f"Torch-Pruning gives no channel count for layer {name}")
        kept[name] = list(range(int(count)))
    current = kept[name]
    if any(j < 0 or j >= len(current) for j in idxs):
        raise FxPathError(f"Torch-Pruning cut channels {idxs} of layer {name}, which has "
                          f"{len(current)} left")
    drop = set(idxs)
    removed = [current[j] for j in sorted(drop)]
    kept[name] = [c for j, c in enumerate(current) if j not in drop]
    return removed
