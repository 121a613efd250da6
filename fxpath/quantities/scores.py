"""Path-magnitude scores: the fraction of the l^1 path mass through every coordinate (one
forward and one backward of the path network), and per neuron."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from fxpath.engine.memory import empty_scores
from fxpath.engine.precision import ieee_float32
from fxpath.errors import ArgumentError
from fxpath.ir.graph import Node
from fxpath.ops.core import op_of
from fxpath.ops.linear import AFFINE, LINEAR_OPS
from fxpath.quantities.results import log2_of

if TYPE_CHECKING:
    from fxpath.engine.compiled import CompiledNetwork

__all__ = ["from_magnitudes", "log_gradient", "neuron_mass", "path_magnitude",
           "scores_and_norm"]


def path_magnitude(net: CompiledNetwork, *, neurons: bool = False,
                   out: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Scores of the live model by state_dict name (see `PathProgram.path_magnitude`)."""
    if not isinstance(neurons, bool):
        raise ArgumentError(f"neurons must be True or False, got {neurons!r}")
    if out is not None and not isinstance(out, Mapping):
        raise ArgumentError(f"out must be the dict an earlier path_magnitude() call "
                            f"returned, got {type(out).__name__}")
    runner = net.runner
    runner.check_runnable()
    if neurons:
        if out is not None:
            raise ArgumentError("out= is for parameter scores, not neurons=True")
        return neuron_mass(net)
    mags = runner.live_magnitudes(net.live_source(), 1.0)
    if not runner.use_graphs:
        scores, total, exp = runner.call(("scores",),
                                         functools.partial(scores_and_norm, net, out=out), mags)
        _remember_norm(net, total, exp, mags)
        return scores
    static, total = runner.call(("scores",), functools.partial(from_magnitudes, net), mags,
                                runner.borrowed(mags))  # the graph's own tensors
    net.check_total(total)
    if out is None:
        return {name: s.clone() for name, s in static.items()}
    for name, s in static.items():
        _destination(out, name, s).copy_(s)
    return {name: out[name] for name in static}


def _remember_norm(net: CompiledNetwork, total: Tensor, exp: Tensor, mags: Sequence[Tensor]
                   ) -> None:
    """Check the score pass's total (one host sync) and record the path-norm it is, so that
    a path-metric of the live model reuses it (`Runner.norm_memo`: only for magnitudes equal
    to ``mags`` bit for bit). The taps add zeros: the total is the norm network's own."""
    value, exponent = torch.stack([total.to(torch.float64), exp.to(torch.float64)]).tolist()
    if not math.isfinite(value):
        net.check_total(total)  # raises, naming the non-finite parameters
    log2 = log2_of(value, exponent)
    if not math.isnan(log2) and log2 != math.inf:
        net.runner.remember_norm(1.0, log2, mags)


def from_magnitudes(net: CompiledNetwork, *mags: Tensor, out: Mapping[str, Tensor] | None = None
            ) -> tuple[dict[str, Tensor], Tensor]:
    """Scores from the coordinate magnitudes: one forward and one backward of the path
    network (dense layers through taps, see `codegen.tapped_nodes`), and the network's
    output total (to check for NaN or inf)."""
    scores, total, _exp = scores_and_norm(net, *mags, out=out)
    return scores, total


