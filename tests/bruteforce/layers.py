"""Lowering rules of the basic layers: how each torch module becomes explicit neurons.

Each rule ``(state, node name, module, input node name, input neuron ids) -> (output neuron ids,
fresh)`` adds neurons to the DAG being built with hand-written index loops (no torch conv / pool
ops), in float64; ``fresh`` says the node made brand-new identity neurons nobody else uses (a
following ReLU may then switch them to ReLU in place). :data:`RULES` maps module types to rules;
:mod:`bruteforce.layers_nd` has those of the N-d / dense-prediction layers and
:mod:`bruteforce.lowering` walks a SpecNet with both.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from bruteforce.builders import Affine, ConvTransposeTo, SpecNet, StdConv2d
from bruteforce.indexing import (
    adaptive_window,
    avgpool_divisor,
    avgpool_window,
    pair,
    pool_output_size,
)
from bruteforce.oracle import Edge, NeuronDAG

# --------------------------------------------------------------------------------------------
# The state of one lowering, and helpers shared by the rules
# --------------------------------------------------------------------------------------------


class DagState:
    """State while turning a SpecNet into a NeuronDAG."""

    def __init__(self, net: SpecNet) -> None:
        self.net = net
        self.dag = NeuronDAG(net.input_shape)
        self.consumers: Counter[str] = Counter(i for _, _, ins in net.spec_nodes for i in ins)
        self.kinds = {name: kind for name, kind, _ in net.spec_nodes}
        self.env: dict[str, np.ndarray] = {}
        # fresh[name]: the node created brand-new 'id' neurons used by nobody else, so a
        # following ReLU may switch them to 'relu' in place.
        self.fresh: dict[str, bool] = {"x": False}
        self.current = ""

    def is_lone_private(self, name: str) -> bool:
        """True when node ``name`` has exactly one consumer and is not an output."""
        return self.consumers[name] == 1 and name not in self.net.spec_outputs

    def new(self, act: str, edges: Iterable[Edge] = (), idx: tuple[int, ...] = (), **kw) -> int:
        """Add a neuron labelled by the current node and position."""
        label = f"{self.current}{list(idx)}"
        return self.dag.add_neuron(act, edges, label=label, **kw)

    def param(self, module_name: str, attr: str, t: torch.Tensor) -> str:
        """Record a parameter's shape and return its state_dict name."""
        name = f"{module_name}.{attr}"
        self.dag.param_shapes[name] = tuple(t.shape)
        return name


def tensor_np(t: torch.Tensor) -> np.ndarray:
    """Detached float64 numpy copy of a tensor."""
    return t.detach().to(torch.float64).cpu().numpy()


def bias_kw(bname: str | None, bias: np.ndarray | None, o: int) -> dict[str, Any]:
    """Keyword arguments of a neuron carrying bias[o] of parameter ``bname`` (or none)."""
    if bias is None:
        return {}
    return {"bias": bias[o], "has_bias": True, "bias_param": bname, "bias_index": (o,)}


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _foldable_producer(m: nn.Module | None) -> bool:
    """fxpath's folding rule: a BatchNorm folds into a conv or (N, C) linear layer, and into a
    transposed conv without groups."""
    if isinstance(m, ConvTransposeTo):
        m = m.conv
    if type(m) in (*_CONVS, nn.Linear):
        return True
    return type(m) in _CONV_TS and m.groups == 1


# ---- linear layers --------------------------------------------------------------------------


