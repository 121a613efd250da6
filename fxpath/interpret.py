"""A reference interpreter: run the IR as the *model* (real ReLUs and max-pools) on real inputs.

Used to check that tracing and every pass preserve the function the model computes: for any
IR ``g`` of ``model``, ``run(g, model, x)`` must equal ``model(x)``. It accepts IR before and
after normalization. It is a test and debugging tool, not a fast path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .ir import BatchNormRef, Graph, Node
from .lift import lift, slots
from .params import ParamSource
from .runtime import window_sum

__all__ = ["run"]

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
_ADAPTIVE_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _channels(v: Tensor, ref: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (ref.dim() - 2))) if ref.dim() > 2 else v.reshape(-1)


def _bn(x: Tensor, bn: BatchNormRef, p: Callable[[str], Tensor]) -> Tensor:
    return F.batch_norm(x, p(bn.running_mean), p(bn.running_var),
                        p(bn.weight) if bn.weight else None, p(bn.bias) if bn.bias else None,
                        False, 0.0, bn.eps)


def _linear(n: Node, x: Tensor, coords: dict[str, Tensor]) -> Tensor:
    a = n.attrs
    base = "".join(ch if ch.isalnum() else "_" for ch in n.name)
    w, b = coords[f"{base}_weight"], coords.get(f"{base}_bias")
    if a["kind"] == "dense":
        y = F.linear(x, w)
    else:
        padding = a["padding"]
        if "padding_mode" in a:
            x, padding = F.pad(x, list(a["pad"]), a["padding_mode"]), 0
        if a["kind"] == "conv":
            y = _CONV[a["ndim"]](x, w, None, a["stride"], padding, a["dilation"], a["groups"])
        else:
            y = _CONV_T[a["ndim"]](x, w, None, a["stride"], padding, a["output_padding"],
                                   a["groups"], a["dilation"])
    return y if b is None else y + b


def _pool(n: Node, x: Tensor) -> Tensor:
    a = n.attrs
    if n.op == "pool":
        if a["window"] == "regular":
            if a["reduce"] == "max":
                return _MAX[a["ndim"]](x, a["kernel"], a["stride"], a["padding"], 1, a["ceil_mode"])
            return window_sum(x, a["kernel"], a["stride"], a["padding"], a["ceil_mode"]) \
                * a["coeff"].to(x)
        if a["window"] == "adaptive":
            if a["reduce"] == "max":
                return _ADAPTIVE_MAX[a["ndim"]](x, a["output_size"])
            return _ADAPTIVE_AVG[a["ndim"]](x, a["output_size"])
        return x.sum(a["dims"], a["keepdim"]) * a["coeff"]
    if n.op == "maxpool":
        return _MAX[a["ndim"]](x, a["kernel"], a["stride"], a["padding"], a["dilation"],
                               a["ceil_mode"])
    if n.op == "avgpool":
        return _AVG[a["ndim"]](x, a["kernel"], a["stride"], a["padding"], a["ceil_mode"],
                               a["count_include_pad"], *([a["divisor_override"]]
                                                         if a["ndim"] > 1 else []))
    if n.op == "adaptive_avgpool":
        return _ADAPTIVE_AVG[a["ndim"]](x, n.shape[1:])
    if n.op == "adaptive_maxpool":
        return _ADAPTIVE_MAX[a["ndim"]](x, n.shape[1:])
    red = x.mean if a["reduce"] == "mean" else x.sum
    return red(a["dims"], a["keepdim"])


def _reshape(n: Node, x: Tensor) -> Tensor:
    fn = n.attrs["fn"]
    if fn == "view":
        return x.reshape(x.shape[0], *n.shape)
    if fn == "permute":
        return x.permute(n.attrs["dims"])
    if fn == "getitem":
        return operator.getitem(x, n.attrs["index"])
    return F.pad(x, list(n.attrs["pad"]), n.attrs["mode"])


def _step(n: Node, xs: list[Tensor], p: Callable[[str], Tensor],
          coords: dict[str, Tensor]) -> Tensor:
    op, a = n.op, n.attrs
    if op == "linear":
        return _linear(n, xs[0], coords)
    if op in ("affine", "batchnorm"):
        if a.get("kind", "batchnorm") == "batchnorm":
            return _bn(xs[0], a["bn"], p)
        return xs[0] * _channels(-p(n.params["weight"]), xs[0])
    if op in ("pool", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool", "mean"):
        return _pool(n, xs[0])
    if op == "add":
        return sum(c * x for c, x in zip(a["coeffs"], xs)) + a["const"]
    if op == "concat":
        return torch.cat(xs, a["dim"])
    if op == "reshape":
        return _reshape(n, xs[0])
    if op in _ACTIVATIONS:
        return _ACTIVATIONS[op](n, xs[0], p)
    raise ValueError(f"cannot interpret {n.describe()}")


_ACTIVATIONS: dict[str, Callable[[Node, Tensor, Callable[[str], Tensor]], Tensor]] = {
    "relu": lambda n, x, p: F.relu(x),
    "identity": lambda n, x, p: x,
    "relu6": lambda n, x, p: F.relu6(x),
    "hardtanh": lambda n, x, p: x.clamp(min=n.attrs["lo"], max=n.attrs["hi"]),
    "leaky_relu": lambda n, x, p: F.leaky_relu(x, n.attrs["slope"]),
    "prelu": lambda n, x, p: F.prelu(x, p(n.params["weight"])),
}


def run(graph: Graph, model: torch.nn.Module, inputs: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """Evaluate the IR as a network with the model's live parameters; returns the outputs."""
    xs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    source = ParamSource(model, graph.param_names())
    ref = xs[0]

    def p(name: str) -> Tensor:
        return source.fetch(name, ref.dtype, ref.device)

    linear_slots = tuple(s for s in slots(graph) if graph[s.node].op == "linear")
    coords = lift(graph, p, linear_slots) if linear_slots else {}
    env: dict[str, Tensor] = {}
    feed = iter(xs)
    outputs: list[Tensor] = []
    for n in graph:
        if n.op == "input":
            env[n.name] = next(feed)
        elif n.op == "output":
            outputs = [env[i] for i in n.inputs]
        else:
            env[n.name] = _step(n, [env[i] for i in n.inputs], p, coords)
    return outputs
