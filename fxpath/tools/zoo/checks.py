"""The zoo's per-model tasks: `check_status` (status mode: compile on the meta device),
`check_model` (full mode: timings and the self-checks) and `run_one`, the worker's task that
picks one of them and never raises."""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from fxpath.errors import ArgumentError, FxPathError
from fxpath.tools.zoo.catalogue import ZooModel, build, default_input_size
from fxpath.tools.zoo.result import ZooResult, clean, record_refusal
from fxpath.tools.zoo.selfcheck import compile_quietly, paired, self_checks

__all__ = ["check_model", "check_status", "run_one"]


def _build_or_skip(m: ZooModel, result: ZooResult, device: str | None) -> nn.Module | None:
    try:
        return build(m, device)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        if device == "meta":  # a builder that computes on tensors: try for real
            return _build_or_skip(m, result, None)
        result.status = "skipped"
        result.reason = clean(f"cannot build: {type(exc).__name__}: {exc}")
        return None


def check_status(m: ZooModel, size: Sequence[int] | None = None,
                 device: str | None = "meta") -> ZooResult:
    """Status mode: compile ``m`` on the meta device (nothing is computed); supported or the
    first reason not. A builder that fails on the meta device is built on the CPU.
    ``device=None`` builds and compiles on the CPU with random weights instead."""
    t0 = time.perf_counter()
    result = ZooResult.of(m)
    model = _build_or_skip(m, result, device)
    if model is not None:
        result.params = sum(p.numel() for p in model.parameters())
        shape = tuple(size) if size else default_input_size(model, m)
        result.input_size = "x".join(map(str, shape))
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        try:
            compile_quietly(model, shape, device=device)
            result.status = "supported"
        except Exception as exc:
            record_refusal(result, exc)
    result.seconds = time.perf_counter() - t0
    return result


def check_model(m: ZooModel, size: Sequence[int] | None = None, *, repeats: int = 3,
                seed: int = 0, max_params: float = 2e8, checks: bool = True) -> ZooResult:
    """Full mode: compile ``m`` (float32, random weights of ``seed``); log10 of its l^1
    path-norm, the warm path-norm and scores times as ratios to its forward (batch 1, median
    of ``repeats`` paired runs), and the three self-checks (`selfcheck.self_checks`), at
    ``size`` (default: the model's own). The status is decided at the model's own input size on
    the meta device (`check_status`): a refused model is not built for real, and a ``size`` the
    model does not fit leaves it supported, with the reason in ``checks``."""
    t0 = time.perf_counter()
    result = check_status(m)  # on the meta device first: refusals cost no real build
    if result.status != "supported":
        return result
    if size:
        result.input_size = "x".join(map(str, size))
    shape = tuple(int(d) for d in result.input_size.split("x"))
    if result.params is not None and result.params > max_params:
        result.status = "skipped"
        result.reason = f"{result.params:.3g} parameters > --max-params {max_params:.3g}"
        return result
    torch.manual_seed(seed)
    model = build(m)
    try:
        prog = compile_quietly(model, shape)
    except ArgumentError as exc:  # --size does not fit the model (its own size does)
        result.checks = clean(f"ERROR input size: {exc}", 160)
        result.seconds = time.perf_counter() - t0
        return result
    except Exception as exc:
        record_refusal(result, exc)
        result.seconds = time.perf_counter() - t0
        return result
    result.log10_path_norm = prog.path_norm().log10
    x = torch.randn(1, *shape)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    result.forward_ms = paired(forward, forward, repeats)[0]
    result.path_norm_x = paired(prog.path_norm, forward, repeats)[1]
    result.scores_x = paired(prog.path_magnitude, forward, max(1, repeats))[1]
    del prog
    if checks:
        try:
            self_checks(result, model, shape, seed)
        except Exception as exc:  # the row keeps its timings; the checks column says why
            result.checks = clean(f"ERROR {type(exc).__name__}: {exc}", 160)
    result.seconds = time.perf_counter() - t0
    return result


def run_one(m: ZooModel, options: dict[str, Any]) -> ZooResult:
    """The worker's task: `check_status` or `check_model` by ``options["mode"]``; never raises
    (an unexpected exception becomes a ``gap`` row naming it)."""
    t0 = time.perf_counter()
    try:
        if options.get("mode", "full") == "status":
            return check_status(m, options.get("size"))
        return check_model(m, options.get("size"), repeats=options.get("repeats", 3),
                           seed=options.get("seed", 0),
                           max_params=options.get("max_params", 2e8),
                           checks=options.get("checks", True))
    except Exception as exc:
        result = record_refusal(ZooResult.of(m), exc)
        if not isinstance(exc, FxPathError):
            result.extra["traceback"] = traceback.format_exc()
        result.seconds = time.perf_counter() - t0
        return result
    finally:
        gc.collect()
