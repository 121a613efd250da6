"""The brute-force oracle: the explicit neuron DAG and its paths, enumerated one by one.

* :class:`NeuronDAG` is a small ReLU network written out neuron by neuron (built from a model by
  :func:`bruteforce.lowering.build_dag`, or by hand); it can evaluate itself on one sample.
* :func:`path_lifting` enumerates every path literally (DFS). Path-norms, path-metrics and path
  masses are computed from that enumeration. ``*_dp`` variants compute the same quantities by
  dynamic programming on the DAG (forward x backward of the path network); they only exist to
  speed up tests and are checked against the enumeration in ``tests/test_bruteforce.py``.

Math reference: ``docs/mathematics.md``, sections #relu-dag-networks,
#path-lifting-and-path-norms, #the-path-network, #the-path-metric and #path-magnitude-scores.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

ACTS = ("input", "relu", "id", "max")

# A path is keyed by how it starts ('input' or 'bias'), its first neuron, and the sequence of
# edges it follows, each edge written (dst neuron id, index of the edge in dst's edge list).
# Edges (not neuron pairs) make parallel edges (e.g. ``x + x``) distinct paths.
PathKey = tuple[str, int, tuple[tuple[int, int], ...]]


# --------------------------------------------------------------------------------------------
# The neuron DAG
# --------------------------------------------------------------------------------------------


@dataclass
class Edge:
    """One weighted edge into a neuron and the torch parameter coordinate it came from."""

    src: int
    weight: float
    param: str | None = None  # state_dict name, None for fixed edges (pooling, rewrites, add)
    index: tuple[int, ...] | None = None  # coordinate inside that parameter


@dataclass
class Neuron:
    """One neuron: activation, incoming edges, and an optional bias with its attribution."""

    act: str  # 'input' | 'relu' | 'id' | 'max'
    edges: list[Edge] = field(default_factory=list)
    bias: float = 0.0
    has_bias: bool = False  # structural: bias paths start here (even when bias == 0)
    bias_param: str | None = None
    bias_index: tuple[int, ...] | None = None
    label: str = ""


class NeuronDAG:
    """Explicit neuron-level DAG; neuron ids are topologically ordered (edges go low -> high)."""

    def __init__(self, input_shape: Sequence[int]) -> None:
        """Create an empty DAG for one sample of per-sample shape ``input_shape``."""
        self.input_shape: tuple[int, ...] = tuple(int(s) for s in input_shape)
        self.neurons: list[Neuron] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.param_shapes: dict[str, tuple[int, ...]] = {}
        self.node_neurons: dict[str, np.ndarray] = {}  # spec node name -> array of neuron ids

    def add_neuron(
        self,
        act: str,
        edges: Iterable[Edge] = (),
        bias: float = 0.0,
        has_bias: bool = False,
        bias_param: str | None = None,
        bias_index: tuple[int, ...] | None = None,
        label: str = "",
    ) -> int:
        """Append a neuron and return its id."""
        if act not in ACTS:
            raise ValueError(f"unknown activation {act!r}")
        nid = len(self.neurons)
        edges = list(edges)
        for e in edges:
            if not 0 <= e.src < nid:
                raise ValueError(f"edge from {e.src} into {nid} breaks topological order")
        neuron = Neuron(act, edges, float(bias), bool(has_bias), bias_param, bias_index, label)
        self.neurons.append(neuron)
        if act == "input":
            self.inputs.append(nid)
        return nid

    def __len__(self) -> int:
        """Number of neurons."""
        return len(self.neurons)

    def num_edges(self) -> int:
        """Number of edges."""
        return sum(len(n.edges) for n in self.neurons)

    def children(self) -> list[list[tuple[int, int]]]:
        """For each neuron, its outgoing edges as (dst, index of the edge in dst.edges)."""
        out: list[list[tuple[int, int]]] = [[] for _ in self.neurons]
        for dst, n in enumerate(self.neurons):
            for k, e in enumerate(n.edges):
                out[e.src].append((dst, k))
        return out

    def forward(self, x: Any) -> np.ndarray:
        """Evaluate the DAG on one sample (per-sample shape or batch of 1); flat output vector."""
        flat = to_numpy(x).reshape(-1)
        if flat.size != len(self.inputs):
            raise ValueError(f"input has {flat.size} entries, DAG has {len(self.inputs)} inputs")
        vals = np.zeros(len(self.neurons), dtype=np.float64)
        vals[self.inputs] = flat
        for nid, n in enumerate(self.neurons):
            if n.act == "input":
                continue
            terms = [e.weight * vals[e.src] for e in n.edges]
            if n.act == "max":
                if not terms:
                    raise ValueError(f"max neuron {nid} ({n.label}) has no inputs")
                v = max(terms) + n.bias
            else:
                v = math.fsum(terms) + n.bias
            if n.act == "relu":
                v = max(v, 0.0)
            vals[nid] = v
        return vals[self.outputs].copy()


def to_numpy(x: Any) -> np.ndarray:
    """Convert a torch tensor / array-like to a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Path enumeration (honest DFS) and what is derived from it
