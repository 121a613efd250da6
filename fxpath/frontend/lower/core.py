"""The front-end-neutral half of lowering: the IR builder and one builder per IR op form.

A front end (`fxpath.frontend.lower.fx` for torch.fx traces, `fxpath.frontend.lower.aten` for
torch.export's ATen graphs) walks its graph with its reader (a subclass of `Lowering`) and, for
each call, runs the rule of its table: the rule parses the arguments into plain Python values
(ints, tuples, state_dict names, the IR names of the input activations) and calls one of the op
builders below, which checks what is the same in every front end (a pool of the right rank, a
permutation that keeps the batch first, a clamp that is a ReLU or a Hardtanh...), forms the IR
attributes and emits the node. What a reader adds is how it names nodes, reads shapes, locates
and describes them, and walks its graph: the methods of `Lowering` a subclass provides.

Every refusal raises `Refuse` with a reason from `fxpath.frontend.refusals` or a reason stated
here; the walk (`Lowering.run`) turns it into an ``unsupported`` node that the pipeline's first
pass reports together with every other one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from fxpath.errors import FxPathError
from fxpath.frontend.refusals import BN_STATS, LAYER_SCALE, PRODUCT
from fxpath.ir.coordinates import ident
from fxpath.ir.graph import DERIVED, BatchNormRef, Derived, Graph, Node
from fxpath.ops.resample import NEAREST, check_separable, kernel

__all__ = ["Lowering", "ParamRef", "Refuse", "adaptive_pool", "add", "add_scaled", "batchnorm",
           "batchnorm_ref", "cat", "clamp", "conv", "dense", "derive", "divide", "getitem",
           "hardtanh", "identity", "leaky_relu", "mean", "multiply", "ntuple", "output_name",
           "pad", "param_scale", "permute", "piece_index", "pixel_shuffle", "pool", "pool_rank",
           "prelu", "relu", "relu6", "resample", "scalar", "spatial_rank",
           "transposed_output_padding"]


class Refuse(Exception):
    """A rule's refusal: ``reason`` (why), ``what`` (the op, when the default name is wrong)."""

    def __init__(self, reason: str, what: str = "") -> None:
        super().__init__(reason)
        self.reason, self.what = reason, what


@dataclass(frozen=True)
class ParamRef:
    """A model tensor (a parameter or buffer, by state_dict name) read as an operand, viewed
    as ``view`` (the shape the model's arithmetic sees)."""

    name: str
    view: tuple[int, ...]


# -- small shared helpers ---------------------------------------------------------------------
def ntuple(v: Any, n: int) -> tuple[Any, ...]:
    """``v`` as an ``n``-tuple: a scalar repeated, a one-element sequence broadcast."""
    if isinstance(v, (tuple, list)):
        return tuple(v) * n if len(v) == 1 and n > 1 else tuple(v)
    return (v,) * n


def scalar(a: Any) -> bool:
    """A Python number (not a bool)."""
    return isinstance(a, (int, float)) and not isinstance(a, bool)


def spatial_rank(name: str) -> int | None:
    """The spatial rank in an op's name (``MaxPool2d``, ``max_pool3d_with_indices``), or None."""
    for nd in (1, 2, 3):
        if f"{nd}d" in name.lower():
            return nd
    return None


def piece_index(positions: torch.Tensor) -> int | slice:
    """The index along a split dimension selecting ``positions`` (a contiguous range; a 0-dim
    position is ``unbind``'s removed dimension)."""
    if positions.dim() == 0:
        return int(positions)
    if positions.numel() == 0:
        return slice(0, 0)
    start = int(positions[0])
    if not torch.equal(positions, torch.arange(start, start + positions.numel())):
        raise Refuse("a piece that is not a contiguous range of its input")
    return slice(start, start + positions.numel())


