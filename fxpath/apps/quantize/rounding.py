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

__all__ = ["BLOCK", "FLOAT_FORMATS", "INT_BITS", "ROUNDINGS", "SCHEMES", "check_rounding",
           "check_scheme", "quantize_tensor", "round_float", "scheme_bits", "store"]

#: float schemes: torch's own number formats
FLOAT_FORMATS: dict[str, torch.dtype] = {
    "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
#: bit widths of the symmetric uniform integer schemes ``int2`` ... ``int8``
INT_BITS = tuple(range(2, 9))
SCHEMES = (*FLOAT_FORMATS, *(f"int{b}" for b in INT_BITS))
ROUNDINGS = ("nearest", "toward_zero")

_BITS_VIEW = {8: torch.uint8, 16: torch.int16}


# -- schemes --------------------------------------------------------------------------------
def check_scheme(scheme: object) -> str:
    """``scheme`` if it is one of `SCHEMES`, else an `ArgumentError`."""
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ArgumentError(f"unknown scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
    return scheme


def scheme_bits(scheme: str) -> int:
    """Bits per stored entry of ``scheme`` (16 for float16, 8 for ``int8``...)."""
    scheme = check_scheme(scheme)
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
    scheme = check_scheme(scheme)
    rounding = check_rounding(rounding)
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
        dst.copy_(store(rounded(b, sc), b, dtype, toward_zero))
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


def store(q: Tensor, reference: Tensor, dtype: torch.dtype, toward_zero: bool) -> Tensor:
    """``q`` (float64) stored in ``dtype``; with ``toward_zero`` never above ``|reference|``
    (an entry that the conversion rounded up is stepped back toward zero)."""
    out = q.to(dtype)
    if toward_zero and dtype != torch.float64:
        over = out.to(torch.float64).abs() > reference.abs()
        if bool(over.any()):
            out = torch.where(over, torch.nextafter(out, torch.zeros_like(out)), out)
    return out
