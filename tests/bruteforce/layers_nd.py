"""Lowering rules of the N-d and dense-prediction layers, by explicit index loops.

Conv1d / Conv3d, transposed convs (module, ``output_size`` and functional forms), 1-d / 3-d
pools, the padding modes, pixel (un)shuffles and interpolation (Upsample, F.interpolate): torch's
index rules written out by hand (:mod:`bruteforce.indexing`). Same rule signature as
:mod:`bruteforce.layers`; :data:`RULES` maps module types to rules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from bruteforce.builders import ConvTransposeTo, FunctionalConvTranspose, Interpolate
from bruteforce.indexing import (
    adaptive_window,
    avgpool_window,
    interpolation_axes,
    ntuple,
    pad_index,
    pool_output_size,
    pool_window,
)
from bruteforce.layers import DagState, bias_kw, build_batchnorm, tensor_np
from bruteforce.oracle import Edge


def _build_convnd(
    b: DagState, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Conv1d / Conv3d (zero padding, stride, dilation, groups, bias) by explicit loops."""
    nd = x.ndim - 1
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise NotImplementedError(f"node {name!r}: padding {m.padding!r} {m.padding_mode!r}")
    st, pd, dl = ntuple(m.stride, nd), ntuple(m.padding, nd), ntuple(m.dilation, nd)
    w = tensor_np(m.weight)
    wname = b.param(name, "weight", m.weight)
    bias = tensor_np(m.bias) if m.bias is not None else None
    bname = b.param(name, "bias", m.bias) if m.bias is not None else None
    cout, cin_g, *k = w.shape
    size = x.shape[1:]
    osize = [(n + 2 * p - d * (kk - 1) - 1) // s + 1
             for n, kk, s, p, d in zip(size, k, st, pd, dl)]
    out_g = cout // m.groups
    out = np.empty((cout, *osize), dtype=np.int64)
    for o in range(cout):
        cin0 = (o // out_g) * cin_g
        for pos in np.ndindex(*osize):
            edges = []
            for c in range(cin_g):
                for off in np.ndindex(*k):
                    src_pos = [pos[j] * st[j] - pd[j] + off[j] * dl[j] for j in range(nd)]
                    if all(0 <= q < n for q, n in zip(src_pos, size)):
                        edges.append(Edge(int(x[(cin0 + c, *src_pos)]), w[(o, c, *off)], wname,
                                          (o, c, *off)))
            out[(o, *pos)] = b.new("id", edges, (o, *pos), **bias_kw(bname, bias, o))
    return out, True


def _conv_transpose_edges(
    b: DagState, x: np.ndarray, w: np.ndarray, wname: str, geom: dict[str, Any],
    osize: Sequence[int], bias: np.ndarray | None, bname: str | None, prefix: str = "",
) -> np.ndarray:
    """Output neurons of a transposed conv: input (c, i) reaches output (o, i*s - p + k*d)
    through the kernel tap ``w[c, o - group start, k]``, one edge per tap."""
    nd = x.ndim - 1
    cin, cout_g, *k = w.shape
    groups = geom["groups"]
    cin_g = cin // groups
    st, pd, dl = geom["stride"], geom["padding"], geom["dilation"]
    incoming: dict[tuple[int, ...], list[Edge]] = {}
    for c in range(cin):
        g = c // cin_g
        for ipos in np.ndindex(*x.shape[1:]):
            for ol in range(cout_g):
                for off in np.ndindex(*k):
                    opos = tuple(ipos[j] * st[j] - pd[j] + off[j] * dl[j] for j in range(nd))
                    if all(0 <= q < n for q, n in zip(opos, osize)):
                        o = g * cout_g + ol
                        incoming.setdefault((o, *opos), []).append(
                            Edge(int(x[(c, *ipos)]), w[(c, ol, *off)], wname, (c, ol, *off)))
    out = np.empty((cout_g * groups, *osize), dtype=np.int64)
    for idx in np.ndindex(*out.shape):
        out[idx] = b.new("id", incoming.get(idx, []), idx, **bias_kw(bname, bias, idx[0]))
    return out


def _conv_transpose_geometry(m: Any, nd: int) -> dict[str, Any]:
    return {"stride": ntuple(m.stride, nd), "padding": ntuple(m.padding, nd),
            "dilation": ntuple(m.dilation, nd), "groups": int(m.groups),
            "output_padding": ntuple(m.output_padding, nd)}


def _transposed_size(size: Sequence[int], k: Sequence[int], geom: dict[str, Any]) -> list[int]:
    return [(n - 1) * s - 2 * p + d * (kk - 1) + op + 1
            for n, kk, s, p, d, op in zip(size, k, geom["stride"], geom["padding"],
                                          geom["dilation"], geom["output_padding"])]


def _build_conv_transpose(
    b: DagState, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """ConvTranspose1d/2d/3d, its ``output_size`` form and the functional form."""
    nd = x.ndim - 1
    conv, prefix = (m.conv, "conv.") if isinstance(m, ConvTransposeTo) else (m, "")
    geom = _conv_transpose_geometry(conv, nd)
    w = tensor_np(conv.weight)
    osize = _transposed_size(x.shape[1:], w.shape[2:], geom)
    if isinstance(m, ConvTransposeTo):  # output_size: PyTorch's extra rows at the end
        osize = [int(s) for s in m.size[-nd:]]
    wname = b.param(name, f"{prefix}weight", conv.weight)
    bias = tensor_np(conv.bias) if conv.bias is not None else None
    bname = b.param(name, f"{prefix}bias", conv.bias) if conv.bias is not None else None
    return _conv_transpose_edges(b, x, w, wname, geom, osize, bias, bname), True


def _build_poolnd(
    b: DagState, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """MaxPool1d/3d and AvgPool1d/3d (ceil_mode, count_include_pad, divisor_override)."""
    nd = x.ndim - 1
    is_max = isinstance(m, (nn.MaxPool1d, nn.MaxPool3d))
    k = ntuple(m.kernel_size, nd)
    st = ntuple(m.stride if m.stride is not None else m.kernel_size, nd)
    pd = ntuple(m.padding, nd)
    dl = ntuple(m.dilation, nd) if is_max else (1,) * nd
    size = x.shape[1:]
    osize = [pool_output_size(n, kk, s, p, d, m.ceil_mode)
             for n, kk, s, p, d in zip(size, k, st, pd, dl)]
    out = np.empty((x.shape[0], *osize), dtype=np.int64)
    for ch in range(x.shape[0]):
        for pos in np.ndindex(*osize):
            axes = [pool_window(pos[j], size[j], k[j], st[j], pd[j], dl[j]) for j in range(nd)]
            taps = list(itertools.product(*axes))
            weight = 1.0
            if not is_max:
                wins = [avgpool_window(pos[j], size[j], k[j], st[j], pd[j]) for j in range(nd)]
                if getattr(m, "divisor_override", None):
                    div = int(m.divisor_override)
                elif m.count_include_pad:
                    div = math.prod(w[2] for w in wins)
                else:
                    div = math.prod(w[1] - w[0] for w in wins)
                weight = 1.0 / div
            edges = [Edge(int(x[(ch, *t)]), weight) for t in taps]
            out[(ch, *pos)] = b.new("max" if is_max else "id", edges, (ch, *pos))
    return out, not is_max


_PAD_MODULES = {
    **{t: "reflect" for t in (nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d)},
    **{t: "replicate" for t in (nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d)},
    **{t: "circular" for t in (nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d)},
    **{t: "zeros" for t in (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d)},
}


def _build_padnd(
    b: DagState, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Reflect / replicate / circular / zero padding: copies of input neurons (reflect,
    replicate, circular) or fresh neurons without edges (zeros)."""
    nd = x.ndim - 1
    mode = _PAD_MODULES[type(m)]
    widths = list(m.padding)  # (last lo, last hi, second-last lo, ...)
    lo = [widths[2 * (nd - 1 - j)] for j in range(nd)]
    hi = [widths[2 * (nd - 1 - j) + 1] for j in range(nd)]
    size = x.shape[1:]
    osize = [n + a + c for n, a, c in zip(size, lo, hi)]
    out = np.empty((x.shape[0], *osize), dtype=np.int64)
    for ch in range(x.shape[0]):
        for pos in np.ndindex(*osize):
            src_pos = [pad_index(pos[j] - lo[j], size[j], mode) for j in range(nd)]
            if any(q is None for q in src_pos):
                out[(ch, *pos)] = b.new("id", [], (ch, *pos))
            else:
                out[(ch, *pos)] = x[(ch, *src_pos)]
    return out, False


def _build_pixel_shuffle(
    b: DagState, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """PixelShuffle: out[c, h r + i, w r + j] = in[c r^2 + i r + j, h, w]; PixelUnshuffle is
    its inverse. Pure re-indexing."""
    c, h, w = x.shape
    if isinstance(m, nn.PixelShuffle):
        r = m.upscale_factor
        out = np.empty((c // (r * r), h * r, w * r), dtype=np.int64)
        for oc, oh, ow in np.ndindex(*out.shape):
            out[oc, oh, ow] = x[oc * r * r + (oh % r) * r + (ow % r), oh // r, ow // r]
    else:
        r = m.downscale_factor
        out = np.empty((c * r * r, h // r, w // r), dtype=np.int64)
        for ic, ih, iw in np.ndindex(*x.shape):
            out[ic * r * r + (ih % r) * r + (iw % r), ih // r, iw // r] = x[ic, ih, iw]
    return out, False


def _interpolation_args(m: nn.Module, size_in: Sequence[int]
                        ) -> tuple[str, list[int], bool | None, list[float | None]]:
    """``(mode, output size, align_corners, scales reaching the kernel)`` of an Upsample or
    Interpolate module, as F.interpolate documents them."""
    nd = len(size_in)
    if isinstance(m, Interpolate):
        kw = m.kwargs
        size, factor, mode = kw.get("size"), kw.get("scale_factor"), kw.get("mode", "nearest")
        align, recompute = kw.get("align_corners"), kw.get("recompute_scale_factor")
        if kw.get("antialias"):
            raise NotImplementedError("antialias")
    else:
        size, factor, mode = m.size, m.scale_factor, m.mode
        align, recompute = m.align_corners, m.recompute_scale_factor
    if size is not None:
        return mode, list(ntuple(size, nd)), align, [None] * nd
    factors = [float(f) for f in (factor if isinstance(factor, (tuple, list))
                                  else [factor] * nd)]
    out = [int(math.floor(n * f)) for n, f in zip(size_in, factors)]
    scales = [None] * nd if recompute or mode == "area" else factors
    return mode, out, align, scales


def _build_interpolate(
    b: DagState, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Upsample / F.interpolate: identity neurons whose edges are products of one coefficient
    per axis (taps on the same input summed into one edge); ``area`` is an adaptive mean."""
    size_in = x.shape[1:]
    mode, size_out, align, scales = _interpolation_args(m, size_in)
    if mode == "area":
        axes = []
        for n_in, n_out in zip(size_in, size_out):
            a = np.zeros((n_out, n_in))
            for o in range(n_out):
                lo, hi = adaptive_window(o, n_in, n_out)
                a[o, lo:hi] = 1.0 / (hi - lo)
            axes.append(a)
    else:
        axes = interpolation_axes(mode, size_in, size_out, align, scales)
    out = np.empty((x.shape[0], *size_out), dtype=np.int64)
    for ch in range(x.shape[0]):
        for pos in np.ndindex(*size_out):
            rows = [np.nonzero(a[p])[0] for a, p in zip(axes, pos)]
            edges = [Edge(int(x[(ch, *t)]), math.prod(a[p, i] for a, p, i in zip(axes, pos, t)))
                     for t in itertools.product(*rows)]
            out[(ch, *pos)] = b.new("id", edges, (ch, *pos))
    return out, True


def _build_functional_conv_transpose(
    b: DagState, name: str, m: FunctionalConvTranspose, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    nd = x.ndim - 1
    geom = _conv_transpose_geometry(m, nd)
    w = tensor_np(m.weight)
    osize = _transposed_size(x.shape[1:], w.shape[2:], geom)
    wname = b.param(name, "weight", m.weight)
    bias = tensor_np(m.bias) if m.bias is not None else None
    bname = b.param(name, "bias", m.bias) if m.bias is not None else None
    return _conv_transpose_edges(b, x, w, wname, geom, osize, bias, bname), True


RULES: dict[type, Callable[..., tuple[np.ndarray, bool]]] = {
    nn.Conv1d: _build_convnd, nn.Conv3d: _build_convnd,
    nn.ConvTranspose1d: _build_conv_transpose, nn.ConvTranspose2d: _build_conv_transpose,
    nn.ConvTranspose3d: _build_conv_transpose, ConvTransposeTo: _build_conv_transpose,
    nn.MaxPool1d: _build_poolnd, nn.MaxPool3d: _build_poolnd,
    nn.AvgPool1d: _build_poolnd, nn.AvgPool3d: _build_poolnd,
    nn.BatchNorm3d: build_batchnorm,
    nn.PixelShuffle: _build_pixel_shuffle, nn.PixelUnshuffle: _build_pixel_shuffle,
    nn.Upsample: _build_interpolate, nn.UpsamplingNearest2d: _build_interpolate,
    nn.UpsamplingBilinear2d: _build_interpolate, Interpolate: _build_interpolate,
    **dict.fromkeys(_PAD_MODULES, _build_padnd),
    FunctionalConvTranspose: _build_functional_conv_transpose,
}