# -- the builder ------------------------------------------------------------------------------
class Lowering:
    """The IR made so far and the map from a front end's graph nodes to IR node names.

    A subclass provides `node_name` (the IR name of a graph node), `shape` (its per-sample
    shape), `where` (the model location messages print), `what` (how messages name its op) and
    `lower_node` (one step of the walk), and walks its graph with `run`.
    """

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.value: dict[Any, str] = {}  # graph node -> IR node holding its tensor
        self.names: set[str] = {"output"}
        #: derived coordinates the rule being lowered reads; `emit` attaches them to its node
        self.pending: list[Derived] = []

    # -- provided by each front end -------------------------------------------------------------
    def node_name(self, n: Any, op: str) -> str:
        raise NotImplementedError

    def shape(self, n: Any) -> tuple[int, ...]:
        raise NotImplementedError

    def where(self, n: Any) -> str:
        raise NotImplementedError

    def what(self, n: Any) -> str:
        """How messages name the op of a graph node."""
        raise NotImplementedError

    def lower_node(self, n: Any) -> None:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """``base``, or ``base_1``, ``base_2``... if taken."""
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def append(self, node: Node) -> str:
        self.names.add(node.name)
        self.nodes.append(node)
        return node.name

    def emit(self, n: Any, op: str, inputs: Sequence[str] = (), attrs: dict | None = None,
             params: dict | None = None, what: str = "",
             shape: tuple[int, ...] | None = None) -> str:
        """Append the IR node of graph node ``n`` and map ``n`` to it; returns its name."""
        shape = self.shape(n) if shape is None else shape
        attrs = dict(attrs or {})
        read = set((params or {}).values())
        derived = tuple(d for d in self.pending if d.name in read)
        if derived:
            attrs["derived"] = derived
        self.pending = [d for d in self.pending if d.name not in read]
        name = self.append(Node(self.node_name(n, op), op, tuple(inputs), shape, attrs,
                                params or {}, f"{what or self.what(n)} at {self.where(n)}"))
        self.value[n] = name
        return name

    def unsupported(self, n: Any, what: str, reason: str, inputs: Iterable[str] = (),
                    shape: tuple[int, ...] = (), error: BaseException | None = None) -> str:
        """Map ``n`` to an ``unsupported`` node that carries the reason to the report."""
        attrs: dict[str, Any] = {"what": what, "reason": reason, "where": self.where(n)}
        if error is not None:
            attrs["error"] = error
        name = self.append(Node(self.node_name(n, "unsupported"), "unsupported",
                                tuple(inputs), shape, attrs, {}, self.where(n)))
        self.value[n] = name
        return name

    def refused(self, n: Any, what: str, reason: str, error: BaseException | None = None
                ) -> None:
        """The ``unsupported`` node of a call whose rule refused it (subclasses add inputs)."""
        self.unsupported(n, what, reason, error=error)

    def forget(self, n: Any, mark: int) -> None:
        """Forget whatever a failed rule emitted for ``n`` (the nodes after ``mark``)."""
        self.names -= {m.name for m in self.nodes[mark:]}
        del self.nodes[mark:]
        self.value.pop(n, None)
        self.pending = []

    def run(self, graph_nodes: Iterable[Any]) -> Graph:
        """Lower every node; a refusal or a rule's own failure becomes an ``unsupported`` node."""
        for n in graph_nodes:
            mark = len(self.nodes)
            try:
                self.lower_node(n)
            except Refuse as r:
                self.forget(n, mark)
                self.refused(n, r.what or self.what(n), r.reason)
            except FxPathError:
                raise
            except Exception as exc:  # a rule met an argument form it does not handle
                self.forget(n, mark)
                self.refused(n, self.what(n), f"fxpath cannot lower this call "
                                              f"({type(exc).__name__}: {exc})", error=exc)
        return Graph(tuple(self.nodes))

    def output(self, outs: Sequence[str], names: Sequence[str] | None = None) -> None:
        """The model's output node, each output under its name (`output_name`); refused when
        no output depends on the input."""
        if not outs:
            raise Refuse("no output of the model is computed from its input: it has no paths "
                         "to analyse", "model output")
        attrs = {} if names is None else {"names": tuple(names)}
        self.append(Node("output", "output", tuple(outs), (), attrs, {}, "model output"))


