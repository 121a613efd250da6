"""Argument checks shared by the public functions: each failure says what to pass instead.

Every check raises `ArgumentError` (an `FxPathError` and a `ValueError`) before any work is
done, so a malformed call never touches the model.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.errors import ArgumentError, NonFiniteError

__all__ = ["as_input_shapes", "batch_advice", "check_amount", "check_batch", "check_batches",
           "check_input_count", "check_model", "check_q", "check_steps", "compute_dtype",
           "eval_mode", "leading_size_warning", "shape_advice"]

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


def _forward_inputs(model: Any) -> tuple[list[str], list[str], bool] | None:
    """The inputs torch.fx makes of ``type(model).forward``: ``(required, optional, *args)``.

    torch.fx gives every named parameter after ``self`` (positional, then keyword-only) a
    placeholder, filled in that order with one shape each; a parameter with a default may go
    without one (it is traced at its default). ``None``: a forward whose signature cannot be
    read (nothing is checked then).
    """
    try:
        fn = inspect.unwrap(type(model).forward)
        params = list(inspect.signature(fn).parameters.values())[1:]  # drop self
    except (AttributeError, TypeError, ValueError):
        return None
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                             p.KEYWORD_ONLY)]
    return ([p.name for p in named if p.default is p.empty],
            [f"{p.name}={p.default!r}" for p in named if p.default is not p.empty],
            any(p.kind == p.VAR_POSITIONAL for p in params))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def check_input_count(model: Any, count: int, what: str = "input_shape") -> None:
    """Raise unless ``model``'s forward can take ``count`` inputs (``what`` names the argument
    holding them: ``"input_shape"`` with one shape per input, or ``"x"`` with one batch each).

    Every parameter of the forward without a default needs one; one with a default may be left
    out; more than the forward names are refused unless it takes ``*args``. Not a module, or a
    forward whose signature cannot be read: nothing is checked.

    Raises:
        ArgumentError: too few or too many inputs; the message names the forward's inputs and
            says how to pass one per input.
    """
    found = _forward_inputs(model) if isinstance(model, nn.Module) else None
    if found is None:
        return
    required, optional, varargs = found
    if len(required) <= count and (varargs or count <= len(required) + len(optional)):
        return
    takes = f"{type(model).__name__}.forward takes {_plural(len(required), 'input')}"
    takes += f" ({', '.join(required)})" if required else ""
    if optional:
        takes += f" and {len(optional)} optional ({', '.join(optional)})"
    if varargs:
        takes += " and any number more (*args)"
    names = required + [o.split("=", 1)[0] for o in optional]
    if what == "x":
        given = f"x holds {_plural(count, 'batch tensor')}"
        how = (f"pass a tuple with one batch tensor (N, ...) per input, in the order of "
               f"forward's parameters: x=({', '.join(names[:max(count, len(required))])})")
        if count > len(names):
            how += "; to pass several samples of one input, stack them with torch.stack"
    else:
        given = f"input_shape gives {_plural(count, 'shape')}"
        wanted = ", ".join(f"<{n}'s shape>" for n in names[:max(count, len(required))])
        how = ("pass a list with one per-sample shape (no batch dimension) per input, in the "
               f"order of forward's parameters: input_shape=[{wanted}]")
    raise ArgumentError(f"{given}, but {takes}: {how}")


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


def check_batches(x: Any) -> list[Tensor]:
    """``x`` as a list of finite floating batches of one size ``N``: a batch tensor
    ``(N, *input_shape)``, or a tuple (or list) of them, one per input of the model."""
    if not isinstance(x, (tuple, list)):
        return [check_batch(x)]
    if not x or not all(isinstance(t, Tensor) for t in x):
        kinds = ", ".join(sorted({type(t).__name__ for t in x})) or "nothing"
        raise ArgumentError(f"x must be a batch tensor of shape (N, *input_shape), or a tuple "
                            f"of them (one per model input), got a {type(x).__name__} of "
                            f"{kinds}; stack samples with torch.stack")
    if len(x) == 1:
        return [check_batch(x[0])]
    xs = []
    for i, t in enumerate(x):
        try:
            xs.append(check_batch(t))
        except NonFiniteError as exc:
            raise NonFiniteError(f"x[{i}]: {exc}", [f"x[{i}]{n[1:]}" for n in exc.names]) \
                from exc
        except ArgumentError as exc:
            raise ArgumentError(f"x[{i}]: {exc}") from exc
    sizes = [t.shape[0] for t in xs]
    if len(set(sizes)) > 1:
        raise ArgumentError(f"the inputs in x have different batch sizes {sizes}: each holds "
                            "the same N samples, one row per sample")
    return xs


def input_scale(xs: Sequence[Tensor]) -> Tensor:
    """``max(1, ||x_n||_inf)`` per sample, the factor of the Lipschitz bound: the largest
    ``|entry|`` of sample ``n`` over every input together (float64, shape ``(N,)``, on the
    first input's device)."""
    norms = [t.detach().flatten(1).abs().amax(1).to(xs[0].device, torch.float64) for t in xs]
    return torch.stack(norms).amax(0).clamp(min=1.0)


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


def batch_advice(model: nn.Module, x: Tensor) -> str | None:
    """`shape_advice` for a per-sample shape read from a batch ``x`` (``x.shape[1:]``, no
    ``input_shape`` given): what to change in ``x``, or None."""
    shape = tuple(x.shape[1:])
    found = _first_layer(model)
    if found is None or shape_advice(model, [shape]) is None:
        return None
    name, layer = found
    kind = type(layer).__name__
    if isinstance(layer, nn.Linear):
        return (f"the first layer, {kind} '{name}', reads {layer.in_features} features in the "
                f"last dimension; x ends in {shape[-1]}")
    nd = len(layer.kernel_size)
    c = layer.in_channels
    want = f"(N, {c}, {', '.join('HWD'[i] if nd > 1 else 'L' for i in range(nd))})"
    where = f"the first layer, {kind} '{name}', takes a batch {want}"
    if len(shape) == nd and x.shape[0] == c:
        return (f"{where}: x looks like one sample without its batch dimension; add it with "
                "x.unsqueeze(0)")
    if len(shape) == nd and c == 1:
        return f"{where}: add the channel dimension with x.unsqueeze(1)"
    if len(shape) == nd + 1 and shape[0] != c:
        return f"{where}: it expects {c} input channels in x.shape[1], x has {shape[0]}"
    return f"{where}; x has {x.dim()} dimensions"


def leading_size_warning(model: nn.Module, shapes: Sequence[tuple[int, ...]]) -> str | None:
    """A warning for an ``input_shape`` such as ``(4, 16)`` given to a model whose first layer
    is an ``nn.Linear`` of 16 features, or None.

    ``nn.Linear`` maps the last dimension, so the leading size is a second dimension of every
    sample: the model is analysed on that many stacked copies of its input (an MLP's path-norm
    comes out that many times larger). Legitimate, but usually a batch size given by mistake.
    """
    found = _first_layer(model)
    if found is None or len(shapes) != 1:
        return None
    name, layer = found
    shape = shapes[0]
    if not isinstance(layer, nn.Linear) or len(shape) < 2 or shape[0] <= 1 \
            or shape[-1] != layer.in_features:
        return None
    copies = math.prod(shape[:-1])
    return (f"fxpath: input_shape {shape} for a model whose first layer is {type(layer).__name__}"
            f" '{name}' ({layer.in_features} features, mapped along the last dimension): the "
            f"leading size {shape[0]} is read as a second dimension of each sample, not as a "
            f"batch, so the path quantities are those of {copies} stacked copies of the input "
            f"(an MLP's path-norm {copies}x as large). input_shape excludes the batch "
            f"dimension: pass {shape[-1:]} for one sample of {layer.in_features} features")
