"""The path-norm generalization bound of a ReLU-DAG: its ingredients read off the IR.

For a DAG ReLU network with max-pooling, trained on ``n`` i.i.d. samples whose inputs satisfy
``||x||_inf <= B``, the Rademacher term of the generalization bound is
``4 * C * B * ||Phi(theta)||_1 / sqrt(n)`` (Gonon, Brisebarre, Riccietti, Gribonval, ICLR 2024),
with the complexity constant

    C  = sqrt(D * log((3 + 2P) * K) + log((3 + 2P) / (1 + P) * (d_in + 1) * d_out))
    C' = sqrt(D * log 3 + M * log K + log((d_in + 1) * d_out))        (sharpened)

``D``: conv/linear layers on the longest path; ``K``: the largest max-pool window (number of
elements); ``P``: the number of k-max-pooling types (PyTorch's max-pools are all 1-max-pooling:
``P`` is 1 with a max-pool, else 0); ``M``: max-pools on the path holding the most;
``d_in``/``d_out``: input/output neurons. ``docs/generalization.md`` states the hypotheses.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from fxpath.errors import ArgumentError
from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import op_of
from fxpath.ops.linear import LINEAR_OPS
from fxpath.ops.pool import POOL
from fxpath.quantities.norm import path_norm
from fxpath.quantities.results import PathNorm
from fxpath.runtime import window_sum

if TYPE_CHECKING:
    from fxpath.engine.compiled import CompiledNetwork

__all__ = ["GeneralizationBound", "Ingredients", "check_input_bound", "check_n_train",
           "complexity_constants", "generalization_bound", "ingredients"]


def check_n_train(n_train: Any) -> int:
    """``n_train`` as an int >= 1 (the number of i.i.d. training samples)."""
    if isinstance(n_train, bool) or not isinstance(n_train, numbers.Integral) or n_train < 1:
        raise ArgumentError("n_train must be the number of training samples, an integer >= 1 "
                            f"(ImageNet's 99% training split: 1268355), got {n_train!r}")
    return int(n_train)


def check_input_bound(input_bound: Any) -> float:
    """``input_bound`` as a finite float > 0 (the bound B on ``||x||_inf``)."""
    if isinstance(input_bound, bool) or not isinstance(input_bound, numbers.Real) or not (
            math.isfinite(float(input_bound)) and float(input_bound) > 0):
        raise ArgumentError("input_bound must be a finite number B > 0 with ||x||_inf <= B for "
                            "every input (1.0 for inputs in [-1, 1]; 2.64 for ImageNet after "
                            f"the usual normalization), got {input_bound!r}")
    return float(input_bound)


class Ingredients(NamedTuple):
    """What the complexity constant reads from the network's structure."""

    depth: int              #: D, conv/linear layers on the longest path
    max_pool_kernel: int    #: K, elements in the largest max-pool window (1 without max-pool)
    max_pool_types: int     #: P, k-max-pooling types (0 or 1: PyTorch's are 1-max-pooling)
    max_pools_on_path: int  #: M, max-pools on the path holding the most
    d_in: int               #: input neurons (all inputs together)
    d_out: int              #: output neurons (all outputs together)


def _window_elements(node: Node, in_shape: tuple[int, ...]) -> int:
    """The most input neurons one output neuron of a max-pool reads (border windows that
    hang over the padding read fewer: each axis is one 1-D window placement)."""
    a = node.attrs
    if a["window"] == "adaptive":
        return int(a["count"].max())
    if a["window"] == "global":  # a max over whole dims (not emitted today; kept exact)
        return math.prod(in_shape[d - 1] for d in a["dims"])
    elements = 1
    for size, k, s, p in zip(in_shape[1:], a["kernel"], a["stride"], a["padding"]):
        ones = torch.ones((1, 1, size), dtype=torch.float64)
        elements *= int(window_sum(ones, (k,), (s,), (p,), a["ceil_mode"]).max())
    return elements


def _longest(graph: Graph, counts: dict[str, int]) -> int:
    """The largest sum of ``counts`` over the nodes of one path of ``graph``: a longest path
    in its networkx view, each edge weighing its head's count (a root feeds the sources)."""
    import networkx as nx  # on first use (see `Graph.to_networkx`)

    dag = graph.to_networkx()
    root = object()  # no node name can equal it
    dag.add_edges_from((root, n) for n in list(dag) if dag.in_degree(n) == 0)
    for u, v in dag.edges:
        dag.edges[u, v]["count"] = counts.get(v, 0)
    return int(nx.dag_longest_path_length(dag, weight="count", default_weight=0))


def ingredients(graph: Graph) -> Ingredients:
    """``D, K, P, M, d_in, d_out`` of a normalized IR graph (see the module docstring)."""
    shapes = {n.name: n.shape for n in graph}
    layers = {n.name: 1 for n in graph if op_of(n) in LINEAR_OPS}
    pools = [n for n in graph if op_of(n) is POOL and n.attrs["reduce"] == "max"]
    kernel = max((_window_elements(n, shapes[n.inputs[0]]) for n in pools), default=1)
    return Ingredients(
        depth=_longest(graph, layers), max_pool_kernel=kernel, max_pool_types=1 if pools else 0,
        max_pools_on_path=_longest(graph, {n.name: 1 for n in pools}),
        d_in=sum(math.prod(n.shape) for n in graph.inputs),
        d_out=sum(math.prod(shapes[name]) for name in graph.output.inputs))


