"""Proofs that two parameter sets belong to one network, and that a model has not changed.

A path-metric compares the path-liftings of *one* network at two parameter sets. Two models
are the same network when their normalized IRs are equal node for node (op, inputs, shape,
static attributes, parameter names) and every parameter the IR reads has the same shape in
both. A state dict is checked by its names and shapes against the model's.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.errors import ArchitectureMismatchError
from fxpath.ir.graph import Graph, Node

__all__ = ["ModuleTree", "graph_difference", "shape_difference", "state_dict_difference"]


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, Tensor) or isinstance(y, Tensor):
        return (isinstance(x, Tensor) and isinstance(y, Tensor) and x.shape == y.shape
                and x.dtype == y.dtype and bool(torch.equal(x.cpu(), y.cpu())))
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
        return len(x) == len(y) and all(_equal(a, b) for a, b in zip(x, y))
    if isinstance(x, Mapping) and isinstance(y, Mapping):
        return x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    return type(x) is type(y) and x == y


def _node_difference(a: Node, b: Node) -> str | None:
    for field in ("op", "inputs", "shape", "params"):
        va, vb = getattr(a, field), getattr(b, field)
        if not _equal(va, vb):
            return f"{field} {_short(va)} vs {_short(vb)}"
    keys = sorted(set(a.attrs) | set(b.attrs))
    for k in keys:
        if not _equal(a.attrs.get(k), b.attrs.get(k)):
            return f"attribute {k!r}: {_short(a.attrs.get(k))} vs {_short(b.attrs.get(k))}"
    return None


def _short(v: Any) -> str:
    if isinstance(v, Tensor):
        return f"tensor{tuple(v.shape)}"
    text = repr(dict(v)) if isinstance(v, Mapping) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _digests(g: Graph) -> dict[str, str]:
    """Each node's digest: its op, shape, static attributes and parameter names, and the
    digests of its inputs in argument order (a Merkle hash of the node's whole ancestry)."""
    out: dict[str, str] = {}
    for n in g:
        text = repr((n.op, n.shape, sorted(n.params.items()),
                     sorted((k, _stable(v)) for k, v in n.attrs.items() if k != "error"),
                     [out[i] for i in n.inputs]))
        out[n.name] = hashlib.sha256(text.encode()).hexdigest()
    return out


def _stable(v: Any) -> Any:
    """A repr-stable form of an attribute value (tensors by dtype, shape and values)."""
    if isinstance(v, Tensor):
        return ("tensor", str(v.dtype), tuple(v.shape), v.detach().cpu().flatten().tolist())
    if isinstance(v, Mapping):
        return sorted((k, _stable(x)) for k, x in v.items())
    if isinstance(v, (tuple, list)):
        return [_stable(x) for x in v]
    return v


def same_structure(a: Graph, b: Graph) -> bool:
    """Whether two IRs are one network up to the names of their nodes: a labelled DAG
    isomorphism (networkx VF2) matching op, shape, static attributes, parameter names and the
    argument position of every edge. Two front ends (torch.fx, torch.export) name nodes
    differently; the network they describe is what must agree. Each node is labelled with the
    digest of its ancestry (`_digests`), so the matcher meets almost no ambiguity (repeated
    blocks of parameterless nodes would otherwise make it search)."""
    if len(a) != len(b) or sorted(n.op for n in a) != sorted(n.op for n in b):
        return False
    da, db = _digests(a), _digests(b)
    if sorted(da.values()) != sorted(db.values()):
        return False
    from networkx.algorithms.isomorphism import DiGraphMatcher

    ga, gb = a.to_networkx(), b.to_networkx()
    for g, d in ((ga, da), (gb, db)):
        for name, digest in d.items():
            g.nodes[name]["digest"] = digest
    matcher = DiGraphMatcher(ga, gb, node_match=lambda x, y: x["digest"] == y["digest"],
                             edge_match=lambda x, y: x["index"] == y["index"])
    return matcher.is_isomorphic()


def graph_difference(a: Graph, b: Graph) -> str | None:
    """The first difference between two normalized IRs, in words, or ``None`` if they are one
    network (node for node, or up to node names: `same_structure`)."""
    for i, (na, nb) in enumerate(zip(a.nodes, b.nodes)):
        if na.name != nb.name and same_structure(a, b):
            return None
        if na.name != nb.name:
            return (f"layer {i} is {na.describe()} in the first network but {nb.describe()} in "
                    "the second")
        diff = _node_difference(na, nb)
        if diff is not None:
            return f"layer {na.describe()} differs: {diff}"
    if len(a) != len(b):
        longer, which = (a, "first") if len(a) > len(b) else (b, "second")
        extra = longer.nodes[min(len(a), len(b))]
        return (f"the {which} network has {abs(len(a) - len(b))} more layer(s), from "
                f"{extra.describe()}")
    return None


def shape_difference(names: Sequence[str], want: Mapping[str, torch.Size],
                     got: Mapping[str, torch.Size]) -> str | None:
    """The first parameter whose shape differs (or is missing), in words, or ``None``."""
    for name in names:
        if name not in got:
            return f"parameter {name!r} is missing from the second parameter set"
        if tuple(got[name]) != tuple(want[name]):
            return (f"parameter {name!r} has shape {tuple(want[name])} in the first network "
                    f"and {tuple(got[name])} in the second")
    return None


def _base_name(key: str) -> str:
    for suffix in ("_orig", "_mask"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def state_dict_difference(known_keys: Iterable[str], params: Mapping[str, Any]) -> str | None:
    """Keys of ``params`` that are not among ``known_keys`` (the model's state_dict names):
    the parameter set of a larger network."""
    known = {_base_name(k) for k in known_keys}
    extra = [k for k in params if _base_name(k) not in known]
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        return (f"the parameter set has {extra[0]!r}{more}, which the model does not have: it "
                "belongs to another architecture")
    return None


class ModuleTree:
    """The module objects of a model at one moment, by weak reference.

    ``changed(model)`` tells whether any submodule was added, removed or replaced since (a
    replaced module's address may be reused by a new one: weak references cannot mistake them).
    """

    def __init__(self, model: nn.Module) -> None:
        self._refs = [(name, weakref.ref(m)) for name, m in model.named_modules()]

    def changed(self, model: nn.Module) -> str | None:
        """The first module path that differs, or ``None`` when the tree is the same."""
        mods = list(model.named_modules())
        for (name, ref), (now_name, m) in zip(self._refs, mods):
            if name != now_name or ref() is not m:
                return now_name or "<root>"
        if len(mods) != len(self._refs):
            return "a module added or removed"
        return None


def mismatch(what: str) -> ArchitectureMismatchError:
    """The error for two parameter sets of different networks."""
    return ArchitectureMismatchError(
        f"the two parameter sets are not of one network: {what}. A path-metric compares one "
        "architecture at two parameter values (same layers, names and shapes)")
