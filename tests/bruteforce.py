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
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "Edge",
    "Neuron",
    "NeuronDAG",
    "PathKey",
    "Lifting",
    "Spec",
    "SpecNet",
    "Affine",
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
    "learnable_affine_net",
    "padded_net",
    "derived_weights_net",
    "StdConv2d",
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


class Affine(nn.Module):
    """``x * weight + sign * bias`` with parameters broadcast against the batched input (a
    learnable scalar or per-channel affine, a layer scale, a learnable bias); either may be
    omitted (shape None)."""

    def __init__(self, weight_shape: Sequence[int] | None, bias_shape: Sequence[int] | None,
                 sign: float = 1.0) -> None:
        super().__init__()
        self.sign = sign
        self.weight = nn.Parameter(torch.randn(*weight_shape)) if weight_shape else None
        self.bias = nn.Parameter(torch.randn(*bias_shape)) if bias_shape else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:
            x = x * self.weight
        if self.bias is not None:
            x = x + self.bias if self.sign > 0 else x - self.bias
        return x


class StdConv2d(nn.Conv2d):
    """A conv with weight standardization (timm's ScaledStdConv2d, simplified): the weight
    it applies is computed from its parameters at run time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def standardized(self) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return self.gain * (w - mean) / torch.sqrt(var + 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.standardized(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


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
    cls = type(m)
    if parametrize.is_parametrized(m):  # torch's dynamic subclass; m.weight is the effective one
        cls = cls.__bases__[0]
    fn = _MODULE_BUILDERS.get(cls)
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
                    if x[cin0 + c, r, col] < 0:
                        raise ValueError("a conv reads -inf padding")
                    edges.append(Edge(int(x[cin0 + c, r, col]), w[o, c, a, bb], wname,
                                      (o, c, a, bb)))
    return edges


def _build_conv2d(
    b: _Builder, name: str, m: nn.Conv2d, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """nn.Conv2d (stride, zero padding, dilation, groups, optional bias) by explicit loops."""
    ph, pw = _conv_padding(name, m)
    (sh, sw), (dh, dw) = _pair(m.stride), _pair(m.dilation)
    weight = m.standardized() if isinstance(m, StdConv2d) else m.weight  # the effective one
    w = _np(weight)
    wname = b.param(name, "weight", weight)
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
                 for q in cols if 0 <= q < w and x[ch, r, q] >= 0]  # -1: -inf padding
        if not edges:
            raise ValueError(f"node {name!r}: a window holds only -inf padding")
        out[ch, i, j] = b.new("max", edges, (ch, i, j))
    return out, False


def _build_constpad(
    b: _Builder, name: str, m: nn.ConstantPad2d, src: str, x: np.ndarray
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


def _broadcast_index(t: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """For each entry of a per-sample tensor of ``shape``, the flat index of the entry of ``t``
    that torch's broadcasting (against the batched shape) pairs with it."""
    flat = np.arange(t.numel()).reshape(tuple(t.shape))
    return np.broadcast_to(flat, (1, *shape))[0]


