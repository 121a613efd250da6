"""Neuron-wise rescaling: the symmetry that leaves the function and all path quantities fixed.

For a ReLU/identity neuron (an output channel of a conv/linear, with its folded BatchNorm, or of
a standalone BatchNorm) whose outputs reach only parameterized consumers (through ReLUs,
pooling, reshapes and concats): multiply its incoming weights and bias by ``lam > 0`` and divide
its outgoing weights by ``lam`` (``docs/mathematics.md``). Through a folded BatchNorm the conv's
weights, bias and running mean and the BatchNorm's bias are scaled (the BN output scales by
``lam``); a consuming standalone BatchNorm absorbs ``1/lam`` in its weight and mean. Which
ops produce, absorb or pass rescaled channels is each op's rescale rule (`fxpath.ops`).

With ``streams=True`` the channels of residual streams are rescaled too, as units: every
producer that writes stream channel ``c`` (through residual adds with no constant) is scaled
by ``lam_c`` and every layer that reads it absorbs ``1 / lam_c`` (`fxpath.apps.rescale_streams`).
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.apps.rescale_streams import Reach, Stream, build_streams
from fxpath.errors import ArgumentError
from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import Rescaling, rule_of
from fxpath.ops.rescaling import channel_ids
from fxpath.ops.walk import walk
from fxpath.program import PathProgram
from fxpath.validate import check_model

__all__ = ["channel_count", "channel_maps", "copy_model", "rescalable_neurons", "rescale",
           "rescale_channels", "unit_channels"]

#: an entry of `rescalable_neurons`: a free neuron's consumers, or a residual `Stream`
Unit = Mapping[str, Tensor]

_STOP = Rescaling("stops")


def _rescaling(node: Node) -> Rescaling:
    """The op's rescaling rule; an op it does not apply to stops rescaling."""
    return rule_of(node, "rescale_rule", _STOP)


def _propagate(graph: Graph, producer: Node, streams: bool = False,
               users: Mapping[str, list[str]] | None = None) -> Reach | None:
    """Where ``producer``'s channels go: their ids at the input of each consumer and, with
    ``streams``, at each operand of the joins (residual adds) crossed; None if not
    rescalable."""
    users = graph.users() if users is None else users
    ids: dict[str, Tensor] = {producer.name: channel_ids(producer)}
    consumers: dict[str, Tensor] = {}
    joins: dict[tuple[str, int], Tensor] = {}
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
            step = rule.transit if rule.transit is not None else rule.join if streams else None
            if step is None or u in ids:
                return None  # add, output, prelu, a second route: not a free neuron
            out = step(graph, node, name, ids[name])
            if out is None:
                return None
            if rule.transit is None:
                joins[u, node.inputs.index(name)] = ids[name]
            ids[u] = out
            stack.append(u)
    return Reach(channel_count(producer), consumers, joins) if consumers else None


def _produces(rule: Rescaling, node: Node, ins: list[bool]) -> bool:
    return rule.produces is not None and rule.produces(node)


def rescalable_neurons(graph: Graph, *, streams: bool = False) -> dict[str, Unit]:
    """Producers whose output channels can be rescaled, with channel ids at each consumer.

    With ``streams``, the residual streams follow the free neurons, each as one unit keyed
    ``stream:<first add>``: a `Stream` (reader -> stream channel ids, like a free neuron's
    consumers) that also names its writers.
    """
    produces = walk(graph, "rescale_rule", _produces, otherwise=lambda n, why: False)
    users = graph.users()
    out: dict[str, Unit] = {}
    joined: dict[str, Reach] = {}
    for node in graph:
        if produces[node.name]:
            reach = _propagate(graph, node, streams, users)
            if reach is None:
                continue
            if reach.joins:
                joined[node.name] = reach
            else:
                out[node.name] = reach.consumers
    if joined:
        out.update(build_streams(graph, joined))
    return out


def _scale_producer(model: nn.Module, node: Node, lam: Tensor, bn_share: float = 0.0) -> None:
    rule = _rescaling(node)
    if rule.scale is None:
        raise ValueError(f"{node.describe()} is not a rescalable producer")
    if bn_share and rule.scale_bn is not None:
        rule.scale(model, node, lam ** (1.0 - bn_share))
        rule.scale_bn(model, node, lam ** bn_share)
    else:
        rule.scale(model, node, lam)


def _apply(model: nn.Module, graph: Graph, name: str, unit: Unit, lam: Tensor,
           bn_share: float) -> None:
    """Scale the unit's producer (a stream: each writer) by ``lam``, divide its readers."""
    if isinstance(unit, Stream):
        lam = lam.to(torch.float64)
        table = torch.cat([torch.ones(1, dtype=lam.dtype, device=lam.device), lam])
        for writer, ids in unit.writers.items():
            _scale_producer(model, graph[writer], table[ids.to(lam.device)], bn_share)
    else:
        _scale_producer(model, graph[name], lam, bn_share)
    for consumer, ids in unit.items():
        _divide_consumer(model, graph[consumer], ids, lam)


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