# --------------------------------------------------------------------------------------------


def _reaches_output(dag: NeuronDAG) -> list[bool]:
    """For each neuron, whether some output is reachable from it (to skip dead branches)."""
    reach = [False] * len(dag.neurons)
    for o in dag.outputs:
        reach[o] = True
    for nid in range(len(dag.neurons) - 1, -1, -1):
        if reach[nid]:
            for e in dag.neurons[nid].edges:
                reach[e.src] = True
    return reach


def path_lifting(dag: NeuronDAG) -> dict[PathKey, float]:
    """Enumerate every path (from inputs, factor 1, and from biased neurons, factor = bias).

    Keys are ``(kind, start, ((dst, k), ...))`` with kind 'input' or 'bias'; zero-valued
    (structural) paths are included, so DAGs of one spec share their keys.
    """
    children = dag.children()
    outs = set(dag.outputs)
    reach = _reaches_output(dag)
    result: dict[PathKey, float] = {}
    trail: list[tuple[int, int]] = []

    def dfs(node: int, value: float, kind: str, start: int) -> None:
        if node in outs:
            result[(kind, start, tuple(trail))] = value
        for dst, k in children[node]:
            if reach[dst]:
                trail.append((dst, k))
                dfs(dst, value * dag.neurons[dst].edges[k].weight, kind, start)
                trail.pop()

    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of small tuples: the cyclic GC only slows this down
    try:
        for nid in dag.inputs:
            if reach[nid]:
                dfs(nid, 1.0, "input", nid)
        for nid, n in enumerate(dag.neurons):
            if n.has_bias and reach[nid]:
                dfs(nid, n.bias, "bias", nid)
    finally:
        if gc_was_enabled:
            gc.enable()
    return result


def path_neurons(key: PathKey) -> tuple[int, ...]:
    """The neuron ids visited by a path, in order."""
    return (key[1],) + tuple(dst for dst, _ in key[2])


def count_paths(dag: NeuronDAG) -> int:
    """Number of paths (structural, by dynamic programming; cheap sanity check before DFS)."""
    count = [1 if (n.act == "input" or n.has_bias) else 0 for n in dag.neurons]
    for nid, n in enumerate(dag.neurons):
        count[nid] += sum(count[e.src] for e in n.edges)
    return sum(count[o] for o in dag.outputs)


Lifting = NeuronDAG | dict[PathKey, float]


def _lifting(obj: Lifting) -> dict[PathKey, float]:
    """A DAG's path lifting, or the lifting itself when one is passed (to enumerate once)."""
    return obj if isinstance(obj, dict) else path_lifting(obj)


def path_norm(dag: Lifting, q: float = 1.0) -> float:
    """l^q path-norm (sum_p |Phi_p|^q)^(1/q) of a DAG (or of its path lifting), by enumeration."""
    vals = np.abs(np.fromiter(_lifting(dag).values(), dtype=np.float64))
    if math.isinf(q):
        return float(vals.max(initial=0.0))
    return float(np.sum(vals**q) ** (1.0 / q))


def path_metric(dag_a: Lifting, dag_b: Lifting) -> float:
    """l^1 path-metric sum_p |Phi_p(a) - Phi_p(b)| over the union of path keys."""
    pa, pb = _lifting(dag_a), _lifting(dag_b)
    # every key of a, then the keys of b that a lacks (one hash lookup per key and side)
    terms = [abs(v - pb.get(k, 0.0)) for k, v in pa.items()]
    terms += [abs(v) for k, v in pb.items() if k not in pa]
    return float(math.fsum(terms))


def path_mass_through_edge(dag: Lifting, dst: int, k: int) -> float:
    """Sum of |Phi_p| over the paths through edge k of neuron dst."""
    return math.fsum(abs(v) for key, v in _lifting(dag).items() if (dst, k) in key[2])


def path_mass_through_bias(dag: Lifting, neuron: int) -> float:
    """Sum of |Phi_p| over the paths starting at the bias of ``neuron``."""
    return math.fsum(abs(v) for key, v in _lifting(dag).items()
                     if key[0] == "bias" and key[1] == neuron)


