"""What the ``fxpath`` subcommands do beyond parsing: model sources, checkpoints and the
machine-readable (``--json``) results.

`fxpath.tools.cli` runs the subcommands and calls these (its parser is
`fxpath.tools.arguments`, MODEL strings are `fxpath.tools.models`, ``fxpath check``'s report
is `fxpath.tools.support`):

- MODEL forms besides the registries: ``module.path:factory`` (`load_factory`) and a saved
  ``ExportedProgram`` (``.pt2``, `load_exported`);
- ``--checkpoint`` (`load_checkpoint`, `load_state`: ``.pt`` or ``.safetensors``), ``--save`` /
  ``--out`` (`save_tensors`) and ``--export`` (`export_program`);
- ``*_result`` functions and `as_json`: the results of every command as JSON-ready dicts, and
  the text the commands print from them (`digits`: as many digits as the compute dtype carries);
- `quiet_libraries`: torch's logged tracebacks and graph dumps kept off the terminal while
  fxpath reads a file or traces a model (its own errors say what went wrong);
- `error_text`: an exception in one line, also one without a message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import io
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.errors import FxPathError
from fxpath.quantities.results import PathMetric, PathNorm

__all__ = ["FACTORY", "as_json", "as_module", "bound_line", "bound_result", "default_picture",
           "digits", "error_text", "export_program", "factory_import_error", "is_factory_spec",
           "load_checkpoint", "load_exported", "load_factory", "load_state", "make_permanent",
           "metric_result", "metric_text", "norm_result", "norm_text", "plot_result",
           "prune_result", "quantize_result", "quiet_libraries", "save_tensors",
           "scores_result", "size_line", "tensor_masses"]

#: ``package.module:factory`` (dots allowed on both sides of the colon)
FACTORY = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
#: the torch loggers whose records `quiet_libraries` holds back (their children inherit it)
_TORCH_LOGGERS = ("torch",)


def error_text(exc: BaseException, limit: int = 300) -> str:
    """``"TypeName: first line of the message"`` (at most ``limit`` characters of it), or
    ``"TypeName"`` for an exception without a message (``EOFError()``)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


def _empty_file(path: str, what: str) -> None:
    """Raise when ``path`` holds no bytes: it cannot be ``what``."""
    if Path(path).stat().st_size == 0:
        raise FxPathError(f"{path!r} is empty (0 bytes): not {what}")


@contextlib.contextmanager
def quiet_libraries(keep_for_bugs: bool = False) -> Iterator[None]:
    """Keep what torch logs or prints to stderr while fxpath calls it (a logged traceback when
    ``torch.export.load`` fails, the FX graphs ``torch.export`` prints for a data-dependent
    branch) off the terminal: the error fxpath raises says what went wrong. Python warnings
    still reach stderr. With ``keep_for_bugs``, the held-back text is written out after an
    exception that is not an `FxPathError` (a bug: it may help the report). Nothing is held
    back when ``TORCH_LOGS`` asks torch for logs."""
    if os.environ.get("TORCH_LOGS"):
        yield
        return
    real, held = sys.stderr, io.StringIO()
    loggers = [logging.getLogger(name) for name in _TORCH_LOGGERS]
    levels = [logger.level for logger in loggers]

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        real.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        with warnings.catch_warnings(), contextlib.redirect_stderr(held):
            warnings.showwarning = show
            yield
    except (FxPathError, KeyboardInterrupt, BrokenPipeError):
        raise
    except BaseException:
        if keep_for_bugs:
            real.write(held.getvalue())
        raise
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# -- MODEL sources ---------------------------------------------------------------------------

