"""Layer collapse: whether a pruned network still connects an input to an output, exactly.

A network is *collapsed* when no path from an input neuron to an output neuron has non-zero
mass. Only bias-rooted paths are then left, and they carry constants: the network outputs the
same value for every input (``docs/api.md``, "Layer collapse").

The test runs the path network of the model's IR (`fxpath.codegen.generate`) on the
*support* of the coordinates (1 where a coordinate is non-zero, 0 where it is zero) with every
bias-like coordinate set to zero: conv/linear biases, the biases BatchNorms fold into them,
standalone BatchNorm shifts, learnable biases, and the constants the IR itself carries (the
``const`` of identity neurons, non-zero constant padding). Its total is then the number of
input-rooted paths of non-zero mass, weighted by the fixed coefficients of pools and adds.
The path network has non-negative coefficients, so nothing cancels: the total is zero iff no
such path exists. It runs in float64 with every layer renormalized to a power-of-two exponent
(`fxpath.runtime`): a count is lost only below ``2**-1000`` of the largest count in its layer,
or of 1 (a path's count is at least the product of the pooling coefficients along it), far
from anything real networks reach (ResNet-18 at 224x224 has ``2**196`` paths in all).

A derivative of that total is exact in the same way: ``d total / d support(w)`` is the number
of input-rooted paths through the entry ``w`` with every other coordinate non-zero, and it is
zero iff restoring ``w`` alone reconnects nothing. One backward gives it for every entry; the
*cut* of a collapsed network (`Collapse.cut`) and the guard of iterative pruning
(`Connectivity.guard`) are built on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fxpath.codegen.generate import generate
from fxpath.codegen.lift import lift
from fxpath.errors import FxPathError
from fxpath.ir.graph import Graph, Node
from fxpath.ops.core import op_of
from fxpath.ops.elementwise import ADD
from fxpath.ops.reindex import RESHAPE
from fxpath.program import PathProgram

__all__ = ["BIAS_ROLES", "Collapse", "CollapseError", "CollapseWarning", "Connectivity",
           "collapse_message", "input_rooted"]

#: slot roles whose coordinates start paths of their own (constants): never input-rooted
BIAS_ROLES = frozenset({"bias", "shift"})

_F64 = torch.float64


class CollapseError(FxPathError):
    """`fxpath.prune` with ``on_collapse="raise"`` would have collapsed the network; the model
    is left exactly as it was. ``.cut`` holds `Collapse.cut`."""

    def __init__(self, message: str, cut: Sequence[str] = ()) -> None:
        self.cut = tuple(cut)
        super().__init__(message)


class CollapseWarning(UserWarning):
    """`fxpath.prune` collapsed the network (``on_collapse="warn"``, the default)."""


@dataclass(frozen=True)
class Collapse:
    """The connectivity of a network after pruning.

    Attributes:
        collapsed: no input-rooted path of non-zero mass reaches an output.
        caused: collapsed now, connected before pruning.
        cut: when ``caused``, the pruned weights (state_dict names, in graph order) each of
            which, given back alone its entries from before pruning (every other weight as
            pruned), reconnects an input to an output; when no single weight does, the weights
            that every reconnecting restoration must include (two layers emptied one after
            the other: both). Empty when neither exists.
        all_needed: ``cut`` is of the second kind (restore all of them, not any one).
    """

    collapsed: bool
    caused: bool = False
    cut: tuple[str, ...] = ()
    all_needed: bool = False


def collapse_message(collapse: Collapse) -> str:
    """What `fxpath.prune` says about a collapse it caused."""
    names = ", ".join(collapse.cut)
    if not collapse.cut:
        where = "no single pruned weight, restored, reconnects it"
    elif collapse.all_needed:
        where = f"it reconnects only when all of these are restored: {names}"
    else:
        where = f"restoring any one of these reconnects it: {names}"
    return ("pruning collapsed the network: no path from an input to an output is left, so "
            f"it outputs the same value for every input; {where}. Prune less, or in several "
            "steps (steps > 1 keeps a path)")


def _without_constant(node: Node) -> Node:
    if op_of(node) is ADD and node.attrs["const"]:
        return node.with_attrs(const=0.0)
    if op_of(node) is RESHAPE and node.attrs["fn"] == "pad" and node.attrs.get("value"):
        return node.with_attrs(value=0.0)  # -inf (before a max-pool) starts no path either
    return node


def input_rooted(graph: Graph) -> Graph:
    """``graph`` with the constants its nodes carry set to zero (identity neurons' ``const``,
    constant padding): besides the inputs, only coordinate slots then start paths."""
    return Graph(tuple(_without_constant(n) for n in graph))


class Connectivity:
    """The input-rooted path network of a program, on the coordinate supports of a pruning run.

    Holds the support of every coordinate (float64, 0 or 1; bias-like slots 0), read from the
    live model when built and then updated by `apply` with each step's masks (a masked entry
    ``w * m`` of a coordinate ``w * s`` is non-zero iff ``w``, ``m`` and ``s`` are), and the
    support before pruning of the pruned weights.

    Args:
        prog: the program of the model.
        names: the state_dict names of the weights being pruned.
    """

    def __init__(self, prog: PathProgram, names: Sequence[str]) -> None:
        self.prog = prog
        self.network = generate(input_rooted(prog.graph), prog.slots, mode="norm").to(
            device=prog.device, dtype=_F64)
        wanted = set(names)
        #: pruned weight -> the slots that read it (several when layers share it)
        self.slots_of: dict[str, list[int]] = {}
        for i, s in enumerate(prog.slots):
            if s.param in wanted and s.role not in BIAS_ROLES:
                self.slots_of.setdefault(s.param, []).append(i)
        self.support = self._lift()
        self.before = {i: self.support[i] != 0 for idx in self.slots_of.values() for i in idx}

    def _lift(self) -> list[Tensor]:
        prog = self.prog
        source = prog.live_source()
        with torch.no_grad():  # float64: a product w * s that is not zero stays so
            coords = lift(prog.graph, lambda n: source.fetch(n, _F64, prog.device), prog.slots)
            return [torch.zeros_like(c) if s.role in BIAS_ROLES else (c != 0).to(_F64)
                    for s, c in zip(prog.slots, coords.values())]

    # -- the network ------------------------------------------------------------------------
    def connected(self, support: Sequence[Tensor] | None = None) -> bool:
        """Whether an input-rooted path of non-zero mass reaches an output (default: the
        current support)."""
        with torch.no_grad():
            total, _exp = self.network(*(self.support if support is None else support))
        return bool(total > 0)

    def _grads(self, support: Sequence[Tensor], idx: Sequence[int]
               ) -> tuple[bool, dict[int, Tensor]]:
        """Whether ``support`` is connected, and ``d total / d support[i]`` for ``i`` in
        ``idx``: for each entry, the input-rooted paths through it with every other
        coordinate as in ``support`` (up to one positive factor shared by all entries)."""
        leaves = list(support)
        for i in idx:
            leaves[i] = support[i].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            total, _exp = self.network(*leaves)
            found: Sequence[Tensor | None] = [None] * len(idx)
            if idx and total.requires_grad:
                found = torch.autograd.grad(total, [leaves[i] for i in idx], allow_unused=True)
        grads = {i: torch.zeros_like(support[i]) if g is None else g for i, g in zip(idx, found)}
        return bool(total.detach() > 0), grads

    def _masked(self, masks: Mapping[str, Tensor]) -> list[Tensor]:
        """The support once ``masks`` (weight -> keep mask) apply on top of the current one."""
        out = list(self.support)
        for name, keep in masks.items():
            for i in self.slots_of.get(name, ()):
                out[i] = out[i] * keep.reshape(out[i].shape).to(_F64)
        return out

    def apply(self, masks: Mapping[str, Tensor]) -> None:
        """Record a step's keep masks (weight -> bool mask) as applied to the model."""
        self.support = self._masked(masks)

    # -- after pruning ----------------------------------------------------------------------
    def analyse(self) -> Collapse:
        """The connectivity of the current support, and its cut against the support before
        pruning (see `Collapse`)."""
        if self.connected():
            return Collapse(False)
        was = list(self.support)
        for i, b in self.before.items():
            was[i] = b.to(_F64)
        if not self.connected(was):
            return Collapse(True)
        changed = {name: idx for name, idx in self.slots_of.items()
                   if any(not torch.equal(was[i], self.support[i]) for i in idx)}
        _, grads = self._grads(self.support, [i for idx in changed.values() for i in idx])
        alone = [name for name, idx in changed.items()
                 if _gain(was, self.support, grads, idx) > 0
                 or (len(idx) > 1 and self.connected(_swap(self.support, was, idx)))]
        if alone:
            return Collapse(True, True, tuple(alone))
        needed = [name for name, idx in changed.items()
                  if not self.connected(_swap(was, self.support, idx))]
        return Collapse(True, True, tuple(needed), all_needed=bool(needed))

    # -- the guard of iterative pruning -----------------------------------------------------
    def guard(self, masks: dict[str, Tensor], scores: Mapping[str, Tensor],
              scope: str) -> dict[str, Tensor]:
        """This step's keep masks, changed if they would cut every input-rooted path.

        When the current support is connected and ``masks`` would collapse it, the entries
        that keep one path alive go back into the masks (`_reconnect`: one entry per weight
        of a smallest-found set of weights whose restoration reconnects), and as many kept
        entries that no input-rooted path of the repaired network crosses (a zero derivative:
        dropping them cuts no such path) leave them, lowest score first, from the same weight
        (``scope="layer"``) or from any (``"global"``): the step keeps exactly as many
        entries. When there are not enough such entries, ``masks`` is returned unchanged and
        the collapse is reported at the end.
        """
        trial = self._masked(masks)
        if self.connected(trial) or not self.connected():
            return masks
        added = self._reconnect(trial, scores)
        repaired = {name: keep.clone() for name, keep in masks.items()}
        for name, entries in added.items():
            repaired[name].view(-1)[entries] = True
        _, grads = self._grads(self._masked(repaired),
                               [i for name in masks for i in self.slots_of.get(name, ())])
        free = {}
        for name, keep in repaired.items():
            live = self.prog.parameter(name, self.prog.stored_dtype(name)) != 0
            crossed = torch.zeros(keep.numel(), dtype=torch.bool, device=keep.device)
            for i in self.slots_of.get(name, ()):
                crossed |= grads[i].reshape(-1) != 0
            free[name] = keep.reshape(-1) & live.reshape(-1) & ~crossed
            if name in added:
                free[name][added[name]] = False
        groups = ([[name] for name in added] if scope == "layer" else [list(masks)])
        for group in groups:
            count = sum(len(added.get(name, ())) for name in group)
            if not _drop_lowest(repaired, free, scores, group, count):
                return masks
        return repaired if self.connected(self._masked(repaired)) else masks

    def _reconnect(self, trial: list[Tensor], scores: Mapping[str, Tensor]
                   ) -> dict[str, Tensor]:
        """Entries (flat indices per weight) dropped by ``trial`` whose return reconnects it.

        First a set of weights whose full restoration reconnects: the single weight that
        brings back the most paths (one backward), else the dropped weights thinned to a
        minimal set (one forward each). Then, weight by weight in graph order (the later
        ones still fully restored), the entry of highest score among those whose return
        alone reconnects (one backward each; a weight shared by several layers keeps all its
        dropped entries).
        """
        now = self.support
        dropped = {name: idx for name, idx in self.slots_of.items()
                   if any(not torch.equal(trial[i], now[i]) for i in idx)}
        _, grads = self._grads(trial, [i for idx in dropped.values() for i in idx])
        gains = {name: _gain(now, trial, grads, idx) for name, idx in dropped.items()}
        chosen = [max(gains, key=gains.__getitem__)] if gains else []
        if not chosen or gains[chosen[0]] <= 0:
            chosen = list(dropped)
            for name in list(chosen):
                rest = [n for n in chosen if n != name]
                if self.connected(_swap(trial, now, [i for n in rest for i in dropped[n]])):
                    chosen = rest
        config = _swap(trial, now, [i for name in chosen for i in dropped[name]])
        added: dict[str, Tensor] = {}
        for name in chosen:
            idx = dropped[name]
            gone = sum((now[i] - trial[i]).reshape(-1) for i in idx) > 0
            if len(idx) > 1:
                added[name] = torch.nonzero(gone).squeeze(1)
                continue
            i = idx[0]
            config[i] = trial[i]
            connected, g = self._grads(config, [i])
            if connected:
                continue
            gain = gone & (g[i].reshape(-1) > 0)
            score = scores[name].reshape(-1).to(_F64)
            entry = int(torch.argmax(torch.where(gain, score, torch.full_like(score, -1.0))))
            config[i] = trial[i].clone()
            config[i].view(-1)[entry] = 1.0
            added[name] = torch.tensor([entry], device=trial[i].device)
        return added