def output_name(path: Sequence[Any], piece: int | None = None) -> str:
    """The name of a returned tensor from its pytree key path: dict keys, sequence indices and
    attribute names joined by dots (``"aux"``, ``"0"``, ``"out.1"``); ``"output"`` for a model
    returning one tensor. ``piece``: the index of one tensor of a returned ``split(...)``."""
    parts = []
    for key in path:
        field = next((f for f in ("key", "idx", "name") if hasattr(key, f)), None)
        parts.append(str(getattr(key, field)) if field else str(key))
    if piece is not None:
        parts.append(str(piece))
    return ".".join(parts) or "output"


#: a parametrized tensor's original: ``conv.parametrizations.weight.original0``
_PARAMETRIZED = re.compile(r"(.+)\.parametrizations\.([^.]+)\.original\d*")


# -- coordinates computed at run time --------------------------------------------------------
def derive(lw: Lowering, value: fx.Node, leaf: Callable[[fx.Node], str | None],
           root: nn.Module, order: Mapping[fx.Node, int], report: str | None = None) -> str:
    """The IR name of a tensor the model computes from its own tensors only (weight
    standardization, a parametrization): the subgraph computing it, from the state_dict
    tensors ``leaf`` names, becomes a `Derived` coordinate that `Lowering.emit` attaches to the
    node reading it. Refused when the tensor depends on the model's input.

    ``report``: the name its scores go under; default the input of its shape (the parameter
    it stands for), else its first input.
    """
    inputs: dict[fx.Node, str] = {}
    body: list[fx.Node] = []
    stack, seen = [value], set()
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        name = leaf(m)
        if name is not None:
            inputs[m] = name
        elif m.op in ("placeholder", "output") or m in lw.value:
            raise Refuse(f"reads a weight computed from the model's input ({value.name})")
        else:
            body.append(m)
            stack.extend(m.all_input_nodes)
    if not inputs:
        raise Refuse(f"reads a tensor computed from constants only ({value.name}), not from "
                     "the model's parameters")
    leaves = sorted(inputs, key=order.__getitem__)
    g = fx.Graph()
    env = {m: g.placeholder(f"p_{ident(inputs[m])}") for m in leaves}
    for m in sorted(body, key=order.__getitem__):
        env[m] = g.node_copy(m, env.__getitem__)
    g.output(env[value])
    fn = fx.GraphModule(root, g, "Derived")
    shape = tuple(int(s) for s in value.meta["val"].shape)
    same = [name for m, name in inputs.items() if tuple(m.meta["val"].shape) == shape]
    owner = [f"{m.group(1)}.{m.group(2)}" for name in inputs.values()
             if (m := _PARAMETRIZED.fullmatch(name))]  # torch.nn.utils.parametrize
    report = report or (owner or same or list(inputs.values()))[0]
    d = Derived(f"{report}{DERIVED}", report, tuple(inputs[m] for m in leaves), shape,
                fn.code, fn)
    lw.pending.append(d)
    return d.name


# -- op builders: one per IR op form, shared by the front ends ---------------------------------
def conv(lw: Lowering, n: Any, x: str, params: dict[str, str], *, transposed: bool, nd: int,
         kernel: Sequence[int], stride: Any, padding: Any, dilation: Any, groups: int,
         output_padding: Any = 0, padding_mode: str = "zeros", pad: Sequence[int] = (),
         what: str = "") -> None:
    """A conv or transposed conv, ``padding`` a tuple or a string (``"same"``/``"valid"``)."""
    attrs: dict[str, Any] = {
        "kind": "conv_transpose" if transposed else "conv", "ndim": nd,
        "kernel": tuple(int(k) for k in kernel), "stride": ntuple(stride, nd),
        "dilation": ntuple(dilation, nd), "groups": int(groups),
        "padding": padding if isinstance(padding, str) else ntuple(padding, nd)}
    if transposed:
        attrs["output_padding"] = ntuple(output_padding, nd)
    if padding_mode != "zeros":
        attrs["padding_mode"] = padding_mode
        attrs["pad"] = tuple(pad)
    lw.emit(n, "linear", (x,), attrs, params, what)