def _build_affine(
    b: _Builder, name: str, m: Affine, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Affine: one identity neuron per entry, its edge weighted by the paired weight entry
    (fixed 1 without weight), its bias the paired bias entry times ``sign``."""
    w = _np(m.weight).reshape(-1) if m.weight is not None else None
    bias = _np(m.bias).reshape(-1) if m.bias is not None else None
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
    Affine: _build_affine,
    StdConv2d: _build_conv2d,
    nn.ConstantPad2d: _build_constpad,
    nn.ZeroPad2d: _build_constpad,
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


def learnable_affine_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Multiplications by and additions of parameters: a scalar affine after a ReLU (timm's
    learnable affine block), a per-channel layer scale before a residual add, a subtracted
    per-channel bias, a per-position scale and a bias-only shift."""
    def spec() -> Spec:
        return (Spec((2, 4, 4))
                .node("stem", nn.Conv2d(2, 3, 3, padding=1)).node("r0", nn.ReLU())
                .node("lab", Affine((1,), (1,)))
                .node("conv", nn.Conv2d(3, 3, 3, padding=1)).node("gamma", Affine((1, 3, 1, 1),
                                                                                   None))
                .node("res", "add", "gamma", "lab").node("r1", nn.ReLU())
                .node("shift", Affine(None, (3, 1, 1), sign=-1.0))
                .node("pos", Affine((4, 4), None)).node("r2", nn.ReLU())
                .node("pool", nn.MaxPool2d(2)).node("flat", nn.Flatten())
                .node("fc", nn.Linear(3 * 2 * 2, 2)))
    return _make(spec, seed, dtype)


def padded_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Constant padding: -inf in front of max-pools (asymmetric 'same' padding, as timm's
    MaxPool2dSame does it), and a finite non-zero value in front of a conv, whose padded
    entries start paths of their own."""
    def spec() -> Spec:
        return (Spec((2, 5, 5))
                .node("stem", nn.Conv2d(2, 3, 3, padding=1)).node("r0", nn.ReLU())
                .node("same", nn.ConstantPad2d((0, 1, 0, 1), -math.inf))
                .node("pool", nn.MaxPool2d(2, stride=1))
                .node("pad", nn.ConstantPad2d((1, 1, 2, 0), 0.75))
                .node("conv", nn.Conv2d(3, 3, 3)).node("r1", nn.ReLU())
                .node("pad2", nn.ConstantPad2d(1, -math.inf))
                .node("pool2", nn.MaxPool2d(3, stride=2))
                .node("flat", nn.Flatten()).node("fc", nn.Linear(3 * 3 * 3, 2)))
    return _make(spec, seed, dtype)


def derived_weights_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Weights computed from parameters at run time: a weight-standardized conv with a gain,
    and torch's weight normalization (a parametrization) on a conv and the classifier."""
    def spec() -> Spec:
        conv = nn.Conv2d(3, 3, 3)
        fc = nn.Linear(3 * 2 * 2, 2)
        torch.nn.utils.parametrizations.weight_norm(conv)
        torch.nn.utils.parametrizations.weight_norm(fc)
        return (Spec((2, 4, 4))
                .node("std", StdConv2d(2, 3, 3, padding=1)).node("r0", nn.ReLU())
                .node("conv", conv).node("r1", nn.ReLU())
                .node("flat", nn.Flatten()).node("fc", fc))
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
    "learnable_affine_net": learnable_affine_net,
    "padded_net": padded_net,
    "derived_weights_net": derived_weights_net,
    **{f"activations_{k}": (lambda k=k: activations(k)) for k in ACTIVATION_KINDS},
}


# --------------------------------------------------------------------------------------------
# Dense prediction: N-d convs and transposed convs, 1-d/3-d pools, padding modes, pixel
# shuffles and interpolation, each by explicit index loops (torch's rules written out by hand)
# --------------------------------------------------------------------------------------------


