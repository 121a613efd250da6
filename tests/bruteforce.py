"""Independent brute-force reference for path-lifting quantities of small ReLU networks.

Everything here is deliberately naive and independent of fxpath (never imported here):

* A :class:`Spec` describes a small network as a list of named nodes (torch modules or the
  string ops ``'add'``, ``'cat'``, ``'mean'``). ``Spec.build()`` gives a :class:`SpecNet`, an
  ``nn.Module`` whose forward is a static loop over the nodes (``torch.fx.symbolic_trace``-able);
  its submodules are registered under the node names, so parameters have ordinary state_dict
  names such as ``conv1.weight``.
* :func:`build_dag` reads the *current* parameters of a :class:`SpecNet` and builds the explicit
  neuron DAG (:class:`NeuronDAG`) with hand-written index loops (no torch conv / pool ops), in
  float64. It can be re-run after the module's parameters were pruned or rescaled; neuron ids,
  edge order and therefore path keys only depend on the spec, not on the parameter values.
* :func:`path_lifting` enumerates every path literally (DFS). Path-norms, path-metrics and path
  masses are computed from that enumeration. ``*_dp`` variants compute the same quantities by
  dynamic programming on the DAG (forward x backward of the path network); they only exist to
  speed up tests and are checked against the enumeration in ``tests/test_bruteforce.py``.

Math reference: ``docs/mathematics.md``, sections #relu-dag-networks,
#path-lifting-and-path-norms, #the-path-network, #the-path-metric and #path-magnitude-scores.
"""

from __future__ import annotations

import gc
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = [
    "Edge",
    "Neuron",
    "NeuronDAG",
    "PathKey",
    "Lifting",
    "Spec",
    "SpecNet",
    "Case",
    "build_dag",
    "module_output",
    "pool_output_size",
    "avgpool_window",
    "avgpool_divisor",
    "adaptive_window",
    "path_lifting",
    "path_neurons",
    "count_paths",
    "path_norm",
    "path_metric",
    "path_mass_through_edge",
    "path_mass_through_bias",
    "path_mass_through_neurons",
    "mass_by_parameter",
    "parameter_mask",
    "path_norm_dp",
    "mass_by_parameter_dp",
    "neuron_mass_dp",
    "mlp_with_bias",
    "mlp_no_bias",
    "conv_stride_pad_groups",
    "conv_bn",
    "bn_after_concat",
    "pools",
    "residual_add",
    "concat_net",
    "activations",
    "ACTIVATION_KINDS",
    "ALL_FACTORIES",
]

ACTS = ("input", "relu", "id", "max")

# A path is keyed by how it starts ('input' or 'bias'), its first neuron, and the sequence of
# edges it follows, each edge written (dst neuron id, index of the edge in dst's edge list).
# Edges (not neuron pairs) make parallel edges (e.g. ``x + x``) distinct paths.
PathKey = tuple[str, int, tuple[tuple[int, int], ...]]


# --------------------------------------------------------------------------------------------
# The neuron DAG
# --------------------------------------------------------------------------------------------


@dataclass
class Edge:
    """One weighted edge into a neuron and the torch parameter coordinate it came from."""

    src: int
    weight: float
    param: str | None = None  # state_dict name, None for fixed edges (pooling, rewrites, add)
    index: tuple[int, ...] | None = None  # coordinate inside that parameter


@dataclass
class Neuron:
    """One neuron: activation, incoming edges, and an optional bias with its attribution."""

    act: str  # 'input' | 'relu' | 'id' | 'max'
    edges: list[Edge] = field(default_factory=list)
    bias: float = 0.0
    has_bias: bool = False  # structural: bias paths start here (even when bias == 0)
    bias_param: str | None = None
    bias_index: tuple[int, ...] | None = None
    label: str = ""


class NeuronDAG:
    """Explicit neuron-level DAG; neuron ids are topologically ordered (edges go low -> high)."""

    def __init__(self, input_shape: Sequence[int]) -> None:
        """Create an empty DAG for one sample of per-sample shape ``input_shape``."""
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in input_shape)
        self.neurons: list[Neuron] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.param_shapes: dict[str, tuple[int, ...]] = {}
        self.node_neurons: dict[str, np.ndarray] = {}  # spec node name -> array of neuron ids

    def add_neuron(
        self,
        act: str,
        edges: Iterable[Edge] = (),
        bias: float = 0.0,
        has_bias: bool = False,
        bias_param: str | None = None,
        bias_index: tuple[int, ...] | None = None,
        label: str = "",
    ) -> int:
        """Append a neuron and return its id."""
        if act not in ACTS:
            raise ValueError(f"unknown activation {act!r}")
        nid = len(self.neurons)
        edges = list(edges)
        for e in edges:
            if not 0 <= e.src < nid:
                raise ValueError(f"edge from {e.src} into {nid} breaks topological order")
        neuron = Neuron(act, edges, float(bias), bool(has_bias), bias_param, bias_index, label)
        self.neurons.append(neuron)
        if act == "input":
            self.inputs.append(nid)
        return nid

    def __len__(self) -> int:
        """Number of neurons."""
        return len(self.neurons)

    def num_edges(self) -> int:
        """Number of edges."""
        return sum(len(n.edges) for n in self.neurons)

    def children(self) -> list[list[tuple[int, int]]]:
        """For each neuron, its outgoing edges as (dst, index of the edge in dst.edges)."""
        out: list[list[tuple[int, int]]] = [[] for _ in self.neurons]
        for dst, n in enumerate(self.neurons):
            for k, e in enumerate(n.edges):
                out[e.src].append((dst, k))
        return out

    def forward(self, x: Any) -> np.ndarray:
        """Evaluate the DAG on one sample (per-sample shape or batch of 1); flat output vector."""
        flat = _to_numpy(x).reshape(-1)
        if flat.size != len(self.inputs):
            raise ValueError(f"input has {flat.size} entries, DAG has {len(self.inputs)} inputs")
        vals = np.zeros(len(self.neurons), dtype=np.float64)
        vals[self.inputs] = flat
        for nid, n in enumerate(self.neurons):
            if n.act == "input":
                continue
            terms = [e.weight * vals[e.src] for e in n.edges]
            if n.act == "max":
                if not terms:
                    raise ValueError(f"max neuron {nid} ({n.label}) has no inputs")
                v = max(terms) + n.bias
            else:
                v = math.fsum(terms) + n.bias
            if n.act == "relu":
                v = max(v, 0.0)
            vals[nid] = v
        return vals[self.outputs].copy()


