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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.utils.fusion as torch_fusion
from torch import Tensor

from fxpath.api import compile as compile_program
from fxpath.apps.rescale import copy_model
from fxpath.errors import ArchitectureMismatchError, ArgumentError
from fxpath.ir.graph import BatchNormRef, Node
from fxpath.program import PathProgram
from fxpath.quantities.results import PathMetric
from fxpath.validate import check_batch, check_model

__all__ = ["FLOAT_FORMATS", "INT_BITS", "LayerQuantization", "QuantizeReport", "ROUNDINGS",
           "SCHEMES", "certify", "is_linear_layer", "quantize", "quantize_tensor", "round_float"]

#: float schemes: torch's own number formats
FLOAT_FORMATS: dict[str, torch.dtype] = {
    "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
#: bit widths of the symmetric uniform integer schemes ``int2`` ... ``int8``
INT_BITS = tuple(range(2, 9))
SCHEMES = (*FLOAT_FORMATS, *(f"int{b}" for b in INT_BITS))
ROUNDINGS = ("nearest", "toward_zero")

_BITS_VIEW = {8: torch.uint8, 16: torch.int16}
#: the ``kind`` of the IR's parameterized linear maps
LINEAR_KINDS = ("conv", "conv_transpose", "dense")
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


# -- schemes --------------------------------------------------------------------------------
def _check_scheme(scheme: object) -> str:
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ArgumentError(f"unknown scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
    return scheme


def scheme_bits(scheme: str) -> int:
    """Bits per stored entry of ``scheme`` (16 for float16, 8 for ``int8``...)."""
    scheme = _check_scheme(scheme)
    if scheme in FLOAT_FORMATS:
        return torch.finfo(FLOAT_FORMATS[scheme]).bits
    return int(scheme[3:])


def _check_flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"{what} must be True or False, got {value!r}")
    return value


def _check_rounding(rounding: object) -> str:
    if rounding not in ROUNDINGS:
        raise ArgumentError(f"rounding must be 'nearest' (ties to even) or 'toward_zero', got "
                            f"{rounding!r}")
    return str(rounding)


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
                             and b in INT_BITS for b in values):
        raise ArgumentError(f"bits must be a non-empty list of integer widths in 2..8, got "
                            f"{bits!r}")
    return tuple(sorted({int(b) for b in values}))


# -- exact rounding -------------------------------------------------------------------------
def _step(r: Tensor, fmt: torch.dtype, delta: int) -> Tensor:
    """The format value ``delta`` steps away from zero from the non-negative format values
    ``r``: their bit patterns, read as integers, are ordered like the values."""
    view = _BITS_VIEW[torch.finfo(fmt).bits]
    bits = r.view(view).to(torch.int32) + delta
    return bits.to(view).view(fmt)


def round_float(x: Tensor, fmt: torch.dtype, rounding: str = "nearest") -> Tensor:
    """``x`` rounded to the float format ``fmt`` (float16, bfloat16, float8), returned in float64.

    Exact for any float64 ``x`` whose magnitude is at most the format's largest finite value:
    ``nearest`` gives the nearest format value, ties to the one with an even last bit;
    ``toward_zero`` the format value of largest magnitude that is at most ``|x|``, with ``x``'s
    sign. (A float32 ``x`` is converted by torch, which rounds once, to nearest even; a float64
    ``x`` that is not a float32 would be rounded twice, through float32, so both results are
    then computed from the two format values around ``|x|``.)

    Example:
        >>> round_float(torch.tensor([0.3], dtype=torch.float64), torch.float8_e4m3fn)
    """
    if fmt not in FLOAT_FORMATS.values():
        raise ArgumentError(f"fmt must be one of {list(FLOAT_FORMATS.values())}, got {fmt!r}")
    rounding = _check_rounding(rounding)
    a = x.detach().to(torch.float64).abs()
    top = torch.finfo(fmt).max
    if bool((a > top).any()):
        raise ArgumentError(f"values up to {float(a.max()):.6g} exceed the largest {fmt} "
                            f"({top:g}): scale them first")
    a32 = a.to(torch.float32)
    single = torch.equal(a32.to(torch.float64), a)  # float32 inputs: one rounding
    r = (a32 if single else a).to(fmt)  # nearest, or (rounded twice) one of the neighbours
    if single and rounding == "nearest":
        return torch.copysign(r.to(torch.float64), x.detach().to(torch.float64))
    lo = torch.where(r.to(torch.float64) > a, _step(r, fmt, -1), r)  # largest <= |x|
    mag = lo.to(torch.float64)
    if rounding == "nearest":  # pick between lo and the next value by the exact midpoint
        top_fmt = torch.tensor(top, dtype=torch.float64).to(fmt)
        hi = torch.where(lo == top_fmt, lo, _step(lo, fmt, 1))
        hi64 = hi.to(torch.float64)
        mid = (mag + hi64) / 2  # exact: both have a few significant bits
        even = (lo.view(_BITS_VIEW[torch.finfo(fmt).bits]) & 1) == 0
        up = (a > mid) | ((a == mid) & ~even)
        mag = torch.where(up, hi64, mag)
    return torch.copysign(mag, x.detach().to(torch.float64)).to(x.device)


