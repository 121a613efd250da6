"""Argument checks shared by the public functions: each failure says what to pass instead.

Every check raises `ArgumentError` (an `FxPathError` and a `ValueError`) before any work is
done, so a malformed call never touches the model.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.errors import ArgumentError, NonFiniteError

__all__ = ["as_input_shapes", "check_amount", "check_batch", "check_model", "check_q",
           "check_steps", "compute_dtype", "eval_mode", "shape_advice"]

#: the largest exponent of an l^q path-norm (the largest coordinate's ``|w|^q`` stays in
#: float64's range)
MAX_Q = 1000.0

#: compute dtypes a path network can run in
COMPUTE_DTYPES = (torch.float32, torch.float64)


def check_model(model: Any, what: str = "model", exported: bool = True) -> Any:
    """``model`` itself when it is an ``nn.Module`` (or, with ``exported``, a
    ``torch.export.ExportedProgram``) with at least one parameter."""
    if exported and isinstance(model, torch.export.ExportedProgram):
        if not model.state_dict:
            raise ArgumentError(f"{what} (an ExportedProgram) has no parameters: its path-"
                                "lifting is empty")
        return model
    if not isinstance(model, nn.Module):
        kinds = "a torch.nn.Module or a torch.export.ExportedProgram" if exported else (
            "a torch.nn.Module (this function writes to the model)")
        raise ArgumentError(f"{what} must be {kinds}, got {type(model).__name__}")
    if next(model.parameters(), None) is None:
        raise ArgumentError(f"{what} ({type(model).__name__}) has no parameters: its path-"
                            "lifting is empty")
    return model


def _dims(shape: Any, what: str) -> tuple[int, ...]:
    if isinstance(shape, Tensor):
        raise ArgumentError(f"{what} is a tensor; pass a shape, e.g. tuple(x.shape[1:]) for a "
                            "batch x")
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise ArgumentError(f"{what} must be a per-sample shape such as (3, 224, 224), got "
                            f"{shape!r}")
    dims = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise ArgumentError(f"{what} must hold integers, got {d!r} in {tuple(shape)!r}")
        dims.append(operator.index(d))
    if not dims:
        raise ArgumentError(f"{what} is empty; pass the per-sample shape, e.g. (3, 224, 224)")
    if any(d <= 0 for d in dims):
        raise ArgumentError(f"{what} {tuple(dims)} has sizes <= 0; every size must be positive")
    return tuple(dims)


def as_input_shapes(input_shape: Any) -> list[tuple[int, ...]]:
    """``(3, 224, 224)`` or ``[(3, 224, 224), (10,)]`` as a list of per-sample shapes.

    Raises:
        ArgumentError: an int, a tensor, a string, an empty shape, or sizes <= 0.
    """
    if isinstance(input_shape, numbers.Integral) and not isinstance(input_shape, bool):
        raise ArgumentError(f"input_shape must be a per-sample shape such as (3, 224, 224), got "
                            f"the int {input_shape}; for one flat input pass ({input_shape},)")
    if (isinstance(input_shape, Sequence) and not isinstance(input_shape, (str, bytes, Tensor))
            and len(input_shape) and all(isinstance(s, (tuple, list, torch.Size))
                                         for s in input_shape)):
        return [_dims(s, f"input_shape[{i}]") for i, s in enumerate(input_shape)]
    return [_dims(input_shape, "input_shape")]


def check_q(q: Any) -> float:
    """``q`` as a float: a finite number > 0."""
    if isinstance(q, bool) or not isinstance(q, numbers.Real):
        raise ArgumentError(f"q must be a number > 0 (1 for the l^1 path-norm), got {q!r}")
    q = float(q)
    if math.isinf(q) and q > 0:
        raise ArgumentError("q=inf (the largest path product) is not supported: fxpath computes "
                            "l^q path-norms for finite q > 0")
    if not q > 0 or math.isnan(q):
        raise ArgumentError(f"q must be a finite number > 0, got {q}")
    if q > MAX_Q:
        raise ArgumentError(f"q={q:g} is above {MAX_Q:g}: |w|^q would leave float64's range "
                            "even for the largest coordinate (0.5**q < 2**-1022)")
    return q


def check_amount(amount: Any) -> float:
    """``amount`` as a float in [0, 1]."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not (
            0.0 <= float(amount) <= 1.0):
        raise ArgumentError(f"amount must be a fraction in [0, 1] (0.6 prunes 60%), got "
                            f"{amount!r}")
    return float(amount)


