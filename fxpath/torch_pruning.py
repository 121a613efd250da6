"""fxpath as a Torch-Pruning plug-in (``pip install "fxpath[prune]"``).

`PathMagnitudeImportance` is a ``tp.importance.Importance``: channel path mass, comparable across
layers without a normalizer and invariant under rescaling. `certify_channels` certifies what a
Torch-Pruning pruner did, from its pruning history.

Example:
    >>> import torch_pruning as tp
    >>> from fxpath.torch_pruning import PathMagnitudeImportance, certify_channels
    >>> dense = copy.deepcopy(model)
    >>> pruner = tp.pruner.BasePruner(model, torch.randn(1, 3, 32, 32),
    ...                               importance=PathMagnitudeImportance(model, (3, 32, 32)),
    ...                               global_pruning=True, pruning_ratio=0.5)
    >>> pruner.step()
    >>> certify_channels(dense, model, pruner.pruning_history(), (3, 32, 32)).metric
"""

from __future__ import annotations

from fxpath.apps.structured.api import certify_channels
from fxpath.apps.structured.importance import PathMagnitudeImportance
from fxpath.apps.structured.report import ChannelCertificate

__all__ = ["ChannelCertificate", "PathMagnitudeImportance", "certify_channels"]
