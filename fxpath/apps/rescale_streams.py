"""Residual streams: the channels that residual adds tie together, rescaled as one unit.

A residual add ``y = a + b`` is positively homogeneous only when ``a`` and ``b`` are rescaled
alike, position by position. Channel ``c`` of a residual stream is therefore the closure of
the producer channels that meet at some add: the last conv+BatchNorm of every block's branch,
the downsample conv, the stem that starts the stream, a projection conv. All of them (the
*writers*) take the same ``lam_c``; every layer that reads the stream (the next blocks' first
convs, the next downsample, the head) absorbs ``1 / lam_c``. `fxpath.apps.rescale` walks each
producer forward with the ops' rescale rules (an add is a ``join``); this module ties the
walks together: union-find over producer channels, joined where operands of one add meet at
one position. A channel that meets a value no producer's walk reaches (an input, a constant,
a producer whose walk stops) is left alone, with every channel it is tied to.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from fxpath.ir.graph import Graph

__all__ = ["Reach", "Stream", "build_streams"]


@dataclass(frozen=True)
class Reach:
    """Where one producer's rescaled channels go (its forward walk).

    Attributes:
        channels: the producer's output channel count.
        consumers: consumer name -> the producer's channel ids (1 + channel, 0: none) at its
            input, input-shaped and batched.
        joins: ``(join node, operand index)`` -> the producer's channel ids at that operand.
    """

    channels: int
    consumers: dict[str, Tensor]
    joins: dict[tuple[str, int], Tensor]


class Stream(Mapping[str, Tensor]):
    """A residual stream: ``channels`` channels rescaled jointly.

    As a mapping it is what a free neuron's entry of `rescalable_neurons` is: reader name ->
    the stream channel ids (1 + channel, 0 where another value arrives) at its input.
    ``writers`` maps each producer that writes the stream to the stream channel id of each of
    its output channels (0: a channel left alone). ``joins`` names the adds it crosses.
    """

    def __init__(self, readers: dict[str, Tensor], writers: dict[str, Tensor], channels: int,
                 joins: tuple[str, ...]) -> None:
        self.readers = readers
        self.writers = writers
        self.channels = channels
        self.joins = joins

    def __getitem__(self, name: str) -> Tensor:
        return self.readers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.readers)

    def __len__(self) -> int:
        return len(self.readers)

    def __repr__(self) -> str:
        return (f"Stream({self.channels} channels, writers {list(self.writers)}, "
                f"readers {list(self.readers)})")


class _Classes:
    """Union-find over global channel indices, with a poisoned mark per class."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.parent = list(range(size))
        self.bad: set[int] = set()

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def poisoned(self) -> set[int]:
        return {self.find(i) for i in self.bad}


