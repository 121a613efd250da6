"""Number formats of quantization and the exact rounding of one tensor to them.

The schemes are torch's float formats (float16, bfloat16, float8) and symmetric uniform
integers of 2 to 8 bits. `round_float` rounds exactly to a float format, `quantize_tensor`
quantizes one tensor (per tensor or per channel), to nearest or toward zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from fxpath.errors import ArgumentError

__all__ = ["BLOCK", "FLOAT_FORMATS", "INT_BITS", "ROUNDINGS", "SCHEMES", "WIDE_BITS",
           "Moved", "channel_amax", "check_rounding", "check_scheme", "exact_bits",
           "grid_scale", "quantize_tensor", "quantize_weighted", "round_float", "scheme_bits",
           "store"]

#: float schemes: torch's own number formats
FLOAT_FORMATS: dict[str, torch.dtype] = {
    "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
#: bit widths of the symmetric uniform integer schemes ``int2`` ... ``int8``
INT_BITS = tuple(range(2, 9))
SCHEMES = (*FLOAT_FORMATS, *(f"int{b}" for b in INT_BITS))
#: integer widths a bit allocation may use (``quantize(..., bits=)``): the schemes' 2 to 8 and
#: the wider grids of mixed precision, up to 16 (``int9`` ... ``int16`` are no schemes)
WIDE_BITS = tuple(range(2, 17))
ROUNDINGS = ("nearest", "toward_zero")

_BITS_VIEW = {8: torch.uint8, 16: torch.int16}


# -- schemes --------------------------------------------------------------------------------
def check_scheme(scheme: object) -> str:
    """``scheme`` if it is one of `SCHEMES`, else an `ArgumentError`."""
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ArgumentError(f"unknown scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
    return scheme


def _check_grid(scheme: object) -> str:
    """``scheme`` if it is one of `SCHEMES` or an allocator's integer grid ``int9`` ...
    ``int16``, else `check_scheme`'s `ArgumentError`."""
    if isinstance(scheme, str) and scheme in {f"int{b}" for b in WIDE_BITS}:
        return scheme
    return check_scheme(scheme)


def exact_bits(dtype: torch.dtype) -> int:
    """The widest integer grid ``k * scale`` stored exactly in ``dtype``: its significand
    bits (24 for float32, 11 for float16, 8 for bfloat16)."""
    return 1 - round(math.log2(torch.finfo(dtype).eps))


def scheme_bits(scheme: str) -> int:
    """Bits per stored entry of ``scheme`` (16 for float16, 8 for ``int8``...)."""
    scheme = _check_grid(scheme)
    if scheme in FLOAT_FORMATS:
        return torch.finfo(FLOAT_FORMATS[scheme]).bits
    return int(scheme[3:])


def check_rounding(rounding: object) -> str:
    """``rounding`` if it is one of `ROUNDINGS`, else an `ArgumentError`."""
    if rounding not in ROUNDINGS:
        raise ArgumentError(f"rounding must be 'nearest' (ties to even) or 'toward_zero', got "
                            f"{rounding!r}")
    return str(rounding)


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
    rounding = check_rounding(rounding)
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


def grid_scale(amax: Tensor, qmax: int, dtype: torch.dtype) -> Tensor:
    """``amax / qmax`` rounded up to as many significant bits as make every ``k * scale``
    (``|k| <= qmax``) exact in ``dtype``; 1 for an all-zero tensor or channel."""
    mant = exact_bits(dtype)  # significand bits, 24 for float32
    keep = max(mant - (qmax.bit_length()), 1)
    raw = amax / qmax
    m, e = torch.frexp(raw)
    m = torch.ceil(m * 2.0 ** keep) / 2.0 ** keep
    scale = torch.ldexp(m, e)
    return torch.where(amax > 0, scale, torch.ones_like(scale))


def channel_amax(v: Tensor, dim: int | None) -> Tensor:
    """max |v| over the tensor (``dim`` None) or per index of ``dim``, shaped to broadcast
    (from the least and the largest entries: one pass, no ``|v|`` written)."""
    if v.numel() == 0:
        return torch.zeros((), dtype=v.dtype, device=v.device)
    if dim is None or v.dim() == 0:
        low, high = torch.aminmax(v)
        return torch.maximum(low.abs(), high.abs())
    low, high = torch.aminmax(v.movedim(dim, 0).reshape(v.shape[dim], -1), dim=1)
    shape = [1] * v.dim()
    shape[dim] = -1
    return torch.maximum(low.abs(), high.abs()).reshape(shape)


