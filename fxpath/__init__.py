"""fxpath: path-norms, path-metrics and path-magnitude pruning of ReLU networks, via torch.fx.

A model is traced into a small DAG IR, normalized (BatchNorm folded, pooling made linear,
ReLU6/LeakyReLU/PReLU rewritten exactly into ReLUs) and compiled into its *path network*, a
torch.fx GraphModule whose single pass on an all-ones input gives ``||Phi(theta)||_q^q``.
"""

from __future__ import annotations

from fxpath.api import (
           compile,
           generalization_bound,
           lipschitz_bound,
           path_magnitude,
           path_metric,
           path_norm,
)
from fxpath.apps.backend import backend
from fxpath.apps.collapse import CollapseError, CollapseWarning
from fxpath.apps.equalize import equalize
from fxpath.apps.prune import PruneReport, prune
from fxpath.apps.quantize.api import quantize
from fxpath.apps.quantize.report import LayerQuantization, QuantizeReport
from fxpath.apps.rescale import rescale
from fxpath.apps.structured.api import certify_channels, prune_channels
from fxpath.apps.structured.report import ChannelCertificate, StructuredReport
from fxpath.apps.training.path_sgd import PathSGD
from fxpath.apps.training.penalty import PathNormPenalty
from fxpath.errors import (
           ArchitectureMismatchError,
           ArgumentError,
           FxPathError,
           NonFiniteError,
           TraceError,
           UnsupportedModelError,
           UnsupportedOp,
)
from fxpath.program import PathProgram
from fxpath.quantities.generalization import GeneralizationBound, Ingredients
from fxpath.quantities.results import PathMetric, PathNorm

__version__ = "0.1.0"

__all__ = ["ArchitectureMismatchError", "ArgumentError", "ChannelCertificate", "CollapseError",
           "CollapseWarning", "FxPathError", "GeneralizationBound", "Ingredients",
           "LayerQuantization", "NonFiniteError", "PathMetric", "PathNorm", "PathNormPenalty",
           "PathProgram", "PathSGD", "PruneReport", "QuantizeReport", "StructuredReport",
           "TraceError", "UnsupportedModelError", "UnsupportedOp", "backend", "certify_channels",
           "compile", "equalize", "generalization_bound", "lipschitz_bound", "path_magnitude",
           "path_metric", "path_norm", "prune", "prune_channels", "quantize", "rescale"]