def _to_numpy(x: Any) -> np.ndarray:
    """Convert a torch tensor / array-like to a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Spec and torch module
# --------------------------------------------------------------------------------------------

STRING_OPS = ("add", "cat", "mean")
#: re-indexing string ops with arguments: ``"chunk:K:I"`` is ``torch.chunk(x, K, 1)[I]`` and
#: ``"split:S:I"`` is ``torch.split(x, S, 1)[I]`` (channel pieces of one multi-result op)
PIECE_OPS = ("chunk", "split")


def _piece_op(op: str) -> tuple[str, int, int] | None:
    """``(kind, K or S, I)`` of a piece op string, else None."""
    parts = op.split(":")
    if len(parts) == 3 and parts[0] in PIECE_OPS:
        return parts[0], int(parts[1]), int(parts[2])
    return None


def _piece(x: torch.Tensor, op: str) -> torch.Tensor:
    kind, n, i = _piece_op(op)  # type: ignore[misc]
    return (torch.chunk(x, n, dim=1) if kind == "chunk" else torch.split(x, n, dim=1))[i]
_RESERVED = {"input_shape", "fold_bn", "spec_nodes", "spec_outputs"}


class SpecNet(nn.Module):
    """nn.Module running a spec: a static loop over named nodes (fx-traceable)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        nodes: Sequence[tuple[str, nn.Module | str, Sequence[str]]],
        outputs: Sequence[str],
        fold_bn: bool = True,
    ) -> None:
        """Register the module nodes under their names and remember the graph."""
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.fold_bn = bool(fold_bn)
        self.spec_nodes: list[tuple[str, str, tuple[str, ...]]] = []
        for name, op, inputs in nodes:
            if isinstance(op, nn.Module):
                self.add_module(name, op)
                kind = "module"
            elif op in STRING_OPS or _piece_op(op) is not None:
                kind = op
            else:
                raise ValueError(f"node {name!r}: unknown op {op!r}")
            self.spec_nodes.append((name, kind, tuple(inputs)))
        self.spec_outputs: tuple[str, ...] = tuple(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the nodes in order; one tensor for one output, else a tuple."""
        env = {"x": x}
        for name, kind, inputs in self.spec_nodes:
            args = [env[i] for i in inputs]
            if kind == "module":
                env[name] = getattr(self, name)(*args)
            elif kind == "add":
                out = args[0]
                for a in args[1:]:
                    out = torch.add(out, a)
                env[name] = out
            elif kind == "cat":
                env[name] = torch.cat(args, dim=1)
            elif kind not in STRING_OPS:  # a channel piece of chunk / split
                env[name] = _piece(args[0], kind)
            else:  # 'mean': global mean over H, W
                env[name] = torch.mean(args[0], dim=(2, 3))
        outs = tuple(env[o] for o in self.spec_outputs)
        return outs[0] if len(outs) == 1 else outs


class Spec:
    """Small graph description: named nodes fed by earlier nodes (the input is called 'x')."""

    def __init__(self, input_shape: Sequence[int], fold_bn: bool = True) -> None:
        """Start an empty spec for per-sample input shape ``input_shape``."""
        self.input_shape = tuple(int(s) for s in input_shape)
        self.fold_bn = fold_bn
        self.nodes: list[tuple[str, nn.Module | str, tuple[str, ...]]] = []
        self.outputs: list[str] = []

    def node(self, name: str, op: nn.Module | str, *inputs: str) -> Spec:
        """Add a node (inputs default to the previous node, or 'x'); returns self."""
        known = {"x"} | {n for n, _, _ in self.nodes}
        if (not name.isidentifier() or name in known or name in _RESERVED
                or hasattr(SpecNet, name)):
            raise ValueError(f"bad or duplicate node name {name!r}")
        if not inputs:
            inputs = (self.nodes[-1][0] if self.nodes else "x",)
        for i in inputs:
            if i not in known:
                raise ValueError(f"node {name!r}: unknown input {i!r}")
        self.nodes.append((name, op, tuple(inputs)))
        return self

    def output(self, *names: str) -> Spec:
        """Mark the output nodes (in order); returns self."""
        self.outputs = list(names)
        return self

    def build(self) -> SpecNet:
        """Return the SpecNet (in eval mode) running this spec."""
        outputs = self.outputs or [self.nodes[-1][0]]
        if len(set(outputs)) != len(outputs):
            raise ValueError("duplicate outputs")
        return SpecNet(self.input_shape, self.nodes, outputs, self.fold_bn).eval()


def module_output(module: nn.Module, x: Any) -> np.ndarray:
    """Run a SpecNet on one sample and return all outputs flattened and concatenated (float64)."""
    param = next(iter(module.parameters()), None)
    dtype = param.dtype if param is not None else torch.float64
    t = torch.as_tensor(_to_numpy(x), dtype=dtype)
    if tuple(t.shape) == tuple(module.input_shape):
        t = t.unsqueeze(0)
    with torch.no_grad():
        out = module(t)
    outs = out if isinstance(out, tuple) else (out,)
    return np.concatenate([_to_numpy(o[0]).reshape(-1) for o in outs])


# --------------------------------------------------------------------------------------------
# Index arithmetic shared with the tests
# --------------------------------------------------------------------------------------------


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


def _pair(v: Any) -> tuple[int, int]:
    """Normalise an int-or-pair hyper-parameter to a pair of ints."""
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _np(t: torch.Tensor) -> np.ndarray:
    """Detached float64 numpy copy of a tensor."""
    return t.detach().to(torch.float64).cpu().numpy()


# --------------------------------------------------------------------------------------------
# DAG builder
# --------------------------------------------------------------------------------------------


class _Builder:
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


def build_dag(net: SpecNet) -> NeuronDAG:
    """Build the explicit float64 neuron DAG from the current parameters of a SpecNet."""
    b = _Builder(net)
    x = np.empty(net.input_shape, dtype=np.int64)
    b.current = "x"
    for idx in np.ndindex(*net.input_shape):
        x[idx] = b.new("input", idx=idx)
    b.env["x"] = x
    for name, kind, inputs in net.spec_nodes:
        b.current = name
        args = [b.env[i] for i in inputs]
        if kind == "module":
            out, fresh = _build_module(b, name, getattr(net, name), inputs, args)
        elif kind in _STRING_BUILDERS:
            out, fresh = _STRING_BUILDERS[kind](b, args)
        else:  # a channel piece: the same neurons, re-indexed (the numpy twin of `_piece`)
            channels = _piece(torch.arange(args[0].shape[0]).reshape(1, -1), kind)[0]
            out, fresh = args[0][channels.numpy()], False
        b.env[name] = out
        b.fresh[name] = fresh
    b.dag.node_neurons = dict(b.env)
    b.dag.outputs = [int(n) for o in net.spec_outputs for n in b.env[o].reshape(-1)]
    if len(set(b.dag.outputs)) != len(b.dag.outputs):
        raise ValueError("a neuron appears twice among the outputs")
    return b.dag


def _build_module(
    b: _Builder, name: str, m: nn.Module, inputs: tuple[str, ...], args: list[np.ndarray]
) -> tuple[np.ndarray, bool]:
    """Dispatch one module node on its exact type."""
    fn = _MODULE_BUILDERS.get(type(m))
    if fn is None:
        raise NotImplementedError(f"node {name!r}: {type(m).__name__} is not supported")
    if len(args) != 1:
        raise ValueError(f"node {name!r}: modules take exactly one input")
    return fn(b, name, m, inputs[0], args[0])


# ---- string ops -----------------------------------------------------------------------------


def _build_add(b: _Builder, args: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """Residual add: identity neurons with weight-1 edges from every operand."""
    shape = args[0].shape
    if any(a.shape != shape for a in args):
        raise ValueError(f"add: shape mismatch {[a.shape for a in args]}")
    out = np.empty(shape, dtype=np.int64)
    for idx in np.ndindex(*shape):
        out[idx] = b.new("id", [Edge(int(a[idx]), 1.0) for a in args], idx)
    return out, True


def _build_cat(b: _Builder, args: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """Concat along channels (per-sample axis 0): pure re-indexing."""
    return np.concatenate(args, axis=0), False


def _build_mean(b: _Builder, args: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """Global mean over H, W: identity neurons with edges 1/(H*W)."""
    x = args[0]
    c, h, w = x.shape
    out = np.empty((c,), dtype=np.int64)
    for ch in range(c):
        edges = [Edge(int(x[ch, i, j]), 1.0 / (h * w)) for i in range(h) for j in range(w)]
        out[ch] = b.new("id", edges, (ch,))
    return out, True


_STRING_BUILDERS: dict[str, Callable[[_Builder, list[np.ndarray]], tuple[np.ndarray, bool]]] = {
    "add": _build_add,
    "cat": _build_cat,
    "mean": _build_mean,
}


# ---- linear layers --------------------------------------------------------------------------


def _bias_kw(bname: str | None, bias: np.ndarray | None, o: int) -> dict[str, Any]:
    """Keyword arguments of a neuron carrying bias[o] of parameter ``bname`` (or none)."""
    if bias is None:
        return {}
    return {"bias": bias[o], "has_bias": True, "bias_param": bname, "bias_index": (o,)}


def _build_linear(
    b: _Builder, name: str, m: nn.Linear, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """nn.Linear on per-sample shape (F,)."""
    if x.ndim != 1:
        raise ValueError(f"node {name!r}: Linear expects a flat (F,) input, got {x.shape}")
    w = _np(m.weight)
    wname = b.param(name, "weight", m.weight)
    bias = _np(m.bias) if m.bias is not None else None
    bname = b.param(name, "bias", m.bias) if m.bias is not None else None
    out = np.empty((w.shape[0],), dtype=np.int64)
    for o in range(w.shape[0]):
        edges = [Edge(int(x[f]), w[o, f], wname, (o, f)) for f in range(w.shape[1])]
        out[o] = b.new("id", edges, (o,), **_bias_kw(bname, bias, o))
    return out, True


def _conv_padding(name: str, m: nn.Conv2d) -> tuple[int, int]:
    """Zero padding of a Conv2d as a pair (refuses other padding modes / 'same')."""
    if m.padding_mode != "zeros":
        raise NotImplementedError(f"node {name!r}: padding_mode {m.padding_mode!r}")
    if isinstance(m.padding, str):
        if m.padding != "valid":
            raise NotImplementedError(f"node {name!r}: padding={m.padding!r}")
        return 0, 0
    return _pair(m.padding)


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
                    edges.append(Edge(int(x[cin0 + c, r, col]), w[o, c, a, bb], wname,
                                      (o, c, a, bb)))
    return edges


def _build_conv2d(
    b: _Builder, name: str, m: nn.Conv2d, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """nn.Conv2d (stride, zero padding, dilation, groups, optional bias) by explicit loops."""
    ph, pw = _conv_padding(name, m)
    (sh, sw), (dh, dw) = _pair(m.stride), _pair(m.dilation)
    w = _np(m.weight)
    wname = b.param(name, "weight", m.weight)
    bias = _np(m.bias) if m.bias is not None else None
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
                out[o, i, j] = b.new("id", edges, (o, i, j), **_bias_kw(bname, bias, o))
    return out, True


def _bn_affine(name: str, m: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, ...]:
    """(s, mean, g, beta) of a frozen BN: s = g / sqrt(var + eps)."""
    if m.training or m.running_mean is None or m.running_var is None:
        raise ValueError(f"node {name!r}: BatchNorm must be in eval mode with running stats")
    mean, var = _np(m.running_mean), _np(m.running_var)
    g = _np(m.weight) if m.weight is not None else np.ones_like(mean)
    beta = _np(m.bias) if m.bias is not None else np.zeros_like(mean)
    s = g / np.sqrt(var + m.eps)
    return s, mean, g, beta


def _build_batchnorm(
    b: _Builder, name: str, m: nn.modules.batchnorm._BatchNorm, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Frozen BN: folded into a lone preceding conv/linear, else a standalone affine layer."""
    s, mean, _, beta = _bn_affine(name, m)
    wname = b.param(name, "weight", m.weight) if m.weight is not None else None
    bname = b.param(name, "bias", m.bias) if m.bias is not None else None
    src_module = getattr(b.net, src, None) if b.kinds.get(src) == "module" else None
    foldable = type(src_module) in (nn.Conv2d, nn.Linear) and b.is_lone_private(src)
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
    b: _Builder, name: str, m: nn.ReLU, src: str, x: np.ndarray
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
    b: _Builder, x: np.ndarray, consts: tuple[float, float, float, float],
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
    b: _Builder, name: str, m: nn.Hardtanh, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Hardtanh(lo, hi) (and ReLU6 = Hardtanh(0, 6)): relu(x - lo) - relu(x - hi) + lo."""
    lo, hi = float(m.min_val), float(m.max_val)
    return _two_relus(b, x, (-lo, 1.0, -hi, lo), lambda idx: Edge(-1, -1.0)), True


def _build_leaky(
    b: _Builder, name: str, m: nn.LeakyReLU, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """LeakyReLU(a): relu(x) - a * relu(-x)."""
    a = float(m.negative_slope)
    return _two_relus(b, x, (0.0, -1.0, 0.0, 0.0), lambda idx: Edge(-1, -a)), True


def _build_prelu(
    b: _Builder, name: str, m: nn.PReLU, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """PReLU: relu(x) - a_c * relu(-x); the r2 -> y edge (-a_c) is attributed to weight[c]."""
    a = _np(m.weight)
    wname = b.param(name, "weight", m.weight)

    def y2(idx: tuple[int, ...]) -> Edge:
        c = idx[0] if a.size > 1 else 0
        return Edge(-1, -a[c], wname, (c,))

    return _two_relus(b, x, (0.0, -1.0, 0.0, 0.0), y2), True


# ---- pooling and reshaping ------------------------------------------------------------------


def _build_maxpool(
    b: _Builder, name: str, m: nn.MaxPool2d, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """MaxPool2d: 'max' neurons with weight-1 edges from the window's real input positions."""
    if m.return_indices:
        raise NotImplementedError(f"node {name!r}: return_indices")
    (kh, kw), (ph, pw), (dh, dw) = _pair(m.kernel_size), _pair(m.padding), _pair(m.dilation)
    sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
    c, h, w = x.shape
    oh = pool_output_size(h, kh, sh, ph, dh, m.ceil_mode)
    ow = pool_output_size(w, kw, sw, pw, dw, m.ceil_mode)
    out = np.empty((c, oh, ow), dtype=np.int64)
    for ch, i, j in np.ndindex(c, oh, ow):
        rows = [i * sh - ph + a * dh for a in range(kh)]
        cols = [j * sw - pw + a * dw for a in range(kw)]
        edges = [Edge(int(x[ch, r, q]), 1.0) for r in rows if 0 <= r < h
                 for q in cols if 0 <= q < w]
        out[ch, i, j] = b.new("max", edges, (ch, i, j))
    return out, False


def _build_avgpool(
    b: _Builder, name: str, m: nn.AvgPool2d, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """AvgPool2d: identity neurons, edges 1/divisor from the window's real input positions."""
    (kh, kw), (ph, pw) = _pair(m.kernel_size), _pair(m.padding)
    sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
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
    b: _Builder, name: str, m: nn.Module, src: str, x: np.ndarray
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


def _build_flatten(
    b: _Builder, name: str, m: nn.Flatten, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """nn.Flatten(1, -1): row-major re-indexing of (C, H, W)."""
    if m.start_dim != 1 or m.end_dim != -1:
        raise NotImplementedError(f"node {name!r}: only Flatten(1, -1) is supported")
    return x.reshape(-1), False


def _build_alias(
    b: _Builder, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """nn.Identity / eval-mode Dropout: same neurons."""
    return x, False


_MODULE_BUILDERS: dict[type, Callable[..., tuple[np.ndarray, bool]]] = {
    nn.Linear: _build_linear,
    nn.Conv2d: _build_conv2d,
    nn.BatchNorm1d: _build_batchnorm,
    nn.BatchNorm2d: _build_batchnorm,
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
}


# --------------------------------------------------------------------------------------------
# Path enumeration (honest DFS) and what is derived from it
# --------------------------------------------------------------------------------------------


def _reaches_output(dag: NeuronDAG) -> list[bool]:
    """For each neuron, whether some output is reachable from it (to skip dead branches)."""
    reach = [False] * len(dag.neurons)
    for o in dag.outputs:
        reach[o] = True
    for nid in range(len(dag.neurons) - 1, -1, -1):
        if reach[nid]:
            for e in dag.neurons[nid].edges:
                reach[e.src] = True
    return reach


def path_lifting(dag: NeuronDAG) -> dict[PathKey, float]:
    """Enumerate every path (from inputs, factor 1, and from biased neurons, factor = bias).

    Keys are ``(kind, start, ((dst, k), ...))`` with kind 'input' or 'bias'; zero-valued
    (structural) paths are included, so DAGs of one spec share their keys.
    """
    children = dag.children()
    outs = set(dag.outputs)
    reach = _reaches_output(dag)
    result: dict[PathKey, float] = {}
    trail: list[tuple[int, int]] = []

    def dfs(node: int, value: float, kind: str, start: int) -> None:
        if node in outs:
            result[(kind, start, tuple(trail))] = value
        for dst, k in children[node]:
            if reach[dst]:
                trail.append((dst, k))
                dfs(dst, value * dag.neurons[dst].edges[k].weight, kind, start)
                trail.pop()

    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of small tuples: the cyclic GC only slows this down
    try:
        for nid in dag.inputs:
            if reach[nid]:
                dfs(nid, 1.0, "input", nid)
        for nid, n in enumerate(dag.neurons):
            if n.has_bias and reach[nid]:
                dfs(nid, n.bias, "bias", nid)
    finally:
        if gc_was_enabled:
            gc.enable()
    return result


def path_neurons(key: PathKey) -> tuple[int, ...]:
    """The neuron ids visited by a path, in order."""
    return (key[1],) + tuple(dst for dst, _ in key[2])


def count_paths(dag: NeuronDAG) -> int:
    """Number of paths (structural, by dynamic programming; cheap sanity check before DFS)."""
    count = [1 if (n.act == "input" or n.has_bias) else 0 for n in dag.neurons]
    for nid, n in enumerate(dag.neurons):
        count[nid] += sum(count[e.src] for e in n.edges)
    return sum(count[o] for o in dag.outputs)


Lifting = NeuronDAG | dict[PathKey, float]


def _lifting(obj: Lifting) -> dict[PathKey, float]:
    """A DAG's path lifting, or the lifting itself when one is passed (to enumerate once)."""
    return obj if isinstance(obj, dict) else path_lifting(obj)


def path_norm(dag: Lifting, q: float = 1.0) -> float:
    """l^q path-norm (sum_p |Phi_p|^q)^(1/q) of a DAG (or of its path lifting), by enumeration."""
    vals = np.abs(np.fromiter(_lifting(dag).values(), dtype=np.float64))
    if math.isinf(q):
        return float(vals.max(initial=0.0))
    return float(np.sum(vals**q) ** (1.0 / q))


def path_metric(dag_a: Lifting, dag_b: Lifting) -> float:
    """l^1 path-metric sum_p |Phi_p(a) - Phi_p(b)| over the union of path keys."""
    pa, pb = _lifting(dag_a), _lifting(dag_b)
    return float(math.fsum(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) for k in pa.keys() | pb.keys()))


def path_mass_through_edge(dag: Lifting, dst: int, k: int) -> float:
    """Sum of |Phi_p| over the paths through edge k of neuron dst."""
    return math.fsum(abs(v) for key, v in _lifting(dag).items() if (dst, k) in key[2])


def path_mass_through_bias(dag: Lifting, neuron: int) -> float:
    """Sum of |Phi_p| over the paths starting at the bias of ``neuron``."""
    return math.fsum(abs(v) for key, v in _lifting(dag).items()
                     if key[0] == "bias" and key[1] == neuron)


def path_mass_through_neurons(dag: Lifting, neurons: Iterable[int]) -> float:
    """Sum of |Phi_p| over the paths visiting at least one of ``neurons`` (e.g. a channel)."""
    ids = {int(n) for n in neurons}
    return math.fsum(abs(v) for key, v in _lifting(dag).items()
                     if ids.intersection(path_neurons(key)))


def parameter_mask(dag: NeuronDAG) -> dict[str, np.ndarray]:
    """For each attributed parameter, a boolean array: which coordinates are DAG edges/biases."""
    masks = {name: np.zeros(shape, dtype=bool) for name, shape in dag.param_shapes.items()}
    for n in dag.neurons:
        if n.has_bias and n.bias_param is not None:
            masks[n.bias_param][n.bias_index] = True
        for e in n.edges:
            if e.param is not None:
                masks[e.param][e.index] = True
    return {k: v for k, v in masks.items() if v.any()}


def mass_by_parameter(
    dag: NeuronDAG, paths: dict[PathKey, float] | None = None
) -> dict[str, np.ndarray]:
    """Per parameter coordinate that is an edge weight or bias: sum of |Phi_p| through it.

    A coordinate used by several edges (a sliding conv kernel) sums over all of them. Keys are
    exactly those of :func:`parameter_mask`; coordinates that are not edges/biases hold 0.
    ``paths`` may pass ``path_lifting(dag)`` when it was already computed.
    """
    mask = parameter_mask(dag)
    mass = {name: np.zeros(m.shape, dtype=np.float64) for name, m in mask.items()}
    for key, value in (path_lifting(dag) if paths is None else paths).items():
        a = abs(value)
        kind, start, trail = key
        if kind == "bias":
            n = dag.neurons[start]
            if n.bias_param is not None:
                mass[n.bias_param][n.bias_index] += a
        for dst, k in trail:
            e = dag.neurons[dst].edges[k]
            if e.param is not None:
                mass[e.param][e.index] += a
    return mass


# --------------------------------------------------------------------------------------------
# Dynamic-programming versions (speed only; checked equal to enumeration in the tests)
# --------------------------------------------------------------------------------------------


def _dp_forward(dag: NeuronDAG, q: float) -> np.ndarray:
    """Path network forward on all-ones input: sum of |Phi|^q over paths ending at each neuron."""
    fwd = np.zeros(len(dag.neurons))
    for nid, n in enumerate(dag.neurons):
        v = 1.0 if n.act == "input" else 0.0
        if n.has_bias:
            v += abs(n.bias) ** q
        fwd[nid] = v + math.fsum(abs(e.weight) ** q * fwd[e.src] for e in n.edges)
    return fwd


def _dp_backward(dag: NeuronDAG, q: float) -> np.ndarray:
    """Path network backward: sum of |prod weights|^q over the tails from each neuron."""
    bwd = np.zeros(len(dag.neurons))
    bwd[dag.outputs] = 1.0
    for nid in range(len(dag.neurons) - 1, -1, -1):
        for e in dag.neurons[nid].edges:
            bwd[e.src] += abs(e.weight) ** q * bwd[nid]
    return bwd


def path_norm_dp(dag: NeuronDAG, q: float = 1.0) -> float:
    """Same as :func:`path_norm` (finite q) by one pass of the path network."""
    fwd = _dp_forward(dag, q)
    return float(math.fsum(fwd[dag.outputs]) ** (1.0 / q))


def neuron_mass_dp(dag: NeuronDAG) -> np.ndarray:
    """Per neuron, sum of |Phi_p| over the paths through it (forward x backward)."""
    return _dp_forward(dag, 1.0) * _dp_backward(dag, 1.0)


def mass_by_parameter_dp(dag: NeuronDAG) -> dict[str, np.ndarray]:
    """Same as :func:`mass_by_parameter` by forward x backward of the path network."""
    fwd, bwd = _dp_forward(dag, 1.0), _dp_backward(dag, 1.0)
    mass = {name: np.zeros(m.shape, dtype=np.float64) for name, m in parameter_mask(dag).items()}
    for nid, n in enumerate(dag.neurons):
        if n.has_bias and n.bias_param is not None:
            mass[n.bias_param][n.bias_index] += abs(n.bias) * bwd[nid]
        for e in n.edges:
            if e.param is not None:
                mass[e.param][e.index] += fwd[e.src] * abs(e.weight) * bwd[nid]
    return mass


# --------------------------------------------------------------------------------------------
# Ready-made tiny networks
# --------------------------------------------------------------------------------------------


class Case(NamedTuple):
    """A factory result: eval-mode module, per-sample input shape, DAG builder."""

    module: SpecNet
    input_shape: tuple[int, ...]
    build: Callable[[SpecNet], NeuronDAG]


def _randomize(net: nn.Module) -> None:
    """Random BN affine parameters and running stats (non-zero biases) and PReLU slopes."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                sign = torch.where(torch.rand(c) < 0.25, -1.0, 1.0)
                if m.weight is not None:
                    m.weight.copy_(sign * (0.5 + torch.rand(c)))
                    m.bias.copy_(0.5 * torch.randn(c))
                m.running_mean.copy_(0.5 * torch.randn(c))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape) - 0.5)


def _make(fn: Callable[[], Spec], seed: int, dtype: torch.dtype) -> Case:
    """Build a spec under a fixed seed, randomise, cast, eval."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = fn().build()
        _randomize(net)
    net = net.to(dtype).eval()
    return Case(net, net.input_shape, build_dag)


def mlp_no_bias(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Bias-free 2-layer MLP 4 -> 5 -> 3 (closed-form path-norm)."""
    def spec() -> Spec:
        return (Spec((4,)).node("fc1", nn.Linear(4, 5, bias=False)).node("relu1", nn.ReLU())
                .node("fc2", nn.Linear(5, 3, bias=False)))
    return _make(spec, seed, dtype)


def mlp_with_bias(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """MLP 6 -> 5 -> 4 -> 3 with biases and ReLUs."""
    def spec() -> Spec:
        return (Spec((6,)).node("fc1", nn.Linear(6, 5)).node("relu1", nn.ReLU())
                .node("fc2", nn.Linear(5, 4)).node("relu2", nn.ReLU())
                .node("fc3", nn.Linear(4, 3)))
    return _make(spec, seed, dtype)


def conv_stride_pad_groups(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Grouped strided padded conv, then a grouped dilated bias-free conv, mean, linear."""
    def spec() -> Spec:
        return (Spec((2, 6, 6))
                .node("conv1", nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2))
                .node("relu1", nn.ReLU())
                .node("conv2", nn.Conv2d(4, 4, (3, 2), stride=(1, 2), padding=(2, 1),
                                         dilation=(2, 1), groups=2, bias=False))
                .node("relu2", nn.ReLU())
                .node("pool", "mean")
                .node("fc", nn.Linear(4, 2)))
    return _make(spec, seed, dtype)


def conv_bn(fold: bool = True, seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """conv(bias)-BN-ReLU, conv(no bias)-BN-ReLU, flatten, linear-BN1d; ``fold`` sets fold_bn."""
    def spec() -> Spec:
        return (Spec((2, 5, 5), fold_bn=fold)
                .node("conv1", nn.Conv2d(2, 3, 3, padding=1)).node("bn1", nn.BatchNorm2d(3))
                .node("relu1", nn.ReLU())
                .node("conv2", nn.Conv2d(3, 2, 3, stride=2, bias=False))
                .node("bn2", nn.BatchNorm2d(2)).node("relu2", nn.ReLU())
                .node("flat", nn.Flatten())
                .node("fc", nn.Linear(8, 3)).node("bn3", nn.BatchNorm1d(3)))
    return _make(spec, seed, dtype)


def bn_after_concat(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Standalone BNs: after a concat, and after a conv with two consumers; two outputs."""
    def spec() -> Spec:
        return (Spec((2, 5, 5), fold_bn=True)
                .node("conv_a", nn.Conv2d(2, 2, 3, padding=1), "x")
                .node("conv_b", nn.Conv2d(2, 1, 1), "x")
                .node("cat", "cat", "conv_a", "conv_b")
                .node("bn", nn.BatchNorm2d(3)).node("relu", nn.ReLU())
                .node("pool", "mean").node("fc", nn.Linear(3, 2))
                .node("bn_b", nn.BatchNorm2d(1), "conv_b").node("relu_b", nn.ReLU())
                .node("pool_b", "mean")
                .output("fc", "pool_b"))
    return _make(spec, seed, dtype)


def pools(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Avg-pools (ceil_mode, count_include_pad=False, divisor_override), max ceil_mode, adaptive."""
    def spec() -> Spec:
        return (Spec((1, 7, 7))
                .node("conv1", nn.Conv2d(1, 2, 3, padding=1)).node("relu1", nn.ReLU())
                .node("avg_a", nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                            count_include_pad=False), "relu1")
                .node("avg_b", nn.AvgPool2d(2, stride=2, padding=1, ceil_mode=True,
                                            divisor_override=3), "relu1")
                .node("max_a", nn.MaxPool2d(3, stride=2, ceil_mode=True), "avg_a")
                .node("amax", nn.AdaptiveMaxPool2d(3), "avg_b")
                .node("aavg", nn.AdaptiveAvgPool2d((3, 2)), "avg_b")
                .node("flat_m", nn.Flatten(), "max_a")
                .node("flat_x", nn.Flatten(), "amax")
                .node("flat_v", nn.Flatten(), "aavg")
                .node("feats", "cat", "flat_m", "flat_x", "flat_v")
                .node("fc", nn.Linear(8 + 18 + 12, 3)))
    return _make(spec, seed, dtype)


def residual_add(fold: bool = True, seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Basic residual block: conv-BN-ReLU-conv-BN + x, ReLU, mean, linear."""
    def spec() -> Spec:
        return (Spec((2, 5, 5), fold_bn=fold)
                .node("conv1", nn.Conv2d(2, 2, 3, padding=1, bias=False))
                .node("bn1", nn.BatchNorm2d(2)).node("relu1", nn.ReLU())
                .node("conv2", nn.Conv2d(2, 2, 3, padding=1, bias=False))
                .node("bn2", nn.BatchNorm2d(2))
                .node("res", "add", "bn2", "x").node("relu2", nn.ReLU())
                .node("pool", "mean").node("fc", nn.Linear(2, 2)))
    return _make(spec, seed, dtype)


def concat_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Two conv branches and the input concatenated, 1x1 conv, two heads (fc and mean)."""
    def spec() -> Spec:
        return (Spec((2, 4, 4))
                .node("b1", nn.Conv2d(2, 1, 1), "x")
                .node("b2", nn.Conv2d(2, 2, 3, padding=1), "x").node("relu_b2", nn.ReLU())
                .node("cat", "cat", "b1", "relu_b2", "x")
                .node("mix", nn.Conv2d(5, 2, 1)).node("relu", nn.ReLU())
                .node("pool", nn.MaxPool2d(2))
                .node("flat", nn.Flatten()).node("fc", nn.Linear(8, 2))
                .node("aux", "mean", "cat")
                .output("fc", "aux"))
    return _make(spec, seed, dtype)


def split_chunk_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """A conv whose 5 channels are chunked (3 + 2) and split (2 + 2 + 1); the pieces feed a
    residual add, a second conv and a concat, one piece is left unused."""
    def spec() -> Spec:
        return (Spec((2, 4, 4))
                .node("stem", nn.Conv2d(2, 5, 3, padding=1)).node("relu", nn.ReLU())
                .node("c0", "chunk:2:0", "relu").node("c1", "chunk:2:1", "relu")
                .node("s0", "split:2:0", "relu").node("s2", "split:2:2", "relu")
                .node("conv", nn.Conv2d(2, 2, 3, padding=1), "c1").node("r2", nn.ReLU())
                .node("res", "add", "r2", "s0")
                .node("cat", "cat", "c0", "res", "s2")
                .node("pool", nn.MaxPool2d(2)).node("flat", nn.Flatten())
                .node("fc", nn.Linear(6 * 2 * 2, 3)))
    return _make(spec, seed, dtype)


def _act(kind: str, channels: int) -> nn.Module:
    """The activation module for ``activations(kind)``."""
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "leaky": lambda: nn.LeakyReLU(0.1),
        "hardtanh": lambda: nn.Hardtanh(-0.5, 0.75),
        "prelu": lambda: nn.PReLU(channels),
        "prelu1": lambda: nn.PReLU(1),
    }
    if kind not in table:
        raise ValueError(f"unknown activation kind {kind!r}")
    return table[kind]()


def activations(kind: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """conv -> act -> conv(stride 2) -> flatten -> linear -> act -> linear; ``kind`` is one of
    relu / relu6 / leaky / hardtanh / prelu (per-channel) / prelu1 (single parameter)."""
    def spec() -> Spec:
        return (Spec((1, 4, 4))
                .node("conv1", nn.Conv2d(1, 2, 3, padding=1)).node("act1", _act(kind, 2))
                .node("conv2", nn.Conv2d(2, 2, 3, stride=2, padding=1))
                .node("flat", nn.Flatten()).node("fc1", nn.Linear(8, 3))
                .node("act2", _act(kind, 3)).node("fc2", nn.Linear(3, 2)))
    return _make(spec, seed, dtype)


ACTIVATION_KINDS = ("relu", "relu6", "leaky", "hardtanh", "prelu", "prelu1")

ALL_FACTORIES: dict[str, Callable[[], Case]] = {
    "mlp_no_bias": mlp_no_bias,
    "mlp_with_bias": mlp_with_bias,
    "conv_stride_pad_groups": conv_stride_pad_groups,
    "conv_bn_fold": lambda: conv_bn(fold=True),
    "conv_bn_nofold": lambda: conv_bn(fold=False),
    "bn_after_concat": bn_after_concat,
    "pools": pools,
    "residual_add_fold": lambda: residual_add(fold=True),
    "residual_add_nofold": lambda: residual_add(fold=False),
    "concat_net": concat_net,
    "split_chunk_net": split_chunk_net,
    **{f"activations_{k}": (lambda k=k: activations(k)) for k in ACTIVATION_KINDS},
}
