"""The l^1 path-metric between two parameter sets of one network (exact or certified)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fxpath.ir.coordinates import multiplied, tensor_of
from fxpath.ir.params import Params, ParamSource
from fxpath.quantities.envelope import BLOCK, Envelope, Operand, envelope
from fxpath.quantities.norm import path_norm
from fxpath.quantities.results import PathMetric, PathNorm, log2_of

if TYPE_CHECKING:
    from fxpath.engine.compiled import CompiledNetwork
    from fxpath.engine.runner import Runner

__all__ = ["path_metric"]


def path_metric(net: CompiledNetwork, other: Params, base: Params | None = None) -> PathMetric:
    """``||Phi(base) - Phi(other)||_1`` (``base`` default: the live model); see
    `PathProgram.path_metric`."""
    net.runner.check_runnable()
    with torch.no_grad():
        a_src, b_src = net.source_for(base), net.source_for(other)
        runner = net.runner
        # folded BatchNorm weights stay W and s: the envelope multiplies them block by block
        a, b = runner.factored(a_src), runner.factored(b_src)
        memo = runner.norm_memo() if base is None else None
        ref = memo[1] if memo is not None and list(memo[1]) == list(a) else None
        args, flags, unchanged = _envelopes(runner, a, b, ref)
        norm = None
        if _all([e.same_sign for e in flags]):
            lo, delta, exp = _totals(net, args)
            log2 = log2_of(delta, exp)
            a_over = _all([e.a_over for e in flags])
            b_over = not a_over and _all([e.b_over for e in flags])
            exact = a_over or b_over
            # dominated: the first set's norm is one of the network's two sums already
            if a_over:
                norm = PathNorm(1.0, log2_of(lo + delta, exp))
            elif b_over:
                norm = PathNorm(1.0, log2_of(lo, exp))
        else:
            a, b = _values(a), _values(b)
            # a * sign(b), not a * b: the product of tiny weights underflows to -0.0
            mid = {k: torch.where(a[k] * b[k].sign() >= 0, a[k], torch.zeros_like(a[k]))
                   for k in a}
            # mid is dominated by a (same signs, smaller magnitudes): both legs are exact
            lo, delta, exp = _totals(net, _envelopes(runner, a, mid)[0])
            norm = PathNorm(1.0, log2_of(lo + delta, exp))  # hi = |a| on the first leg
            second = log2_of(*_totals(net, _envelopes(runner, mid, b)[0])[1:])
            log2, exact = _log2_add(log2_of(delta, exp), second), False
        if norm is None and base is None:
            # the live model's norm: reused when computed on exactly these magnitudes
            norm = PathNorm(1.0, memo[0]) if memo and unchanged() else path_norm(net, 1.0)
        elif norm is None:
            norm = _norm_of(net, _values(a), a_src)
        net.require_finite([log2, norm.log2], a_src, b_src)
        return PathMetric(log2, exact, norm)


def _values(coords: Mapping[str, Operand]) -> dict[str, Tensor]:
    """Coordinates with every `Factored` product multiplied out."""
    return {k: multiplied(v) for k, v in coords.items()}


def _envelopes(runner: Runner, a: Mapping[str, Operand], b: Mapping[str, Operand],
               ref: Mapping[str, Tensor] | None = None
               ) -> tuple[list[Tensor], list[Envelope], Callable[[], bool]]:
    """The metric network's arguments (``lo``, ``gap`` per slot, in slot order), the
    envelopes' flags, and a check of whether ``|a|`` equals ``ref`` bit for bit.

    Slots below one block go through one envelope of their concatenation: a ResNet-50 has
    161 coordinate tensors, and per-tensor calls cost more than the arithmetic.

    The comparison with ``ref`` matters only when neither set dominates the other (else the
    norm is one of the network's two sums): on the CPU it runs inside the envelopes from the
    first slot that shows neither dominates, and the returned check compares the slots before
    it only when called. A dominated pair (a pruned twin) compares nothing; on a GPU every
    envelope compares (no host sync per slot).
    """
    small = [k for k in a if a[k].numel() < BLOCK]
    if len(small) < 2:
        small = []
    pieces: dict[str, tuple[Tensor, Tensor]] = {}
    flags: list[Envelope] = []
    unchanged = ref is not None  # False from the first difference on (or without ref)
    compare = unchanged and runner.device.type == "cuda"
    unchecked: list[str] = []
    so_far = [True, True, True]  # same signs, a over b, b over a: in every slot so far

    def note(keys: list[str], e: Envelope, compared: bool) -> None:
        nonlocal compare, unchanged
        flags.append(e)
        if compared:
            unchanged = e.matches_ref
        elif unchanged:
            unchecked.extend(keys)
            for i, flag in enumerate((e.same_sign, e.a_over, e.b_over)):
                so_far[i] = so_far[i] and bool(flag)
            # the norm will be needed: signs agree and neither set dominates
            compare = so_far[0] and not so_far[1] and not so_far[2]

    if small:
        def flat(t: Mapping[str, Operand]) -> Tensor:
            return torch.cat([multiplied(t[k]).reshape(-1) for k in small])
        fa = flat(a)
        compared = compare
        e = envelope(fa, flat(b), flat(ref) if compared else None,
                     runner.envelope_buffers("<small coordinates>", fa))
        note(small, e, compared)
        sizes = [a[k].numel() for k in small]
        for k, lo, gap in zip(small, e.lo.split(sizes), e.gap.split(sizes)):
            pieces[k] = (lo.view(a[k].shape), gap.view(a[k].shape))
    for k in a:
        if k in pieces:
            continue
        # compare with the reference until the first difference
        compared = compare and unchanged
        e = envelope(a[k], b[k], ref[k] if compared else None,
                     runner.envelope_buffers(k, tensor_of(a[k])))
        note([k], e, compared)
        pieces[k] = (e.lo, e.gap)

    def check() -> bool:
        return unchanged and all(
            torch.equal(multiplied(a[k]).abs(), ref[k]) for k in unchecked)

    return [t for k in a for t in pieces[k]], flags, check


def _norm_of(net: CompiledNetwork, coords: Mapping[str, Tensor], source: ParamSource) -> PathNorm:
    # its own graph key: the ("norm", 1.0) graph reads the runner's buffers in place, and
    # fresh magnitudes fed to it would force a capture on every alternation
    runner = net.runner
    total, exp = runner.call(("norm_of", 1.0), runner.network(1.0, "norm"),
                             [v.abs() for v in coords.values()])
    log2 = log2_of(float(total), float(exp))
    net.require_finite([log2], source)
    return PathNorm(1.0, log2)


def _totals(net: CompiledNetwork, args: Sequence[Tensor]) -> tuple[float, float, float]:
    """``(lo total, delta total, exponent)`` of the path-metric network on the envelopes'
    ``lo``/``gap`` arguments: ``||Phi(lo)||_1`` and ``||Phi(hi) - Phi(lo)||_1`` are the totals
    times ``2**exponent``."""
    runner = net.runner
    lo, delta, exp = runner.call(("diff",), runner.network(1.0, "diff"), args)
    return float(lo), float(delta), float(exp)


def _all(flags: Sequence[Tensor]) -> bool:
    """All of many 0-dim boolean tensors, with one host sync instead of one per tensor."""
    return bool(torch.stack(flags).all()) if flags else True


def _log2_add(x: float, y: float) -> float:
    """log2(2**x + 2**y) without overflow."""
    top = max(x, y)
    if top == -float("inf"):
        return top
    return top + torch.log2(torch.tensor(2.0 ** (x - top) + 2.0 ** (y - top),
                                         dtype=torch.float64)).item()
