"""Certified weight quantization: a quantized copy of a ReLU network and its path-metric.

`quantize` rounds the conv/linear weights of a copy of the model to a number format (float16,
bfloat16, float8 or symmetric uniform integers of 2 to 8 bits, per tensor or per output
channel), stores them back in the model's dtype and reports the certified l^1 path-metric
between the model and the copy: exact when every coordinate was rounded toward zero (the copy
is then dominated by the model), a certified upper bound otherwise. With ``budget=eps`` it
chooses the bits of each layer instead, to make the model small while the certified relative
metric stays at most ``eps``. `certify` computes the same certificate for a model quantized
elsewhere (by torchao, for example). The mathematics is in ``docs/quantization.md``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.api import compile as compile_program
from fxpath.apps.quantize.allocator import fit_budget
from fxpath.apps.quantize.build import build_copy, writable
from fxpath.apps.quantize.folding import make_reference
from fxpath.apps.quantize.layers import Plan, QuantizedLayer, quantize_layer
from fxpath.apps.quantize.report import QuantizeReport, layer_reports, model_bytes
from fxpath.apps.quantize.rounding import (
    FLOAT_FORMATS,
    INT_BITS,
    WIDE_BITS,
    check_rounding,
    check_scheme,
    exact_bits,
)
from fxpath.apps.quantize.targets import Target, find_targets
from fxpath.errors import ArchitectureMismatchError, ArgumentError
from fxpath.quantities.results import PathMetric
from fxpath.validate import check_model

__all__ = ["certify", "quantize"]


# -- arguments ------------------------------------------------------------------------------
def _check_flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"{what} must be True or False, got {value!r}")
    return value


def _check_budget(budget: object) -> float | None:
    if budget is None:
        return None
    if (isinstance(budget, bool) or not isinstance(budget, numbers.Real)
            or not math.isfinite(budget) or budget <= 0):
        raise ArgumentError(f"budget must be a finite number > 0 (the largest certified relative "
                            f"path-metric allowed, e.g. 0.01), got {budget!r}")
    return float(budget)


def _check_bits(bits: object) -> tuple[int, ...]:
    ok = (isinstance(bits, Iterable) and not isinstance(bits, (str, bytes)))
    values = list(bits) if ok else []  # type: ignore[call-overload]
    if not values or not all(isinstance(b, numbers.Integral) and not isinstance(b, bool)
                             and b in WIDE_BITS for b in values):
        raise ArgumentError(f"bits must be a non-empty list of integer widths in 2..16, got "
                            f"{bits!r}")
    return tuple(sorted({int(b) for b in values}))


def _check_exact(widths: Sequence[int], targets: Sequence[Target]) -> None:
    """Refuse widths whose integer grid the model's dtype does not hold exactly."""
    for t in targets:
        if max(widths) > exact_bits(t.dtype):
            raise ArgumentError(f"bits: {max(widths)}-bit integers are not exact in the "
                                f"{t.dtype} weights of {t.layer!r}; use at most "
                                f"{exact_bits(t.dtype)} bits")


# -- quantize -------------------------------------------------------------------------------
def quantize(model: nn.Module, input_shape: Sequence[int], scheme: str = "int8", *,
             per_channel: bool = False, rounding: str = "nearest", biases: bool = False,
             fold_bn: bool = False, budget: float | None = None,
             bits: Iterable[int] = INT_BITS, layer_metrics: bool = True,
             dtype: torch.dtype = torch.float64) -> tuple[nn.Module, QuantizeReport]:
    """A quantized copy of ``model`` and the certified path-metric between the two.

    The model is never modified. The copy stores the quantized weights in the model's own
    dtype (it runs wherever the model runs); with ``fold_bn`` its foldable BatchNorms are fused
    into their convs by torch's fusion (``torch.nn.utils.fusion``) and replaced by
    ``nn.Identity``, and the fused weights are quantized.

    Args:
        model: a ReLU network (train mode is analysed as eval mode, as everywhere in fxpath).
        input_shape: per-sample input shape (path-norms depend on it), e.g. ``(3, 224, 224)``.
        scheme: ``float16``, ``bfloat16``, ``float8_e4m3fn``, ``float8_e5m2`` or ``int2`` ...
            ``int8`` (symmetric uniform integers). With a ``budget``: an integer scheme, whose
            bits the allocator chooses per layer.
        per_channel: one scale per output channel instead of one per tensor.
        rounding: ``"nearest"`` (ties to even) or ``"toward_zero"``: every coordinate keeps its
            sign and never grows, so the certified metric is exact.
        biases: quantize the conv/linear biases too (one scale per tensor).
        fold_bn: fuse each BatchNorm fxpath folds into its conv/linear before quantizing.
        budget: largest certified relative path-metric allowed; the bits of each layer are
            then chosen from ``bits`` to make the copy small (``docs/quantization.md``).
        bits: the bit widths the allocator may use (default 2 to 8; up to 16, for a mixed
            precision that spends more bits where the path mass is, within the weights'
            dtype: 11 for float16, 8 for bfloat16).
        layer_metrics: certify each layer alone too (one path-metric per layer).
        dtype: compute dtype of the certificate's path networks (float64 by default).

    Returns:
        ``(quantized copy, QuantizeReport)``; ``report.lipschitz_bound(x)`` bounds the output
        change on a batch. Without ``fold_bn``, ``fxpath.lipschitz_bound(model, copy, x)`` gives
        the same.

    Example:
        >>> q, report = fxpath.quantize(model.eval(), (3, 224, 224), "int8", per_channel=True)
        >>> report.metric, report.relative
    """
    check_model(model, exported=False)
    scheme = check_scheme(scheme)
    plan = Plan(_check_flag(per_channel, "per_channel"), check_rounding(rounding))
    biases = _check_flag(biases, "biases")
    fold_bn = _check_flag(fold_bn, "fold_bn")
    layer_metrics = _check_flag(layer_metrics, "layer_metrics")
    budget = _check_budget(budget)
    widths = _check_bits(bits)
    if budget is not None and scheme in FLOAT_FORMATS:
        raise ArgumentError(f"a budget chooses integer bit widths: pass an integer scheme such "
                            f"as 'int8', not {scheme!r}")
    with torch.no_grad():
        return _quantize(model, input_shape, scheme, plan, biases, fold_bn, budget, widths,
                         layer_metrics, dtype)


