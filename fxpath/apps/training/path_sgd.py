"""`PathSGD`: Path-SGD (Neyshabur, Salakhutdinov, Srebro 2015) for any ReLU-DAG fxpath compiles.

The update of a coordinate ``e`` is ``theta_e <- theta_e - lr * grad_e / gamma_e(theta)`` with
``gamma_e = d ||Phi(theta)||_2^2 / d (theta_e^2)`` (`fxpath.apps.training.gamma`): steepest
descent w.r.t. the l^2 path regularizer, hence invariant under neuron-wise rescaling (see
``docs/training.md``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.apps.training.gamma import PathGamma, times_pow2
from fxpath.apps.training.modules import batchnorm_modules, training_module
from fxpath.errors import ArgumentError, NonFiniteError, UnsupportedModelError, UnsupportedOp
from fxpath.program import PathProgram

__all__ = ["PathSGD"]


def _number(value: Any, what: str, advice: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(float(value)) or float(value) < 0:
        raise ArgumentError(f"{what} must be a finite number >= 0 ({advice}), got {value!r}")
    return float(value)


class PathSGD(torch.optim.Optimizer):
    """Path-SGD: SGD with each coordinate's gradient divided by its path scale ``gamma_e``.

    ``gamma_e(theta) = d ||Phi(theta)||_2^2 / d (theta_e^2)``: the sum, over the paths through
    ``e``, of the product of the squares of the other weights on the path (a bias counts as the
    first weight of the paths starting at its neuron). It is computed on every step from the
    live weights, by one forward and one backward of the q = 2 path network (no division by
    ``theta_e^2``, so zero weights are fine); the scale of ``||Phi||_2^2`` (which overflows
    float32 for deep networks) is carried as a power of two and divided out last, so the step is
    ``lr * grad / gamma`` to rounding (the path network runs in the program's dtype, the
    model's unless ``dtype=`` says otherwise; the rest in float64; coordinates whose share of
    the path mass is below that dtype's range, such as biases near the output of a deep
    network, get a second pass at a shifted scale). With ``momentum``, the buffer accumulates
    ``grad / gamma`` (``buf = momentum * buf + grad / gamma``, step ``lr * buf``); it is as
    rescaling-invariant as the plain update.

    Which parameters get which step:

    * conv/linear weights and biases, learnable scales: the formula above (a bias is a path
      coordinate like a weight);
    * BatchNorm weight and bias (frozen statistics, see below): they reach the path-lifting
      inside the folded coordinates ``W * s`` and ``s * (c - mean) + b``; their gamma is
      ``sum_j gamma_j (d c_j / d theta_e)^2`` over those coordinates, which is the formula
      above where the parameter multiplies the coordinates, and keeps the update
      rescaling-invariant everywhere;
    * parameters the path network does not read (a head excluded with ``output=``, a module
      the forward does not reach): a plain SGD step (with the same momentum);
    * entries with ``gamma_e = 0`` (no path through them reaches an output, so their gradient
      is zero too): no step.

    BatchNorm: the path network describes BatchNorm with its running statistics (eval mode).
    In train mode BatchNorm normalizes with batch statistics instead: the function trained is
    not the one whose path-lifting gamma measures, and the rescaling symmetry Path-SGD is built
    on is not that of the trained network. `step` therefore refuses a model whose BatchNorm
    modules are in train mode (`fxpath.UnsupportedModelError` naming them): put them in eval
    mode (``model.eval()``, or only the BatchNorm modules), which freezes their statistics; their
    weight and bias still train.

    A step either completes or changes nothing: gamma, every update and the new momentum
    buffers are computed before the first parameter is written, so an error (a NaN or inf
    gradient or weight: `fxpath.NonFiniteError`; BatchNorm in train mode) leaves parameters and
    state as they were.

    Args:
        model: the model being trained, or its ``DistributedDataParallel`` wrapper (gradients
            are all-reduced by DDP's backward; gamma depends only on the weights, so every
            rank computes the same step).
        input_shape: per-sample input shape (the path-norm depends on it).
        lr: learning rate (>= 0).
        momentum: momentum factor (>= 0, default 0).
        **compile_options: passed to `fxpath.compile` (``dtype``, ``device``, ``output``...).

    Example:
        >>> opt = fxpath.PathSGD(model.eval(), (1, 28, 28), lr=0.05, momentum=0.9)
        >>> loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int] | Sequence[Sequence[int]],
                 lr: float, momentum: float = 0.0, **compile_options: Any) -> None:
        module = training_module(model, "PathSGD")
        lr = _number(lr, "lr", "the learning rate")
        momentum = _number(momentum, "momentum", "0 for none, e.g. 0.9")
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ArgumentError("PathSGD found no parameter with requires_grad=True in the "
                                "model: nothing to train")
        super().__init__([p for _, p in named], {"lr": lr, "momentum": momentum})
        self.program = PathProgram(module, input_shape, **compile_options)
        self._gamma = PathGamma(self.program, [p for _, p in named], [n for n, _ in named])
        self._bns = batchnorm_modules(module, self.program.graph)

    @property
    def model(self) -> nn.Module:
        """The module the optimizer trains (a DDP wrapper's ``.module``)."""
        return self.program.model

    def gamma(self) -> dict[str, Tensor]:
        """``gamma_e(theta)`` of the live weights at full scale (float64, ``inf`` past its
        range), by parameter name, for the parameters the path network reads."""
        return self._gamma.gamma()

    def check_batchnorm(self) -> None:
        """Raise `fxpath.UnsupportedModelError` if a BatchNorm the path network reads is in
        train mode (see the class docstring)."""
        training = [UnsupportedOp(type(m).__name__ + " in train mode", path,
                                  "PathSGD needs frozen BatchNorm statistics (the path-lifting "
                                  "is that of eval mode): call model.eval(), or .eval() on the "
                                  "BatchNorm modules (their weight and bias still train)")
                    for path, m in self._bns.items() if m.training]
        if training:
            raise UnsupportedModelError(training, "the model given to PathSGD")

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None  # type: ignore[override]
             ) -> Tensor | None:
        """One Path-SGD step (``closure``: re-evaluates the model and returns the loss)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.check_batchnorm()
        plan = self._plan()
        for p, step, buf in plan:  # nothing can fail from here on
            if buf is not None:
                self.state[p]["momentum_buffer"] = buf
            p.sub_(step)
        return loss

    def _plan(self) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        """``(param, step to subtract, new momentum buffer)`` for every parameter with a
        gradient; reads and writes nothing of the optimizer's."""
        with_grad = [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not with_grad:
            return []
        self._check_finite([p for _, p in with_grad])
        index = {id(p): i for i, p in enumerate(self._gamma.params)}
        read = set(self._gamma.read_by)
        needed = any(index.get(id(p)) in read for _, p in with_grad)
        scaled, exponent = self._gamma() if needed else ({}, 0.0)
        plan = []
        for group, p in with_grad:
            if p.grad.is_sparse:
                raise ArgumentError("PathSGD does not take sparse gradients")
            h = scaled.get(index.get(id(p), -1))
            if h is None:  # not read by the path network: plain SGD
                direction = p.grad
            else:
                g = p.grad.to(torch.float64)
                ratio = torch.where(h > 0, g / torch.where(h > 0, h, 1.0), 0.0)
                direction = times_pow2(ratio, -exponent).to(p.dtype)
            buf = None
            if group["momentum"] != 0:
                old = self.state[p].get("momentum_buffer")
                buf = direction.clone() if old is None else old.mul(group["momentum"]).add_(
                    direction)
                direction = buf
            plan.append((p, direction.mul(group["lr"]), buf))
        return plan

    def _check_finite(self, params: list[Tensor]) -> None:
        ok = torch.stack([torch.isfinite(p.grad).all() for p in params])
        if bool(ok.all()):
            return
        names = {id(p): n for n, p in zip(self._gamma.names, self._gamma.params)}
        bad = [names.get(id(p), "<added parameter>") for p, fine in zip(params, ok.tolist())
               if not fine]
        raise NonFiniteError(f"NaN or inf in the gradient of {', '.join(bad)}: PathSGD made no "
                             "step (parameters unchanged)", bad)