def _pow2_scale(amax: Tensor, top: float) -> Tensor:
    """1 where ``amax <= top``, else the smallest power of two bringing ``amax`` under ``top``."""
    need = torch.ceil(torch.log2(amax.clamp_min(1e-300) / top))
    scale = torch.exp2(need.clamp_min(0))
    return torch.where((amax / scale) > top, scale * 2, scale)


def _grid_scale(amax: Tensor, qmax: int, dtype: torch.dtype) -> Tensor:
    """``amax / qmax`` rounded up to as many significant bits as make every ``k * scale``
    (``|k| <= qmax``) exact in ``dtype``; 1 for an all-zero tensor or channel."""
    mant = 1 - round(math.log2(torch.finfo(dtype).eps))  # significand bits, 24 for float32
    keep = max(mant - (qmax.bit_length()), 1)
    raw = amax / qmax
    m, e = torch.frexp(raw)
    m = torch.ceil(m * 2.0 ** keep) / 2.0 ** keep
    scale = torch.ldexp(m, e)
    return torch.where(amax > 0, scale, torch.ones_like(scale))


def _per_channel_amax(v: Tensor, dim: int | None) -> Tensor:
    """max |v| over the tensor (``dim`` None) or per index of ``dim``, shaped to broadcast."""
    if v.numel() == 0:
        return torch.zeros((), dtype=v.dtype, device=v.device)
    if dim is None or v.dim() == 0:
        return torch.linalg.vector_norm(v, math.inf)
    dims = [d for d in range(v.dim()) if d != dim]
    if not dims:
        return v.abs()
    return torch.linalg.vector_norm(v, math.inf, dim=dims, keepdim=True)


def _int_round(v: Tensor, scale: Tensor, qmax: int, toward_zero: bool) -> Tensor:
    """``k * scale`` (float64) for the integer codes ``k`` of ``v``, ``|k| <= qmax``: ties to
    even, or (toward zero) the largest ``|k|`` with ``|k| * scale <= |v|``."""
    k = v / scale
    (k.trunc_() if toward_zero else k.round_()).clamp_(-qmax, qmax)
    if toward_zero:  # the quotient was rounded: step k where |k| scale misses the rule
        a = v.abs()
        k.sub_(torch.sign(k) * (k.abs() * scale > a))
        k.add_(torch.sign(v) * (((k.abs() + 1) * scale <= a) & (k.abs() < qmax)))
    return k.mul_(scale)