def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` reads ``module.path:factory`` with an importable top-level package
    (found without importing it)."""
    if not FACTORY.fullmatch(spec):
        return False
    top = spec.split(":", 1)[0].split(".", 1)[0]
    with _cwd_on_path():
        try:
            return importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            return False


def factory_import_error(spec: str) -> str:
    """Why ``module.path`` of ``module.path:factory`` cannot be imported (``""`` when its
    top-level package is found: importing it is left to `load_factory`). Only a module that
    cannot be found is imported here, so nothing of the user's code runs."""
    module_name = spec.partition(":")[0]
    with _cwd_on_path():
        try:
            if importlib.util.find_spec(module_name.split(".", 1)[0]) is not None:
                return ""
            importlib.import_module(module_name)
        except Exception as exc:  # ModuleNotFoundError, or find_spec's ValueError
            return error_text(exc)
    return ""


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
    _empty_file(path, "an ExportedProgram (torch.export.save writes one)")
    try:
        with quiet_libraries():
            ep = torch.export.load(path)
    except Exception as exc:
        raise FxPathError(f"cannot load the ExportedProgram {path!r}: {error_text(exc)}") from exc
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
        with quiet_libraries():
            return torch.export.export(ep.module(), inputs, strict=False)
    except Exception as exc:
        raise FxPathError(f"{path!r} has dynamic shapes beyond the batch dimension, or cannot "
                          f"be exported again at a fixed batch: {error_text(exc, 200)}") from exc


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
    _empty_file(path, "a checkpoint (a .pt or .safetensors state dict)")
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
        raise FxPathError(f"cannot read the checkpoint {path!r}: {error_text(exc)} (not a "
                          "state dict saved by torch.save or safetensors, or a damaged one)"
                          ) from exc
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
    """Save name -> tensor to ``.safetensors`` or, for any other suffix, with ``torch.save``
    (the command line lets only ``.pt`` through: `fxpath.tools.arguments.tensor_file`)."""
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
        with quiet_libraries():
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
        batch = "dynamic batch"
    except Exception:
        try:
            with quiet_libraries():
                ep = torch.export.export(model, (x,))
            batch = "batch of 2 (the model does not export with a dynamic batch)"
        except Exception as exc:
            raise FxPathError(f"torch.export could not export the model: {error_text(exc)}"
                              ) from exc
    try:
        torch.export.save(ep, path)
    except OSError as exc:
        raise FxPathError(f"cannot write {path!r}: {exc}") from exc
    return batch


# -- results as data -------------------------------------------------------------------------

def _number(v: float) -> float | str:
    """JSON has no inf/NaN: those become strings."""
    return v if math.isfinite(v) else str(v)


def as_json(value: Any) -> Any:
    """``value`` as JSON-ready data: a dataclass (a report) by its fields and its public
    properties, so that a field added to it appears without a change here; `PathNorm` and
    `PathMetric` by value, log10, log2 (relative, exact); a tensor as a number or nested lists;
    inf and NaN as strings."""
    if isinstance(value, PathMetric):
        return _metric_dict(value)
    if isinstance(value, PathNorm):
        return _norm_dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)
               if f.repr}
        for name in dir(type(value)):
            if not name.startswith("_") and isinstance(getattr(type(value), name), property):
                out[name] = as_json(getattr(value, name))
        return out
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        return as_json(value.item() if value.dim() == 0 else value.tolist())
    if isinstance(value, Mapping):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if isinstance(value, float):
        return _number(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)  # a dtype, a path


def digits(dtype: torch.dtype) -> int:
    """Significant digits printed for a result computed in ``dtype``: 10 in float64; 6 in
    float32, whose seventh digit depends on the CPU's kernels (torchvision's ResNet-18:
    6.282850349e+30 with AVX-512 convolutions, 6.28284914e+30 with AVX2 ones)."""
    return 10 if dtype == torch.float64 else 6


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
                  dense_norm: PathNorm, dtype: torch.dtype) -> dict[str, Any]:
    """``fxpath metric --json``."""
    return {"model": name, "other": other, "input_shape": list(shape), "dtype": str(dtype),
            "metric": _metric_dict(metric), "path_norm": _norm_dict(dense_norm)}


def quantize_result(name: str, shape: Sequence[int], report: Any, dtype: torch.dtype,
                    saved: str | None) -> dict[str, Any]:
    """``fxpath quantize --json``: every field of the report (`as_json`) and the file written."""
    return {"model": name, "input_shape": list(shape), "dtype": str(dtype), **as_json(report),
            "saved": saved}


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


def plot_result(kind: str, name: str, picture: Any, shape: Sequence[int] | None = None,
                data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``fxpath plot --json``: the picture written and what it shows (``data``)."""
    head: dict[str, Any] = {"kind": kind, "model": name}
    if shape is not None:
        head["input_shape"] = list(shape)
    return {**head, "picture": str(picture), **as_json(dict(data or {}))}


def norm_text(pn: PathNorm, dtype: torch.dtype) -> str:
    """A path-norm as ``value (log10 ...)`` with the `digits` of ``dtype``."""
    d = digits(dtype)
    return f"{pn.value:.{d}g} (log10 {pn.log10:.{d}f})"


def metric_text(metric: PathMetric, dtype: torch.dtype) -> str:
    """A certified path-metric in words: value, log10 (the `digits` of ``dtype``), relative
    value, exact or a bound."""
    kind = "exact" if metric.exact else "upper bound"
    d = digits(dtype)
    return (f"{metric.value:.{d}g} (log10 {metric.log10:.{d}f}, relative "
            f"{metric.relative:.6g}, {kind})")


def bound_line(metric: PathMetric, what: str) -> str:
    """The Lipschitz certificate in words."""
    return (f"certified bound: ||R(x) - R_{what}(x)||_1 <= max(1, ||x||_inf) * "
            f"{metric.value:.6g} for every input x")


def size_line(size_bytes: int, float32_bytes: int) -> str:
    """``quantize``'s model size in words: the quantized copy's bytes against the same copy in
    float32, and the ratio."""
    ratio = f"{float32_bytes / size_bytes:.2f}x smaller" if size_bytes else "no size recorded"
    return f"size: {size_bytes:,} bytes, against {float32_bytes:,} in float32 ({ratio})"


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
