"""Path-lifting coordinates: the effective parameters of the normalized ReLU-DAG.

The path network is written over the DAG's own parameters (its *coordinates*): a conv with a
folded BatchNorm has weights ``W * s`` and one bias ``s * (c - mean) + b``; a standalone
BatchNorm has edge weights ``s`` and bias ``t``; a PReLU's negative part has edge weight ``-a``.
`slots` lists them (static, from the IR); `lift` computes them from the live model parameters
(differentiably: gradients flow back to the model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .ir import BatchNormRef, Graph, Node

__all__ = ["Slot", "lift", "slots", "split_power"]

Fetch = Callable[[str], Tensor]


@dataclass(frozen=True)
class Slot:
    """One coordinate tensor of the path network.

    Attributes:
        name: identifier used as the path network's argument name (``layer1_0_conv1_weight``).
        node: the IR node that reads it.
        role: ``weight``, ``bias``, ``scale`` or ``shift``.
        param: the model parameter (state_dict name) whose coordinates these are, entry for
            entry, or ``None`` when the coordinate is not a parameter of the model (a folded
            bias of a BatchNorm without ``bias``).
    """

    name: str
    node: str
    role: str
    param: str | None


def _ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def slots(graph: Graph) -> tuple[Slot, ...]:
    """The coordinate tensors of the path network, in the order the network takes them."""
    out: list[Slot] = []
    for n in graph:
        base = _ident(n.name)
        bn: BatchNormRef | None = n.attrs.get("bn")
        if n.op == "linear":
            out.append(Slot(f"{base}_weight", n.name, "weight", n.params["weight"]))
            if bn is not None:
                out.append(Slot(f"{base}_bias", n.name, "bias", bn.bias or n.params.get("bias")))
            elif "bias" in n.params:
                out.append(Slot(f"{base}_bias", n.name, "bias", n.params["bias"]))
        elif n.op == "affine" and n.attrs["kind"] == "batchnorm":
            out.append(Slot(f"{base}_scale", n.name, "scale", bn.weight))
            out.append(Slot(f"{base}_shift", n.name, "shift", bn.bias))
        elif n.op == "affine":
            out.append(Slot(f"{base}_scale", n.name, "scale", n.params["weight"]))
    return tuple(out)


def _bn_affine(bn: BatchNormRef, fetch: Fetch) -> tuple[Tensor, Tensor]:
    """``(s, t)`` of a frozen BatchNorm: ``s = w / sqrt(var + eps)``, ``t = b - mean * s``."""
    s = torch.rsqrt(fetch(bn.running_var) + bn.eps)
    if bn.weight is not None:
        s = s * fetch(bn.weight)
    t = -fetch(bn.running_mean) * s
    if bn.bias is not None:
        t = t + fetch(bn.bias)
    return s, t


def _channel_view(v: Tensor, node: Node) -> Tensor:
    """A per-channel vector shaped to broadcast over one sample of ``node``'s output."""
    if len(node.shape) <= 1 or node.channel_dim() == len(node.shape):  # channels last
        return v.reshape(-1)
    return v.reshape(-1, *([1] * (len(node.shape) - 1)))


def _power(v: Tensor, q: float | None, out: Tensor | None = None) -> Tensor:
    """``|v|^q`` (``v`` itself for ``q=None``), written into ``out`` when it fits."""
    if q is None:
        return v
    if out is not None and (out.shape != v.shape or out.dtype != v.dtype
                            or out.device != v.device
                            or (v.requires_grad and torch.is_grad_enabled())):
        out = None
    a = v.abs() if out is None else torch.abs(v, out=out)
    return a if q == 1.0 else a.pow_(q)


def _linear(n: Node, fetch: Fetch, q: float | None, out: Tensor | None = None) -> list[Tensor]:
    w = fetch(n.params["weight"])
    c = fetch(n.params["bias"]) if "bias" in n.params else None
    bn: BatchNormRef | None = n.attrs.get("bn")
    if bn is None:
        weight = _power(w, q, out)
        return [weight] if c is None else [weight, _power(_channel_view(c, n), q)]
    s, t = _bn_affine(bn, fetch)
    out_dim = 1 if n.attrs["kind"] == "conv_transpose" else 0
    shape = [1] * w.dim()
    shape[out_dim] = -1
    bias = _power(_channel_view(t if c is None else t + c * s, n), q)
    if q is None:
        return [w * s.reshape(shape), bias]
    # |W s|^q = |W|^q |s|^q: one pass over the weights, no signed temporary
    return [_power(w, q, out).mul_(_power(s, q).reshape(shape)), bias]


def lift(graph: Graph, fetch: Fetch, order: tuple[Slot, ...] | None = None,
         q: float | None = None, out: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Compute every coordinate tensor from live parameters (``fetch(state_dict_name)``).

    Returns a dict slot name -> tensor, in `slots` order: signed values, or their magnitudes
    ``|coordinate|^q`` when ``q`` is given. Differentiable w.r.t. what ``fetch`` returns.
    ``out``: tensors (by slot name) that conv/linear weight magnitudes are written into when
    shape, dtype and device fit (no fresh memory on repeated calls).
    """
    out = out or {}
    order = order or slots(graph)
    by_node: dict[str, list[Slot]] = {}
    for slot in order:
        by_node.setdefault(slot.node, []).append(slot)
    values: dict[str, Tensor] = {}
    for node_name, node_slots in by_node.items():
        n = graph[node_name]
        if n.op == "linear":
            tensors = _linear(n, fetch, q, out.get(node_slots[0].name))
        elif n.attrs["kind"] == "batchnorm":
            s, t = _bn_affine(n.attrs["bn"], fetch)
            tensors = [_power(_channel_view(s, n), q), _power(_channel_view(t, n), q)]
        else:  # prelu: the negative part's edge weight is -a
            tensors = [_power(_channel_view(-fetch(n.params["weight"]), n), q)]
        for slot, tensor in zip(node_slots, tensors):
            values[slot.name] = tensor
    return values


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