def dense(lw: Lowering, n: Any, x: str, params: dict[str, str], what: str = "",
          shape: tuple[int, ...] | None = None) -> str:
    """A dense layer ``x @ W.T + b`` on the last dimension."""
    return lw.emit(n, "linear", (x,), {"kind": "dense"}, params, what, shape)


def batchnorm_ref(training: bool, running_mean: str | None, running_var: str | None,
                  eps: float, weight: str | None, bias: str | None, where: str
                  ) -> BatchNormRef:
    """A frozen BatchNorm's tensors by name; refused when it uses batch statistics."""
    if training or running_mean is None or running_var is None:
        raise Refuse(BN_STATS)
    return BatchNormRef(running_mean, running_var, float(eps), weight, bias, where)


def batchnorm(lw: Lowering, n: Any, x: str, bn: BatchNormRef, what: str = "") -> None:
    lw.emit(n, "batchnorm", (x,), {"bn": bn}, {}, what)


def relu(lw: Lowering, n: Any, x: str, what: str = "") -> None:
    lw.emit(n, "relu", (x,), what=what)


def relu6(lw: Lowering, n: Any, x: str, what: str = "") -> None:
    lw.emit(n, "relu6", (x,), what=what)


def leaky_relu(lw: Lowering, n: Any, x: str, slope: float, what: str = "") -> None:
    lw.emit(n, "leaky_relu", (x,), {"slope": float(slope)}, what=what)


def hardtanh(lw: Lowering, n: Any, x: str, lo: float, hi: float | None, what: str = "") -> None:
    """``clamp(x, lo, hi)``; ``hi`` None: no upper bound."""
    lw.emit(n, "hardtanh", (x,), {"lo": float(lo), "hi": None if hi is None else float(hi)},
            what=what)


def prelu(lw: Lowering, n: Any, x: str, weight: str, what: str = "") -> None:
    lw.emit(n, "prelu", (x,), {}, {"weight": weight}, what)


def clamp(lw: Lowering, n: Any, x: str, lo: Any, hi: Any, what: str = "") -> None:
    """``clamp(x, lo, hi)`` with number bounds: a ReLU (``lo = 0``) or a Hardtanh."""
    if not all(v is None or scalar(v) for v in (lo, hi)):
        raise Refuse("clamp with tensor bounds is not supported")
    lo = None if lo is None else float(lo)
    hi = None if hi is None else float(hi)
    if lo == 0.0 and hi is None:
        relu(lw, n, x, what)
    elif lo is None:
        raise Refuse("clamp with only an upper bound (min(x, c)) is not supported yet")
    else:
        hardtanh(lw, n, x, lo, hi, what)


def identity(lw: Lowering, n: Any, x: str, *, training: bool = False,
             dtypes: tuple[torch.dtype | None, torch.dtype | None] = (None, None),
             what: str = "") -> None:
    """A no-op: eval-mode dropout, a copy, a same-dtype conversion."""
    if training:
        raise Refuse("dropout in training mode is random; call model.eval() first")
    if None not in dtypes and dtypes[0] != dtypes[1]:
        raise Refuse("changes the dtype inside the model; fxpath keeps one dtype")
    lw.emit(n, "identity", (x,), what=what)


def add_scaled(lw: Lowering, n: Any, x: str, coeff: float, what: str = "") -> None:
    """``coeff * x`` by a number: an ``add`` node of one input (a ``scale`` node multiplies by
    model tensors: `param_scale`)."""
    lw.emit(n, "add", (x,), {"coeffs": (float(coeff),), "const": 0.0}, what=what)


def param_scale(lw: Lowering, n: Any, x: str, weight: ParamRef | None = None,
                bias: ParamRef | None = None, bias_coeff: float = 1.0, what: str = "") -> None:
    """``x * weight + bias_coeff * bias`` with model tensors, broadcast (a ``scale`` node)."""
    attrs: dict[str, Any] = {}
    params: dict[str, str] = {}
    if weight is not None:
        attrs["weight_view"], params["weight"] = weight.view, weight.name
    if bias is not None:
        attrs["bias_view"], params["bias"] = bias.view, bias.name
        if bias_coeff != 1.0:
            attrs["bias_coeff"] = float(bias_coeff)
    lw.emit(n, "scale", (x,), attrs, params, what)