def check_steps(steps: Any) -> int:
    """``steps`` as an int >= 1."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ArgumentError(f"steps must be an integer >= 1, got {steps!r}")
    return int(steps)


def check_batch(x: Any) -> Tensor:
    """``x`` as a finite floating batch ``(N, *input_shape)``."""
    if not isinstance(x, Tensor):
        raise ArgumentError(f"x must be a batch tensor of shape (N, *input_shape), got "
                            f"{type(x).__name__}; stack samples with torch.stack")
    if x.dim() < 2 or x.shape[0] == 0 or x.numel() == 0:
        raise ArgumentError(f"x must be a non-empty batch (N, *input_shape), got shape "
                            f"{tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)")
    if not x.is_floating_point():
        raise ArgumentError(f"x must be a floating-point tensor, got {x.dtype}")
    bad = ~torch.isfinite(x.detach()).flatten(1).all(1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten()[:5].tolist()
        raise NonFiniteError(f"x has NaN or inf entries (samples {rows}); the bound holds for "
                             "finite inputs only", [f"x[{r}]" for r in rows])
    return x


def compute_dtype(params: Sequence[Tensor], dtype: Any) -> torch.dtype:
    """The path network's compute dtype: ``dtype`` if given, else the model's.

    float64 models stay float64; float32, float16 and bfloat16 models are computed in float32
    (half-precision path networks would round every coordinate and every sum to 8-11 bits).
    """
    if dtype is not None:
        if dtype not in COMPUTE_DTYPES:
            raise ArgumentError(f"dtype must be torch.float32 or torch.float64 (or None for the "
                                f"model's own), got {dtype!r}")
        return dtype
    floats = {p.dtype for p in params if p.is_floating_point()}
    return torch.float64 if torch.float64 in floats else torch.float32


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside the block; each module's own flag restored after."""
    flags = [(m, m.training) for model in models for m in model.modules()]
    try:
        for m, _ in flags:
            m.training = False
        yield
    finally:
        for m, was in flags:
            m.training = was


_FIRST = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, _FIRST)), None)


def shape_advice(model: nn.Module, shapes: Sequence[tuple[int, ...]]) -> str | None:
    """What to change in ``input_shape`` when it cannot fit the model's first layer, or None.

    The first conv/linear module in registration order stands for the layer the input reaches
    first (true of timm and torchvision stems); the advice is given only when the shape is
    clearly wrong for it.
    """
    found = _first_layer(model)
    if found is None or len(shapes) != 1:
        return None
    name, layer = found
    shape = shapes[0]
    kind = type(layer).__name__
    if isinstance(layer, nn.Linear):  # only a flat input surely reaches it as it is
        if len(shape) == 1 and shape[-1] != layer.in_features:
            return (f"the first layer, {kind} '{name}', reads {layer.in_features} features in "
                    f"the last dimension; input_shape {shape} ends in {shape[-1]}")
        return None
    nd = len(layer.kernel_size)
    c = layer.in_channels
    want = f"({c}, {', '.join('HWD'[i] if nd > 1 else 'L' for i in range(nd))})"
    where = f"the first layer, {kind} '{name}', takes {want} per sample"
    if len(shape) == nd + 2 and shape[1] == c:
        return f"{where}: drop the batch dimension, i.e. input_shape={shape[1:]}"
    if len(shape) == nd:
        return f"{where}: add the channel dimension, i.e. input_shape={(c, *shape)}"
    if len(shape) == nd + 1 and shape[0] != c:
        return f"{where}: it expects {c} input channels, input_shape {shape} has {shape[0]}"
    if len(shape) != nd + 1:
        return f"{where}; input_shape {shape} has {len(shape)} dimensions"
    return None
