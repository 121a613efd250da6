"""Neuron-wise rescaling: the symmetry that leaves the function and all path quantities fixed.

For a ReLU/identity neuron (an output channel of a conv/linear, with its folded BatchNorm, or of
a standalone BatchNorm) whose outputs reach only parameterized consumers (through ReLUs,
pooling, reshapes and concats): multiply its incoming weights and bias by ``lam > 0`` and divide
its outgoing weights by ``lam`` (``docs/mathematics.md``). Through a folded BatchNorm the conv's
weights, bias and running mean and the BatchNorm's bias are scaled (the BN output scales by
``lam``); a consuming standalone BatchNorm absorbs ``1/lam`` in its weight and mean.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .errors import ArgumentError
from .ir import Graph, Node
from .program import PathProgram
from .validate import check_model

__all__ = ["rescale", "rescalable_neurons"]

_TRANSIT = ("relu", "pool", "reshape", "concat")


def _writable(model: nn.Module, name: str) -> Tensor:
    path, _, attr = name.rpartition(".")
    owner = model.get_submodule(path)
    orig = getattr(owner, f"{attr}_orig", None)
    return orig if orig is not None else getattr(owner, attr)


def _ids(node: Node, value: int | None = None) -> Tensor:
    """A batched tensor of ``node``'s shape holding 1 + channel index (or a constant)."""
    shape = (1, *node.shape)
    if value is not None:
        return torch.full(shape, float(value), dtype=torch.float64)
    dim = node.channel_dim()
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return (torch.arange(shape[dim], dtype=torch.float64) + 1).reshape(view).expand(shape)


def _propagate(graph: Graph, producer: Node) -> dict[str, Tensor] | None:
    """Channel ids of ``producer`` at the input of each consumer; None if not rescalable."""
    users = graph.users()
    ids: dict[str, Tensor] = {producer.name: _ids(producer)}
    consumers: dict[str, Tensor] = {}
    stack = [producer.name]
    while stack:
        name = stack.pop()
        for u in users[name]:
            node = graph[u]
            if node.op == "linear" or (node.op == "affine" and node.attrs["kind"] == "batchnorm"
                                       and node.attrs["bn"].weight is not None):
                if u in consumers or len(node.inputs) != 1:
                    return None
                consumers[u] = ids[name]
                continue
            if node.op not in _TRANSIT or u in ids:
                return None  # add, output, prelu, a second route: not a free neuron
            if node.op == "relu":
                ids[u] = ids[name]
            elif node.op == "pool":
                if graph[name].channel_dim() != 1 or node.attrs["window"] == "global" \
                        and 1 in node.attrs["dims"]:
                    return None
                reduce_dims = tuple(range(2, ids[name].dim()))
                per_channel = ids[name].amax(reduce_dims, keepdim=True) if reduce_dims \
                    else ids[name]
                ids[u] = per_channel.expand((1, *node.shape)) if len(node.shape) == \
                    per_channel.dim() - 1 else per_channel.reshape(1, -1)
            elif node.op == "reshape":
                if node.attrs["fn"] != "view":
                    return None
                ids[u] = ids[name].reshape(1, *node.shape)
            else:  # concat: other operands carry id 0 (not this producer)
                parts = [ids[name] if i == name else _ids(graph[i], 0) for i in node.inputs]
                if node.inputs.count(name) != 1:
                    return None
                ids[u] = torch.cat(parts, node.attrs["dim"])
            stack.append(u)
    return consumers or None


def rescalable_neurons(graph: Graph) -> dict[str, dict[str, Tensor]]:
    """Producers whose output channels can be rescaled, with channel ids at each consumer."""
    out: dict[str, dict[str, Tensor]] = {}
    for node in graph:
        if node.op == "linear" or (node.op == "affine" and node.attrs["kind"] == "batchnorm"
                                   and node.attrs["bn"].weight is not None):
            consumers = _propagate(graph, node)
            if consumers:
                out[node.name] = consumers
    return out


def _scale_rows(t: Tensor, lam: Tensor, dim: int) -> None:
    shape = [1] * t.dim()
    shape[dim] = -1
    t.mul_(lam.to(t.dtype).reshape(shape))


def _scale_producer(model: nn.Module, node: Node, lam: Tensor) -> None:
    bn = node.attrs.get("bn")
    if node.op == "linear":
        out_dim = 1 if node.attrs["kind"] == "conv_transpose" else 0
        _scale_rows(_writable(model, node.params["weight"]), lam, out_dim)
        if "bias" in node.params:
            _scale_rows(_writable(model, node.params["bias"]), lam, 0)
        if bn is not None:  # BN(lam z) with mean * lam and bias * lam is lam * BN(z)
            _scale_rows(_writable(model, bn.running_mean), lam, 0)
            if bn.bias is not None:
                _scale_rows(_writable(model, bn.bias), lam, 0)
    else:  # standalone BN: y = s x + t, scale s (its weight) and t (its bias)
        _scale_rows(_writable(model, bn.weight), lam, 0)
        if bn.bias is not None:
            _scale_rows(_writable(model, bn.bias), lam, 0)


