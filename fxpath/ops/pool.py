"""``pool``: fixed pooling after `fxpath.passes.lower_pooling`, with exact edge weights.

``reduce`` is ``sum`` (avg/mean pools: each output neuron sums its window with weights
``coeff``) or ``max`` (k-max-pooling neurons, edges of weight 1); ``window`` is ``regular``
(kernel/stride/padding), ``adaptive`` (PyTorch's adaptive windows, sizes ``count``) or
``global`` (a sum over ``dims``).
"""

from __future__ import annotations

import operator

import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor

from fxpath import layout, runtime
from fxpath.ir.coordinates import Slot
from fxpath.ir.graph import Graph, Node
from fxpath.kernels.emit import Emitter, Value
from fxpath.kernels.frame_conv import compression
from fxpath.kernels.geometry import Frame, tensor_frame, widest, window_frame
from fxpath.ops.core import (
    INT,
    INTS,
    Attr,
    Check,
    Op,
    Rescaling,
    RunContext,
    When,
    does_not_apply,
    is_a,
    one_of,
    register,
)

__all__ = ["ADAPTIVE_AVG", "ADAPTIVE_MAX", "AVG", "MAX", "POOL"]

MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
ADAPTIVE_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}


def _compact_pool(e: Emitter, n: Node, v: Value) -> Value | None:
    """A max-pool's windowed sum read from and stored as a compact value (`fxpath.layout`),
    where its input is compact: the input's layout is a frame, and a sum over windows is a
    conv of ones (`fxpath.kernels.frame_conv.compression`)."""
    a = n.attrs
    if not layout.is_compact(v.layout) or a["window"] != "regular" \
            or a.get("coeff") is not None or a["ceil_mode"]:
        return None
    assert v.layout is not None
    size_in = e.shapes[n.inputs[0]][1:]
    frame = tuple((ax[1], ax[2]) if ax is not None else (size, 0)
                  for ax, size in zip(v.layout, size_in))
    nd = len(size_in)
    cuts = compression(size_in, a["kernel"], a["stride"], a["padding"], (1,) * nd, frame)
    in_idx, out_idx, out_layout = e.compressed(v, cuts, size_in)
    out = e.map(v, lambda x: e.call(layout.compact_window_sum, x, a["kernel"], a["stride"],
                                    a["padding"], in_idx, out_idx,
                                    name=f"{n.name}_window_sum"))
    return e.rescaled(n, out.streams, out.exp, layout=out_layout)


def _pool_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """A windowed sum (max-pooling too: its k-max neurons have edges of weight 1), times the
    window coefficients ``|coeff|^q``; a max-pool of a compact value stays compact."""
    compact = _compact_pool(e, n, ins[0])
    if compact is not None:
        return compact
    ins = [e.full(ins[0], n.inputs[0])]
    a = n.attrs
    coeff, count = a.get("coeff"), a.get("count")
    shift = 0.0  # exponent of the coefficients (scaled networks)
    if a["window"] == "regular":
        def fn(x: fx.Node) -> fx.Node:
            return e.call(runtime.window_sum, x, a["kernel"], a["stride"], a["padding"],
                          a["ceil_mode"], name=f"{n.name}_window_sum")
        factor = None
        if coeff is not None:
            mantissa, shift = e.tensor_power_split(coeff)
            factor = e.buffer(f"{n.name}_coeff", mantissa)
    elif a["window"] == "adaptive":
        def fn(x: fx.Node) -> fx.Node:
            return e.call(ADAPTIVE_AVG[a["ndim"]], x, a["output_size"], name=f"{n.name}_mean")
        weights, shift = (count, 0.0) if coeff is None else e.tensor_power_split(coeff)
        factor = e.buffer(f"{n.name}_coeff", weights if coeff is None else count * weights)
    else:
        def fn(x: fx.Node) -> fx.Node:
            return e.method("sum", x, a["dims"], a["keepdim"], name=f"{n.name}_sum")
        factor, shift = (None, 0.0) if coeff == 1.0 else e.power_split(float(coeff))
    out = e.map(ins[0], fn)
    if factor is not None:
        out = e.map(out, lambda s: e.call(operator.mul, s, factor, name=f"{n.name}_weighted"))
    return e.rescaled(n, out.streams, e.shift(out.exp, shift, f"{n.name}_coeff_exp"))