class Interpolate(nn.Module):
    """``F.interpolate(x, **kwargs)`` as a module (the functional form inside a model)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.kwargs = dict(kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, **self.kwargs)


class ConvTransposeTo(nn.Module):
    """A transposed conv called with ``output_size`` (``self.conv(x, output_size=size)``)."""

    def __init__(self, conv: nn.Module, size: Sequence[int]) -> None:
        super().__init__()
        self.conv = conv
        self.size = list(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, output_size=self.size)


class FunctionalConvTranspose(nn.Module):
    """``F.conv_transpose{1,2,3}d`` on parameters of its own (the functional form)."""

    def __init__(self, cin: int, cout: int, kernel: Sequence[int], stride: int = 1,
                 padding: int = 0, output_padding: int = 0, groups: int = 1,
                 dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cin, cout // groups, *kernel) * 0.3)
        self.bias = nn.Parameter(torch.randn(cout)) if bias else None
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.groups, self.dilation = groups, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = {3: torch.nn.functional.conv_transpose1d, 4: torch.nn.functional.conv_transpose2d,
              5: torch.nn.functional.conv_transpose3d}[x.dim()]
        return fn(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                  self.groups, self.dilation)


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


def _ntuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        return tuple(int(i) for i in v)
    return (int(v),) * n


def _build_convnd(
    b: _Builder, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """Conv1d / Conv3d (zero padding, stride, dilation, groups, bias) by explicit loops."""
    nd = x.ndim - 1
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise NotImplementedError(f"node {name!r}: padding {m.padding!r} {m.padding_mode!r}")
    st, pd, dl = _ntuple(m.stride, nd), _ntuple(m.padding, nd), _ntuple(m.dilation, nd)
    w = _np(m.weight)
    wname = b.param(name, "weight", m.weight)
    bias = _np(m.bias) if m.bias is not None else None
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
            out[(o, *pos)] = b.new("id", edges, (o, *pos), **_bias_kw(bname, bias, o))
    return out, True


def _conv_transpose_edges(
    b: _Builder, x: np.ndarray, w: np.ndarray, wname: str, geom: dict[str, Any],
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
        out[idx] = b.new("id", incoming.get(idx, []), idx, **_bias_kw(bname, bias, idx[0]))
    return out


def _conv_transpose_geometry(m: Any, nd: int) -> dict[str, Any]:
    return {"stride": _ntuple(m.stride, nd), "padding": _ntuple(m.padding, nd),
            "dilation": _ntuple(m.dilation, nd), "groups": int(m.groups),
            "output_padding": _ntuple(m.output_padding, nd)}


def _transposed_size(size: Sequence[int], k: Sequence[int], geom: dict[str, Any]) -> list[int]:
    return [(n - 1) * s - 2 * p + d * (kk - 1) + op + 1
            for n, kk, s, p, d, op in zip(size, k, geom["stride"], geom["padding"],
                                          geom["dilation"], geom["output_padding"])]


def _build_conv_transpose(
    b: _Builder, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """ConvTranspose1d/2d/3d, its ``output_size`` form and the functional form."""
    nd = x.ndim - 1
    conv, prefix = (m.conv, "conv.") if isinstance(m, ConvTransposeTo) else (m, "")
    geom = _conv_transpose_geometry(conv, nd)
    w = _np(conv.weight)
    osize = _transposed_size(x.shape[1:], w.shape[2:], geom)
    if isinstance(m, ConvTransposeTo):  # output_size: PyTorch's extra rows at the end
        osize = [int(s) for s in m.size[-nd:]]
    wname = b.param(name, f"{prefix}weight", conv.weight)
    bias = _np(conv.bias) if conv.bias is not None else None
    bname = b.param(name, f"{prefix}bias", conv.bias) if conv.bias is not None else None
    return _conv_transpose_edges(b, x, w, wname, geom, osize, bias, bname), True


def _pool_window(i: int, n: int, k: int, s: int, p: int, d: int) -> list[int]:
    """The real input positions of pooling window ``i`` along one axis (dilated taps)."""
    return [i * s - p + a * d for a in range(k) if 0 <= i * s - p + a * d < n]


def _build_poolnd(
    b: _Builder, name: str, m: nn.Module, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    """MaxPool1d/3d and AvgPool1d/3d (ceil_mode, count_include_pad, divisor_override)."""
    nd = x.ndim - 1
    is_max = isinstance(m, (nn.MaxPool1d, nn.MaxPool3d))
    k = _ntuple(m.kernel_size, nd)
    st = _ntuple(m.stride if m.stride is not None else m.kernel_size, nd)
    pd = _ntuple(m.padding, nd)
    dl = _ntuple(m.dilation, nd) if is_max else (1,) * nd
    size = x.shape[1:]
    osize = [pool_output_size(n, kk, s, p, d, m.ceil_mode)
             for n, kk, s, p, d in zip(size, k, st, pd, dl)]
    out = np.empty((x.shape[0], *osize), dtype=np.int64)
    for ch in range(x.shape[0]):
        for pos in np.ndindex(*osize):
            axes = [_pool_window(pos[j], size[j], k[j], st[j], pd[j], dl[j]) for j in range(nd)]
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


def _pad_index(i: int, n: int, mode: str) -> int | None:
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


_PAD_MODULES = {
    **{t: "reflect" for t in (nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d)},
    **{t: "replicate" for t in (nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d)},
    **{t: "circular" for t in (nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d)},
    **{t: "zeros" for t in (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d)},
}


def _build_padnd(
    b: _Builder, name: str, m: nn.Module, src: str, x: np.ndarray
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
            src_pos = [_pad_index(pos[j] - lo[j], size[j], mode) for j in range(nd)]
            if any(q is None for q in src_pos):
                out[(ch, *pos)] = b.new("id", [], (ch, *pos))
            else:
                out[(ch, *pos)] = x[(ch, *src_pos)]
    return out, False


def _build_pixel_shuffle(
    b: _Builder, name: str, m: nn.Module, src: str, x: np.ndarray
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
        return mode, list(_ntuple(size, nd)), align, [None] * nd
    factors = [float(f) for f in (factor if isinstance(factor, (tuple, list))
                                  else [factor] * nd)]
    out = [int(math.floor(n * f)) for n, f in zip(size_in, factors)]
    scales = [None] * nd if recompute or mode == "area" else factors
    return mode, out, align, scales


def _build_interpolate(
    b: _Builder, name: str, m: nn.Module, src: str, x: np.ndarray
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


for _type, _fn in {
    nn.Conv1d: _build_convnd, nn.Conv3d: _build_convnd,
    nn.ConvTranspose1d: _build_conv_transpose, nn.ConvTranspose2d: _build_conv_transpose,
    nn.ConvTranspose3d: _build_conv_transpose, ConvTransposeTo: _build_conv_transpose,
    nn.MaxPool1d: _build_poolnd, nn.MaxPool3d: _build_poolnd,
    nn.AvgPool1d: _build_poolnd, nn.AvgPool3d: _build_poolnd,
    nn.BatchNorm3d: _build_batchnorm,
    nn.PixelShuffle: _build_pixel_shuffle, nn.PixelUnshuffle: _build_pixel_shuffle,
    nn.Upsample: _build_interpolate, nn.UpsamplingNearest2d: _build_interpolate,
    nn.UpsamplingBilinear2d: _build_interpolate, Interpolate: _build_interpolate,
    **dict.fromkeys(_PAD_MODULES, _build_padnd),
}.items():
    _MODULE_BUILDERS.setdefault(_type, _fn)


def _build_functional_conv_transpose(
    b: _Builder, name: str, m: FunctionalConvTranspose, src: str, x: np.ndarray
) -> tuple[np.ndarray, bool]:
    nd = x.ndim - 1
    geom = _conv_transpose_geometry(m, nd)
    w = _np(m.weight)
    osize = _transposed_size(x.shape[1:], w.shape[2:], geom)
    wname = b.param(name, "weight", m.weight)
    bias = _np(m.bias) if m.bias is not None else None
    bname = b.param(name, "bias", m.bias) if m.bias is not None else None
    return _conv_transpose_edges(b, x, w, wname, geom, osize, bias, bname), True


_MODULE_BUILDERS.setdefault(FunctionalConvTranspose, _build_functional_conv_transpose)


def tiny_unet(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """A tiny U-Net: down by max-pool, up by a transposed conv (with a folded BatchNorm) and by
    bilinear upsampling, skip concatenations, and two outputs (the segmentation map and a
    coarse auxiliary one). Small enough to enumerate its paths."""
    def spec() -> Spec:
        return (Spec((1, 4, 4))
                .node("enc1", nn.Conv2d(1, 1, 3, padding=1)).node("bn1", nn.BatchNorm2d(1))
                .node("r1", nn.ReLU())
                .node("down", nn.MaxPool2d(2))
                .node("enc2", nn.Conv2d(1, 2, 3, padding=1)).node("r2", nn.ReLU())
                .node("up_t", nn.ConvTranspose2d(2, 1, 2, stride=2), "r2")
                .node("bn_t", nn.BatchNorm2d(1)).node("r_t", nn.ReLU())
                .node("up_b", nn.Upsample(scale_factor=2, mode="bilinear",
                                          align_corners=False), "r2")
                .node("skip", "cat", "r_t", "up_b", "r1")
                .node("head", nn.Conv2d(4, 1, 1))
                .node("aux", nn.Conv2d(2, 1, 1), "r2")
                .output("head", "aux"))
    return _make(spec, seed, dtype)


ALL_FACTORIES["tiny_unet"] = tiny_unet
