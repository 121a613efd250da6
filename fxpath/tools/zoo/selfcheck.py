"""The measurements of the zoo's full mode: paired timings against the model's forward, and
the three float64 self-checks (the function reproduced through the IR interpreter, the
path-norm unchanged under `fxpath.rescale`, the Lipschitz bound holding for a random
same-sign perturbation) with their thresholds."""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from fxpath.tools.zoo.result import ZooResult

__all__ = ["FUNCTION_TOL", "RESCALE_TOL", "compile_quietly", "function_error",
           "lipschitz_ratio", "paired", "randomize_batchnorm", "rescale_error", "self_checks"]

#: thresholds of the self-checks (float64)
FUNCTION_TOL = 1e-7
RESCALE_TOL = 1e-9


def compile_quietly(model: nn.Module, shape: Sequence[int], **kw: Any) -> Any:
    """`fxpath.compile` of ``model`` at ``shape`` with its warnings silenced (the fx -> export
    fallback warns; the sweep records the outcome instead)."""
    import warnings

    from fxpath.api import compile as compile_program

    with warnings.catch_warnings():  # the fx -> export fallback warns; the sweep records it
        warnings.simplefilter("ignore")
        return compile_program(model, tuple(shape), **kw)


def paired(fn: Callable[[], object], forward: Callable[[], object],
           repeats: int) -> tuple[float, float]:
    """``(median ms of fn, median of fn's time / the mean of the forwards around it)``: warm
    (one call first), each call between two forwards, so that a drifting machine keeps the
    ratio honest."""
    fn()
    ms, ratios = [], []
    for _ in range(max(1, repeats)):
        t = [0.0, 0.0, 0.0]
        for i, f in enumerate((forward, fn, forward)):
            start = time.perf_counter()
            f()
            t[i] = time.perf_counter() - start
        ms.append(t[1] * 1e3)
        ratios.append(2 * t[1] / max(t[0] + t[2], 1e-9))
    return statistics.median(ms), statistics.median(ratios)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine parameters for every BatchNorm (in place): timm
    zero-initializes the last BatchNorm of residual blocks, which would leave the branches out
    of every self-check."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                n, dt = mod.num_features, mod.running_mean.dtype if mod.running_mean is not None \
                    else torch.float64
                if mod.running_mean is not None:
                    mod.running_mean.copy_((torch.rand(n, generator=gen) * 2 - 1).to(dt))
                    mod.running_var.copy_((torch.rand(n, generator=gen) + 0.5).to(dt))
                if mod.weight is not None:
                    mod.weight.copy_((torch.rand(n, generator=gen) + 0.5).to(mod.weight.dtype))
                    mod.bias.copy_((torch.rand(n, generator=gen) * 2 - 1).to(mod.bias.dtype))
    return model


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    with torch.no_grad():
        return [t for t in tree_leaves(model(x)) if isinstance(t, torch.Tensor)]


def function_error(prog: Any, model: nn.Module, x: torch.Tensor) -> float:
    """Self-check (a): the largest difference between ``model(x)`` and the IR run as a network
    by the reference interpreter (`fxpath.codegen.interpret.run`), relative to ``1 + max
    |model(x)|``."""
    from fxpath.codegen.interpret import run as interpret

    want = _outputs(model, x)
    with torch.no_grad():
        got = interpret(prog.graph, model, x)
    if len(got) != len(want):
        return math.inf
    err = 0.0
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return math.inf
        scale = 1.0 + float(w.abs().max()) if w.numel() else 1.0
        err = max(err, float((g - w).abs().max()) / scale if w.numel() else 0.0)
    return err


def rescale_error(model: nn.Module, shape: Sequence[int], log2: float) -> float:
    """Self-check (b): ``|log2 ||Phi(twin)||_1 - log2 ||Phi(model)||_1|`` for the twin that
    `fxpath.rescale` makes (random factors 1, 128, 4096 on every free neuron)."""
    from fxpath.apps.rescale import rescale

    twin = rescale(model, tuple(shape), seed=1)
    moved = any(not torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    other = compile_quietly(twin, shape, dtype=torch.float64).path_norm().log2
    return abs(other - log2) if moved else math.nan


def lipschitz_ratio(model: nn.Module, x: torch.Tensor, seed: int = 0,
                    spread: float = 0.1) -> float:
    """Self-check (c): ``max_n ||R(x_n) - R'(x_n)||_1 / bound_n`` for ``R'`` the model with
    every parameter entry multiplied by a random factor in ``[1 - spread, 1 + spread]`` (a
    same-sign perturbation) and the bound of `fxpath.lipschitz_bound`; at most 1 when the
    bound holds."""
    from fxpath.api import lipschitz_bound

    gen = torch.Generator().manual_seed(seed)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            factor = 1 + spread * (2 * torch.rand(p.shape, generator=gen, dtype=torch.float64) - 1)
            p.mul_(factor.to(p.dtype))
    bound = lipschitz_bound(model, other, x)
    diff = sum((a - b).abs().flatten(1).sum(1).to(torch.float64)
               for a, b in zip(_outputs(model, x), _outputs(other, x)))
    return float((diff / bound).max())


def self_checks(result: ZooResult, model: nn.Module, shape: Sequence[int], seed: int) -> None:
    """The three self-checks in float64 on a copy with random BatchNorm statistics; fills the
    ``function_err``, ``rescale_err``, ``lipschitz_ratio`` and ``checks`` of ``result``."""
    m64 = randomize_batchnorm(copy.deepcopy(model).double(), seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, *shape), generator=gen, dtype=torch.float64)
    prog = compile_quietly(m64, shape, dtype=torch.float64)
    result.function_err = function_error(prog, m64, x)
    result.rescale_err = rescale_error(m64, shape, prog.path_norm().log2)
    result.lipschitz_ratio = lipschitz_ratio(m64, x, seed)
    verdicts = [("function", result.function_err <= FUNCTION_TOL),
                ("rescale", not result.rescale_err > RESCALE_TOL),  # NaN: nothing to rescale
                ("lipschitz", result.lipschitz_ratio <= 1.0)]
    failed = [name for name, ok in verdicts if not ok]
    result.checks = "pass" if not failed else "FAIL " + "+".join(failed)