def _pool_run(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """Max-pooling, or the window sums weighted by ``coeff``."""
    a, x = n.attrs, xs[0]
    if a["window"] == "regular":
        if a["reduce"] == "max":
            return MAX[a["ndim"]](x, a["kernel"], a["stride"], a["padding"], 1, a["ceil_mode"])
        return runtime.window_sum(x, a["kernel"], a["stride"], a["padding"], a["ceil_mode"]) \
            * a["coeff"].to(x)
    if a["window"] == "adaptive":
        if a["reduce"] == "max":
            return ADAPTIVE_MAX[a["ndim"]](x, a["output_size"])
        return ADAPTIVE_AVG[a["ndim"]](x, a["output_size"])
    return x.sum(a["dims"], a["keepdim"]) * a["coeff"]


def _pool_frame(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]
                ) -> Frame | None:
    """Window geometry of the input frame, widened to the coefficient tensor's own frame;
    uneven adaptive windows and global sums: none known."""
    a, f, size_in = n.attrs, ins[0], shapes[0][1:]
    if f is None:
        return None
    if a["window"] == "regular":
        nd = len(size_in)
        out = window_frame(f, size_in, n.shape[1:], a["kernel"], a["stride"], a["padding"],
                           (1,) * nd)
        coeff = a.get("coeff")
        return out if not isinstance(coeff, Tensor) else widest([out, tensor_frame(coeff)])
    if a["window"] == "adaptive":
        size_out = n.shape[1:]
        if any(i % o for i, o in zip(size_in, size_out)):
            return None  # windows of uneven sizes: no translation structure
        k = tuple(i // o for i, o in zip(size_in, size_out))
        out = window_frame(f, size_in, size_out, k, k, (0,) * len(k), (1,) * len(k))
        return widest([out, tensor_frame(a["count"])])
    return None  # global sums: see the size-one rule in `interior_frames`


def _pool_transit(graph: Graph, node: Node, src: str, ids: Tensor) -> Tensor | None:
    """Channels pass through (channels-first only; a global sum must keep the channels)."""
    if graph[src].channel_dim() != 1 or node.attrs["window"] == "global" \
            and 1 in node.attrs["dims"]:
        return None
    reduce_dims = tuple(range(2, ids.dim()))
    per_channel = ids.amax(reduce_dims, keepdim=True) if reduce_dims else ids
    if len(node.shape) == per_channel.dim() - 1:
        return per_channel.expand((1, *node.shape))
    return per_channel.reshape(1, -1)


_COEFF = Check("Tensor|float|None", lambda v: v is None or isinstance(v, (Tensor, float)))
_REGULAR = When("window", ("regular",))

POOL = register(Op(
    name="pool",
    doc="fixed pooling neurons: `reduce` sum (avg/mean pools, edge weights `coeff`) or max "
        "(k-max-pooling, edge weights 1), over `regular`, `adaptive` or `global` windows",
    attrs={"reduce": Attr(one_of("sum", "max")),
           "window": Attr(one_of("regular", "adaptive", "global")),
           "coeff": Attr(_COEFF), "count": Attr(_COEFF),
           "ndim": Attr(INT, When("window", ("regular", "adaptive"))),
           "kernel": Attr(INTS, _REGULAR), "stride": Attr(INTS, _REGULAR),
           "padding": Attr(INTS, _REGULAR), "ceil_mode": Attr(is_a(bool), _REGULAR),
           "output_size": Attr(INTS, When("window", ("adaptive",))),
           "dims": Attr(INTS, When("window", ("global",))),
           "keepdim": Attr(is_a(bool), When("window", ("global",)))},
    path_rule=_pool_path, interpret_rule=_pool_run, frame_rule=_pool_frame,
    rescale_rule=Rescaling("passes per channel (channels-first; not a global sum over the "
                           "channels)", transit=_pool_transit),
    slots_rule=does_not_apply("fixed coefficients: no parameters"), compact=True,
))