def scores_and_norm(net: CompiledNetwork, *mags: Tensor, out: Mapping[str, Tensor] | None = None
                    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """`from_magnitudes`, and the exponent of its total: the path-norm of ``mags`` is
    ``total * 2**exponent``, exactly what the norm network computes (the taps add zeros)."""
    runner = net.runner
    tapped = {i: n for n, i in net.taps}  # dense layers: no autograd weight gradient
    leaves = [m if i in tapped else m.detach().requires_grad_(True)
              for i, m in enumerate(mags)]
    taps = [torch.zeros((1, *n.shape), dtype=runner.dtype, device=runner.device,
                        requires_grad=True) for n in tapped.values()]
    plain = [i for i in range(len(mags)) if i not in tapped]
    with torch.enable_grad():
        total, exp, inputs = runner.network(1.0, "norm", taps=True)(*leaves, *taps)
        grads = log_gradient(total, [leaves[i] for i in plain] + taps)
    grad_of = dict(zip(plain + list(tapped), grads))
    input_of = dict(zip(tapped, inputs))
    scores: dict[str, Tensor] = {}
    derived = runner.graph.derived()  # reported under the parameter they stand for
    for i, (slot, a) in enumerate(zip(runner.slots, mags)):
        if slot.param is None:
            continue
        key = derived[slot.param].report if slot.param in derived else slot.param
        dest = None if out is None else _destination(out, key, a)
        g = grad_of[i]
        if g is None:  # no path through this coordinate reaches an output
            frac = torch.zeros_like(a) if dest is None else dest.zero_()
        elif i in tapped:  # a * outer(grad_out, input): the weight gradient, fused
            x = input_of[i].detach().reshape(1, -1)
            # fresh memory asks for huge pages before its first write (`memory`)
            into = empty_scores(a.shape, a.dtype, a.device) if dest is None else dest
            frac = torch.mul(a, g.reshape(-1, 1), out=into).mul_(x)
        else:
            frac = g.mul_(a) if dest is None else torch.mul(g, a, out=dest)
        scores[key] = (frac.reshape(net.param_shape(slot.param)) if dest is None
                       else out[key])
    return scores, total.detach(), exp.detach()


def _destination(out: Mapping[str, Tensor], name: str, like: Tensor) -> Tensor:
    t = out.get(name)
    if (t is None or t.numel() != like.numel() or t.dtype != like.dtype
            or t.device != like.device or not t.is_contiguous()):
        got = "missing" if t is None else f"{tuple(t.shape)} {t.dtype} on {t.device}"
        raise ArgumentError(f"out[{name!r}] must be a contiguous {like.dtype} tensor on "
                            f"{like.device} with {like.numel()} entries (got {got}); pass "
                            "the dict an earlier path_magnitude() call returned")
    return t.view(like.shape)


def neuron_mass(net: CompiledNetwork) -> dict[str, Tensor]:
    """The path mass fraction through every output channel of every conv, linear and
    BatchNorm, keyed by module path."""
    runner = net.runner
    leaves = [m.detach().requires_grad_(True)
              for m in runner.live_magnitudes(net.live_source(), 1.0)]
    with torch.enable_grad(), ieee_float32():
        total, _exp, probes = runner.network(1.0, "norm", probes=True)(*leaves)
        net.check_total(total)
        grads = log_gradient(total, probes)
    owners = [n for n in runner.graph if op_of(n) in LINEAR_OPS or op_of(n) is AFFINE]
    out: dict[str, Tensor] = {}
    for node, h, g in zip(owners, probes, grads):
        if op_of(node) is AFFINE and node.attrs["kind"] == "prelu":
            continue
        mass = (h.detach() * g) if g is not None else torch.zeros_like(h)
        dims = [d for d in range(mass.dim()) if d != node.channel_dim()]
        out[_owner_name(node)] = mass.sum(dims) if dims else mass
    return out


def log_gradient(total: Tensor, targets: Sequence[Tensor]) -> tuple[Tensor | None, ...]:
    """``total * d(log total)/d target`` up to the same factor for all: the backward is seeded
    with ``1/total``, so ``value * grad`` is a path mass fraction directly."""
    return torch.autograd.grad(total, list(targets), torch.reciprocal(total.detach()),
                               allow_unused=True)


def _owner_name(node: Node) -> str:
    if op_of(node) in LINEAR_OPS:
        return node.params["weight"].rpartition(".")[0]
    return node.attrs["bn"].running_mean.rpartition(".")[0]