def path_mass_through_neurons(dag: Lifting, neurons: Iterable[int]) -> float:
    """Sum of |Phi_p| over the paths visiting at least one of ``neurons`` (e.g. a channel)."""
    ids = {int(n) for n in neurons}
    return math.fsum(abs(v) for key, v in _lifting(dag).items()
                     if ids.intersection(path_neurons(key)))


def parameter_mask(dag: NeuronDAG) -> dict[str, np.ndarray]:
    """For each attributed parameter, a boolean array: which coordinates are DAG edges/biases."""
    masks = {name: np.zeros(shape, dtype=bool) for name, shape in dag.param_shapes.items()}
    for n in dag.neurons:
        if n.has_bias and n.bias_param is not None:
            masks[n.bias_param][n.bias_index] = True
        for e in n.edges:
            if e.param is not None:
                masks[e.param][e.index] = True
    return {k: v for k, v in masks.items() if v.any()}


def mass_by_parameter(
    dag: NeuronDAG, paths: dict[PathKey, float] | None = None
) -> dict[str, np.ndarray]:
    """Per parameter coordinate that is an edge weight or bias: sum of |Phi_p| through it.

    A coordinate used by several edges (a sliding conv kernel) sums over all of them. Keys are
    exactly those of :func:`parameter_mask`; coordinates that are not edges/biases hold 0.
    ``paths`` may pass ``path_lifting(dag)`` when it was already computed.
    """
    mask = parameter_mask(dag)
    mass = {name: np.zeros(m.shape, dtype=np.float64) for name, m in mask.items()}
    for key, value in (path_lifting(dag) if paths is None else paths).items():
        a = abs(value)
        kind, start, trail = key
        if kind == "bias":
            n = dag.neurons[start]
            if n.bias_param is not None:
                mass[n.bias_param][n.bias_index] += a
        for dst, k in trail:
            e = dag.neurons[dst].edges[k]
            if e.param is not None:
                mass[e.param][e.index] += a
    return mass


# --------------------------------------------------------------------------------------------
# Dynamic-programming versions (speed only; checked equal to enumeration in the tests)
# --------------------------------------------------------------------------------------------


def _dp_forward(dag: NeuronDAG, q: float) -> np.ndarray:
    """Path network forward on all-ones input: sum of |Phi|^q over paths ending at each neuron."""
    fwd = np.zeros(len(dag.neurons))
    for nid, n in enumerate(dag.neurons):
        v = 1.0 if n.act == "input" else 0.0
        if n.has_bias:
            v += abs(n.bias) ** q
        fwd[nid] = v + math.fsum(abs(e.weight) ** q * fwd[e.src] for e in n.edges)
    return fwd


def _dp_backward(dag: NeuronDAG, q: float) -> np.ndarray:
    """Path network backward: sum of |prod weights|^q over the tails from each neuron."""
    bwd = np.zeros(len(dag.neurons))
    bwd[dag.outputs] = 1.0
    for nid in range(len(dag.neurons) - 1, -1, -1):
        for e in dag.neurons[nid].edges:
            bwd[e.src] += abs(e.weight) ** q * bwd[nid]
    return bwd


def path_norm_dp(dag: NeuronDAG, q: float = 1.0) -> float:
    """Same as :func:`path_norm` (finite q) by one pass of the path network."""
    fwd = _dp_forward(dag, q)
    return float(math.fsum(fwd[dag.outputs]) ** (1.0 / q))


def neuron_mass_dp(dag: NeuronDAG) -> np.ndarray:
    """Per neuron, sum of |Phi_p| over the paths through it (forward x backward)."""
    return _dp_forward(dag, 1.0) * _dp_backward(dag, 1.0)


def mass_by_parameter_dp(dag: NeuronDAG) -> dict[str, np.ndarray]:
    """Same as :func:`mass_by_parameter` by forward x backward of the path network."""
    fwd, bwd = _dp_forward(dag, 1.0), _dp_backward(dag, 1.0)
    mass = {name: np.zeros(m.shape, dtype=np.float64) for name, m in parameter_mask(dag).items()}
    for nid, n in enumerate(dag.neurons):
        if n.has_bias and n.bias_param is not None:
            mass[n.bias_param][n.bias_index] += abs(n.bias) * bwd[nid]
        for e in n.edges:
            if e.param is not None:
                mass[e.param][e.index] += fwd[e.src] * abs(e.weight) * bwd[nid]
    return mass