def _gain(more: Sequence[Tensor], less: Sequence[Tensor], grads: Mapping[int, Tensor],
          idx: Sequence[int]) -> float:
    """The first-order mass that restoring slots ``idx`` from ``less`` to ``more`` brings."""
    return sum(float(((more[i] - less[i]) * grads[i]).sum()) for i in idx)


def _swap(base: Sequence[Tensor], source: Sequence[Tensor], idx: Sequence[int]) -> list[Tensor]:
    """``base`` with the slots ``idx`` taken from ``source``."""
    out = list(base)
    for i in idx:
        out[i] = source[i]
    return out


def _drop_lowest(masks: dict[str, Tensor], free: Mapping[str, Tensor],
                 scores: Mapping[str, Tensor], group: Sequence[str], count: int) -> bool:
    """Clear the ``count`` free entries of lowest score among the weights ``group`` in
    ``masks``; False when fewer are free."""
    if count == 0:
        return True
    flat = torch.cat([torch.where(free[n], scores[n].reshape(-1).to(_F64),
                                  torch.full((free[n].numel(),), torch.inf, dtype=_F64,
                                             device=free[n].device)) for n in group])
    if int(sum(int(free[n].sum()) for n in group)) < count:
        return False
    lowest = torch.topk(flat, count, largest=False).indices
    start = 0
    for n in group:
        size = free[n].numel()
        mine = lowest[(lowest >= start) & (lowest < start + size)] - start
        masks[n].view(-1)[mine] = False
        start += size
    return True