def add(lw: Lowering, n: Any, a: str | float | ParamRef, b: str | float | ParamRef, sign: float,
        alpha: float = 1.0, what: str = "") -> None:
    """``a + sign * alpha * b``, each an activation (its IR name), a number or a model tensor
    (`ParamRef`: a learnable bias)."""
    if isinstance(a, str) and isinstance(b, str):
        lw.emit(n, "add", (a, b), {"coeffs": (1.0, sign * alpha), "const": 0.0}, what=what)
    elif isinstance(a, str) and scalar(b):
        lw.emit(n, "add", (a,), {"coeffs": (1.0,), "const": sign * alpha * b}, what=what)
    elif isinstance(b, str) and scalar(a):
        lw.emit(n, "add", (b,), {"coeffs": (sign * alpha,), "const": float(a)}, what=what)
    elif isinstance(a, str) and isinstance(b, ParamRef):
        param_scale(lw, n, a, bias=b, bias_coeff=sign * alpha, what=what)
    elif isinstance(b, str) and isinstance(a, ParamRef) and sign * alpha == 1.0:
        param_scale(lw, n, b, bias=a, what=what)
    else:
        raise Refuse("adds a tensor that is not an activation (e.g. a parameter)")


def multiply(lw: Lowering, n: Any, a: str | Any, b: str | Any, what: str = "") -> None:
    """``a * b``: an activation times a number is an ``add`` node (`add_scaled`), times a model
    tensor (`ParamRef`) a ``scale`` node; two activations, or an activation and a computed
    tensor, are refused."""
    if isinstance(b, str) and not isinstance(a, str):
        a, b = b, a
    if isinstance(a, str) and scalar(b):
        add_scaled(lw, n, a, b, what)
    elif isinstance(a, str) and isinstance(b, ParamRef):
        param_scale(lw, n, a, weight=b, what=what)
    elif isinstance(a, str) and isinstance(b, str):
        raise Refuse(PRODUCT)
    else:
        raise Refuse(LAYER_SCALE)


def divide(lw: Lowering, n: Any, a: str | Any, b: Any, what: str = "") -> None:
    """``a / b``: an activation divided by a non-zero number (an ``add`` node: `add_scaled`)."""
    if isinstance(a, str) and scalar(b) and b != 0:
        add_scaled(lw, n, a, 1.0 / b, what)
    elif isinstance(a, str) and scalar(b):
        raise Refuse("division by zero")
    elif isinstance(a, str) and isinstance(b, ParamRef):
        raise Refuse(f"division by the model tensor {b.name}: its reciprocal would be the "
                     "coordinate (a weight computed at run time), which is not supported yet")
    else:
        raise Refuse("division by an activation or a tensor is not positively homogeneous")


def pool_rank(rank: int, nd: int | None) -> int:
    """The spatial rank of a pool's per-sample output of ``rank + 1`` dimensions."""
    if nd is not None and rank != nd:
        raise Refuse(f"{nd}-d pooling of a {rank + 1}-d tensor: without a channel dimension "
                     "torch pools the batch as channels; fxpath needs (N, C, *spatial) input")
    return rank


def pool(lw: Lowering, n: Any, x: str, op: str, nd: int | None, kernel: Any, stride: Any,
         padding: Any, dilation: Any, ceil_mode: bool, what: str = "",
         shape: tuple[int, ...] | None = None, **extra: Any) -> str:
    """A max or average pool (``extra``: the average's ``count_include_pad`` and
    ``divisor_override``); ``stride`` None or empty means the kernel."""
    shape = lw.shape(n) if shape is None else shape
    nd = pool_rank(len(shape) - 1, nd)
    stride = stride if stride not in (None, (), []) else kernel
    attrs = {"ndim": nd, "kernel": ntuple(kernel, nd), "stride": ntuple(stride, nd),
             "padding": ntuple(padding, nd), "dilation": ntuple(dilation, nd),
             "ceil_mode": bool(ceil_mode), **extra}
    return lw.emit(n, op, (x,), attrs, {}, what, shape)


