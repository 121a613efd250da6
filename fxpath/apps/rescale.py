"""Neuron-wise rescaling: the symmetry that leaves the function and all path quantities fixed.

For a ReLU/identity neuron (an output channel of a conv/linear, with its folded BatchNorm, or of
a standalone BatchNorm) whose outputs reach only parameterized consumers (through ReLUs,
pooling, reshapes and concats): multiply its incoming weights and bias by ``lam > 0`` and divide
its outgoing weights by ``lam`` (``docs/mathematics.md``). Through a folded BatchNorm the conv's
weights, bias and running mean and the BatchNorm's bias are scaled (the BN output scales by
``lam``); a consuming standalone BatchNorm absorbs ``1/lam`` in its weight and mean. Which
ops produce, absorb or pass rescaled channels is each op's rescale rule (`fxpath.ops`).
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.errors import ArgumentError
from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import Rescaling, rule_of
from fxpath.ops.rescaling import channel_ids
from fxpath.ops.walk import walk
from fxpath.program import PathProgram
from fxpath.validate import check_model

__all__ = ["channel_count", "channel_maps", "copy_model", "rescalable_neurons", "rescale",
           "rescale_channels"]

_STOP = Rescaling("stops")


def _rescaling(node: Node) -> Rescaling:
    """The op's rescaling rule; an op it does not apply to stops rescaling."""
    return rule_of(node, "rescale_rule", _STOP)


def _propagate(graph: Graph, producer: Node) -> dict[str, Tensor] | None:
    """Channel ids of ``producer`` at the input of each consumer; None if not rescalable."""
    users = graph.users()
    ids: dict[str, Tensor] = {producer.name: channel_ids(producer)}
    consumers: dict[str, Tensor] = {}
    stack = [producer.name]
    while stack:
        name = stack.pop()
        for u in users[name]:
            node = graph[u]
            rule = _rescaling(node)
            if rule.absorbs is not None and rule.absorbs(node):
                if u in consumers or len(node.inputs) != 1:
                    return None
                consumers[u] = ids[name]
                continue
            if rule.transit is None or u in ids:
                return None  # add, output, prelu, a second route: not a free neuron
            out = rule.transit(graph, node, name, ids[name])
            if out is None:
                return None
            ids[u] = out
            stack.append(u)
    return consumers or None


def _produces(rule: Rescaling, node: Node, ins: list[bool]) -> bool:
    return rule.produces is not None and rule.produces(node)


def rescalable_neurons(graph: Graph) -> dict[str, dict[str, Tensor]]:
    """Producers whose output channels can be rescaled, with channel ids at each consumer."""
    produces = walk(graph, "rescale_rule", _produces, otherwise=lambda n, why: False)
    out: dict[str, dict[str, Tensor]] = {}
    for node in graph:
        if produces[node.name]:
            consumers = _propagate(graph, node)
            if consumers:
                out[node.name] = consumers
    return out


def _scale_producer(model: nn.Module, node: Node, lam: Tensor) -> None:
    scale = _rescaling(node).scale
    if scale is None:
        raise ValueError(f"{node.describe()} is not a rescalable producer")
    scale(model, node, lam)


def _divide_consumer(model: nn.Module, node: Node, ids: Tensor, lam: Tensor) -> None:
    """Divide the consumer's weights on the inputs that carry the producer's channels."""
    table = torch.cat([torch.ones(1, dtype=torch.float64), lam.to(torch.float64)])
    divide = _rescaling(node).divide
    if divide is None:
        raise ValueError(f"{node.describe()} is not a rescaling consumer")
    divide(model, node, table[ids.long()])  # input-shaped factors (1 where id 0)


def copy_model(model: nn.Module) -> nn.Module:
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
    twin = copy_model(model)
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


def channel_count(node: Node) -> int:
    """Number of output channels of a rescalable producer node."""
    return node.shape[-1] if node.channel_dim() == len(node.shape) else node.shape[0]


def rescale_channels(model: nn.Module, graph: Graph, producer: str,
                     consumers: Mapping[str, Tensor], lam: Tensor) -> None:
    """Rescale the output channels of ``producer`` in place by ``lam`` (one factor > 0 per
    channel): its incoming weights and bias (and folded BatchNorm) times ``lam``, the weights
    that read those channels in ``consumers`` divided by ``lam``. The function is unchanged.

    ``producer`` and ``consumers`` are an entry of `rescalable_neurons` for ``graph``, the IR of
    ``model`` (``fxpath.compile(model, shape).graph``); this is the step `rescale` applies with
    random factors.
    """
    node = graph[producer]
    lam = lam.to(torch.float64)
    if lam.shape != (channel_count(node),) or not bool((lam > 0).all()) or not bool(
            torch.isfinite(lam).all()):
        raise ArgumentError(f"lam must hold {channel_count(node)} finite factors > 0 for "
                            f"{node.describe()}, got shape {tuple(lam.shape)}")
    with torch.no_grad():
        _scale_producer(model, node, lam)
        for consumer, ids in consumers.items():
            _divide_consumer(model, graph[consumer], ids, lam)


def channel_maps(model: nn.Module, graph: Graph,
                 neurons: Mapping[str, Mapping[str, Tensor]] | None = None
                 ) -> dict[str, dict[str, Tensor]]:
    """Which tensor entries the rescaling of each producer touches, and for which channel.

    For each producer of ``neurons`` (default: `rescalable_neurons` of ``graph``, the IR of
    ``model``): ``{state_dict name: int32 tensor of that tensor's shape}`` for every tensor
    `rescale_channels` writes to, holding the producer channel each entry is multiplied or
    divided by (``-1`` for entries it leaves alone). Found by rescaling a float64 copy of all
    ones by ``lam = channel + 2``: the model is not touched.
    """
    neurons = rescalable_neurons(graph) if neurons is None else neurons
    probe = copy_model(model).to(torch.float64)
    tensors = {k: t for k, t in probe.state_dict(keep_vars=True).items()
               if isinstance(t, Tensor) and t.is_floating_point()}
    out: dict[str, dict[str, Tensor]] = {}
    device = next(iter(tensors.values())).device
    with torch.no_grad():
        for t in tensors.values():
            t.fill_(1.0)
        for name, consumers in neurons.items():
            before = {k: t._version for k, t in tensors.items()}
            lam = torch.arange(channel_count(graph[name]), dtype=torch.float64,
                               device=device) + 2
            rescale_channels(probe, graph, name, consumers, lam)
            maps = {}
            for k, t in tensors.items():
                if t._version == before[k]:
                    continue
                code = torch.where(t >= 1, t, torch.reciprocal(t))
                maps[k] = torch.round(code).to(torch.int32) - 2
                maps[k][t == 1] = -1
                t.fill_(1.0)
            out[name] = maps
    return out