def _quantize(model: nn.Module, input_shape: Sequence[int], scheme: str, plan: Plan,
              biases: bool, fold_bn: bool, budget: float | None, widths: Sequence[int],
              layer_metrics: bool, dtype: torch.dtype) -> tuple[nn.Module, QuantizeReport]:
    reference = make_reference(model, input_shape, fold_bn)
    refprog = compile_program(reference.model, input_shape, dtype=dtype)
    # the one score pass: the estimates, the allocation and the per-layer metrics
    scores = refprog.path_magnitude()
    targets = find_targets(refprog, biases, scores)
    for t in targets:
        t.dtype = writable(model, t.weight).dtype
    toward_zero = plan.rounding == "toward_zero"

    def certify_copy(layers: dict[str, QuantizedLayer]) -> tuple[nn.Module, PathMetric]:
        copy = build_copy(model, reference, refprog, layers, targets, toward_zero)
        # the copy has the reference's module tree by construction: its tensors are certified
        return copy, refprog.path_metric(copy.state_dict())

    if budget is None:
        layers = {t.layer: quantize_layer(refprog, t, scheme, plan, scores) for t in targets}
        copy, metric = certify_copy(layers)
        rounds = 0
    else:
        _check_exact(widths, targets)
        layers, copy, metric, rounds = fit_budget(refprog, targets, scores, plan, budget,
                                                  widths, certify_copy)
    report_layers = layer_reports(refprog, reference, targets, layers, scores, metric,
                                  layer_metrics)
    numel = sum(r.numel for r in report_layers.values())
    average = sum(r.bits * r.numel for r in report_layers.values()) / max(numel, 1)
    family = scheme if budget is None else "int"
    size, whole = model_bytes(copy, layers, targets)
    return copy, QuantizeReport(family, plan.per_channel, plan.rounding, biases, fold_bn, metric,
                                report_layers, average,
                                sum(r.estimate for r in report_layers.values()), budget, rounds,
                                size, whole)


# -- certify a model quantized elsewhere ----------------------------------------------------
def _dequantized(model: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state dict of plain tensors: tensor subclasses (torchao's quantized weights) are read
    through their ``dequantize()``."""
    state = model.state_dict(keep_vars=True) if isinstance(model, nn.Module) else dict(model)
    out = {}
    for name, t in state.items():
        if isinstance(t, Tensor) and type(t) not in (Tensor, nn.Parameter) and hasattr(
                t, "dequantize"):
            t = t.dequantize()
        out[name] = t.detach() if isinstance(t, Tensor) else t
    return out


def certify(model: nn.Module, quantized: nn.Module | Mapping[str, Tensor],
            input_shape: Sequence[int], *, dtype: torch.dtype = torch.float64) -> PathMetric:
    """The certified l^1 path-metric between ``model`` and a quantized version of it.

    ``quantized`` is a model of the same architecture (its weights may be tensor subclasses
    with ``dequantize()``, as torchao's are: the dequantized values are certified), a state
    dict, or a copy made by ``quantize(..., fold_bn=True)`` (its fused convs are compared with
    the model's folded coordinates). ``lipschitz_bound``'s ``max(1, ||x||_inf) * value`` then
    bounds the output change.

    Example:
        >>> torchao.quantization.quantize_(q, Int8WeightOnlyConfig())
        >>> fxpath.quantize.certify(model, q, (3, 224, 224))
    """
    check_model(model, exported=False)
    if not isinstance(quantized, (nn.Module, Mapping)):
        raise ArgumentError(f"quantized must be a model or a state dict, got "
                            f"{type(quantized).__name__}")
    state = _dequantized(quantized)
    with torch.no_grad():
        try:
            return compile_program(model, input_shape, dtype=dtype).path_metric(state)
        except ArchitectureMismatchError as first:
            try:  # a copy made with fold_bn=True: compare with the model's folded coordinates
                reference = make_reference(model, input_shape, fold_bn=True)
                if not reference.pairs:
                    raise first from None
                prog = compile_program(reference.model, input_shape, dtype=dtype)
                return prog.path_metric(state)
            except (ArchitectureMismatchError, ArgumentError):
                raise first from None


quantize.certify = certify  # type: ignore[attr-defined]
