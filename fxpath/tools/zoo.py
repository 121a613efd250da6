"""The zoo sweep: every timm and torchvision classifier compiled, timed and self-checked.

`catalog` lists the classifiers of both registries (timm's ``timm.list_models()``, torchvision's
``torchvision.models.list_models(module=torchvision.models)``); `select` keeps one model per
*architecture* (see `architecture`) unless asked for all, and `shard` splits the list for a
batch system. `sweep` runs one task per model in worker processes (a crash or a hang costs one
model, never the sweep) and `write_csv` / `write_markdown` record the results with the machine
and the git commit. Two tasks:

- `check_status` ("status" mode): build the model on the meta device and compile it there;
  supported, or refused with the first reason. No weights, no arithmetic: the whole zoo in
  minutes. ``tests/zoo_expected.csv`` is this mode's output.
- `check_model` ("full" mode): build with random weights, compile, time the path-norm and the
  scores against the model's forward, and run three self-checks in float64 (the function
  reproduced through the IR interpreter, the path-norm unchanged under `fxpath.rescale`, the
  Lipschitz bound holding for a random same-sign perturbation).

The command line is ``fxpath zoo`` (`add_arguments`, `run`); ``docs/zoo.md`` describes it.
"""

from __future__ import annotations

import argparse
import copy
import csv
import fnmatch
import gc
import io
import math
import multiprocessing as mp
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fxpath.errors import ArgumentError, FxPathError, UnsupportedModelError, UnsupportedOp
from fxpath.frontend.refusals import BN_STATS, DATA_NORM, NOT_HOMOGENEOUS, PRODUCT

__all__ = ["EXPECTED_COMMAND", "EXPECTED_FIELDS", "FIELDS", "FUNCTION_TOL", "GENUINE_REASONS",
           "RESCALE_TOL", "SOURCES", "STATUSES", "ZooModel", "ZooResult", "add_arguments",
           "architecture", "build", "catalog", "check_model", "check_status", "classify_refusal",
           "coverage", "default_input_size", "failed", "family_summary", "function_error",
           "gap_table", "is_genuine", "lipschitz_ratio", "main", "natural_key", "parse_shard",
           "provenance", "randomize_batchnorm", "read_csv", "read_info", "rescale_error", "run",
           "run_one", "select", "shard", "summary_lines", "sweep", "write_csv",
           "write_expected", "write_markdown"]

SOURCES = ("timm", "torchvision")
#: ``supported``: compiles (and, in full mode, passes its self-checks or says which failed);
#: ``refused``: at least one op that no ReLU-DAG has (`GENUINE_REASONS`); ``gap``: refused or
#: failed for a reason that means fxpath lacks something (no rule yet, a trace failure, a
#: timeout, a crash); ``skipped``: the registry cannot build it, or it is above --max-params.
STATUSES = ("supported", "refused", "gap", "skipped")

#: refusal reasons that make a model genuinely not a ReLU-DAG (``fxpath.frontend.refusals``); every
#: other refusal reason ("no path-lifting rule", "not supported yet", ...) is a gap of fxpath
GENUINE_REASONS = (NOT_HOMOGENEOUS, DATA_NORM, PRODUCT, BN_STATS,
                   "division by an activation or a tensor is not positively homogeneous")

#: the columns of the CSV, in order
FIELDS = ("model", "source", "family", "arch", "params", "input_size", "status", "reason",
          "where", "log10_path_norm", "forward_ms", "path_norm_x", "scores_x", "function_err",
          "rescale_err", "lipschitz_ratio", "checks", "seconds")

#: timm name tokens that pick a size within one architecture (dropped by `architecture`)
_SIZE_WORDS = frozenset({"atto", "femto", "pico", "nano", "tiny", "small", "medium", "base",
                         "large", "xlarge", "huge", "giant", "gigantic", "xxs", "xs", "s", "m",
                         "l", "xl", "xxl", "mini", "micro"})
#: torchvision builders do not record an input size; its weights' transforms do
_TORCHVISION_SIZE = (3, 224, 224)


# -- the catalog ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ZooModel:
    """One classifier of a registry: its name, registry, family and architecture key."""

    name: str
    source: str
    family: str
    arch: str

    @property
    def spec(self) -> str:
        """The MODEL string of the command line: ``timm:NAME`` or ``torchvision:NAME``."""
        return f"{self.source}:{self.name}"


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key ordering digit runs by value: resnet18 < resnet34 < resnet101."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name.lower()))


def architecture(name: str) -> str:
    """The architecture key of a model name: depth, width, resolution and size words removed.

    Name tokens (split at ``_``) that are size words (``tiny``, ``base``, ``l``, ...) or start
    with a digit (``050``, ``224``, ``32x4d``) are dropped, and in the others every digit run
    not preceded by ``v`` (a version: ``mobilenetv2``) becomes ``#``: resnet18, resnet50 ->
    ``resnet#``; resnet50d -> ``resnet#d``; regnetx_002 -> ``regnetx``; convnext_tiny ->
    ``convnext``; vgg11_bn -> ``vgg#_bn``; efficientnet_b3 -> ``efficientnet_b#``.
    """
    tokens = [re.sub(r"(?<!v)\d+", "#", t) for t in name.split(".", 1)[0].split("_")]
    kept = [t for i, t in enumerate(tokens)
            if i == 0 or not (t in _SIZE_WORDS or t.startswith("#"))]
    return "_".join(kept)