def quantize_tensor(value: Tensor, scheme: str, *, per_channel: bool = False,
                    channel_dim: int | None = 0, rounding: str = "nearest",
                    dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Quantize one tensor: returns ``(stored, scale)``.

    ``stored`` holds the quantized values in ``dtype`` (default: ``value``'s), ``scale`` the
    float64 scale per tensor (0-dim) or per index of ``channel_dim`` (shaped to broadcast).
    Integers: ``stored = k * scale`` with ``|k| <= 2**(bits-1) - 1``; the scale is
    ``max|v| / (2**(bits-1) - 1)`` rounded up to the significant bits that keep every
    ``k * scale`` exact in ``dtype``. Float formats: ``stored = scale * round(v / scale)`` in the
    format, ``scale`` 1 unless the largest magnitude exceeds the format's largest finite value
    (then the smallest power of two that brings it in range). With ``toward_zero`` no stored
    value exceeds ``|value|`` in magnitude or differs from it in sign. The arithmetic is in
    float64, a block of rows at a time.

    Example:
        >>> q, scale = quantize_tensor(conv.weight, "int8", per_channel=True)
    """
    scheme = _check_scheme(scheme)
    rounding = _check_rounding(rounding)
    dtype = dtype or value.dtype
    v = value.detach()
    toward_zero = rounding == "toward_zero"
    dim = channel_dim if per_channel and v.dim() > 0 else None
    amax = _per_channel_amax(v, dim).to(torch.float64)
    if scheme in FLOAT_FORMATS:
        fmt = FLOAT_FORMATS[scheme]
        scale = _pow2_scale(amax, torch.finfo(fmt).max)

        def rounded(b: Tensor, sc: Tensor) -> Tensor:
            return round_float(b / sc, fmt, rounding).mul_(sc)
    else:
        qmax = 2 ** (int(scheme[3:]) - 1) - 1
        scale = _grid_scale(amax, qmax, dtype)

        def rounded(b: Tensor, sc: Tensor) -> Tensor:
            return _int_round(b, sc, qmax, toward_zero)
    out = torch.empty(v.shape, dtype=dtype, device=v.device)
    for src, dst, sc in _blocks(v, out, scale, dim):
        b = src.to(torch.float64)
        dst.copy_(_store(rounded(b, sc), b, dtype, toward_zero))
    return out, scale


#: entries per block: the float64 temporaries of one block stay in cache
BLOCK = 1 << 20


def _blocks(v: Tensor, out: Tensor, scale: Tensor, dim: int | None
            ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Matching blocks of ``v``, ``out`` (views, written in place) and ``scale``: flat runs of
    entries for one scale, or runs of whole channels along ``dim``."""
    if dim is None:
        flat_v, flat_out = v.reshape(-1), out.view(-1)
        for i in range(0, flat_v.numel(), BLOCK):
            yield flat_v[i:i + BLOCK], flat_out[i:i + BLOCK], scale
        return
    rows_v, rows_out, rows_s = v.movedim(dim, 0), out.movedim(dim, 0), scale.movedim(dim, 0)
    step = max(1, BLOCK // max(1, rows_v[0].numel()))
    for i in range(0, rows_v.shape[0], step):
        yield rows_v[i:i + step], rows_out[i:i + step], rows_s[i:i + step]


def _store(q: Tensor, reference: Tensor, dtype: torch.dtype, toward_zero: bool) -> Tensor:
    """``q`` (float64) in ``dtype``; with ``toward_zero`` never above ``|reference|``."""
    out = q.to(dtype)
    if toward_zero and dtype != torch.float64:
        over = out.to(torch.float64).abs() > reference.abs()
        if bool(over.any()):
            out = torch.where(over, torch.nextafter(out, torch.zeros_like(out)), out)
    return out


# -- what is quantized ----------------------------------------------------------------------
@dataclass
class _Target:
    """One conv/linear layer of the reference network and its tensors to quantize."""

    layer: str
    weight: str
    channel_dim: int
    dtype: torch.dtype = torch.float32  # the model's dtype for this layer's tensors
    bias: str | None = None
    gain: Tensor | None = None      # per-channel factor from the bias to its coordinate
    bias_coord: Tensor | None = None  # the bias coordinate (folded with a kept BatchNorm)
    bias_score: Tensor | None = None


def _owner(name: str) -> str:
    return name.rpartition(".")[0]


def is_linear_layer(node: Node) -> bool:
    """A conv, transposed conv or dense node of the IR (whatever pass renamed its op)."""
    return "weight" in node.params and node.attrs.get("kind") in LINEAR_KINDS


def _bn_gain(prog: PathProgram, bn: BatchNormRef) -> Tensor:
    """``s = weight / sqrt(running_var + eps)`` of a folded BatchNorm, in float64."""
    s = torch.rsqrt(prog.parameter(bn.running_var, torch.float64) + bn.eps)
    if bn.weight is not None:
        s = s * prog.parameter(bn.weight, torch.float64)
    return s


def _targets(prog: PathProgram, biases: bool, scores: Mapping[str, Tensor]) -> list[_Target]:
    """The conv/linear layers of the compiled network, once each, in graph order."""
    coords = prog.coordinates() if biases else {}
    bias_slot = {s.node: s for s in prog.slots if s.role == "bias"}
    out: dict[str, _Target] = {}
    for node in prog.graph:
        if not is_linear_layer(node) or node.params["weight"] in out:
            continue
        name = node.params["weight"]
        t = _Target(_owner(name), name, 1 if node.attrs["kind"] == "conv_transpose" else 0)
        if biases and "bias" in node.params:
            slot = bias_slot[node.name]
            t.bias = node.params["bias"]
            bn = node.attrs.get("bn")
            t.gain = _bn_gain(prog, bn) if bn is not None else None
            t.bias_coord = coords[slot.name].to(torch.float64).reshape(-1)
            t.bias_score = None if slot.param is None else scores.get(slot.param)
        out[name] = t
    return list(out.values())


# -- BatchNorm folding: torch's conv-BN fusion ----------------------------------------------
def _fusable(model: nn.Module, node: Node) -> tuple[str, str] | None:
    """(conv path, BN path) of a conv/linear node with a folded BatchNorm that torch's fusion
    can merge (plain modules, no pruning), else None."""
    bn = node.attrs.get("bn")
    if bn is None:
        return None
    conv_path, bn_path = _owner(node.params["weight"]), _owner(bn.running_mean)
    conv, norm = model.get_submodule(conv_path), model.get_submodule(bn_path)
    if not isinstance(conv, (*_CONVS, *_TRANSPOSED, nn.Linear)) or not isinstance(
            norm, nn.modules.batchnorm._BatchNorm):
        return None
    if hasattr(conv, "weight_orig") or hasattr(conv, "bias_orig"):
        raise ArgumentError(f"fold_bn=True cannot fuse the pruned layer {conv_path!r}: make "
                            "the pruning permanent first (torch.nn.utils.prune.remove)")
    return conv_path, bn_path


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _fuse(model: nn.Module, pairs: Sequence[tuple[str, str]]) -> None:
    """Replace each (conv, BN) pair by torch's fused conv and an ``nn.Identity``, in place."""
    for conv_path, bn_path in pairs:
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        training = conv.training
        conv.eval()
        bn.eval()
        if isinstance(conv, nn.Linear):
            fused = torch_fusion.fuse_linear_bn_eval(conv, bn)
        else:
            fused = torch_fusion.fuse_conv_bn_eval(conv, bn,
                                                   transpose=isinstance(conv, _TRANSPOSED))
        fused.train(training)
        _set_module(model, conv_path, fused)
        _set_module(model, bn_path, nn.Identity())


@dataclass
class _Reference:
    """The network the certificate is computed on: the model itself, or (``fold_bn``) a float64
    copy with each foldable BatchNorm fused into its conv, the fused tensors set to fxpath's
    own float64 coordinates of the model (so both have the same path-lifting)."""

    model: nn.Module
    pairs: list[tuple[str, str]] = field(default_factory=list)


def _reference(model: nn.Module, input_shape: object, fold_bn: bool) -> _Reference:
    if not fold_bn:
        return _Reference(model)
    prog = compile_program(model, input_shape, dtype=torch.float64)
    pairs, nodes = [], {}
    for node in prog.graph:
        if is_linear_layer(node):
            pair = _fusable(model, node)
            if pair is not None and pair not in pairs:
                pairs.append(pair)
                nodes[node.name] = pair[0]
    ref = copy_model(model).to(torch.float64)
    _fuse(ref, pairs)
    coords = prog.coordinates()
    with torch.no_grad():
        for slot in prog.slots:
            if slot.node in nodes and slot.role in ("weight", "bias"):
                t = getattr(ref.get_submodule(nodes[slot.node]), slot.role)
                t.copy_(coords[slot.name].reshape(t.shape))
    return _Reference(ref, pairs)


# -- results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerQuantization:
    """How one conv/linear layer was quantized.

    Attributes:
        layer: module path of the layer (in the quantized copy).
        bits: bits per stored weight entry.
        scale: float64 scale of the weight, 0-dim (per tensor) or one per output channel.
        numel: number of weight entries (plus bias entries when biases are quantized).
        estimate: first-order estimate of the relative path-metric of quantizing this layer
            alone, from the path-magnitude scores (``docs/quantization.md``).
        metric: certified path-metric between the model and the model with only this layer
            quantized (``None`` when ``layer_metrics=False``).
        share: ``metric`` as a fraction of the whole model's metric (``None`` without
            ``metric``). Rounding toward zero, the shares of all layers sum to 1 or more (a
            path through several quantized layers counts in each of their metrics); to
            nearest they may sum to less.
        bias_scale: scale of the quantized bias, or ``None``.
    """

    layer: str
    bits: int
    scale: Tensor
    numel: int
    estimate: float
    metric: PathMetric | None = None
    share: float | None = None
    bias_scale: Tensor | None = None


@dataclass(frozen=True)
class QuantizeReport:
    """What `quantize` did and what it certifies.

    Attributes:
        scheme: the scheme (for a budget: the integer family, bits per layer in ``layers``).
        per_channel: one scale per output channel (else per tensor).
        rounding: ``"nearest"`` or ``"toward_zero"``.
        biases: whether biases were quantized.
        fold_bn: whether foldable BatchNorms were fused into their convs first.
        metric: certified l^1 path-metric between the model and the quantized copy;
            ``metric.exact`` says whether it is the metric itself or an upper bound.
        layers: per layer (module path), bits, scale, estimate and certified metric.
        average_bits: bits per quantized entry, averaged over all of them.
        estimate: first-order estimate of ``metric.relative`` (sum over layers).
        budget: the requested bound on ``metric.relative``, or ``None``.
        rounds: certified checks the bit allocator ran (0 without a budget).
    """

    scheme: str
    per_channel: bool
    rounding: str
    biases: bool
    fold_bn: bool
    metric: PathMetric
    layers: dict[str, LayerQuantization]
    average_bits: float
    estimate: float
    budget: float | None = None
    rounds: int = 0

    @property
    def relative(self) -> float:
        """``metric / ||Phi(theta)||_1``."""
        return self.metric.relative

    @property
    def exact(self) -> bool:
        """Whether ``metric`` is the path-metric itself (rounding toward zero)."""
        return self.metric.exact

    @property
    def margin(self) -> float | None:
        """``budget - relative`` (>= 0: the budget is met), ``None`` without a budget."""
        return None if self.budget is None else self.budget - self.relative

    def lipschitz_bound(self, x: Tensor) -> Tensor:
        """Per-sample certified bound ``max(1, ||x_n||_inf) * metric`` on the l^1 distance
        between the outputs of the model and of its quantized copy (float64, shape ``(N,)``).

        Example:
            >>> q, report = fxpath.quantize(model, (3, 32, 32), "int8")
            >>> report.lipschitz_bound(images)
        """
        x = check_batch(x)
        scale = x.detach().flatten(1).abs().amax(1).to(torch.float64).clamp(min=1.0)
        return scale * self.metric.value


# -- the quantized tensors ------------------------------------------------------------------
@dataclass
class _Plan:
    """Settings shared by every tensor of one quantization."""

    per_channel: bool
    rounding: str


@dataclass
class _Layer:
    """One layer quantized at some scheme: its stored tensors and scales."""

    scheme: str
    weight: Tensor
    scale: Tensor
    bias: Tensor | None = None
    bias_scale: Tensor | None = None


def _quantize_layer(ref: PathProgram, t: _Target, scheme: str, plan: _Plan) -> _Layer:
    w = ref.parameter(t.weight, ref.stored_dtype(t.weight))
    q, scale = quantize_tensor(w, scheme, per_channel=plan.per_channel,
                               channel_dim=t.channel_dim, rounding=plan.rounding,
                               dtype=t.dtype)
    layer = _Layer(scheme, q, scale)
    if t.bias is not None:
        layer.bias, layer.bias_scale = quantize_tensor(
            ref.parameter(t.bias, torch.float64), scheme, per_channel=False,
            rounding=plan.rounding, dtype=t.dtype)
    return layer


def _estimate(ref: PathProgram, t: _Target, layer: _Layer, scores: Mapping[str, Tensor]
              ) -> float:
    """First-order relative path-metric of quantizing this layer: sum over its coordinates of
    score * |change| / |value| (``docs/quantization.md``), in the weights' own dtype."""
    total = 0.0
    s = scores.get(t.weight)
    if s is not None:
        w = ref.parameter(t.weight, ref.stored_dtype(t.weight))
        total += _weighted_ratio(s, layer.weight.to(w.dtype) - w, w)
    if t.bias is not None and t.bias_score is not None and layer.bias is not None:
        db = layer.bias.to(torch.float64) - ref.parameter(t.bias, torch.float64)
        if t.gain is not None:
            db = db * t.gain
        total += _weighted_ratio(t.bias_score.reshape(-1), db.reshape(-1), t.bias_coord)
    return total


def _weighted_ratio(score: Tensor, change: Tensor, value: Tensor) -> float:
    """``sum(score * |change| / |value|)`` (0 where ``value`` is 0), one temporary."""
    r = change.abs_().div_(value.abs()).nan_to_num_(0.0, 0.0, 0.0)  # where value is 0
    return float(r.mul_(score.reshape(r.shape).to(r.dtype)).sum(dtype=torch.float64))


def _state(ref: nn.Module, layers: Mapping[str, _Layer], targets: Sequence[_Target]
           ) -> dict[str, Tensor]:
    """The reference's state dict with the quantized tensors of ``layers`` in place."""
    state = dict(ref.state_dict(keep_vars=True))
    for t in targets:
        layer = layers.get(t.layer)
        if layer is None:
            continue
        _put(state, t.weight, layer.weight)
        if t.bias is not None and layer.bias is not None:
            _put(state, t.bias, layer.bias)
    return state


def _put(state: dict[str, Tensor], name: str, value: Tensor) -> None:
    key = f"{name}_orig" if f"{name}_orig" in state else name  # a pruned tensor: its mask stays
    state[key] = value.reshape(state[key].shape)


# -- the quantized copy ---------------------------------------------------------------------
def _writable(model: nn.Module, name: str) -> Tensor:
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner)
    orig = getattr(module, f"{attr}_orig", None)
    return orig if isinstance(orig, Tensor) else getattr(module, attr)


def _build_copy(model: nn.Module, reference: _Reference, refprog: PathProgram,
                layers: Mapping[str, _Layer], targets: Sequence[_Target], toward_zero: bool
                ) -> nn.Module:
    """A copy of ``model`` (fused like the reference) holding the quantized tensors."""
    copy = copy_model(model)
    _fuse(copy, reference.pairs)
    fused = {conv for conv, _ in reference.pairs}
    with torch.no_grad():
        for t in targets:  # a fused bias left in float: its coordinate, rounded once
            if t.layer in fused and t.bias is None:
                v = refprog.parameter(f"{t.layer}.bias", torch.float64)
                dst = _writable(copy, f"{t.layer}.bias")
                dst.copy_(_store(v, v, t.dtype, toward_zero).reshape(dst.shape))
        for t in targets:
            layer = layers[t.layer]
            _write(copy, t.weight, layer.weight)
            if t.bias is not None and layer.bias is not None:
                _write(copy, t.bias, layer.bias)
    return copy


def _write(model: nn.Module, name: str, value: Tensor) -> None:
    """Copy ``value`` into the tensor behind ``name``; for a pruned one into ``<name>_orig``,
    with the masked ``<name>`` refreshed as the pruning hook would."""
    owner, _, attr = name.rpartition(".")
    module = model.get_submodule(owner)
    dst = _writable(model, name)
    dst.copy_(value.reshape(dst.shape))
    mask = getattr(module, f"{attr}_mask", None)
    if isinstance(mask, Tensor) and dst is not getattr(module, attr):
        setattr(module, attr, dst * mask)


# -- the bit allocator ----------------------------------------------------------------------
def _allocate(estimates: Mapping[str, Mapping[int, float]], sizes: Mapping[str, int],
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
        bits: the bit widths the allocator may use (default 2 to 8).
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
    scheme = _check_scheme(scheme)
    plan = _Plan(_check_flag(per_channel, "per_channel"), _check_rounding(rounding))
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


def _quantize(model: nn.Module, input_shape: Sequence[int], scheme: str, plan: _Plan,
              biases: bool, fold_bn: bool, budget: float | None, widths: Sequence[int],
              layer_metrics: bool, dtype: torch.dtype) -> tuple[nn.Module, QuantizeReport]:
    reference = _reference(model, input_shape, fold_bn)
    refprog = compile_program(reference.model, input_shape, dtype=dtype)
    scores = refprog.path_magnitude()
    targets = _targets(refprog, biases, scores)
    for t in targets:
        t.dtype = _writable(model, t.weight).dtype
    if budget is None:
        layers = {t.layer: _quantize_layer(refprog, t, scheme, plan) for t in targets}
        rounds = 0
    else:
        layers, rounds = _fit_budget(refprog, reference, targets, scores, plan, budget, widths)
    copy = _build_copy(model, reference, refprog, layers, targets,
                       plan.rounding == "toward_zero")
    metric = refprog.path_metric(copy)
    report_layers = _layer_reports(refprog, reference, targets, layers, scores, metric,
                                   layer_metrics)
    numel = sum(r.numel for r in report_layers.values())
    average = sum(r.bits * r.numel for r in report_layers.values()) / max(numel, 1)
    family = scheme if budget is None else "int"
    return copy, QuantizeReport(family, plan.per_channel, plan.rounding, biases, fold_bn, metric,
                                report_layers, average,
                                sum(r.estimate for r in report_layers.values()), budget, rounds)


def _layer_reports(refprog: PathProgram, reference: _Reference, targets: Sequence[_Target],
                   layers: Mapping[str, _Layer], scores: Mapping[str, Tensor],
                   metric: PathMetric, layer_metrics: bool) -> dict[str, LayerQuantization]:
    out: dict[str, LayerQuantization] = {}
    for t in targets:
        layer = layers[t.layer]
        alone, share = None, None
        if layer_metrics:
            alone = refprog.path_metric(_state(reference.model, {t.layer: layer}, [t]))
            share = alone.value / metric.value if metric.value > 0 else 0.0
        numel = layer.weight.numel() + (0 if layer.bias is None else layer.bias.numel())
        out[t.layer] = LayerQuantization(t.layer, scheme_bits(layer.scheme), layer.scale.cpu(),
                                         numel, _estimate(refprog, t, layer, scores), alone,
                                         share, None if layer.bias_scale is None
                                         else layer.bias_scale.cpu())
    return out


def _fit_budget(refprog: PathProgram, reference: _Reference, targets: Sequence[_Target],
                scores: Mapping[str, Tensor], plan: _Plan, budget: float,
                widths: Sequence[int]) -> tuple[dict[str, _Layer], int]:
    """Allocate bits from first-order estimates, then certify; while the certified relative
    metric exceeds the budget, allocate again for a proportionally smaller estimate."""
    estimates = {t.layer: {b: _estimate(refprog, t, _quantize_layer(refprog, t, f"int{b}", plan),
                                        scores) for b in widths} for t in targets}
    sizes = {t.layer: refprog.parameter(t.weight).numel() for t in targets}
    tightest = _allocate(estimates, sizes, 0.0)
    target, rounds, tried = budget, 0, set()
    for _ in range(2000):  # each pass narrows the target; the tightest allocation ends it
        bits = _allocate(estimates, sizes, target)
        key = tuple(sorted(bits.items()))
        if key in tried:  # a smaller target gave an allocation already certified
            target *= 0.5
            continue
        tried.add(key)
        layers = {t.layer: _quantize_layer(refprog, t, f"int{bits[t.layer]}", plan)
                  for t in targets}
        rounds += 1
        relative = refprog.path_metric(_state(reference.model, layers, targets)).relative
        if relative <= budget:
            return layers, rounds
        if bits == tightest:
            break
        target *= min(0.9, 0.95 * budget / relative)
    raise ArgumentError(
        f"budget {budget:g} cannot be met: with {max(widths)} bits in every layer the certified "
        f"relative path-metric is {relative:.6g}; raise the budget, allow wider bits, use "
        "per_channel=True or rounding='nearest'")


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
                reference = _reference(model, input_shape, fold_bn=True)
                if not reference.pairs:
                    raise first from None
                prog = compile_program(reference.model, input_shape, dtype=dtype)
                return prog.path_metric(state)
            except (ArchitectureMismatchError, ArgumentError):
                raise first from None


quantize.certify = certify  # type: ignore[attr-defined]
