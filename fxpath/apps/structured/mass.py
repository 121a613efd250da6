"""Channel path mass: the neuron masses of a live model, and the mass of a coupled group.

A neuron's path mass (``fxpath.quantities.scores.neuron_mass``) is the fraction of the l^1 path
mass carried by the paths through it: exactly what removing it takes away. A Torch-Pruning group
couples channels of several layers (a residual stream channel is written by every block of a
stage; a concatenated channel is read by many layers); its score per root channel is the sum of
the masses of the group's neurons that own parameters: the conv/linear output channels (with
their folded BatchNorm) and the standalone BatchNorm channels it removes.

That sum is the exact removed mass for a group of one neuron. For a larger group it is an upper
bound: a path is counted once per group neuron it visits, so paths that leave a residual stream
channel through a branch and come back to the same channel, or cross a concatenated channel and
one of its readers' BatchNorms, are counted more than once (``docs/structured.md``). Every term
is a rescaling-invariant fraction of one path-norm, so channels of any two layers compare
directly and no normalizer is needed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.errors import FxPathError
from fxpath.ir.graph import Graph
from fxpath.ops.core import op_of
from fxpath.ops.linear import AFFINE, LINEAR_OPS
from fxpath.program import PathProgram

__all__ = ["ChannelMass", "group_mass", "kept_mass_cost", "output_layers", "owner_module"]


def owner_module(graph: Graph, name: str) -> str | None:
    """The module path whose output channels node ``name`` computes (conv/linear: the layer;
    a standalone BatchNorm: the BatchNorm), or None for a node without parameters."""
    node = graph[name]
    if op_of(node) in LINEAR_OPS:
        return node.params["weight"].rpartition(".")[0]
    if op_of(node) is AFFINE and node.attrs["kind"] == "batchnorm":
        return node.attrs["bn"].running_mean.rpartition(".")[0]
    return None


def output_layers(graph: Graph) -> set[str]:
    """Module paths of the layers whose output channels reach a model output without crossing
    another conv or linear layer: pruning them would change what the model returns."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(graph.output.inputs)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        owner = owner_module(graph, name)
        if owner is not None:
            found.add(owner)
            if op_of(graph[name]) in LINEAR_OPS:
                continue  # a conv/linear: its own inputs are not output channels
        stack.extend(graph[name].inputs)
    return found


class ChannelMass:
    """The neuron path masses of a live model, recomputed whenever its parameters or buffers
    change (values, shapes or identities), recompiled when its shapes change.

    Args:
        model: the network (its live weights are read at each call).
        input_shape: per-sample input shape, as for `fxpath.compile`.
        dtype: compute dtype of the path network (default: the model's).
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int] | Sequence[Sequence[int]],
                 dtype: torch.dtype | None = None) -> None:
        self.model = model
        self.input_shape = input_shape
        self.dtype = dtype
        self._program: PathProgram | None = None
        self._shapes: tuple[Any, ...] | None = None
        self._state: tuple[Any, ...] | None = None
        self._masses: dict[str, Tensor] = {}
        self.frozen = False  # True: keep the masses of the last computation (one pruning step)
        self._modules: list[nn.Module] | None = None  # read directly: no name building per call
        self._children: tuple[int, ...] = ()

    @property
    def program(self) -> PathProgram:
        """The path program of the model as it is now."""
        state = self.model.state_dict(keep_vars=True)
        shapes = tuple((k, tuple(v.shape)) for k, v in state.items())
        if self._program is None or shapes != self._shapes:
            self._program = PathProgram(self.model, self.input_shape, dtype=self.dtype)
            self._shapes = shapes
        return self._program

    def _key(self) -> tuple[Any, ...]:
        """What the masses depend on: every child module's identity and every tensor's storage,
        version and shape (a new value, a replaced tensor or module, or a cut changes it). The
        modules' own dicts are read directly: no name is built at each group."""
        children = (tuple(id(c) for m in self._modules for c in m._modules.values())
                    if self._modules is not None else None)
        if self._modules is None or children != self._children:
            self._modules = list(self.model.modules())
            self._children = tuple(id(c) for m in self._modules for c in m._modules.values())
        tensors = itertools.chain.from_iterable(
            itertools.chain(m._parameters.values(), m._buffers.values()) for m in self._modules)
        return self._children, tuple((t.data_ptr(), t._version, t.shape) for t in tensors
                                     if t is not None)

    def masses(self) -> dict[str, Tensor]:
        """Module path -> per-channel path mass fraction (float64, on the CPU)."""
        if self.frozen and self._state is not None:
            return self._masses
        # every tensor's storage, version and shape: a new value, a replaced tensor or a cut
        # changes one of them (cheaper than walking the state_dict at each group)
        state = self._key()
        if state != self._state:
            prog = self.program
            self._masses = {k: v.detach().to("cpu", torch.float64)
                            for k, v in prog.path_magnitude(neurons=True).items()}
            self._state = state
        return self._masses