def _timm_models() -> list[ZooModel]:
    import timm
    from timm.models import _registry

    modules = getattr(_registry, "_model_to_module", {})
    return [ZooModel(n, "timm", modules.get(n, "timm"), architecture(n))
            for n in timm.list_models()]


def _torchvision_models() -> list[ZooModel]:
    import torchvision

    out = []
    for n in torchvision.models.list_models(module=torchvision.models):
        family = torchvision.models.get_model_builder(n).__module__.rsplit(".", 1)[-1]
        out.append(ZooModel(n, "torchvision", family, architecture(n)))
    return out


def catalog(sources: Sequence[str] = SOURCES) -> list[ZooModel]:
    """Every classifier of ``sources`` (``"timm"``, ``"torchvision"``), sorted by registry and
    name (natural order)."""
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ArgumentError(f"unknown zoo source(s) {sorted(unknown)}: use {SOURCES}")
    models: list[ZooModel] = []
    if "timm" in sources:
        models += _timm_models()
    if "torchvision" in sources:
        models += _torchvision_models()
    return sorted(models, key=lambda m: (SOURCES.index(m.source), natural_key(m.name)))


def select(models: Iterable[ZooModel], *, every: bool = False, families: Sequence[str] = (),
           patterns: Sequence[str] = ()) -> list[ZooModel]:
    """Restrict ``models``: to ``families`` and name ``patterns`` (shell globs, any may match),
    then, unless ``every``, to one model per (registry, family, architecture): the first in
    natural order, usually the smallest (resnet18 for ``resnet#``)."""
    kept = [m for m in models
            if (not families or any(fnmatch.fnmatchcase(m.family, f) for f in families))
            and (not patterns or any(fnmatch.fnmatchcase(m.name, p)
                                     or fnmatch.fnmatchcase(m.spec, p) for p in patterns))]
    if every:
        return kept
    seen: set[tuple[str, str, str]] = set()
    out = []
    for m in sorted(kept, key=lambda m: (SOURCES.index(m.source), natural_key(m.name))):
        key = (m.source, m.family, m.arch)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``: shard ``i`` (0-based) of ``n``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ArgumentError(f"a shard is 'i/n' with 0 <= i < n (e.g. 0/4), got {text!r}")
    i, n = int(match.group(1)), int(match.group(2))
    if not 0 <= i < n:
        raise ArgumentError(f"shard {text!r}: the index must be in [0, {n}) (0-based), got {i}")
    return i, n


def shard(models: Sequence[ZooModel], index: int, count: int) -> list[ZooModel]:
    """Shard ``index`` of ``count``: every ``count``-th model of the list sorted by registry and
    name, starting at ``index``. Deterministic, disjoint, and together the whole list; each
    shard gets a mix of families (so of costs)."""
    if not 0 <= index < count:
        raise ArgumentError(f"shard index must be in [0, {count}), got {index}")
    ordered = sorted(models, key=lambda m: (SOURCES.index(m.source), natural_key(m.name)))
    return ordered[index::count]


# -- one model -----------------------------------------------------------------------------

@dataclass
class ZooResult:
    """One row of the sweep (`FIELDS`); unset measurements are ``None``."""

    model: str
    source: str
    family: str = ""
    arch: str = ""
    params: int | None = None
    input_size: str = ""
    status: str = "gap"
    reason: str = ""
    where: str = ""
    log10_path_norm: float | None = None
    forward_ms: float | None = None
    path_norm_x: float | None = None
    scores_x: float | None = None
    function_err: float | None = None
    rescale_err: float | None = None
    lipschitz_ratio: float | None = None
    checks: str = ""
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, m: ZooModel, **values: Any) -> ZooResult:
        """A result for catalog entry ``m``."""
        return cls(m.name, m.source, m.family, m.arch, **values)

    def row(self) -> dict[str, str]:
        """The CSV row: floats with 6 significant digits (log10 with 6 decimals)."""
        out = {}
        for f in FIELDS:
            v = getattr(self, f)
            if v is None:
                out[f] = ""
            elif isinstance(v, float):
                out[f] = f"{v:.6f}" if f == "log10_path_norm" else f"{v:.6g}"
            else:
                out[f] = str(v)
        return out

    @classmethod
    def from_row(cls, row: dict[str, str]) -> ZooResult:
        """Parse a CSV row written by `row`."""
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for f in FIELDS:
            text = row.get(f, "") or ""
            kind = str(kinds[f])
            if "float" in kind:
                values[f] = float(text) if text else None
            elif "int" in kind:
                values[f] = int(text) if text else None
            else:
                values[f] = text
        return cls(**values)


def is_genuine(reason: str) -> bool:
    """Whether a refusal reason says the op is not of a ReLU-DAG (`GENUINE_REASONS`), rather
    than that fxpath lacks a rule for it."""
    return reason in GENUINE_REASONS