def adaptive_pool(lw: Lowering, n: Any, x: str, op: str, nd: int | None, what: str = "",
                  shape: tuple[int, ...] | None = None) -> str:
    shape = lw.shape(n) if shape is None else shape
    return lw.emit(n, op, (x,), {"ndim": pool_rank(len(shape) - 1, nd)}, {}, what, shape)


def mean(lw: Lowering, n: Any, x: str, dims: Sequence[int], ndim: int, keepdim: bool,
         reduce: str, what: str = "") -> None:
    """``mean``/``sum`` over ``dims`` (of the batched tensor of ``ndim`` dimensions)."""
    dims = tuple(sorted(d % ndim for d in dims))
    if 0 in dims:
        raise Refuse(f"{reduce} over the batch dimension")
    lw.emit(n, "mean", (x,), {"dims": dims, "keepdim": bool(keepdim), "reduce": reduce},
            what=what)


def permute(lw: Lowering, n: Any, x: str, perm: Sequence[int], what: str = "") -> bool:
    """A permutation of the batched dimensions; False (no node) when it is the identity."""
    perm = tuple(perm)
    if perm[0] != 0:
        raise Refuse("moves the batch dimension")
    if perm == tuple(range(len(perm))):
        return False
    lw.emit(n, "reshape", (x,), {"fn": "permute", "dims": perm}, what=what)
    return True


def getitem(lw: Lowering, n: Any, x: str, index: tuple[Any, ...], what: str = "",
            shape: tuple[int, ...] | None = None) -> str:
    """Basic indexing ``x[index]`` that keeps the batch dimension (``index[0]`` is ``:``)."""
    ok = all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in index)
    if not ok or not index or index[0] != slice(None):
        raise Refuse("indexing other than basic slicing that keeps the batch dimension")
    return lw.emit(n, "reshape", (x,), {"fn": "getitem", "index": index}, what=what,
                   shape=shape)


def cat(lw: Lowering, n: Any, xs: Sequence[str], dim: int, ndim: int, what: str = "") -> None:
    dim = dim % ndim
    if dim == 0:
        raise Refuse("concatenates along the batch dimension")
    lw.emit(n, "concat", tuple(xs), {"dim": dim}, what=what)


def pad(lw: Lowering, n: Any, x: str, widths: Sequence[int], mode: str, value: Any = None,
        what: str = "") -> None:
    """``F.pad``: a re-indexing (zero, reflect, replicate, circular), or constant padding with
    a value: a finite one starts paths at the padded entries, ``-inf`` is allowed in front of
    max-pools that never select it (checked by ``check_supported``)."""
    attrs: dict[str, Any] = {"fn": "pad", "pad": tuple(int(p) for p in widths), "mode": mode}
    if mode == "constant" and value not in (None, 0, 0.0):
        if not scalar(value) or value == math.inf or math.isnan(value):
            raise Refuse(f"constant padding with the value {value!r}: fxpath needs a finite "
                         "number, or -inf in front of a max-pool")
        attrs["value"] = float(value)
    lw.emit(n, "reshape", (x,), attrs, what=what)


