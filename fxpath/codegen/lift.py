"""Path-lifting coordinates: the effective parameters of the normalized ReLU-DAG.

The path network is written over the DAG's own parameters (its *coordinates*): a conv with a
folded BatchNorm has weights ``W * s`` and one bias ``s * (c - mean) + b``; a standalone
BatchNorm has edge weights ``s`` and bias ``t``; a PReLU's negative part has edge weight ``-a``.
`slots` lists them (static, from the IR); `lift` computes them from the live model parameters
(differentiably: gradients flow back to the model). Both walk the graph with each op's
coordinate rule (`fxpath.ops`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from fxpath.ir.coordinates import Factored, Fetch, Slot
from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import Coordinates
from fxpath.ops.walk import BY_RULE, walk

__all__ = ["Slot", "factored", "lift", "slots", "split_power"]


def slots(graph: Graph) -> tuple[Slot, ...]:
    """The coordinate tensors of the path network, in the order the network takes them."""
    per_node = walk(graph, "slots_rule", lambda rule, n, ins: rule.slots(n),
                    otherwise=lambda n, why: [])
    return tuple(s for node_slots in per_node.values() for s in node_slots)


def _walk(graph: Graph, order: tuple[Slot, ...] | None,
          rule_values: Callable[[Node, Coordinates, list[Slot]], list[Any]]
          ) -> dict[str, Any]:
    """Slot name -> value, in ``order`` (default `slots`): ``rule_values(node, its coordinate
    rule, its slots)`` gives one value per slot of each node."""
    by_node: dict[str, list[Slot]] = {}
    for slot in order or slots(graph):
        by_node.setdefault(slot.node, []).append(slot)
    per_node = walk(graph, "slots_rule",
                    lambda rule, n, ins: rule_values(n, rule, by_node[n.name]),
                    fixed=lambda n: BY_RULE if n.name in by_node else None)
    values: dict[str, Any] = {}
    for node_name, node_slots in by_node.items():
        for slot, value in zip(node_slots, per_node[node_name]):
            values[slot.name] = value
    return values


def lift(graph: Graph, fetch: Fetch, order: tuple[Slot, ...] | None = None,
         q: float | None = None, out: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Compute every coordinate tensor from live parameters (``fetch(state_dict_name)``).

    Returns a dict slot name -> tensor, in `slots` order: signed values, or their magnitudes
    ``|coordinate|^q`` when ``q`` is given. Differentiable w.r.t. what ``fetch`` returns.
    ``out``: tensors (by slot name) that conv/linear weight magnitudes are written into when
    shape, dtype and device fit (no fresh memory on repeated calls).
    """
    buffers = out or {}
    return _walk(graph, order, lambda n, rule, node_slots:
                 rule.lift(n, fetch, q, buffers.get(node_slots[0].name)))


def factored(graph: Graph, fetch: Fetch, order: tuple[Slot, ...] | None = None
             ) -> dict[str, Tensor | Factored]:
    """The signed coordinates by slot name, in `slots` order, with the products the ops
    leave factored (`fxpath.ir.coordinates.Factored`: a folded BatchNorm's ``W * s``)."""
    return _walk(graph, order, lambda n, rule, node_slots:
                 rule.factored(n, fetch) if rule.factored is not None
                 else rule.lift(n, fetch, None, None))


def split_power(coords: dict[str, Tensor], q: float) -> tuple[list[Tensor], list[Tensor]]:
    """``|c|^q`` of each coordinate tensor as a mantissa tensor (largest entry in [0.5, 1))
    and a 0-dim integral exponent, both in ``c``'s dtype. Differentiable in ``c``.

    Only multiplications by powers of two touch the inputs (exact), so each entry's
    ``|c|^q`` is rounded once or twice. An entry leaves the float range only when it is
    below its tensor's largest by a factor of ``2**(126/q)`` (float32) or ``2**(1022/q)``
    (float64): the paths through it carry that much less mass. For float32 and ``q > 100``
    the powers are taken in float64 (``0.5**q`` would underflow float32).
    """
    mantissas, exponents = [], []
    for c in coords.values():
        work = torch.float64 if c.dtype == torch.float64 or q > 100 else c.dtype
        a = c.abs().to(work)
        peak = a.detach().amax() if a.numel() else a.new_zeros(())
        k = torch.frexp(peak).exponent.to(work)
        kq = k * q
        whole = torch.floor(kq)
        if a.requires_grad:
            p = (a * torch.exp2(-k)).pow(q) * torch.exp2(kq - whole)
        else:  # in place: one temporary per tensor (VGG's fc1 is 103M entries)
            p = a.mul_(torch.exp2(-k)).pow_(q).mul_(torch.exp2(kq - whole))
        # the largest entry is now in (0.5**q, 2): renormalize it into [0.5, 1)
        top = torch.frexp(p.detach().amax() if p.numel() else p.new_zeros(())).exponent
        top = top.to(work)
        p = p * torch.exp2(-top) if p.requires_grad else p.mul_(torch.exp2(-top))
        mantissas.append(p.to(c.dtype))
        exponents.append((whole + top).to(c.dtype))
    return mantissas, exponents