def _check_options(seed: object, streams: object, bn_share: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ArgumentError(f"seed must be an integer, got {seed!r}")
    if not isinstance(streams, bool):
        raise ArgumentError(f"streams must be True or False, got {streams!r}")
    if (isinstance(bn_share, bool) or not isinstance(bn_share, numbers.Real)
            or not 0 <= bn_share <= 1):
        raise ArgumentError(f"bn_share must be a number in [0, 1], got {bn_share!r}")


def rescale(model: nn.Module, input_shape: Sequence[int] | None = None, *,
            factors: Sequence[float] = (1.0, 128.0, 4096.0), seed: int = 0,
            streams: bool = False, bn_share: float = 0.0) -> nn.Module:
    """A copy of ``model`` with every free neuron rescaled by a random factor from ``factors``
    (and, with ``streams``, every residual-stream channel).

    The copy computes the same function and has the same path-lifting (path-norms, metrics and
    path-magnitude scores are unchanged), while its weights differ: this is how the symmetry
    fools magnitude-based criteria.

    Args:
        model: a ReLU network (left untouched; train mode is analysed as eval mode).
        input_shape: per-sample input shape; default: timm's ``pretrained_cfg["input_size"]``.
        factors: positive factors to draw from, uniformly per neuron.
        seed: seed of the draw.
        streams: also rescale the channels of residual streams, jointly: stream channel ``c``
            takes one factor ``lam_c``, by which every layer that writes it is multiplied (each
            block's last conv+BatchNorm, the downsample, the stem, a projection) and every
            layer that reads it (the next blocks' first convs, the head) is divided. Streams
            that cross an add with a constant, or reach an output or an op that stops
            rescaling, are left alone. The free neurons draw the same factors as without it.
        bn_share: how much of each factor a folded BatchNorm's weight takes: its conv's
            weights, bias and running mean are multiplied by ``lam ** (1 - bn_share)``, the
            BatchNorm's weight by ``lam ** bn_share`` (its bias by ``lam``). 0 (the default)
            leaves BatchNorm weights as they are; 0.5 moves both the filters' L1 norms and the
            BatchNorm scales, which structured-pruning criteria read.

    Example:
        >>> twin = fxpath.rescale(model.eval(), (3, 224, 224), seed=0)
        >>> twin = fxpath.rescale(model.eval(), (3, 224, 224), streams=True, bn_share=0.5)
    """
    check_model(model, exported=False)
    if input_shape is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        input_shape = cfg.get("input_size")
        if input_shape is None:
            raise ArgumentError("rescale needs input_shape (the model has no timm input_size)")
    factors = _check_factors(factors)
    _check_options(seed, streams, bn_share)
    twin = copy_model(model)
    graph = PathProgram(twin, input_shape).graph
    gen = torch.Generator().manual_seed(seed)
    choices = torch.tensor([float(f) for f in factors], dtype=torch.float64)
    with torch.no_grad():
        for name, unit in rescalable_neurons(graph, streams=streams).items():
            channels = unit_channels(graph, name, unit)
            lam = choices[torch.randint(len(choices), (channels,), generator=gen)]
            _apply(twin, graph, name, unit, lam, float(bn_share))
    return twin


def channel_count(node: Node) -> int:
    """Number of output channels of a rescalable producer node."""
    return node.shape[-1] if node.channel_dim() == len(node.shape) else node.shape[0]


def unit_channels(graph: Graph, name: str, unit: Unit) -> int:
    """Number of channels of an entry of `rescalable_neurons`: a producer's, or a stream's."""
    return unit.channels if isinstance(unit, Stream) else channel_count(graph[name])


def rescale_channels(model: nn.Module, graph: Graph, producer: str,
                     consumers: Unit, lam: Tensor, *, bn_share: float = 0.0) -> None:
    """Rescale the output channels of ``producer`` in place by ``lam`` (one factor > 0 per
    channel): its incoming weights and bias (and folded BatchNorm) times ``lam``, the weights
    that read those channels in ``consumers`` divided by ``lam``. The function is unchanged.

    ``producer`` and ``consumers`` are an entry of `rescalable_neurons` for ``graph``, the IR of
    ``model`` (``fxpath.compile(model, shape).graph``); this is the step `rescale` applies with
    random factors. For a stream (``stream:<add>``, a `Stream`) ``lam`` holds one factor per
    stream channel and multiplies every writer. ``bn_share``: as for `rescale`.
    """
    count = unit_channels(graph, producer, consumers)
    what = f"stream {producer}" if isinstance(consumers, Stream) else graph[producer].describe()
    lam = lam.to(torch.float64)
    if lam.shape != (count,) or not bool((lam > 0).all()) or not bool(
            torch.isfinite(lam).all()):
        raise ArgumentError(f"lam must hold {count} finite factors > 0 for "
                            f"{what}, got shape {tuple(lam.shape)}")
    _check_options(0, False, bn_share)
    with torch.no_grad():
        _apply(model, graph, producer, consumers, lam, float(bn_share))


def channel_maps(model: nn.Module, graph: Graph,
                 neurons: Mapping[str, Unit] | None = None, *, streams: bool = False
                 ) -> dict[str, dict[str, Tensor]]:
    """Which tensor entries the rescaling of each producer touches, and for which channel.

    For each producer of ``neurons`` (default: `rescalable_neurons` of ``graph``, the IR of
    ``model``, with ``streams`` as given): ``{state_dict name: int32 tensor of that tensor's
    shape}`` for every tensor `rescale_channels` writes to, holding the producer channel (a
    stream's: the stream channel) each entry is multiplied or divided by (``-1`` for entries it
    leaves alone). Found by rescaling a float64 copy of all ones by ``lam = channel + 2``: the
    model is not touched. (A layer that both writes and reads one stream has weight entries
    multiplied by one channel's factor and divided by another's: those codes mean nothing.)
    """
    neurons = rescalable_neurons(graph, streams=streams) if neurons is None else neurons
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
            lam = torch.arange(unit_channels(graph, name, consumers), dtype=torch.float64,
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
