"""Ops the lowering emits that normalization rewrites away (`fxpath.passes.pipeline`).

Each has reference semantics (the interpreter runs IR before normalization, to check the
lowering) and names the pass that removes it; path, frame, rescaling and coordinate rules do
not apply to them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor

from fxpath.ir.graph import BatchNormRef, Node
from fxpath.ops.core import (
    INT,
    INTS,
    REAL,
    Attr,
    InterpretRule,
    NotApplicable,
    Op,
    RunContext,
    does_not_apply,
    is_a,
    one_of,
    register,
)
from fxpath.ops.linear import bn_forward
from fxpath.ops.pool import ADAPTIVE_AVG, ADAPTIVE_MAX, AVG, MAX

__all__ = ["ADAPTIVE_AVGPOOL", "ADAPTIVE_MAXPOOL", "ADAPTIVE_POOLS", "AVGPOOL", "BATCHNORM",
           "HARDTANH", "IDENTITY", "LEAKY_RELU", "MAXPOOL", "MEAN", "PRELU", "RELU6", "UNSUPPORTED",
           "WINDOW_POOLS"]


def _pre_norm(name: str, doc: str, attrs: Mapping[str, Attr],
              interpret: InterpretRule | NotApplicable, lowered_by: str,
              fate: str = "rewritten away") -> Op:
    gone = does_not_apply(f"{fate} by {lowered_by}")
    return register(Op(name=name, doc=doc, attrs=attrs, path_rule=gone, interpret_rule=interpret,
                       frame_rule=gone, rescale_rule=gone, slots_rule=gone,
                       lowered_by=lowered_by))


def _batchnorm(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """The frozen BatchNorm."""
    return bn_forward(xs[0], n.attrs["bn"], ctx.fetch)


def _maxpool(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``F.max_poolNd``."""
    a = n.attrs
    return MAX[a["ndim"]](xs[0], a["kernel"], a["stride"], a["padding"], a["dilation"],
                          a["ceil_mode"])


def _avgpool(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``F.avg_poolNd``."""
    a = n.attrs
    return AVG[a["ndim"]](xs[0], a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                          a["count_include_pad"], *([a["divisor_override"]]
                                                    if a["ndim"] > 1 else []))


def _adaptive_avgpool(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``F.adaptive_avg_poolNd`` to the node's spatial shape."""
    return ADAPTIVE_AVG[n.attrs["ndim"]](xs[0], n.shape[1:])


def _adaptive_maxpool(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``F.adaptive_max_poolNd`` to the node's spatial shape."""
    return ADAPTIVE_MAX[n.attrs["ndim"]](xs[0], n.shape[1:])


def _mean(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """The mean or sum over ``dims``."""
    a = n.attrs
    reduce = xs[0].mean if a["reduce"] == "mean" else xs[0].sum
    return reduce(a["dims"], a["keepdim"])


def _relu6(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``min(max(x, 0), 6)``."""
    return F.relu6(xs[0])


def _leaky_relu(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``max(x, 0) + slope * min(x, 0)``."""
    return F.leaky_relu(xs[0], n.attrs["slope"])


def _hardtanh(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``clamp(x, lo, hi)``."""
    return xs[0].clamp(min=n.attrs["lo"], max=n.attrs["hi"])


def _prelu(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """``F.prelu`` with the model's slope parameter."""
    return F.prelu(xs[0], ctx.fetch(n.params["weight"]))


def _identity(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """The input itself."""
    return xs[0]


_WINDOW = {"ndim": Attr(INT), "kernel": Attr(INTS), "stride": Attr(INTS),
           "padding": Attr(INTS), "dilation": Attr(INTS), "ceil_mode": Attr(is_a(bool))}
_POOLING = "lower_pooling"
_ACTIVATIONS = "rewrite_activations"

BATCHNORM = _pre_norm("batchnorm", "a frozen BatchNorm (eval mode, running statistics)",
                      {"bn": Attr(is_a(BatchNormRef))}, _batchnorm, "fold_batchnorm")
MAXPOOL = _pre_norm("maxpool", "max-pooling", _WINDOW, _maxpool, _POOLING)
AVGPOOL = _pre_norm("avgpool", "average pooling",
                    {**_WINDOW, "count_include_pad": Attr(is_a(bool, int)),
                     "divisor_override": Attr(is_a(int, type(None)))}, _avgpool, _POOLING)
ADAPTIVE_AVGPOOL = _pre_norm("adaptive_avgpool",
                             "adaptive average pooling to the node's spatial shape",
                             {"ndim": Attr(INT)}, _adaptive_avgpool, _POOLING)
ADAPTIVE_MAXPOOL = _pre_norm("adaptive_maxpool",
                             "adaptive max-pooling to the node's spatial shape",
                             {"ndim": Attr(INT)}, _adaptive_maxpool, _POOLING)
MEAN = _pre_norm("mean", "a mean or sum over non-batch `dims`",
                 {"dims": Attr(INTS), "keepdim": Attr(is_a(bool)),
                  "reduce": Attr(one_of("mean", "sum"))}, _mean, _POOLING)
RELU6 = _pre_norm("relu6", "ReLU6", {}, _relu6, _ACTIVATIONS)
LEAKY_RELU = _pre_norm("leaky_relu", "LeakyReLU", {"slope": Attr(REAL)}, _leaky_relu,
                       _ACTIVATIONS)
HARDTANH = _pre_norm("hardtanh", "Hardtanh / clamp (`hi` None: clamp from below only)",
                     {"lo": Attr(REAL), "hi": Attr(is_a(float, int, type(None)))}, _hardtanh,
                     _ACTIVATIONS)
PRELU = _pre_norm("prelu", "PReLU (parameter `weight`: the slopes)", {}, _prelu, _ACTIVATIONS)
IDENTITY = _pre_norm("identity", "a no-op (eval-mode dropout, nn.Identity, contiguous...)", {},
                     _identity, "remove_identities")
UNSUPPORTED = _pre_norm(
    "unsupported", "a model op that is not part of a ReLU-DAG (kept to be reported)",
    {"what": Attr(is_a(str)), "reason": Attr(is_a(str)), "where": Attr(is_a(str)),
     "error": Attr(is_a(BaseException), required=False)},
    does_not_apply("not a ReLU-DAG op: check_supported refuses the model"),
    "check_supported", fate="refused")

#: pooling over explicit windows (kernel, stride, padding)
WINDOW_POOLS = frozenset({MAXPOOL, AVGPOOL})
#: pooling to the node's spatial shape
ADAPTIVE_POOLS = frozenset({ADAPTIVE_AVGPOOL, ADAPTIVE_MAXPOOL})