# -- dense prediction: interpolation, pixel shuffles, transposed-conv output sizes -------------
def resample(lw: Lowering, n: Any, x: str, mode: str, in_shape: Sequence[int],
             align_corners: Any, scales: Sequence[Any], antialias: Any,
             what: str = "interpolate") -> None:
    """Interpolation as PyTorch's kernel receives it: ``mode``, ``align_corners``,
    ``antialias`` and the per-axis ``scales`` (``None`` where the kernel derives the scale from
    the sizes); the output size is the node's shape.

    ``area`` is an adaptive average pool (PyTorch computes it as one); every other
    fixed-weight mode is a ``resample`` node, once `check_separable` has proven its per-axis
    matrices reproduce the kernel. Refusals name the mode.
    """
    label = f"{what} (mode {mode!r})"
    nd = len(in_shape) - 1
    if mode == "area":
        if antialias:
            raise Refuse("interpolation mode 'area' with antialias is not an op of PyTorch",
                         label)
        adaptive_pool(lw, n, x, "adaptive_avgpool", nd, what=label)
        return
    if not isinstance(mode, str) or kernel(mode, nd, bool(antialias)) is None:
        raise Refuse(f"no path-lifting rule for interpolation mode {mode!r}"
                     f"{' with antialias' if antialias else ''} in {nd} spatial "
                     "dimension(s)", label)
    if len(scales) != nd or not all(s is None or (scalar(s) and s > 0) for s in scales):
        raise Refuse(f"interpolation scales {tuple(scales)!r}: fxpath needs one positive "
                     "number (or None) per spatial axis, known when tracing", label)
    attrs = {"mode": mode, "ndim": nd,
             "align_corners": bool(align_corners) if mode not in NEAREST else False,
             "antialias": bool(antialias),
             "scales": tuple(None if s is None else float(s) for s in scales)}
    try:
        check_separable(mode, tuple(in_shape[1:]), tuple(lw.shape(n)[1:]),
                        attrs["align_corners"], attrs["scales"], attrs["antialias"])
    except (ValueError, RuntimeError) as exc:
        raise Refuse(f"interpolation mode {mode!r}: {exc}", label) from exc
    lw.emit(n, "resample", (x,), attrs, what=label)


def pixel_shuffle(lw: Lowering, n: Any, x: str, in_shape: Sequence[int], factor: Any,
                  inverse: bool, what: str = "") -> None:
    """``pixel_shuffle`` (``inverse``: ``pixel_unshuffle``) by ``factor`` on the last three
    dimensions ``(C, H, W)``: an exact re-indexing, emitted as the view, permute and view
    that compute it (``(C r^2, H, W) -> (C, r, r, H, W) -> (C, H, r, W, r) -> (C, Hr, Wr)``)."""
    name = "pixel_unshuffle" if inverse else "pixel_shuffle"
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise Refuse(f"{name} by {factor!r}: fxpath needs a positive integer factor")
    if len(in_shape) < 3:
        raise Refuse(f"{name} needs (C, H, W) per sample, got {tuple(in_shape)}")
    *lead, c, h, w = (int(s) for s in in_shape)
    r, k = factor, 1 + len(lead)  # k: the batched index of the channels
    if inverse:
        mid = (*lead, c, h // r, r, w // r, r)
        perm = (*range(k), k, k + 2, k + 4, k + 1, k + 3)
    else:
        mid = (*lead, c // (r * r), r, r, h, w)
        perm = (*range(k), k, k + 3, k + 1, k + 4, k + 2)
    permuted = tuple(mid[p - 1] for p in perm[1:])
    source = f"{what or lw.what(n)} at {lw.where(n)}"
    base = lw.node_name(n, "reshape")
    split = lw.append(Node(lw.fresh(f"{base}_split"), "reshape", (x,), mid, {"fn": "view"}, {},
                           source))
    moved = lw.append(Node(lw.fresh(f"{base}_permute"), "reshape", (split,), permuted,
                           {"fn": "permute", "dims": perm}, {}, source))
    lw.emit(n, "reshape", (moved,), {"fn": "view"}, what=what)


def transposed_output_padding(in_size: Sequence[int], out_size: Sequence[int],
                              kernel_size: Sequence[int], stride: Sequence[int],
                              padding: Sequence[int], dilation: Sequence[int]
                              ) -> tuple[int, ...]:
    """The ``output_padding`` by which a transposed conv reaches ``out_size`` (what
    ``ConvTranspose(x, output_size=...)`` computes and passes to its function)."""
    out = []
    for i, o, k, s, p, d in zip(in_size, out_size, kernel_size, stride, padding, dilation):
        extra = int(o) - ((int(i) - 1) * s - 2 * p + d * (k - 1) + 1)
        if not 0 <= extra < max(s, d):
            raise Refuse(f"a transposed conv cannot reach the output size {tuple(out_size)} "
                         f"from {tuple(in_size)}")
        out.append(extra)
    return tuple(out)
