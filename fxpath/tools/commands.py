"""What the ``fxpath`` subcommands do beyond parsing: model sources, checkpoints and the
machine-readable (``--json``) results.

`fxpath.tools.cli` runs the subcommands and calls these (its parser is
`fxpath.tools.arguments`, MODEL strings are `fxpath.tools.models`, ``fxpath check``'s report
is `fxpath.tools.support`):

- MODEL forms besides the registries: ``module.path:factory`` (`load_factory`) and a saved
  ``ExportedProgram`` (``.pt2``, `load_exported`);
- ``--checkpoint`` (`load_checkpoint`, `load_state`: ``.pt`` or ``.safetensors``), ``--save`` /
  ``--out`` (`save_tensors`) and ``--export`` (`export_program`);
- ``*_result`` functions: the results of ``norm``, ``scores``, ``prune`` and ``metric`` as
  JSON-ready dicts, and the text the commands print from them.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.errors import FxPathError
from fxpath.quantities.results import PathMetric, PathNorm

__all__ = ["as_module", "bound_line", "bound_result", "default_picture", "export_program",
           "is_factory_spec", "load_checkpoint", "load_exported", "load_factory", "load_state",
           "make_permanent", "metric_result", "norm_result", "prune_result", "save_tensors",
           "scores_result", "tensor_masses"]

#: ``package.module:factory`` (dots allowed on both sides of the colon)
_FACTORY = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


# -- MODEL sources ---------------------------------------------------------------------------

def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` reads ``module.path:factory`` with an importable top-level package
    (found without importing it)."""
    if not _FACTORY.fullmatch(spec):
        return False
    top = spec.split(":", 1)[0].split(".", 1)[0]
    with _cwd_on_path():
        try:
            return importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            return False


class _cwd_on_path:
    """The working directory on ``sys.path`` (as ``python -m`` has it), for the user's module."""

    def __enter__(self) -> None:
        self.added = os.getcwd() not in sys.path and "" not in sys.path
        if self.added:
            sys.path.insert(0, os.getcwd())

    def __exit__(self, *exc: object) -> None:
        if self.added and os.getcwd() in sys.path:
            sys.path.remove(os.getcwd())


def _input_size(model: nn.Module) -> tuple[int, ...] | None:
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, Mapping) and cfg.get("input_size"):
            return tuple(int(d) for d in cfg["input_size"])
    return None