def _pairs(a: Tensor, b: Tensor, total: int) -> Tensor:
    """The distinct pairs ``(a[i], b[i])``, as rows (one sort of int64 keys)."""
    keys = torch.unique(a * total + b)
    return torch.stack([keys // total, keys % total], 1)


def _operand(slots: list[Tensor], size: int, total: int, pairs: list[Tensor]) -> Tensor:
    """Global ids at one operand (-1: no producer's walk), tying producers that overlap."""
    merged = torch.full((size,), -1, dtype=torch.long)
    for g in slots:
        both = (merged >= 0) & (g >= 0)
        pairs.append(_pairs(merged[both], g[both], total))
        merged = torch.where(merged >= 0, merged, g)
    return merged


def _rows(ids: Tensor) -> Tensor | None:
    """The id of each channel (dim 1) of a batched id tensor when it is the same at all of the
    channel's positions, else None."""
    if ids.dim() > 2 and all(st == 0 for st in ids.stride()[2:]):  # expanded per channel
        return ids.reshape(ids.shape[1], -1)[:, 0]
    rows = ids.reshape(ids.shape[1], -1)
    return rows[:, 0] if bool((rows.amax(1) == rows.amin(1)).all()) else None


def _per_channel(operands: dict[int, list[tuple[int, Tensor]]]) -> bool:
    """Whether every id tensor at a join is constant over the positions of each channel: then
    one entry per channel stands for all its positions."""
    return all(_rows(ids) is not None for slot in operands.values() for _, ids in slot)


def _global(ids: Tensor, offset: int, per_channel: bool) -> Tensor:
    """Global channel indices of a producer's ids at a join (-1 where it has none)."""
    flat = (_rows(ids) if per_channel else ids.reshape(-1)).long()  # type: ignore[union-attr]
    return torch.where(flat > 0, flat - 1 + offset, torch.full_like(flat, -1))


def _tie(graph: Graph, reaches: Mapping[str, Reach], offset: Mapping[str, int],
         classes: _Classes) -> None:
    """Join the channels that meet at each join node; poison those that meet no walk."""
    operands: dict[str, dict[int, list[tuple[int, Tensor]]]] = {}
    for p, reach in reaches.items():
        for (node, k), ids in reach.joins.items():
            operands.setdefault(node, {}).setdefault(k, []).append((offset[p], ids))
    pairs: list[Tensor] = []
    bad: list[Tensor] = []
    for name, slots in operands.items():
        node = graph[name]
        per_channel = _per_channel(slots)
        size = node.shape[0] if per_channel else math.prod(node.shape)
        merged = [_operand([_global(ids, at, per_channel) for at, ids in slots.get(k, [])],
                           size, classes.size, pairs) for k in range(len(node.inputs))]
        covered = torch.stack([m >= 0 for m in merged])
        partial = covered.any(0) & ~covered.all(0)
        for m in merged:
            bad.append(torch.unique(m[partial & (m >= 0)]))
        full = covered.all(0)
        for m in merged[1:]:
            pairs.append(_pairs(merged[0][full], m[full], classes.size))
    for a, b in torch.cat(pairs).tolist() if pairs else ():
        classes.union(a, b)
    if bad:
        classes.bad.update(torch.cat(bad).tolist())


def _components(reaches: Mapping[str, Reach], offset: Mapping[str, int], classes: _Classes,
                poisoned: set[int]) -> list[list[str]]:
    """Producers tied by a channel that can be rescaled, in topological order."""
    owner: dict[int, str] = {}
    group = {p: p for p in reaches}

    def find(p: str) -> str:
        while group[p] != p:
            p = group[p]
        return p

    for p, reach in reaches.items():
        for c in range(reach.channels):
            root = classes.find(offset[p] + c)
            if root in poisoned:
                continue
            first = owner.setdefault(root, p)
            a, b = find(first), find(p)
            if a != b:
                group[b] = a
    out: dict[str, list[str]] = {}
    for p, reach in reaches.items():
        if any(classes.find(offset[p] + c) not in poisoned for c in range(reach.channels)):
            out.setdefault(find(p), []).append(p)
    return list(out.values())


def _remap(table: Tensor, ids: Tensor) -> Tensor:
    """``table[ids]``; per channel, expanded, where the ids are."""
    rows = _rows(ids) if ids.dim() > 1 else None
    if rows is None:
        return table[ids.long()]
    per = table[rows.long()]
    return per.reshape(1, -1, *[1] * (ids.dim() - 2)).expand(ids.shape)


def _names_a_channel(ids: Tensor) -> bool:
    rows = _rows(ids) if ids.dim() > 1 else None
    return bool(((ids if rows is None else rows) > 0).any())


def _merge(a: Tensor, b: Tensor) -> Tensor:
    """``a`` where it names a stream channel, else ``b`` (per channel when both are)."""
    if a.dim() > 2 and all(st == 0 for t in (a, b) for st in t.stride()[2:]):
        first = (slice(None), slice(None), *[slice(0, 1)] * (a.dim() - 2))
        return torch.where(a[first] > 0, a[first], b[first]).expand(a.shape)
    return torch.where(a > 0, a, b)


def _stream(producers: list[str], reaches: Mapping[str, Reach], offset: Mapping[str, int],
            classes: _Classes, poisoned: set[int], order: Mapping[str, int]) -> Stream:
    number: dict[int, int] = {}
    writers: dict[str, Tensor] = {}
    for p in producers:
        ids = []
        for c in range(reaches[p].channels):
            root = classes.find(offset[p] + c)
            ids.append(0 if root in poisoned else number.setdefault(root, len(number) + 1))
        writers[p] = torch.tensor(ids, dtype=torch.long)
    readers: dict[str, Tensor] = {}
    for p in producers:
        table = torch.cat([torch.zeros(1), writers[p].to(torch.float64)])
        for u, ids in reaches[p].consumers.items():
            mapped = _remap(table, ids)
            readers[u] = mapped if u not in readers else _merge(readers[u], mapped)
    readers = {u: ids for u, ids in readers.items() if _names_a_channel(ids)}
    joins = sorted({node for p in producers for node, _ in reaches[p].joins},
                   key=order.__getitem__)
    return Stream(readers, writers, len(number), tuple(joins))


def build_streams(graph: Graph, reaches: Mapping[str, Reach]) -> dict[str, Stream]:
    """The residual streams of ``graph`` from the walks of the producers that reach a join
    (``reaches``, in topological order), keyed ``stream:<first add>``; streams whose every
    channel is tied to a value that cannot be rescaled are left out."""
    offset: dict[str, int] = {}
    total = 0
    for p, reach in reaches.items():
        offset[p] = total
        total += reach.channels
    classes = _Classes(total)
    _tie(graph, reaches, offset, classes)
    poisoned = classes.poisoned()
    order = {n.name: i for i, n in enumerate(graph)}
    out: dict[str, Stream] = {}
    for producers in _components(reaches, offset, classes, poisoned):
        stream = _stream(producers, reaches, offset, classes, poisoned, order)
        if stream.channels and stream.readers:
            key = f"stream:{stream.joins[0]}"
            out[key if key not in out else f"{key}#{len(out)}"] = stream
    return out