def classify_refusal(ops: Sequence[UnsupportedOp]) -> tuple[str, UnsupportedOp]:
    """``("refused", first genuine op)`` when any op is genuinely not of a ReLU-DAG, otherwise
    ``("gap", first op)``: a model with one sigmoid is no ReLU-DAG whatever else it holds."""
    genuine = next((op for op in ops if is_genuine(op.reason)), None)
    if genuine is not None:
        return "refused", genuine
    if not ops:
        return "gap", UnsupportedOp("?", "", "refused without a reason")
    return "gap", ops[0]


def _clean(text: str, limit: int = 240) -> str:
    """One line, no memory addresses, no absolute paths, at most ``limit`` characters."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    line = re.sub(r"0x[0-9a-fA-F]+", "0x...", line)
    line = re.sub(r"(/[\w.+-]+){2,}/", ".../", line)
    return line[:limit]


def _refusal(result: ZooResult, exc: BaseException) -> ZooResult:
    """Fill ``status``/``reason``/``where`` from an exception raised while compiling."""
    if isinstance(exc, UnsupportedModelError):
        result.status, op = classify_refusal(exc.ops)
        result.reason, result.where = _clean(f"{op.op}: {op.reason}"), op.where
    elif isinstance(exc, FxPathError):
        result.status, result.reason = "gap", _clean(f"{type(exc).__name__}: {exc}")
    else:
        result.status = "gap"
        result.reason = _clean(f"internal error {type(exc).__name__}: {exc}")
    return result


def default_input_size(model: nn.Module | None, m: ZooModel) -> tuple[int, ...]:
    """timm's ``pretrained_cfg["input_size"]``; for torchvision, the model's own ``image_size``
    when it has one (vision transformers: the default weights of ``vit_h_14`` are for another
    size than the model built without them), else its default weights' crop size (299 for
    inception_v3), else 3x224x224."""
    if m.source == "timm":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return tuple(int(d) for d in cfg.get("input_size", _TORCHVISION_SIZE))
    side = getattr(model, "image_size", None)
    if isinstance(side, int):
        return (3, side, side)
    try:
        import torchvision

        crop = torchvision.models.get_model_weights(m.name).DEFAULT.transforms().crop_size
        return (3, int(crop[0]), int(crop[-1]))
    except Exception:  # builders without weights: the common ImageNet size
        return _TORCHVISION_SIZE


def build(m: ZooModel, device: str | torch.device | None = None) -> nn.Module:
    """The model with random weights (nothing downloaded), in eval mode, on ``device``
    (``"meta"``: no memory, no initialization)."""
    import warnings

    ctx = torch.device(device) if device is not None else _nullcontext()
    with ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # builders' deprecation notes, not the model's status
        if m.source == "timm":
            import timm

            model = timm.create_model(m.name, pretrained=False)
        else:
            import torchvision

            model = torchvision.models.get_model(m.name, weights=None)
    return model.eval()


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _build_or_skip(m: ZooModel, result: ZooResult, device: str | None) -> nn.Module | None:
    try:
        return build(m, device)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        if device == "meta":  # a builder that computes on tensors: try for real
            return _build_or_skip(m, result, None)
        result.status = "skipped"
        result.reason = _clean(f"cannot build: {type(exc).__name__}: {exc}")
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
            _compile(model, shape, device=device)
            result.status = "supported"
        except Exception as exc:
            _refusal(result, exc)
    result.seconds = time.perf_counter() - t0
    return result


def _compile(model: nn.Module, shape: Sequence[int], **kw: Any) -> Any:
    import warnings

    from fxpath.api import compile as compile_program

    with warnings.catch_warnings():  # the fx -> export fallback warns; the sweep records it
        warnings.simplefilter("ignore")
        return compile_program(model, tuple(shape), **kw)


# -- full mode: timings and self-checks ------------------------------------------------------

def _paired(fn: Callable[[], object], forward: Callable[[], object],
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
    other = _compile(twin, shape, dtype=torch.float64).path_norm().log2
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


#: thresholds of the self-checks (float64)
FUNCTION_TOL = 1e-7
RESCALE_TOL = 1e-9


def _checks(result: ZooResult, model: nn.Module, shape: Sequence[int], seed: int) -> None:
    """The three self-checks in float64 on a copy with random BatchNorm statistics."""
    m64 = randomize_batchnorm(copy.deepcopy(model).double(), seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, *shape), generator=gen, dtype=torch.float64)
    prog = _compile(m64, shape, dtype=torch.float64)
    result.function_err = function_error(prog, m64, x)
    result.rescale_err = rescale_error(m64, shape, prog.path_norm().log2)
    result.lipschitz_ratio = lipschitz_ratio(m64, x, seed)
    verdicts = [("function", result.function_err <= FUNCTION_TOL),
                ("rescale", not result.rescale_err > RESCALE_TOL),  # NaN: nothing to rescale
                ("lipschitz", result.lipschitz_ratio <= 1.0)]
    failed = [name for name, ok in verdicts if not ok]
    result.checks = "pass" if not failed else "FAIL " + "+".join(failed)


def check_model(m: ZooModel, size: Sequence[int] | None = None, *, repeats: int = 3,
                seed: int = 0, max_params: float = 2e8, checks: bool = True) -> ZooResult:
    """Full mode: compile ``m`` (float32, random weights of ``seed``); log10 of its l^1
    path-norm, the warm path-norm and scores times as ratios to its forward (batch 1, median
    of ``repeats`` paired runs), and the three self-checks (`_checks`), at ``size`` (default:
    the model's own). The status is decided at the model's own input size on the meta device
    (`check_status`): a refused model is not built for real, and a ``size`` the model does not
    fit leaves it supported, with the reason in ``checks``."""
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
        prog = _compile(model, shape)
    except ArgumentError as exc:  # --size does not fit the model (its own size does)
        result.checks = _clean(f"ERROR input size: {exc}", 160)
        result.seconds = time.perf_counter() - t0
        return result
    except Exception as exc:
        _refusal(result, exc)
        result.seconds = time.perf_counter() - t0
        return result
    result.log10_path_norm = prog.path_norm().log10
    x = torch.randn(1, *shape)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    result.forward_ms = _paired(forward, forward, repeats)[0]
    result.path_norm_x = _paired(prog.path_norm, forward, repeats)[1]
    result.scores_x = _paired(prog.path_magnitude, forward, max(1, repeats))[1]
    del prog
    if checks:
        try:
            _checks(result, model, shape, seed)
        except Exception as exc:  # the row keeps its timings; the checks column says why
            result.checks = _clean(f"ERROR {type(exc).__name__}: {exc}", 160)
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
        result = _refusal(ZooResult.of(m), exc)
        if not isinstance(exc, FxPathError):
            result.extra["traceback"] = traceback.format_exc()
        result.seconds = time.perf_counter() - t0
        return result
    finally:
        gc.collect()


# -- worker processes ----------------------------------------------------------------------

def _worker_main(conn: Any, task: Callable[..., Any], threads: int) -> None:
    """A worker's loop: receive ``(seq, item, options)``, send ``(kind, seq, value)``:
    ``("started", seq, None)`` then ``("ok", seq, task(item, options))`` or ``("error", seq,
    message)``. The job number ``seq`` ties each answer to its job."""
    torch.set_num_threads(max(1, threads))
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        seq, item, options = job
        conn.send(("started", seq, None))  # the time limit counts from here, not the spawn
        try:
            conn.send(("ok", seq, task(item, options)))
        except KeyboardInterrupt:
            return
        except BaseException as exc:  # noqa: BLE001 - a task bug must not end the sweep
            conn.send(("error", seq, f"{type(exc).__name__}: {exc}"))


#: seconds a fresh worker may take to start (import torch, timm) on top of the time limit
STARTUP_S = 300.0


class _Worker:
    """One worker process and the job it holds."""

    def __init__(self, ctx: Any, task: Callable[..., Any], threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, task, threads), daemon=True)
        self.proc.start()
        child.close()
        self.item: Any = None
        self.deadline = math.inf
        self.done = 0

    def give(self, item: Any, options: dict[str, Any], timeout: float | None) -> None:
        self.item, self.done = item, self.done + 1
        # until the worker says it started (a fresh one imports torch first): a generous limit
        self.deadline = time.monotonic() + timeout + STARTUP_S if timeout else math.inf
        self.conn.send((self.done, item, options))

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def sweep(items: Sequence[Any], task: Callable[..., Any], options: dict[str, Any], *,
          failure: Callable[[Any, str], Any], jobs: int = 1, timeout: float | None = None,
          tasks_per_worker: int = 1, threads: int = 1,
          on_result: Callable[[Any], None] | None = None) -> list[Any]:
    """``[task(item, options) for item in items]`` in ``jobs`` worker processes.

    Each worker runs at most ``tasks_per_worker`` items and is then replaced by a fresh one;
    an item past ``timeout`` seconds, or whose worker dies (a crash, the OOM killer), gets
    ``failure(item, why)`` and its worker is replaced, so one model never ends the sweep.
    ``jobs=0`` runs in this process (no isolation, no timeout). ``task`` and ``failure`` must be
    module-level functions (workers are spawned). Results come in completion order; each is
    passed to ``on_result`` as it arrives.
    """
    results: list[Any] = []

    def done(r: Any) -> None:
        results.append(r)
        if on_result is not None:
            on_result(r)

    if jobs <= 0:
        for item in items:
            done(task(item, options))
        return results
    ctx = mp.get_context("spawn")
    pending: deque[Any] = deque(items)
    busy: list[_Worker] = []
    idle: list[_Worker] = []
    try:
        while pending or busy:
            while pending and len(busy) < jobs:
                w = idle.pop() if idle else _Worker(ctx, task, threads)
                w.give(pending.popleft(), options, timeout)
                busy.append(w)
            _collect(busy, idle, done, failure, timeout, tasks_per_worker)
    finally:
        for w in busy + idle:
            w.stop(kill=True)
    return results


def _collect(busy: list[_Worker], idle: list[_Worker], done: Callable[[Any], None],
             failure: Callable[[Any, str], Any], timeout: float | None,
             tasks_per_worker: int) -> None:
    """Wait for the first result or deadline among ``busy`` workers; retire the finished."""
    now = time.monotonic()
    wait_s = max(0.0, min(w.deadline for w in busy) - now) if timeout else None
    ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], wait_s)
    now = time.monotonic()
    for w in list(busy):
        outcome: Any = None
        if w.conn in ready or w.proc.sentinel in ready:
            try:
                kind, seq, value = w.conn.recv()
                if seq != w.done:  # an answer to an earlier job (cannot happen): drop it
                    continue
                if kind == "started":
                    w.deadline = now + timeout if timeout else math.inf
                    continue
                outcome = value if kind == "ok" else failure(w.item, f"worker error: {value}")
            except (EOFError, OSError):
                w.proc.join(5)
                outcome = failure(w.item, f"worker died (exit code {w.proc.exitcode}: a crash "
                                          "or out of memory)")
        elif now >= w.deadline:
            outcome = failure(w.item, f"timeout after {timeout:g} s")
            w.stop(kill=True)
        if outcome is None:
            continue
        busy.remove(w)
        done(outcome)
        if w.proc.is_alive() and w.done < tasks_per_worker:
            idle.append(w)
        elif w.proc.is_alive():
            w.stop()


def failed(m: ZooModel, why: str) -> ZooResult:
    """The row of a model whose worker timed out or died: a gap, with the reason."""
    return ZooResult.of(m, status="gap", reason=_clean(why))


# -- results files -------------------------------------------------------------------------

def git_commit() -> str:
    """``git rev-parse --short HEAD`` of the package's checkout (else of the working
    directory's, for a copy of the package run from a checkout), ``+`` when fxpath's sources
    (``fxpath/``, ``passes/``, untracked files included) differ from it, ``unknown`` outside
    a checkout. The benchmarks record it beside their figures."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / ".git").exists():
            break
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=root, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fxpath", "passes"],
                               capture_output=True, text=True, cwd=root, check=True,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + ("+" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (``None`` where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def provenance(**settings: Any) -> dict[str, str]:
    """Where the results come from: commit, versions, machine, and the sweep's settings."""
    from importlib.metadata import version

    import timm
    import torchvision

    __version__ = version("fxpath")

    commit = os.environ.get("FXPATH_ZOO_COMMIT") or git_commit()  # a copy of the sources
    info = {"fxpath": __version__, "commit": commit, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": str(os.cpu_count())}
    if (cpu := cpu_name()) is not None:
        info["cpu"] = cpu
    info.update({k: str(v) for k, v in settings.items()})
    return info


def write_csv(results: Iterable[ZooResult], path: str | Path, info: dict[str, str],
              header: Sequence[str] = (), columns: Sequence[str] = FIELDS) -> None:
    """Write the rows sorted by registry and name, after ``#`` comment lines: ``header`` and
    ``info`` (commit, versions, machine)."""
    rows = sorted(results, key=lambda r: (SOURCES.index(r.source), natural_key(r.model)))
    buf = io.StringIO()
    for line in header:
        buf.write(f"# {line}\n")
    buf.write("# " + ", ".join(f"{k}={v}" for k, v in info.items()) + "\n")
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r.row())
    Path(path).write_text(buf.getvalue())


#: the columns of the expected-status file (``tests/zoo_expected.csv``)
EXPECTED_FIELDS = ("model", "source", "family", "status", "reason")
#: the command that regenerates it
EXPECTED_COMMAND = ("fxpath zoo --mode status --all --jobs 1 --out benchmarks/results/zoo_status "
                    "--expected tests/zoo_expected.csv")


def write_expected(results: Iterable[ZooResult], path: str | Path, info: dict[str, str]) -> None:
    """The expected-status file: every model with its status and the reason it is not
    supported (``refused``: the first op no ReLU-DAG has; ``gap``: the first reason, a known gap
    of fxpath), after a header saying what the columns mean and how to regenerate it."""
    header = [
        "Expected status of every timm and torchvision classifier (tests/test_zoo_expected.py).",
        "status: supported | refused (an op no ReLU-DAG has: the reason names the first one) |",
        "gap (a KNOWN GAP: a ReLU-DAG op or model fxpath cannot handle yet, with the reason) |",
        "skipped (the registry cannot build it). Statuses from compiling on the meta device at",
        "each model's default input size. Regenerate after a change of coverage with:",
        f"  {EXPECTED_COMMAND}",
    ]
    results = list(results)
    gaps = [f"{r.source}:{r.model}" for r in results if r.status == "gap"]
    header.append(f"known gaps: {len(gaps)}" + (f" ({', '.join(gaps)})" if gaps else ""))
    write_csv(results, path, {k: v for k, v in info.items()
                              if k in ("commit", "torch", "torchvision", "timm")},
              header, EXPECTED_FIELDS)


def read_csv(path: str | Path) -> list[ZooResult]:
    """The rows of a CSV written by `write_csv` (comment lines skipped; missing columns empty)."""
    lines = [ln for ln in Path(path).read_text().splitlines() if not ln.startswith("#")]
    return [ZooResult.from_row(row) for row in csv.DictReader(lines)]


def read_info(path: str | Path) -> dict[str, str]:
    """The ``key=value`` provenance line of a CSV written by `write_csv`."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("# ") and "commit=" in line:
            return dict(kv.split("=", 1) for kv in line[2:].split(", ") if "=" in kv)
    return {}


def coverage(results: Iterable[ZooResult]) -> dict[str, dict[str, int]]:
    """Counts by registry: ``supported``, ``refused``, ``gap``, ``skipped`` and ``relu_dag``
    (supported + gap: the models that are ReLU-DAGs as far as fxpath can tell)."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        c = out.setdefault(r.source, dict.fromkeys((*STATUSES, "relu_dag"), 0))
        c[r.status] = c.get(r.status, 0) + 1
        c["relu_dag"] += r.status in ("supported", "gap")
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _family_table(results: Sequence[ZooResult]) -> list[str]:
    by_family: dict[tuple[str, str], list[ZooResult]] = defaultdict(list)
    for r in results:
        by_family[r.source, r.family].append(r)
    lines = ["| registry | family | models | supported | refused (not a ReLU-DAG) | gap "
             "(fxpath lacks it) | skipped | most common reason not |",
             "|---|---|---|---|---|---|---|---|"]
    for (source, family), rows in sorted(by_family.items()):
        c = Counter(r.status for r in rows)
        reasons = Counter(_short(r.reason) for r in rows if r.status in ("refused", "gap"))
        top = reasons.most_common(1)[0][0] if reasons else ""
        lines.append(f"| {source} | {family} | {len(rows)} | {c['supported']} | "
                     f"{c['refused']} | {c['gap']} | {c['skipped']} | {top} |")
    return lines


def family_summary(results: Sequence[ZooResult]) -> list[str]:
    """Markdown lines for the README: one row per family that has a ReLU-DAG (supported or
    gap), then one line naming the families refused entirely, with their commonest reason."""
    by_family: dict[tuple[str, str], list[ZooResult]] = defaultdict(list)
    for r in results:
        by_family[r.source, r.family].append(r)
    lines = ["| family | models | supported | refused | gaps | why not (commonest) |",
             "|---|---|---|---|---|---|"]
    refused_only: list[tuple[str, int, str]] = []
    for (source, family), rows in sorted(by_family.items(), key=lambda kv: (
            SOURCES.index(kv[0][0]), kv[0][1])):
        c = Counter(r.status for r in rows)
        reasons = Counter(_op_reason(r.reason) for r in rows if r.status in ("refused", "gap"))
        top = reasons.most_common(1)[0][0] if reasons else ""
        if c["supported"] + c["gap"] == 0:
            refused_only.append((f"{source}:{family}", len(rows), top))
            continue
        lines.append(f"| {source}:{family} | {len(rows)} | {c['supported']} | {c['refused']} | "
                     f"{c['gap']} | {top} |")
    ops = Counter(reason for _, _, reason in refused_only)
    lines += ["", f"Refused entirely ({len(refused_only)} families, "
              f"{sum(n for _, n, _ in refused_only)} models; not ReLU-DAGs): "
              + ", ".join(f"{name} ({n})" for name, n, _ in refused_only) + ". Their commonest "
              "first reasons: " + "; ".join(f"{op} ({k} families)" for op, k in ops.most_common(6))
              + "."]
    return lines


def _op_reason(reason: str) -> str:
    """``"SiLU: not positively homogeneous (...)"`` -> ``"SiLU: not positively homogeneous"``."""
    return _short(reason.split(" (", 1)[0])


def _short(reason: str) -> str:
    return reason.replace("|", "/")[:90]


def gap_table(results: Sequence[ZooResult]) -> list[str]:
    """Markdown lines: every gap reason, how many models it blocks, and some of them."""
    blocked: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if r.status == "gap":
            blocked[_short(r.reason)].append(r.model)
    lines = ["| reason fxpath refuses or fails (a gap, not a non-ReLU op) | models | e.g. |",
             "|---|---|---|"]
    for reason, names in sorted(blocked.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"| {reason} | {len(names)} | {', '.join(names[:6])} |")
    return lines


def summary_lines(results: Sequence[ZooResult]) -> list[str]:
    """Coverage figures: per registry, of all models and of the ReLU-DAGs."""
    lines = []
    for source, c in coverage(results).items():
        dag = c["relu_dag"]
        share = f"{100 * c['supported'] / dag:.1f}%" if dag else "-"
        lines.append(f"- {source}: {sum(c[s] for s in STATUSES)} models: {c['supported']} "
                     f"supported, {c['refused']} refused (not ReLU-DAGs), {c['gap']} gaps, "
                     f"{c['skipped']} skipped; {c['supported']} of the {dag} ReLU-DAGs work "
                     f"({share})")
    return lines


def write_markdown(results: Sequence[ZooResult], path: str | Path, info: dict[str, str],
                   title: str = "fxpath zoo sweep") -> None:
    """The markdown report: provenance, coverage, a table by family, the gaps, and one row per
    model (timings and self-checks in full mode)."""
    rows = sorted(results, key=lambda r: (SOURCES.index(r.source), natural_key(r.model)))
    full = any(r.forward_ms is not None for r in rows)
    lines = [f"# {title}", "", "Machine and settings: " + ", ".join(
        f"{k}={v}" for k, v in info.items()), "", *summary_lines(rows), "",
        "## By family", "", *_family_table(rows), "", "## Gaps", "", *gap_table(rows), "",
        "## Models", ""]
    if full:
        lines += ["Times: warm, batch 1, float32, median of paired ratios to the model's "
                  "forward. Checks (float64, random BatchNorm statistics): function = max "
                  "|IR interpreter - model| / (1 + max |model|); rescale = |change of log2 "
                  "path-norm| under fxpath.rescale; Lipschitz = max ||R(x)-R'(x)||_1 / bound "
                  "for a random same-sign perturbation (<= 1 when it holds).", "",
                  "| model | params | status or reason | log10 l1 path-norm | forward (ms) | "
                  "path-norm / forward | scores / forward | function | rescale | Lipschitz | "
                  "checks |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            state = r.status if r.status == "supported" else f"{r.status}: {_short(r.reason)}"
            lines.append(
                f"| {r.source}:{r.model} | {_fmt(r.params and r.params / 1e6, '.2f')}M | "
                f"{state} | {_fmt(r.log10_path_norm, '.3f')} | {_fmt(r.forward_ms, '.1f')} | "
                f"{_fmt(r.path_norm_x, '.2f')} | {_fmt(r.scores_x, '.2f')} | "
                f"{_fmt(r.function_err, '.1e')} | {_fmt(r.rescale_err, '.1e')} | "
                f"{_fmt(r.lipschitz_ratio, '.2e')} | {r.checks} |")
    else:
        lines += ["| model | family | params | status | reason |", "|---|---|---|---|---|"]
        lines += [f"| {r.source}:{r.model} | {r.family} | "
                  f"{_fmt(r.params and r.params / 1e6, '.2f')}M | {r.status} | "
                  f"{_short(r.reason)} |" for r in rows]
    Path(path).write_text("\n".join(lines) + "\n")


# -- the command line ----------------------------------------------------------------------

def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"each input dimension must be an integer, got "
                                         f"{text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"each input dimension must be an integer >= 1, got "
                                         f"{text!r}")
    return value


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``fxpath zoo`` (also ``benchmarks/zoo.py``)."""
    p.add_argument("--mode", choices=("full", "status"), default="full",
                   help="full: compile, time and self-check each model with random weights; "
                        "status: compile on the meta device only (supported or the first "
                        "reason not; seconds for the whole zoo) (default: %(default)s)")
    p.add_argument("--source", choices=("all", *SOURCES), default="all",
                   help="which registry (default: %(default)s)")
    p.add_argument("--all", dest="every", action="store_true",
                   help="every model, not one per architecture (default: one per "
                        "architecture, the first in natural order)")
    p.add_argument("--family", metavar="GLOB", nargs="+", default=[],
                   help="only these families (timm's module, torchvision's: resnet, "
                        "'vgg*') (default: all)")
    p.add_argument("--filter", metavar="GLOB", nargs="+", default=[],
                   help="only model names matching a glob ('resnet*', 'torchvision:*') "
                        "(default: all)")
    p.add_argument("--shard", metavar="I/N", type=_shard_arg,
                   help="run shard I of N (0-based): every N-th model of the sorted list, so "
                        "that N machines (a Slurm array, Kubernetes jobs) share the sweep; "
                        "merge their CSVs with --merge (default: the whole list)")
    p.add_argument("--jobs", metavar="N", type=_nonneg, default=1,
                   help="worker processes, each model in a worker of its own (0: in this "
                        "process, no isolation) (default: %(default)s)")
    p.add_argument("--timeout", metavar="S", type=_seconds,
                   help="seconds per model before its worker is killed and the model "
                        "recorded as a gap (default: 600 in full mode, 300 in status mode)")
    p.add_argument("--size", metavar="DIM", type=_size, nargs="+",
                   help="input shape for every model, e.g. --size 3 64 64 (default: each "
                        "model's own: timm's input_size, the torchvision weights' crop)")
    p.add_argument("--repeats", metavar="N", type=_size, default=3,
                   help="timed repeats per quantity, median reported (default: %(default)s)")
    p.add_argument("--max-params", metavar="P", type=float, default=2e8,
                   help="full mode: skip models with more parameters (default: %(default)g)")
    p.add_argument("--no-checks", action="store_true",
                   help="full mode: skip the three float64 self-checks (default: run them)")
    p.add_argument("--threads", metavar="N", type=_size, default=1,
                   help="torch threads per worker (default: %(default)s)")
    p.add_argument("--out", metavar="STEM", default="zoo",
                   help="write STEM.csv and STEM.md (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows of an existing STEM.csv and sweep only the other "
                        "models (default: start afresh)")
    p.add_argument("--expected", metavar="CSV",
                   help="also write the expected-status file (model, source, family, status, "
                        "reason), e.g. tests/zoo_expected.csv (default: none)")
    p.add_argument("--merge", metavar="CSV", nargs="+",
                   help="merge shard CSVs into STEM.csv and STEM.md instead of sweeping "
                        "(default: sweep)")
    p.add_argument("--list", action="store_true",
                   help="print the models the flags select, one per line, and stop "
                        "(default: sweep them)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: a tqdm bar on stderr)")


def _selected(args: argparse.Namespace) -> list[ZooModel]:
    sources = SOURCES if args.source == "all" else (args.source,)
    models = select(catalog(sources), every=args.every, families=args.family,
                    patterns=args.filter)
    if args.shard:
        models = shard(models, *args.shard)
    return models


class _Progress:
    """A tqdm bar on stderr with the running counts per status (none with ``--no-progress``)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.counts: Counter[str] = Counter()
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm  # a dependency of fxpath; imported here: only the zoo uses it

            self.bar = tqdm(total=total, unit="model", dynamic_ncols=True, file=sys.stderr)

    def update(self, r: ZooResult) -> None:
        self.counts[r.status] += 1
        if self.bar is not None:
            self.bar.set_postfix_str(" ".join(f"{k}={self.counts[k]}" for k in STATUSES
                                              if self.counts[k]) + f" last={r.model}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _outputs_of(stem: str) -> tuple[Path, Path]:
    base = Path(stem)
    if base.suffix in (".csv", ".md"):
        base = base.with_suffix("")
    return base.with_suffix(".csv"), base.with_suffix(".md")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": args.mode, "selection": "all" if args.every else
                           "one per architecture", "threads_per_worker": args.threads}
    if args.size:
        out["size"] = "x".join(map(str, args.size))
    if args.family:
        out["family"] = " ".join(args.family)
    if args.filter:
        out["filter"] = " ".join(args.filter)
    if args.shard:
        out["shard"] = f"{args.shard[0]}/{args.shard[1]}"
    if args.mode == "full":
        out["repeats"] = args.repeats
    return out


def _write_all(results: Sequence[ZooResult], csv_path: Path, md_path: Path,
               info: dict[str, str], expected: str | None) -> None:
    write_csv(results, csv_path, info)
    write_markdown(results, md_path, info)
    if expected:
        write_expected(results, expected, info)


class _TerminateOnSigterm:
    """While active, SIGTERM (a batch system stopping the job) raises SystemExit: the sweep
    kills its workers and the results so far are written. The previous handler is restored."""

    def __enter__(self) -> None:
        import signal
        import threading

        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._stop)

    @staticmethod
    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _two_phases(todo: Sequence[ZooModel], options: dict[str, Any], args: argparse.Namespace,
                timeout: float, on_result: Callable[[ZooResult], None], measuring: list[bool],
                supported: list[ZooModel]) -> None:
    """The status of every model on the meta device, workers reused (cheap); in full mode the
    supported ones (``on_result`` collects them in ``supported``) are then measured, each in a
    fresh worker."""
    status_size = options["size"] if args.mode == "status" else None
    sweep(todo, run_one, {**options, "mode": "status", "size": status_size}, failure=failed,
          jobs=args.jobs, timeout=min(timeout, 300.0), tasks_per_worker=50,
          threads=args.threads, on_result=on_result)
    if args.mode == "full":
        measuring[0] = True
        sweep(supported, run_one, options, failure=failed, jobs=args.jobs, timeout=timeout,
              tasks_per_worker=1, threads=args.threads, on_result=on_result)


def run(args: argparse.Namespace) -> int:
    """``fxpath zoo``: sweep (or merge, or list) as the flags say; returns the exit code (0:
    a refused model or a gap is a result, not a failure of the sweep)."""
    csv_path, md_path = _outputs_of(args.out)
    if args.merge:
        results = [r for path in args.merge for r in read_csv(path)]
        info = read_info(args.merge[0]) or provenance()
        info["merged"] = str(len(args.merge))
        _write_all(results, csv_path, md_path, info, args.expected)
        print("\n".join(summary_lines(results)))
        return 0
    models = _selected(args)
    if args.list:
        print("\n".join(m.spec for m in models))
        return 0
    done: list[ZooResult] = read_csv(csv_path) if args.resume and csv_path.exists() else []
    seen = {(r.source, r.model) for r in done}
    todo = [m for m in models if (m.source, m.name) not in seen]
    info = provenance(**_settings(args))
    options = {"mode": args.mode, "size": tuple(args.size) if args.size else None,
               "repeats": args.repeats, "max_params": args.max_params,
               "checks": not args.no_checks}
    timeout = args.timeout or (300.0 if args.mode == "status" else 600.0)
    progress = _Progress(len(todo), not args.no_progress)
    results = list(done)
    supported: list[ZooModel] = []
    by_key = {(m.source, m.name): m for m in todo}
    measuring = [False]  # full mode, phase 2

    def on_result(r: ZooResult) -> None:
        if args.mode == "full" and not measuring[0] and r.status == "supported":
            supported.append(by_key[r.source, r.model])  # measured in phase 2
            return
        results.append(r)
        progress.update(r)
        if len(results) % 25 == 0:  # survive an interruption of a long sweep (--resume)
            write_csv(results, csv_path, info)

    try:
        with _TerminateOnSigterm():
            _two_phases(todo, options, args, timeout, on_result, measuring, supported)
    finally:
        progress.close()
        _write_all(results, csv_path, md_path, info, args.expected)
    print("\n".join(summary_lines(results)))
    print(f"wrote {csv_path} and {md_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fxpath.tools.zoo``: the same as ``fxpath zoo``."""
    p = argparse.ArgumentParser(prog="fxpath zoo", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