def group_mass(group: Any, masses: Mapping[str, Tensor], names: Mapping[nn.Module, str],
               owners: frozenset[Any]) -> Tensor | None:
    """One score per channel of ``group``'s root: the summed path mass of the group's
    parameterized neurons (module ``owners`` pruned by an out-channel function), or None for
    a group with no such neuron (Torch-Pruning then skips it).

    Raises `FxPathError` when a layer of the group owns output channels but has no path mass:
    it is not in the path network (a layer fxpath did not see), and its channels cannot be
    ranked."""
    scores: Tensor | None = None
    counted: set[str] = set()
    for item in group:
        dep, idxs = item.dep, item.idxs
        layer = dep.target.module
        if dep.handler not in owners or not isinstance(layer, nn.Module):
            continue
        name = names.get(layer)
        if name is None or name in counted:
            continue
        mass = masses.get(name)
        if mass is None:
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                continue  # folded into its conv: that conv's mass covers it
            raise FxPathError(f"layer {name} ({type(layer).__name__}) has channels to prune "
                              f"but no path mass: fxpath's path network does not contain it")
        if any(r is None for r in item.root_idxs):
            continue
        if scores is None:
            roots = torch.tensor([int(r) for r in group[0].idxs], dtype=torch.long)
            scores = torch.zeros(len(roots), dtype=torch.float64)
            # root channel -> position in the group's root list (the identity for full groups)
            where = torch.full((int(roots.max()) + 1 if len(roots) else 1,), -1,
                               dtype=torch.long)
            where[roots] = torch.arange(len(roots))
        at = where[torch.tensor([int(r) for r in item.root_idxs], dtype=torch.long)]
        scores.index_add_(0, at, mass[torch.tensor([int(i) for i in idxs], dtype=torch.long)])
        counted.add(name)
    return scores


def kept_mass_cost(scores: Tensor) -> Tensor:
    """Group scores turned into the marginal cost, in kept path mass, of cutting each channel
    when a group's channels go in increasing order of mass.

    A path survives a cut only if every neuron on it is kept, so cuts in layers that paths cross
    one after the other multiply: cutting a fraction ``r_g`` of group ``g``'s mass leaves about
    ``prod_g (1 - r_g)`` of the path-norm. The channel ranked ``k`` in its group then costs
    ``log(1 - r_{k-1}) - log(1 - r_k)``, with ``r_k`` the mass of the ``k`` lightest channels
    over ``max(1, total)`` (a group score above 1 over-counts, and no cut removes more than all
    the mass). The cost grows along a group, so one global threshold picks, in every group,
    its lightest channels: the cut that keeps the most path mass under this model. A group
    every path crosses (total 1 or more) never loses its last channel (infinite cost), and the
    order inside a group is the order of the masses. Channel path mass itself ranks by the
    first-order term ``r_k - r_{k-1}`` instead, which empties thin layers of wide networks.
    """
    mass = scores.to(torch.float64).clamp(min=0.0)
    order = torch.argsort(mass, stable=True)
    total = max(1.0, float(mass.sum()))
    kept = (1.0 - torch.cumsum(mass[order], 0) / total).clamp(min=0.0)
    before = torch.cat([kept.new_ones(1), kept[:-1]])
    cost = torch.log(before) - torch.log(kept)  # inf where a cut leaves nothing
    out = torch.empty_like(cost)
    out[order] = cost
    return out