def _int_round(v: Tensor, scale: Tensor, qmax: int, toward_zero: bool) -> Tensor:
    """``k * scale`` (float64) for the integer codes ``k`` of ``v``, ``|k| <= qmax``: ties to
    even, or (toward zero) the largest ``|k|`` with ``|k| * scale <= |v|``."""
    k = v / scale
    (k.trunc_() if toward_zero else k.round_()).clamp_(-qmax, qmax)
    if toward_zero:  # the quotient was rounded: step k where |k| scale misses the rule
        a = v.abs()
        below = k.abs().mul_(scale)  # |k| scale, exact: a block that keeps the rule is done
        if bool((below > a).any()) or bool((below.add_(scale) <= a).any()):
            k.sub_(torch.sign(k) * (k.abs() * scale > a))
            k.add_(torch.sign(v) * (((k.abs() + 1) * scale <= a) & (k.abs() < qmax)))
    return k.mul_(scale)


def quantize_tensor(value: Tensor, scheme: str, *, per_channel: bool = False,
                    channel_dim: int | None = 0, rounding: str = "nearest",
                    dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """Quantize one tensor: returns ``(stored, scale)``.

    ``stored`` holds the quantized values in ``dtype`` (default: ``value``'s), ``scale`` the
    float64 scale per tensor (0-dim) or per index of ``channel_dim`` (shaped to broadcast).
    Integers (``scheme`` also ``int9`` ... ``int16``, the allocator's wider grids):
    ``stored = k * scale`` with ``|k| <= 2**(bits-1) - 1``; the scale is
    ``max|v| / (2**(bits-1) - 1)`` rounded up to the significant bits that keep every
    ``k * scale`` exact in ``dtype`` (for ``bits`` up to `exact_bits` of ``dtype``).
    Float formats: ``stored = scale * round(v / scale)`` in the format, ``scale`` 1 unless the
    largest magnitude exceeds the format's largest finite value (then the smallest power of
    two that brings it in range). With ``toward_zero`` no stored value exceeds ``|value|`` in
    magnitude or differs from it in sign. The arithmetic is in float64, a block of rows at a
    time.

    Example:
        >>> q, scale = quantize_tensor(conv.weight, "int8", per_channel=True)
    """
    out, scale, _ = _quantize(value, scheme, per_channel, channel_dim, rounding, dtype, None)
    return out, scale


def quantize_weighted(value: Tensor, scheme: str, weights: Tensor, *,
                      per_channel: bool = False, channel_dim: int | None = 0,
                      rounding: str = "nearest", dtype: torch.dtype | None = None
                      ) -> tuple[Tensor, Tensor, Moved]:
    """`quantize_tensor`, and how far it moved the entries (`Moved`, with ``weights`` shaped
    like ``value``), measured on each block while it is in cache."""
    out, scale, moved = _quantize(value, scheme, per_channel, channel_dim, rounding, dtype,
                                  weights)
    assert moved is not None
    return out, scale, moved


def _quantize(value: Tensor, scheme: str, per_channel: bool, channel_dim: int | None,
              rounding: str, dtype: torch.dtype | None, weights: Tensor | None
              ) -> tuple[Tensor, Tensor, Moved | None]:
    scheme = _check_grid(scheme)
    rounding = check_rounding(rounding)
    dtype = dtype or value.dtype
    v = value.detach()
    toward_zero = rounding == "toward_zero"
    dim = channel_dim if per_channel and v.dim() > 0 else None
    amax = channel_amax(v, dim).to(torch.float64)
    if scheme in FLOAT_FORMATS:
        fmt = FLOAT_FORMATS[scheme]
        scale = _pow2_scale(amax, torch.finfo(fmt).max)

        def rounded(b: Tensor, sc: Tensor) -> Tensor:
            return round_float(b / sc, fmt, rounding).mul_(sc)
    else:
        qmax = 2 ** (int(scheme[3:]) - 1) - 1
        scale = grid_scale(amax, qmax, dtype)

        def rounded(b: Tensor, sc: Tensor) -> Tensor:
            return _int_round(b, sc, qmax, toward_zero)
    # an integer grid within the dtype's significand: k * scale is stored exactly, and
    # toward zero it is at most |v| already (`store` would change nothing)
    exact = scheme not in FLOAT_FORMATS and int(scheme[3:]) <= exact_bits(dtype)
    out = torch.empty(v.shape, dtype=dtype, device=v.device)
    moved = None if weights is None else Moved(spread=not toward_zero)
    for src, dst, sc, w in _blocks(v, out, scale, dim, weights):
        b = src.to(torch.float64, copy=True)  # (`Moved.add` overwrites it)
        if exact and not toward_zero:
            # `_int_round` to nearest without its clamp: |b| <= amax <= qmax * scale up to the
            # quotient's last bit, which rounds back to qmax
            q = _round_even(torch.div(b, sc), b).mul_(sc)
        else:
            q = rounded(b, sc)
            q = q if exact else store(q, b, dtype, toward_zero)
        dst.copy_(q)
        if moved is not None:
            moved.add(b, q, w)
    return out, scale, moved


#: 1.5 * 2**52: a float64 of magnitude below 2**51 plus this is rounded to an integer, ties to
#: even (the sum lies in [2**52, 2**53), where the float64 spacing is 1)
_MAGIC = 1.5 * 2.0 ** 52


def _round_even(k: Tensor, sign_of: Tensor) -> Tensor:
    """``k.round_()`` for float64 ``|k| < 2**51`` (the integer codes), in place: the same
    values, zeros with the sign of ``sign_of`` (``k``'s own). ``round_`` goes through a
    vectorized library that splits even a block of one cache's size between the threads,
    which then wait for each other on busy cores; these three steps run on one thread."""
    return k.add_(_MAGIC).sub_(_MAGIC).copysign_(sign_of)


#: the smallest positive float64: dividing by it leaves 0 at 0 and changes no other quotient
_TINY = math.ulp(0.0)


class Moved:
    """How far a quantization moved the entries ``v`` of a tensor to ``q``, accumulated
    block by block: ``total = sum(weights * |q - v| / |v|)`` in float64 (0 where ``v`` is 0),
    and whether some entry grew in magnitude (``grew``) or shrank (``shrank``): only with
    ``spread`` (rounding toward zero no entry grows, and whether one shrank does not matter)."""

    def __init__(self, spread: bool = True) -> None:
        self._sums: list[Tensor] = []
        self.spread = spread
        self.grew = self.shrank = False

    def add(self, v: Tensor, q: Tensor, weights: Tensor) -> None:
        """Account for one block: ``v`` in float64, a copy this call overwrites; ``q`` the
        stored values (in float64 or ``v``'s dtype; 0 wherever ``v`` is, as quantization
        keeps zeros)."""
        if self.spread and not (self.grew and self.shrank):  # both seen: neither dominates
            low, high = torch.aminmax(v.abs() - q.abs())
            self.grew, self.shrank = self.grew or bool(low < 0), self.shrank or bool(high > 0)
        d = torch.sub(q, v).abs_()
        d.div_(v.abs_().clamp_min_(_TINY))  # 0 / tiny = 0 where v is 0
        w = weights.reshape(-1)
        self._sums.append(torch.dot(d.reshape(-1), w if w.dtype == torch.float64
                                    else w.to(torch.float64)))

    @property
    def total(self) -> float:
        """``sum(weights * |q - v| / |v|)`` over every block added."""
        return float(torch.stack(self._sums).sum()) if self._sums else 0.0


#: entries per block: the float64 temporaries of one block stay in cache, and torch runs an
#: operation on this few entries on one thread (no thread waits for another on busy cores)
BLOCK = 1 << 15


def _blocks(v: Tensor, out: Tensor, scale: Tensor, dim: int | None,
            weights: Tensor | None = None
            ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor | None]]:
    """Matching blocks of ``v``, ``out`` (views, written in place), ``scale`` and
    ``weights`` (shaped like ``v``): flat runs of entries for one scale, or runs of whole
    channels along ``dim``."""
    if dim is None:
        flat_v, flat_out = v.reshape(-1), out.view(-1)
        flat_w = None if weights is None else weights.reshape(-1)
        for i in range(0, flat_v.numel(), BLOCK):
            yield (flat_v[i:i + BLOCK], flat_out[i:i + BLOCK], scale,
                   None if flat_w is None else flat_w[i:i + BLOCK])
        return
    rows_v, rows_out, rows_s = v.movedim(dim, 0), out.movedim(dim, 0), scale.movedim(dim, 0)
    rows_w = None if weights is None else weights.reshape(v.shape).movedim(dim, 0)
    step = max(1, BLOCK // max(1, rows_v[0].numel()))
    for i in range(0, rows_v.shape[0], step):
        yield (rows_v[i:i + step], rows_out[i:i + step], rows_s[i:i + step],
               None if rows_w is None else rows_w[i:i + step])


def store(q: Tensor, reference: Tensor, dtype: torch.dtype, toward_zero: bool) -> Tensor:
    """``q`` (float64) stored in ``dtype``; with ``toward_zero`` never above ``|reference|``
    (an entry that the conversion rounded up is stepped back toward zero)."""
    out = q.to(dtype)
    if toward_zero and dtype != torch.float64:
        over = out.to(torch.float64).abs() > reference.abs()
        if bool(over.any()):
            out = torch.where(over, torch.nextafter(out, torch.zeros_like(out)), out)
    return out
