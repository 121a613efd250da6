"""`PathMagnitudeImportance`: channel path mass as a Torch-Pruning importance criterion.

Importing this module imports Torch-Pruning (``pip install "fxpath[prune]"``).

Example:
    >>> import torch_pruning as tp
    >>> from fxpath.torch_pruning import PathMagnitudeImportance
    >>> pruner = tp.pruner.BasePruner(model, torch.randn(1, 3, 224, 224),
    ...                               importance=PathMagnitudeImportance(model, (3, 224, 224)),
    ...                               global_pruning=True, pruning_ratio=0.5)
    >>> pruner.step()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.apps.structured.library import torch_pruning
from fxpath.apps.structured.mass import ChannelMass, group_mass, kept_mass_cost

tp = torch_pruning()

__all__ = ["CRITERIA", "PathMagnitudeImportance", "importance", "out_channel_functions"]

#: the ranking criteria of `fxpath.prune_channels`
CRITERIA = ("path_magnitude", "l1", "bn_scale")


def out_channel_functions() -> frozenset[Any]:
    """Torch-Pruning's functions that remove a parameterized layer's output channels."""
    f = tp.pruner.function
    return frozenset({f.prune_conv_out_channels, f.prune_depthwise_conv_out_channels,
                      f.prune_linear_out_channels, f.prune_batchnorm_out_channels})


class PathMagnitudeImportance(tp.importance.Importance):
    """Channel path mass, one score per channel of a group's root: the fraction of the
    model's l^1 path-norm carried by the paths through the group's neurons (summed over the
    group's conv/linear/BatchNorm output channels; exact for a group of one neuron, an upper
    bound otherwise: `fxpath.apps.structured.mass`).

    Scores of different layers compare directly (they are fractions of one norm: no
    normalizer), and no neuron-wise rescaling of the weights changes them. The masses are
    recomputed from the live model whenever its weights change, so iterative pruning rescores
    the model as it is after each step.

    Args:
        model: the model Torch-Pruning prunes (a ReLU network fxpath can compile).
        input_shape: per-sample input shape, as for `fxpath.compile`.
        dtype: compute dtype of the path network (default: the model's).
        kept_mass: score each channel by its marginal cost in kept path mass
            (`fxpath.apps.structured.mass.kept_mass_cost`: cuts in successive layers
            multiply) instead of its path mass. Same order inside every group; across groups
            a global ranking then never empties a layer every path crosses.
            `fxpath.prune_channels` uses it.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int] | Sequence[Sequence[int]],
                 dtype: torch.dtype | None = None, kept_mass: bool = False) -> None:
        self.mass = ChannelMass(model, input_shape, dtype)
        self.kept_mass = bool(kept_mass)
        self._owners = out_channel_functions()
        self._names: tuple[dict[str, Tensor], dict[nn.Module, str]] | None = None

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor | None:
        """One score per channel of ``group``'s root, or None for a group without a
        parameterized neuron."""
        masses = self.mass.masses()
        if self._names is None or self._names[0] is not masses:  # one map per model state
            self._names = (masses, {m: n for n, m in self.mass.model.named_modules()})
        scores = group_mass(group, masses, self._names[1], self._owners)
        if scores is None or not self.kept_mass:
            return scores
        return kept_mass_cost(scores)


def importance(criterion: str, model: nn.Module,
               input_shape: Sequence[int] | Sequence[Sequence[int]],
               dtype: torch.dtype | None = None) -> Any:
    """The Torch-Pruning importance of ``criterion``: path mass, or Torch-Pruning's own L1
    filter norm or BatchNorm scale (with their default normalizers)."""
    if criterion == "path_magnitude":
        return PathMagnitudeImportance(model, input_shape, dtype, kept_mass=True)
    if criterion == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    return tp.importance.BNScaleImportance()
