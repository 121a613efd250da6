"""What a channel pruning did: removed channels per layer and per group, sizes, and the exact
certificate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from fxpath.apps.structured.ledger import GroupCut
from fxpath.quantities.results import PathMetric
from fxpath.validate import check_batches, input_scale

__all__ = ["ChannelCertificate", "StructuredReport"]


@dataclass(frozen=True)
class ChannelCertificate:
    """The certificate of a channel pruning.

    Attributes:
        removed: conv/linear layer (module path) -> the dense indices of its removed output
            channels (its BatchNorm loses the same ones).
        channels: conv/linear layer -> (output channels of the dense model, of the small
            model), for every layer whose output channels were cut.
        groups: every coupled group cut, in order (`GroupCut`: root layer, channels, the layers
            it touched, its path mass score).
        metric: the l^1 path-metric between the dense model and its zeroed twin, which the
            small model equals; ``metric.exact`` is True (the dense parameters dominate).
            ``metric.relative`` is the fraction of the path mass removed.
        twin_gap: the largest difference between the small model and the zeroed twin on random
            inputs in float64, relative to the output size (at most 1e-9).
    """

    removed: dict[str, tuple[int, ...]]
    channels: dict[str, tuple[int, int]]
    groups: tuple[GroupCut, ...]
    metric: PathMetric
    twin_gap: float

    def lipschitz_bound(self, x: Tensor | Sequence[Tensor]) -> Tensor:
        """Per-sample certified bound on ``||R_dense(x_n) - R_small(x_n)||_1``:
        ``max(1, ||x_n||_inf) * metric.value`` (float64, shape ``(N,)``); ``x`` is one batch,
        or one batch per input of a model with several."""
        return input_scale(check_batches(x)).cpu() * self.metric.value


@dataclass(frozen=True)
class StructuredReport(ChannelCertificate):
    """What `fxpath.prune_channels` did: the certificate (`ChannelCertificate`) and the
    request and sizes.

    Attributes:
        criterion: ``"path_magnitude"``, ``"l1"`` or ``"bn_scale"``.
        scope: ``"global"`` or ``"layer"``.
        amount: the requested fraction of prunable channels removed.
        steps: prune-and-rescore rounds.
        round_to: channel counts kept at multiples of this (None: any).
        params: (dense, small) parameter counts.
        macs: (dense, small) multiply-accumulates of one sample (Torch-Pruning's counter).
        spared: layers the global ranking would have emptied: each kept its ``round_to`` (or
            one) best channels instead (per channel group of a grouped conv).
    """

    criterion: str = "path_magnitude"
    scope: str = "global"
    amount: float = 0.0
    steps: int = 1
    round_to: int | None = None
    params: tuple[int, int] = (0, 0)
    macs: tuple[int, int] = (0, 0)
    spared: tuple[str, ...] = ()
