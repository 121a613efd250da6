"""Lowering a SpecNet to the explicit float64 neuron DAG the oracle enumerates.

:func:`build_dag` reads the *current* parameters of a :class:`~bruteforce.builders.SpecNet`
and walks its nodes, turning each into neurons with the rules of :mod:`bruteforce.layers` and
:mod:`bruteforce.layers_nd` (and the string ops here). It can be re-run after the module's
parameters were pruned or rescaled; neuron ids, edge order and therefore path keys only depend
on the spec, not on the parameter values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from bruteforce import layers, layers_nd
from bruteforce.builders import SpecNet, piece
from bruteforce.layers import DagState
from bruteforce.oracle import Edge, NeuronDAG

# the basic rules win where both have one (ZeroPad2d: a constant pad)
_MODULE_RULES: dict[type, Callable[..., tuple[np.ndarray, bool]]] = {
    **layers_nd.RULES, **layers.RULES,
}


def build_dag(net: SpecNet) -> NeuronDAG:
    """Build the explicit float64 neuron DAG from the current parameters of a SpecNet."""
    b = DagState(net)
    x = np.empty(net.input_shape, dtype=np.int64)
    b.current = "x"
    for idx in np.ndindex(*net.input_shape):
        x[idx] = b.new("input", idx=idx)
    b.env["x"] = x
    for name, kind, inputs in net.spec_nodes:
        b.current = name
        args = [b.env[i] for i in inputs]
        if kind == "module":
            out, fresh = _build_module(b, name, getattr(net, name), inputs, args)
        elif kind in _STRING_BUILDERS:
            out, fresh = _STRING_BUILDERS[kind](b, args)
        else:  # a channel piece: the same neurons, re-indexed (the numpy twin of `piece`)
            channels = piece(torch.arange(args[0].shape[0]).reshape(1, -1), kind)[0]
            out, fresh = args[0][channels.numpy()], False
        b.env[name] = out
        b.fresh[name] = fresh
    b.dag.node_neurons = dict(b.env)
    b.dag.outputs = [int(n) for o in net.spec_outputs for n in b.env[o].reshape(-1)]
    if len(set(b.dag.outputs)) != len(b.dag.outputs):
        raise ValueError("a neuron appears twice among the outputs")
    return b.dag


def _build_module(
    b: DagState, name: str, m: nn.Module, inputs: tuple[str, ...], args: list[np.ndarray]
) -> tuple[np.ndarray, bool]:
    """Dispatch one module node on its exact type."""
    cls = type(m)
    if parametrize.is_parametrized(m):  # torch's dynamic subclass; m.weight is the effective one
        cls = cls.__bases__[0]
    fn = _MODULE_RULES.get(cls)
    if fn is None:
        raise NotImplementedError(f"node {name!r}: {type(m).__name__} is not supported")
    if len(args) != 1:
        raise ValueError(f"node {name!r}: modules take exactly one input")
    return fn(b, name, m, inputs[0], args[0])


# ---- string ops -----------------------------------------------------------------------------


def _build_add(b: DagState, args: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """Residual add: identity neurons with weight-1 edges from every operand."""
    shape = args[0].shape
    if any(a.shape != shape for a in args):
        raise ValueError(f"add: shape mismatch {[a.shape for a in args]}")
    out = np.empty(shape, dtype=np.int64)
    for idx in np.ndindex(*shape):
        out[idx] = b.new("id", [Edge(int(a[idx]), 1.0) for a in args], idx)
    return out, True


def _build_cat(b: DagState, args: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """Concat along channels (per-sample axis 0): pure re-indexing."""
    return np.concatenate(args, axis=0), False


def _build_mean(b: DagState, args: list[np.ndarray]) -> tuple[np.ndarray, bool]:
    """Global mean over H, W: identity neurons with edges 1/(H*W)."""
    x = args[0]
    c, h, w = x.shape
    out = np.empty((c,), dtype=np.int64)
    for ch in range(c):
        edges = [Edge(int(x[ch, i, j]), 1.0 / (h * w)) for i in range(h) for j in range(w)]
        out[ch] = b.new("id", edges, (ch,))
    return out, True


_STRING_BUILDERS: dict[str, Callable[[DagState, list[np.ndarray]], tuple[np.ndarray, bool]]] = {
    "add": _build_add,
    "cat": _build_cat,
    "mean": _build_mean,
}
