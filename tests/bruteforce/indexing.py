"""PyTorch's index arithmetic written out by hand, for the brute-force oracle and the tests.

Output sizes and windows of (adaptive, avg, max) pooling, the positions padding copies, and the
per-axis coefficient matrices of interpolation (nearest, nearest-exact, (bi/tri)linear,
bicubic): each from the rule PyTorch documents or implements, never by calling the op.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def pool_output_size(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size (incl. the ceil_mode rule: last window starts inside)."""
    num = n + 2 * p - d * (k - 1) - 1
    out = (num + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def avgpool_window(i: int, n: int, k: int, s: int, p: int) -> tuple[int, int, int]:
    """Avg-pool window i along one axis: (first real index, end real index, padded length).

    As PyTorch: the window is clipped to the padded input [-p, n + p) (this is what ceil_mode
    windows hit); the padded length is what count_include_pad counts.
    """
    start = i * s - p
    end = min(start + k, n + p)
    return max(start, 0), min(end, n), end - start


def avgpool_divisor(
    rows: tuple[int, int, int], cols: tuple[int, int, int], count_include_pad: bool,
    divisor_override: int | None,
) -> int:
    """PyTorch's divisor of one avg-pool output from its two ``avgpool_window`` results."""
    if divisor_override:
        return int(divisor_override)
    if count_include_pad:
        return rows[2] * cols[2]
    return (rows[1] - rows[0]) * (cols[1] - cols[0])


def adaptive_window(i: int, n_in: int, n_out: int) -> tuple[int, int]:
    """Adaptive pooling window [floor(i*In/Out), ceil((i+1)*In/Out))."""
    return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)


def pair(v: Any) -> tuple[int, int]:
    """Normalise an int-or-pair hyper-parameter to a pair of ints."""
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def ntuple(v: Any, n: int) -> tuple[int, ...]:
    """Normalise an int-or-sequence hyper-parameter to an n-tuple of ints."""
    if isinstance(v, (tuple, list)):
        return tuple(int(i) for i in v)
    return (int(v),) * n


def pool_window(i: int, n: int, k: int, s: int, p: int, d: int) -> list[int]:
    """The real input positions of pooling window ``i`` along one axis (dilated taps)."""
    return [i * s - p + a * d for a in range(k) if 0 <= i * s - p + a * d < n]


def pad_index(i: int, n: int, mode: str) -> int | None:
    """The input position padded position ``i`` copies along an axis of ``n`` (None: a zero)."""
    if 0 <= i < n:
        return i
    if mode == "reflect":
        return -i if i < 0 else 2 * (n - 1) - i
    if mode == "replicate":
        return min(max(i, 0), n - 1)
    if mode == "circular":
        return i % n
    return None


def _f32(v: float) -> float:
    """``v`` rounded to float32 (PyTorch computes nearest-neighbour indices in float)."""
    return float(np.float32(v))


def _nearest_axis(n_in: int, n_out: int, scale: float | None, exact: bool) -> np.ndarray:
    """nearest: ``min(floor(o * s), n - 1)``; nearest-exact: ``min(floor((o + 0.5) s), n-1)``;
    ``s = 1 / scale`` when the scale factor reaches the kernel, else ``n_in / n_out``, in
    float32."""
    s = _f32(1.0 / scale) if scale else _f32(n_in / n_out)
    a = np.zeros((n_out, n_in))
    for o in range(n_out):
        if not exact and n_out == n_in:
            i = o
        elif not exact and n_out == 2 * n_in:
            i = o >> 1
        else:
            pos = np.float32(o + 0.5 if exact else o) * np.float32(s)
            i = min(int(math.floor(pos)), n_in - 1)
        a[o, i] += 1.0
    return a


def _source_scale(n_in: int, n_out: int, align_corners: bool, scale: float | None) -> float:
    if align_corners:
        return (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return 1.0 / scale if scale else n_in / n_out


def _cubic_weights(t: float) -> list[float]:
    """Keys' cubic convolution weights (A = -0.75) of the four taps around ``t``."""
    a = -0.75

    def near(x: float) -> float:
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _linear_axis(n_in: int, n_out: int, align_corners: bool, scale: float | None,
                 cubic: bool) -> np.ndarray:
    """(bi/tri)linear and bicubic: the source position of output ``o`` is ``r o``
    (align_corners) or ``r (o + 1/2) - 1/2`` (clamped at 0 for linear); its floor is clamped
    to ``n - 1`` and the fraction to [0, 1]; taps beyond the border read the border."""
    r = _source_scale(n_in, n_out, align_corners, scale)
    a = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = r * o if align_corners else r * (o + 0.5) - 0.5
        if not cubic and src < 0:
            src = 0.0
        i = min(int(math.floor(src)), n_in - 1)
        t = min(max(src - i, 0.0), 1.0)
        if cubic:
            for k, wk in enumerate(_cubic_weights(t)):
                a[o, min(max(i - 1 + k, 0), n_in - 1)] += wk
        else:
            a[o, i] += 1.0 - t
            a[o, i + (1 if i < n_in - 1 else 0)] += t
    return a


def interpolation_axes(mode: str, size_in: Sequence[int], size_out: Sequence[int],
                       align_corners: bool | None, scales: Sequence[float | None]
                       ) -> list[np.ndarray]:
    """One ``(out, in)`` coefficient matrix per spatial axis, from torch's index rules written
    out by hand (nearest, nearest-exact, linear, bilinear, trilinear, bicubic)."""
    out = []
    for n_in, n_out, s in zip(size_in, size_out, scales):
        if mode in ("nearest", "nearest-exact"):
            out.append(_nearest_axis(n_in, n_out, s, mode == "nearest-exact"))
        elif mode in ("linear", "bilinear", "trilinear", "bicubic"):
            out.append(_linear_axis(n_in, n_out, bool(align_corners), s, mode == "bicubic"))
        else:
            raise NotImplementedError(f"interpolation mode {mode!r}")
    return out
