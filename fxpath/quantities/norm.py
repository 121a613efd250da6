"""The l^q path-norm: one pass of the path network on the live coordinates."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fxpath.engine.precision import ieee_float32
from fxpath.errors import ArgumentError
from fxpath.quantities.results import PathNorm, log2_of
from fxpath.validate import check_q

if TYPE_CHECKING:
    from fxpath.engine.compiled import CompiledNetwork

__all__ = ["norm_inputs", "path_norm"]


def norm_inputs(net: CompiledNetwork, q: float, differentiable: bool = False) -> list[Tensor]:
    """The norm network's arguments for the live model: ``|c|`` (q = 1; the runner's buffers,
    the differentiable path's own when ``differentiable``), or mantissas then exponents
    (`fxpath.codegen.lift.split_power`)."""
    source = net.live_source()
    if q != 1.0:
        return net.runner.split_inputs(source, q)
    if differentiable:
        return net.runner.grad_magnitudes(source)
    return net.runner.live_magnitudes(source, q)


def path_norm(net: CompiledNetwork, q: float = 1.0, *, differentiable: bool = False) -> PathNorm:
    """``||Phi(theta)||_q`` of the compiled network's live model (see `PathProgram.path_norm`)."""
    q = check_q(q)
    if not isinstance(differentiable, bool):
        raise ArgumentError(f"differentiable must be True or False, got {differentiable!r}")
    runner = net.runner
    runner.check_runnable()
    network = runner.network(q, "norm")
    if differentiable:  # its backward runs later, under the caller's precision settings
        with torch.enable_grad(), ieee_float32():
            total, exp = network(*norm_inputs(net, q, differentiable=True))
    else:
        with torch.no_grad():
            args = norm_inputs(net, q)
            total, exp = runner.call(("norm", q), network, args, runner.borrowed(args, q))
    log2 = log2_of(float(total.detach()), float(exp)) / q
    net.require_finite([log2], net.live_source(check=False))
    if not differentiable and q == 1.0:  # the path-metric reuses it on the same magnitudes
        runner.remember_norm(q, log2, args)
    log_tensor = None
    if differentiable:
        log_tensor = torch.log(total) + exp * _ln2(total)
        if q != 1.0:  # (x / 1 is x, its gradient too)
            log_tensor = log_tensor / q
    return PathNorm(q, log2, log_tensor)


_LN2: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def _ln2(like: Tensor) -> Tensor:
    """``log(2)`` as a 0-dim tensor of ``like``'s dtype and device (computed once)."""
    key = (like.dtype, like.device)
    if key not in _LN2:
        _LN2[key] = torch.log(torch.tensor(2.0, dtype=like.dtype, device=like.device))
    return _LN2[key]