def _divide_consumer(model: nn.Module, node: Node, ids: Tensor, lam: Tensor) -> None:
    """Divide the consumer's weights on the inputs that carry the producer's channels."""
    table = torch.cat([torch.ones(1, dtype=torch.float64), lam.to(torch.float64)])
    per_input = table[ids.long()]  # batched input-shaped tensor of factors (1 where id 0)
    if node.op == "affine":  # standalone BN absorbs 1/lam: weight / lam, mean * lam
        f = per_input.flatten(2).amax(2)[0] if per_input.dim() > 2 else per_input[0]
        _scale_rows(_writable(model, node.attrs["bn"].weight), 1.0 / f, 0)
        _scale_rows(_writable(model, node.attrs["bn"].running_mean), f, 0)
        return
    w = _writable(model, node.params["weight"])
    kind = node.attrs["kind"]
    if kind == "dense":
        f = per_input.reshape(-1, per_input.shape[-1])[0]
        w.div_(f.to(w.dtype).reshape(1, -1))
        return
    f = per_input.flatten(2).amax(2)[0] if per_input.dim() > 2 else per_input[0]
    groups = node.attrs["groups"]
    if kind == "conv_transpose":
        _scale_rows(w, 1.0 / f, 0)
        return
    cin_g = w.shape[1]
    cout_g = w.shape[0] // groups
    group_of_out = torch.arange(w.shape[0]) // cout_g
    index = group_of_out[:, None] * cin_g + torch.arange(cin_g)[None, :]
    w.div_(f[index].to(w.dtype).reshape(*index.shape, *([1] * (w.dim() - 2))))


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that leaves it untouched, also when it is pruned with
    ``torch.nn.utils.prune`` and ran forward with autograd on (the pruning hook then leaves a
    non-leaf ``w = w_orig * w_mask`` behind, which deepcopy refuses: the copy gets it detached)."""
    memo: dict[int, object] = {}
    for module in model.modules():
        for name in [k[:-5] for k in module._buffers if k.endswith("_mask")]:
            derived = module.__dict__.get(name)
            if isinstance(derived, Tensor) and not derived.is_leaf:
                memo[id(derived)] = derived.detach().clone()
    return copy.deepcopy(model, memo)


def _check_factors(factors: object) -> tuple[float, ...]:
    ok = (isinstance(factors, Sequence) and not isinstance(factors, (str, bytes)) and factors
          and all(isinstance(f, numbers.Real) and not isinstance(f, bool)
                  and math.isfinite(f) and f > 0 for f in factors))
    if not ok:
        raise ArgumentError(f"factors must be a non-empty sequence of finite positive numbers, "
                            f"got {factors!r}")
    return tuple(float(f) for f in factors)


def rescale(model: nn.Module, input_shape: Sequence[int] | None = None, *,
            factors: Sequence[float] = (1.0, 128.0, 4096.0), seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every free neuron rescaled by a random factor from ``factors``.

    The copy computes the same function and has the same path-lifting (path-norms, metrics and
    path-magnitude scores are unchanged), while its weights differ: this is how the symmetry
    fools magnitude-based criteria.

    Args:
        model: a ReLU network (left untouched; train mode is analysed as eval mode).
        input_shape: per-sample input shape; default: timm's ``pretrained_cfg["input_size"]``.
        factors: positive factors to draw from, uniformly per neuron.
        seed: seed of the draw.

    Example:
        >>> twin = fxpath.rescale(model.eval(), (3, 224, 224), seed=0)
    """
    check_model(model, exported=False)
    if input_shape is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        input_shape = cfg.get("input_size")
        if input_shape is None:
            raise ArgumentError("rescale needs input_shape (the model has no timm input_size)")
    factors = _check_factors(factors)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ArgumentError(f"seed must be an integer, got {seed!r}")
    twin = _copy(model)
    graph = PathProgram(twin, input_shape).graph
    gen = torch.Generator().manual_seed(seed)
    choices = torch.tensor([float(f) for f in factors], dtype=torch.float64)
    with torch.no_grad():
        for name, consumers in rescalable_neurons(graph).items():
            node = graph[name]
            channels = (node.shape[-1] if node.channel_dim() == len(node.shape)
                        else node.shape[0])
            lam = choices[torch.randint(len(choices), (channels,), generator=gen)]
            _scale_producer(twin, node, lam)
            for consumer, ids in consumers.items():
                _divide_consumer(twin, graph[consumer], ids, lam)
    return twin