def _build_linear(
    b: DagState, name: str, m: nn.Linear, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """nn.Linear on per-sample shape (F,)."""
    if x.ndim != 1:
        raise ValueError(f"node {name!r}: Linear expects a flat (F,) input, got {x.shape}")
    w = tensor_np(m.weight)
    wname = b.param(name, "weight", m.weight)
    bias = tensor_np(m.bias) if m.bias is not None else None
    bname = b.param(name, "bias", m.bias) if m.bias is not None else None
    out = np.empty((w.shape[0],), dtype=np.int64)
    for o in range(w.shape[0]):
        edges = [Edge(int(x[f]), w[o, f], wname, (o, f)) for f in range(w.shape[1])]
        out[o] = b.new("id", edges, (o,), **bias_kw(bname, bias, o))
    return out, True


def _conv_padding(name: str, m: nn.Conv2d) -> tuple[int, int]:
    """Zero padding of a Conv2d as a pair (refuses other padding modes / 'same')."""
    if m.padding_mode != "zeros":
        raise NotImplementedError(f"node {name!r}: padding_mode {m.padding_mode!r}")
    if isinstance(m.padding, str):
        if m.padding != "valid":
            raise NotImplementedError(f"node {name!r}: padding={m.padding!r}")
        return 0, 0
    return pair(m.padding)


def _conv_edges(
    x: np.ndarray, w: np.ndarray, wname: str, o: int, cin0: int, pos: tuple[int, int],
    geom: tuple[tuple[int, int], tuple[int, int], tuple[int, int]],
) -> list[Edge]:
    """Edges of conv output (o, i, j): every kernel tap that lands on a real input pixel."""
    (sh, sw), (ph, pw), (dh, dw) = geom
    _, h, wd = x.shape
    i, j = pos
    edges = []
    for c in range(w.shape[1]):
        for a in range(w.shape[2]):
            r = i * sh - ph + a * dh
            if not 0 <= r < h:
                continue
            for bb in range(w.shape[3]):
                col = j * sw - pw + bb * dw
                if 0 <= col < wd:
                    if x[cin0 + c, r, col] < 0:
                        raise ValueError("a conv reads -inf padding")
                    edges.append(Edge(int(x[cin0 + c, r, col]), w[o, c, a, bb], wname,
                                      (o, c, a, bb)))
    return edges


def _build_conv2d(
    b: DagState, name: str, m: nn.Conv2d, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """nn.Conv2d (stride, zero padding, dilation, groups, optional bias) by explicit loops."""
    ph, pw = _conv_padding(name, m)
    (sh, sw), (dh, dw) = pair(m.stride), pair(m.dilation)
    weight = m.standardized() if isinstance(m, StdConv2d) else m.weight  # the effective one
    w = tensor_np(weight)
    wname = b.param(name, "weight", weight)
    bias = tensor_np(m.bias) if m.bias is not None else None
    bname = b.param(name, "bias", m.bias) if m.bias is not None else None
    cout, cin_g, kh, kw = w.shape
    _, h, wd = x.shape
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out_g = cout // m.groups
    geom = ((sh, sw), (ph, pw), (dh, dw))
    out = np.empty((cout, oh, ow), dtype=np.int64)
    for o in range(cout):
        cin0 = (o // out_g) * cin_g
        for i in range(oh):
            for j in range(ow):
                edges = _conv_edges(x, w, wname, o, cin0, (i, j), geom)
                out[o, i, j] = b.new("id", edges, (o, i, j), **bias_kw(bname, bias, o))
    return out, True


def _bn_affine(name: str, m: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, ...]:
    """(s, mean, g, beta) of a frozen BN: s = g / sqrt(var + eps)."""
    if m.training or m.running_mean is None or m.running_var is None:
        raise ValueError(f"node {name!r}: BatchNorm must be in eval mode with running stats")
    mean, var = tensor_np(m.running_mean), tensor_np(m.running_var)
    g = tensor_np(m.weight) if m.weight is not None else np.ones_like(mean)
    beta = tensor_np(m.bias) if m.bias is not None else np.zeros_like(mean)
    s = g / np.sqrt(var + m.eps)
    return s, mean, g, beta


def build_batchnorm(
    b: DagState, name: str, m: nn.modules.batchnorm._BatchNorm, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Frozen BN: folded into a lone preceding conv/linear, else a standalone affine layer."""
    s, mean, _, beta = _bn_affine(name, m)
    wname = b.param(name, "weight", m.weight) if m.weight is not None else None
    bname = b.param(name, "bias", m.bias) if m.bias is not None else None
    src_module = getattr(b.net, src, None) if b.kinds.get(src) == "module" else None
    foldable = _foldable_producer(src_module) and b.is_lone_private(src)
    if b.net.fold_bn and foldable:
        for idx in np.ndindex(*x.shape):
            c = idx[0]
            n = b.dag.neurons[int(x[idx])]
            for e in n.edges:
                e.weight = e.weight * s[c]
            n.bias = s[c] * (n.bias - mean[c]) + beta[c]
            n.has_bias, n.bias_param, n.bias_index = True, bname, (c,)
            n.label += f"+{name}"
        return x, b.fresh[src]
    out = np.empty(x.shape, dtype=np.int64)
    for idx in np.ndindex(*x.shape):
        c = idx[0]
        edge = Edge(int(x[idx]), s[c], wname, (c,) if wname else None)
        t = beta[c] - mean[c] * s[c]
        out[idx] = b.new("id", [edge], idx, bias=t, has_bias=True, bias_param=bname,
                         bias_index=(c,) if bname else None)
    return out, True


# ---- activations ----------------------------------------------------------------------------


def _build_relu(
    b: DagState, name: str, m: nn.ReLU, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """ReLU: switch fresh private identity neurons to ReLU in place, else new ReLU neurons."""
    if b.fresh.get(src, False) and b.is_lone_private(src):
        for nid in x.reshape(-1):
            b.dag.neurons[int(nid)].act = "relu"
        return x, False
    out = np.empty(x.shape, dtype=np.int64)
    for idx in np.ndindex(*x.shape):
        out[idx] = b.new("relu", [Edge(int(x[idx]), 1.0)], idx)
    return out, False


def _two_relus(
    b: DagState, x: np.ndarray, consts: tuple[float, float, float, float],
    y2: Callable[[tuple[int, ...]], Edge],
) -> np.ndarray:
    """Rewrite y = id(r1 - ... ): r1 = relu(x + b1), r2 = relu(s2*x + b2), y = r1 + y2(r2) + by.

    ``consts`` = (b1, s2, b2, by); ``y2(idx)`` returns the r2 -> y edge (src filled in here).
    """
    b1, s2, b2, by = consts
    out = np.empty(x.shape, dtype=np.int64)
    for idx in np.ndindex(*x.shape):
        xi = int(x[idx])
        r1 = b.new("relu", [Edge(xi, 1.0)], idx, bias=b1, has_bias=b1 != 0)
        r2 = b.new("relu", [Edge(xi, s2)], idx, bias=b2, has_bias=b2 != 0)
        e2 = y2(idx)
        e2.src = r2
        out[idx] = b.new("id", [Edge(r1, 1.0), e2], idx, bias=by, has_bias=by != 0)
    return out


def _build_hardtanh(
    b: DagState, name: str, m: nn.Hardtanh, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Hardtanh(lo, hi) (and ReLU6 = Hardtanh(0, 6)): relu(x - lo) - relu(x - hi) + lo."""
    lo, hi = float(m.min_val), float(m.max_val)
    return _two_relus(b, x, (-lo, 1.0, -hi, lo), lambda idx: Edge(-1, -1.0)), True


def _build_leaky(
    b: DagState, name: str, m: nn.LeakyReLU, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """LeakyReLU(a): relu(x) - a * relu(-x)."""
    a = float(m.negative_slope)
    return _two_relus(b, x, (0.0, -1.0, 0.0, 0.0), lambda idx: Edge(-1, -a)), True


def _build_prelu(
    b: DagState, name: str, m: nn.PReLU, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """PReLU: relu(x) - a_c * relu(-x); the r2 -> y edge (-a_c) is attributed to weight[c]."""
    a = tensor_np(m.weight)
    wname = b.param(name, "weight", m.weight)

    def y2(idx: tuple[int, ...]) -> Edge:
        c = idx[0] if a.size > 1 else 0
        return Edge(-1, -a[c], wname, (c,))

    return _two_relus(b, x, (0.0, -1.0, 0.0, 0.0), y2), True


# ---- pooling and reshaping ------------------------------------------------------------------


def _build_maxpool(
    b: DagState, name: str, m: nn.MaxPool2d, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """MaxPool2d: 'max' neurons with weight-1 edges from the window's real input positions."""
    if m.return_indices:
        raise NotImplementedError(f"node {name!r}: return_indices")
    (kh, kw), (ph, pw), (dh, dw) = pair(m.kernel_size), pair(m.padding), pair(m.dilation)
    sh, sw = pair(m.stride if m.stride is not None else m.kernel_size)
    c, h, w = x.shape
    oh = pool_output_size(h, kh, sh, ph, dh, m.ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, dw, m.ceil_mode)
    out = np.empty((c, oh, ow), dtype=np.int64)
    for ch, i, j in np.ndindex(c, oh, ow):
        rows = [i * sh - ph + a * dh for a in range(kh)]
        cols = [j * sw - pw + a * dw for a in range(kw)]
        edges = [Edge(int(x[ch, r, q]), 1.0) for r in rows if 0 <= r < h
                 for q in cols if 0 <= q < w and x[ch, r, q] >= 0]  # -1: -inf padding
        if not edges:
            raise ValueError(f"node {name!r}: a window holds only -inf padding")
        out[ch, i, j] = b.new("max", edges, (ch, i, j))
    return out, False


def _build_constpad(
    b: DagState, name: str, m: nn.ConstantPad2d, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """ConstantPad2d: the input's neurons, surrounded by constant neurons (no edges, the value
    as their bias: paths start at them), or by -1 (no neuron) for -inf, which only a max-pool
    may read."""
    left, right, top, bottom = m.padding
    c, h, w = x.shape
    out = np.full((c, h + top + bottom, w + left + right), -1, dtype=np.int64)
    out[:, top:top + h, left:left + w] = x
    if m.value != -math.inf:
        for idx in np.ndindex(*out.shape):
            if not (top <= idx[1] < top + h and left <= idx[2] < left + w):
                out[idx] = b.new("id", [], idx, bias=float(m.value), has_bias=True)
    return out, False


def _build_avgpool(
    b: DagState, name: str, m: nn.AvgPool2d, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """AvgPool2d: identity neurons, edges 1/divisor from the window's real input positions."""
    (kh, kw), (ph, pw) = pair(m.kernel_size), pair(m.padding)
    sh, sw = pair(m.stride if m.stride is not None else m.kernel_size)
    c, h, w = x.shape
    oh = pool_output_size(h, kh, sh, ph, 1, m.ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, 1, m.ceil_mode)
    out = np.empty((c, oh, ow), dtype=np.int64)
    cip, dov = bool(m.count_include_pad), m.divisor_override
    for ch, i, j in np.ndindex(c, oh, ow):
        rows, cols = avgpool_window(i, h, kh, sh, ph), avgpool_window(j, w, kw, sw, pw)
        (r0, r1, _), (c0, c1, _) = rows, cols
        div = avgpool_divisor(rows, cols, cip, dov)
        edges = [Edge(int(x[ch, r, q]), 1.0 / div) for r in range(r0, r1) for q in range(c0, c1)]
        out[ch, i, j] = b.new("id", edges, (ch, i, j))
    return out, True


def _adaptive_size(m: nn.Module, h: int, w: int) -> tuple[int, int]:
    """Output (H, W) of an adaptive pool (None keeps the input size)."""
    os = m.output_size
    oh, ow = (os, os) if isinstance(os, int) else tuple(os)
    return (h if oh is None else int(oh)), (w if ow is None else int(ow))


def _build_adaptive(
    b: DagState, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """AdaptiveAvgPool2d / AdaptiveMaxPool2d with windows [floor(iI/O), ceil((i+1)I/O))."""
    is_max = isinstance(m, nn.AdaptiveMaxPool2d)
    if is_max and m.return_indices:
        raise NotImplementedError(f"node {name!r}: return_indices")
    c, h, w = x.shape
    oh, ow = _adaptive_size(m, h, w)
    out = np.empty((c, oh, ow), dtype=np.int64)
    for ch, i, j in np.ndindex(c, oh, ow):
        r0, r1 = adaptive_window(i, h, oh)
        c0, c1 = adaptive_window(j, w, ow)
        wt = 1.0 if is_max else 1.0 / ((r1 - r0) * (c1 - c0))
        edges = [Edge(int(x[ch, r, q]), wt) for r in range(r0, r1) for q in range(c0, c1)]
        out[ch, i, j] = b.new("max" if is_max else "id", edges, (ch, i, j))
    return out, not is_max


def _broadcast_index(t: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """For each entry of a per-sample tensor of ``shape``, the flat index of the entry of ``t``
    that torch's broadcasting (against the batched shape) pairs with it."""
    flat = np.arange(t.numel()).reshape(tuple(t.shape))
    return np.broadcast_to(flat, (1, *shape))[0]


def _build_affine(
    b: DagState, name: str, m: Affine, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Affine: one identity neuron per entry, its edge weighted by the paired weight entry
    (fixed 1 without weight), its bias the paired bias entry times ``sign``."""
    w = tensor_np(m.weight).reshape(-1) if m.weight is not None else None
    bias = tensor_np(m.bias).reshape(-1) if m.bias is not None else None
    wname = b.param(name, "weight", m.weight) if m.weight is not None else None
    bname = b.param(name, "bias", m.bias) if m.bias is not None else None
    wi = _broadcast_index(m.weight, x.shape) if m.weight is not None else None
    bi = _broadcast_index(m.bias, x.shape) if m.bias is not None else None
    out = np.empty(x.shape, dtype=np.int64)
    for idx in np.ndindex(*x.shape):
        if w is None:
            edge = Edge(int(x[idx]), 1.0)
        else:
            k = int(wi[idx])
            edge = Edge(int(x[idx]), w[k], wname, np.unravel_index(k, tuple(m.weight.shape)))
        kw: dict[str, Any] = {}
        if bias is not None:
            k = int(bi[idx])
            kw = {"bias": m.sign * bias[k], "has_bias": True, "bias_param": bname,
                  "bias_index": np.unravel_index(k, tuple(m.bias.shape))}
        out[idx] = b.new("id", [edge], idx, **kw)
    return out, True


def _build_flatten(
    b: DagState, name: str, m: nn.Flatten, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """nn.Flatten(1, -1): row-major re-indexing of (C, H, W)."""
    if m.start_dim != 1 or m.end_dim != -1:
        raise NotImplementedError(f"node {name!r}: only Flatten(1, -1) is supported")
    return x.reshape(-1), False


def _build_alias(
    b: DagState, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """nn.Identity / eval-mode Dropout: same neurons."""
    return x, False


RULES: dict[type, Callable[..., tuple[np.ndarray, bool]]] = {
    nn.Linear: _build_linear,
    nn.Conv2d: _build_conv2d,
    nn.BatchNorm1d: build_batchnorm,
    nn.BatchNorm2d: build_batchnorm,
    nn.ReLU: _build_relu,
    nn.ReLU6: _build_hardtanh,
    nn.Hardtanh: _build_hardtanh,
    nn.LeakyReLU: _build_leaky,
    nn.PReLU: _build_prelu,
    nn.MaxPool2d: _build_maxpool,
    nn.AvgPool2d: _build_avgpool,
    nn.AdaptiveAvgPool2d: _build_adaptive,
    nn.AdaptiveMaxPool2d: _build_adaptive,
    nn.Flatten: _build_flatten,
    nn.Identity: _build_alias,
    nn.Dropout: _build_alias,
    Affine: _build_affine,
    StdConv2d: _build_conv2d,
    nn.ConstantPad2d: _build_constpad,
    nn.ZeroPad2d: _build_constpad,
}