def load_factory(spec: str) -> tuple[nn.Module, tuple[int, ...] | None]:
    """Call ``factory()`` from ``module.path:factory``; the model in eval mode and its input
    size when it records one (timm's ``pretrained_cfg``), else ``None`` (then ``--size``)."""
    module_name, _, attr = spec.partition(":")
    try:
        with _cwd_on_path():
            obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise FxPathError(f"cannot import {module_name!r} for MODEL {spec!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise FxPathError(f"{module_name!r} has no attribute {attr!r} (MODEL {spec!r} "
                              "reads module.path:factory)")
        obj = getattr(obj, part)
    if not callable(obj):
        raise FxPathError(f"{spec!r}: {attr} is not callable; MODEL module.path:factory names a "
                          "function or class that builds the model without arguments")
    try:
        model = obj()
    except Exception as exc:
        raise FxPathError(f"could not build {spec!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise FxPathError(f"{spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model.eval(), _input_size(model)


def load_exported(path: str) -> tuple[Any, tuple[int, ...] | None]:
    """``torch.export.load(path)`` and its per-sample input shape (one input) or ``None``."""
    if not Path(path).is_file():
        raise FxPathError(f"no such file: {path!r} (a MODEL ending in .pt2 is a saved "
                          "ExportedProgram, torch.export.save)")
    try:
        ep = torch.export.load(path)
    except Exception as exc:
        raise FxPathError(f"cannot load the ExportedProgram {path!r}: {type(exc).__name__}: "
                          f"{exc}") from exc
    ep = _static_batch(ep, path)
    from fxpath.frontend.build import exported_shapes

    try:
        shapes = exported_shapes(ep)
    except FxPathError:
        return ep, None
    return ep, shapes[0] if len(shapes) == 1 else None


def _static_batch(ep: Any, path: str) -> Any:
    """fxpath reads programs of static shapes: a program exported with a dynamic batch (as
    ``fxpath prune --export`` writes it) is exported again from its module at a batch of 2."""
    user = set(ep.graph_signature.user_inputs)
    vals = [n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder" and n.name in user]
    if all(isinstance(v, Tensor) and all(isinstance(d, int) for d in v.shape) for v in vals):
        return ep
    try:
        inputs = tuple(torch.zeros((2, *(int(d) for d in v.shape[1:])), dtype=v.dtype)
                       for v in vals)
        return torch.export.export(ep.module(), inputs, strict=False)
    except Exception as exc:
        raise FxPathError(f"{path!r} has dynamic shapes beyond the batch dimension, or cannot "
                          f"be exported again at a fixed batch: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]}") from exc


def as_module(model: Any, command: str = "prune") -> nn.Module:
    """``model`` for commands that change weights, which need a module.

    Raises:
        FxPathError: ``model`` is an ExportedProgram (its graph holds ATen ops that
            ``torch.nn.utils.prune`` cannot reach).
    """
    from fxpath.frontend.build import is_exported

    if is_exported(model):
        raise FxPathError(f"{command} needs the model as a torch.nn.Module, not an "
                          "ExportedProgram: give MODEL as a registry name or "
                          "module.path:factory, with --checkpoint for its weights")
    return model


# -- checkpoints -----------------------------------------------------------------------------

def load_state(path: str) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (``.pt``/``.pth``/``.bin``;
    loaded with ``weights_only=True``); a dict holding it under ``state_dict`` or ``model`` is
    unwrapped."""
    if not Path(path).is_file():
        raise FxPathError(f"no such checkpoint: {path!r}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state: Any = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError as exc:
        raise FxPathError("reading .safetensors needs the safetensors package "
                          "(pip install safetensors)") from exc
    except Exception as exc:
        raise FxPathError(f"cannot read the checkpoint {path!r}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300]}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise FxPathError(f"{path!r} holds no state dict (name -> tensor)")
    return dict(state)


def load_checkpoint(model: nn.Module, path: str) -> None:
    """Load the weights of ``path`` into ``model`` (strict: every name, every shape)."""
    state = load_state(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:600]
        raise FxPathError(f"the checkpoint {path!r} does not fit the model: {detail}") from exc


def save_tensors(tensors: Mapping[str, Tensor], path: str) -> None:
    """Save name -> tensor to ``.safetensors`` or, for any other suffix, with ``torch.save``."""
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(data, path)
        else:
            torch.save(data, path)
    except ImportError as exc:
        raise FxPathError("writing .safetensors needs the safetensors package "
                          "(pip install safetensors)") from exc
    except OSError as exc:
        raise FxPathError(f"cannot write {path!r}: {exc}") from exc


def export_program(model: nn.Module, shape: Sequence[int], path: str) -> str:
    """``torch.export.save`` of ``model`` at per-sample ``shape`` to ``path``; the batch
    dimension is dynamic where torch.export allows it. Returns how the batch was exported."""
    x = torch.zeros((2, *shape), dtype=next(model.parameters()).dtype)
    model = model.eval()
    try:
        ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
        batch = "dynamic batch"
    except Exception:
        try:
            ep = torch.export.export(model, (x,))
            batch = "batch of 2 (the model does not export with a dynamic batch)"
        except Exception as exc:
            raise FxPathError(f"torch.export could not export the model: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}") from exc
    try:
        torch.export.save(ep, path)
    except OSError as exc:
        raise FxPathError(f"cannot write {path!r}: {exc}") from exc
    return batch


# -- results as data -------------------------------------------------------------------------

def _number(v: float) -> float | str:
    """JSON has no inf/NaN: those become strings."""
    return v if math.isfinite(v) else str(v)


def _norm_dict(pn: PathNorm) -> dict[str, Any]:
    return {"q": pn.q, "value": _number(pn.value), "log10": _number(pn.log10),
            "log2": _number(pn.log2)}


def _metric_dict(m: PathMetric) -> dict[str, Any]:
    return {"value": _number(m.value), "log10": _number(m.log10), "log2": _number(m.log2),
            "relative": _number(m.relative), "exact": bool(m.exact)}


def norm_result(name: str, shape: Sequence[int], norms: Sequence[PathNorm],
                dtype: torch.dtype) -> dict[str, Any]:
    """``fxpath norm --json``."""
    return {"model": name, "input_shape": list(shape), "dtype": str(dtype),
            "path_norms": [_norm_dict(pn) for pn in norms]}


def tensor_masses(scores: Mapping[str, Tensor]) -> list[tuple[str, float, int]]:
    """``(name, path mass = sum of the entries' scores, entries)``, largest mass first."""
    rows = [(k, float(v.sum()), v.numel()) for k, v in scores.items()]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def scores_result(name: str, shape: Sequence[int], scores: Mapping[str, Tensor], top: int,
                  dtype: torch.dtype) -> dict[str, Any]:
    """``fxpath scores --json``: the ``top`` tensors by path mass."""
    rows = tensor_masses(scores)
    return {"model": name, "input_shape": list(shape), "dtype": str(dtype),
            "tensors_total": len(rows),
            "tensors": [{"name": k, "mass": m, "entries": n} for k, m, n in rows[:top]]}


def prune_result(name: str, shape: Sequence[int], report: Any) -> dict[str, Any]:
    """``fxpath prune --json``."""
    return {"model": name, "input_shape": list(shape), "criterion": report.criterion,
            "scope": report.scope, "amount": report.amount, "steps": report.steps,
            "overall_sparsity": report.overall_sparsity, "sparsity": dict(report.sparsity),
            "collapsed": report.collapsed, "cut": list(report.cut),
            "metric": _metric_dict(report.metric)}


def metric_result(name: str, other: str, shape: Sequence[int], metric: PathMetric,
                  dense_norm: PathNorm) -> dict[str, Any]:
    """``fxpath metric --json``."""
    return {"model": name, "other": other, "input_shape": list(shape),
            "metric": _metric_dict(metric), "path_norm": _norm_dict(dense_norm)}


def bound_result(name: str, shape: Sequence[int], report: Any,
                 dtype: torch.dtype) -> dict[str, Any]:
    """``fxpath bound --json``: every ingredient and figure of the report, by name."""
    return {"model": name, "input_shape": list(shape), "dtype": str(dtype),
            "n_train": report.n_train, "input_bound": report.input_bound,
            "effective_input_bound": report.effective_input_bound,
            "ingredients": dict(report.ingredients._asdict()),
            "path_norm": _norm_dict(report.path_norm), "constant": report.constant,
            "sharpened_constant": report.sharpened_constant, "factor": report.factor,
            "sharpened_factor": report.sharpened_factor,
            "log10_bound": _number(report.log10_bound),
            "log10_sharpened_bound": _number(report.log10_sharpened_bound),
            "bound": _number(report.bound), "sharpened_bound": _number(report.sharpened_bound)}


def metric_text(metric: PathMetric) -> str:
    """A certified path-metric in words: value, log10, relative value, exact or a bound."""
    kind = "exact" if metric.exact else "upper bound"
    return (f"{metric.value:.10g} (log10 {metric.log10:.10f}, relative {metric.relative:.6g}, "
            f"{kind})")


def bound_line(metric: PathMetric, what: str) -> str:
    """The Lipschitz certificate in words."""
    return (f"certified bound: ||R(x) - R_{what}(x)||_1 <= max(1, ||x||_inf) * "
            f"{metric.value:.6g} for every input x")


def make_permanent(model: nn.Module) -> None:
    """Make the pruning of ``model`` permanent (`torch.nn.utils.prune.remove`): the weights hold
    their zeros, the ``_orig``/``_mask`` pairs and hooks are gone, the state_dict names are the
    plain ones."""
    import torch.nn.utils.prune as torch_prune

    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)


def default_picture(kind: str, model: str) -> str:
    """``KIND_MODEL.png`` with the characters of MODEL a file name should not hold replaced."""
    return f"{kind}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(model).name)}.png"