def complexity_constants(depth: int, max_pool_kernel: int, max_pool_types: int,
                         max_pools_on_path: int, d_in: int, d_out: int) -> tuple[float, float]:
    """``(C, C')``: the complexity constant and its sharpened variant (module docstring)."""
    p, k = max_pool_types, max_pool_kernel
    c = math.sqrt(depth * math.log((3 + 2 * p) * k)
                  + math.log((3 + 2 * p) / (1 + p) * (d_in + 1) * d_out))
    sharp = math.sqrt(depth * math.log(3) + max_pools_on_path * math.log(k)
                      + math.log((d_in + 1) * d_out))
    return c, sharp


def _pow10(log10: float) -> float:
    """10**log10 as a float: 0 for -inf, ``inf`` past float64's range."""
    if log10 == -math.inf:
        return 0.0
    return math.inf if log10 > 308.2 else 10.0 ** log10


@dataclass(frozen=True)
class GeneralizationBound:
    """The path-norm generalization bound of one network, with every ingredient.

    Attributes:
        n_train: ``n``, the number of i.i.d. training samples.
        input_bound: ``B``, the bound on ``||x||_inf`` the caller gave.
        ingredients: ``D, K, P, M, d_in, d_out`` read from the IR.
        path_norm: the l^1 path-norm ``||Phi(theta)||_1`` (its ``log10`` never overflows).
        constant: ``C``.
        sharpened_constant: ``C'``.
        factor: ``4 * C * max(1, B) / sqrt(n)``, the bound per unit of l^1 path-norm.
        sharpened_factor: ``4 * C' * max(1, B) / sqrt(n)``.
    """

    n_train: int
    input_bound: float
    ingredients: Ingredients
    path_norm: PathNorm
    constant: float
    sharpened_constant: float
    factor: float
    sharpened_factor: float

    @property
    def effective_input_bound(self) -> float:
        """``max(1, B)``: paths that start at a bias see the constant input 1."""
        return max(1.0, self.input_bound)

    @property
    def log10_bound(self) -> float:
        """``log10(4 * C * B * ||Phi||_1 / sqrt(n))``."""
        return math.log10(self.factor) + self.path_norm.log10

    @property
    def log10_sharpened_bound(self) -> float:
        """``log10(4 * C' * B * ||Phi||_1 / sqrt(n))``."""
        return math.log10(self.sharpened_factor) + self.path_norm.log10

    @property
    def bound(self) -> float:
        """The bound as a float (``inf`` only past float64's range)."""
        return _pow10(self.log10_bound)

    @property
    def sharpened_bound(self) -> float:
        """The sharpened bound as a float (``inf`` only past float64's range)."""
        return _pow10(self.log10_sharpened_bound)

    def __str__(self) -> str:
        i = self.ingredients
        return "\n".join([
            "path-norm generalization bound (Rademacher term, ICLR 2024 path-norm toolkit)",
            f"  n (training samples)          {self.n_train}",
            f"  B (bound on ||x||_inf)        {self.input_bound:g}"
            + ("" if self.input_bound >= 1 else " (the bound uses max(1, B) = 1)"),
            f"  D (conv/linear layers, path)  {i.depth}",
            f"  K (largest max-pool window)   {i.max_pool_kernel}",
            f"  P (k-max-pooling types)       {i.max_pool_types}",
            f"  M (max-pools on a path)       {i.max_pools_on_path}",
            f"  d_in, d_out                   {i.d_in}, {i.d_out}",
            f"  C, C' (complexity constants)  {self.constant:.6g}, {self.sharpened_constant:.6g}",
            f"  ||Phi||_1 (l^1 path-norm)     10^{self.path_norm.log10:.4f}",
            f"  4*C*B/sqrt(n)                 {self.factor:.4f}",
            f"  4*C'*B/sqrt(n)                {self.sharpened_factor:.4f}",
            f"  bound = 4*C*B*||Phi||_1/sqrt(n)     10^{self.log10_bound:.4f}",
            f"  sharpened 4*C'*B*||Phi||_1/sqrt(n)  10^{self.log10_sharpened_bound:.4f}",
        ])


def generalization_bound(net: CompiledNetwork, n_train: int, input_bound: float
                         ) -> GeneralizationBound:
    """The bound for the compiled network's live model (see `fxpath.generalization_bound`)."""
    n, b = check_n_train(n_train), check_input_bound(input_bound)
    parts = ingredients(net.graph)
    c, sharp = complexity_constants(*parts)
    scale = 4.0 * max(1.0, b) / math.sqrt(n)
    return GeneralizationBound(n_train=n, input_bound=b, ingredients=parts,
                               path_norm=path_norm(net, 1.0), constant=c,
                               sharpened_constant=sharp, factor=scale * c,
                               sharpened_factor=scale * sharp)
