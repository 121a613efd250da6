"""The l^q path-norm: one pass of the path network on the live coordinates."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .errors import ArgumentError
from .precision import ieee_float32
from .results import PathNorm, log2_of
from .validate import check_q

if TYPE_CHECKING:
    from .program import PathProgram

__all__ = ["norm_inputs", "path_norm"]


def norm_inputs(prog: PathProgram, q: float, differentiable: bool = False) -> list[Tensor]:
    """The norm network's arguments for the live model: ``|c|`` (q = 1; the runner's buffers
    unless ``differentiable``), or mantissas then exponents (`fxpath.lift.split_power`)."""
    source = prog.live_source()
    if q != 1.0:
        return prog.runner.split_inputs(source, q)
    if differentiable:
        return list(prog.runner.lift(source, q).values())
    return prog.runner.live_magnitudes(source, q)


def path_norm(prog: PathProgram, q: float = 1.0, *, differentiable: bool = False) -> PathNorm:
    """``||Phi(theta)||_q`` of the program's live model (see `PathProgram.path_norm`)."""
    q = check_q(q)
    if not isinstance(differentiable, bool):
        raise ArgumentError(f"differentiable must be True or False, got {differentiable!r}")
    runner = prog.runner
    runner.check_runnable()
    network = runner.network(q, "norm")
    if differentiable:  # its backward runs later, under the caller's precision settings
        with torch.enable_grad(), ieee_float32():
            total, exp = network(*norm_inputs(prog, q, differentiable=True))
    else:
        with torch.no_grad():
            args = norm_inputs(prog, q)
            total, exp = runner.call(("norm", q), network, args, runner.borrowed(args, q))
    log2 = log2_of(float(total.detach()), float(exp)) / q
    prog.require_finite([log2], prog.live_source(check=False))
    if not differentiable and q == 1.0:  # the path-metric reuses it on the same magnitudes
        runner.remember_norm(q, log2, args)
    log_tensor = None
    if differentiable:
        log_tensor = (torch.log(total) + exp * torch.log(torch.tensor(
            2.0, dtype=total.dtype, device=total.device))) / q
    return PathNorm(q, log2, log_tensor)
