"""Functions that must not write to the model never do: parameters, buffers, gradients, modes,
hooks and attributes are exactly as before each call (pruned and train-mode models too)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

import fxpath

SHAPE = (3, 8, 8)


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6(),
                        nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.LeakyReLU(0.1), nn.Flatten(),
                        nn.Linear(24, 5), nn.PReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 1.5)
    torch_prune.l1_unstructured(net[4], "weight", amount=0.3)
    net.train()
    net(torch.randn(2, *SHAPE)).sum().backward()  # gradients present, BN stats moved
    with torch.no_grad():  # the pruning hook's weight without autograd history: deepcopy-able
        net(torch.randn(2, *SHAPE))
    return net


def snapshot(model: nn.Module) -> dict:
    """All the state a read-only function could disturb."""
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grads": {n: None if p.grad is None else p.grad.clone()
                  for n, p in model.named_parameters()},
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "identity": [(n, id(t)) for n, t in model.state_dict(keep_vars=True).items()],
        "training": [(n, m.training) for n, m in model.named_modules()],
        "hooks": [(n, len(m._forward_pre_hooks), len(m._forward_hooks),
                   len(m._backward_hooks)) for n, m in model.named_modules()],
        "attrs": [(n, sorted(m.__dict__)) for n, m in model.named_modules()],
        "versions": [(n, t._version) for n, t in model.state_dict(keep_vars=True).items()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    """``model`` is as ``snapshot`` saw it, bit for bit."""
    after = snapshot(model)
    for key in ("requires_grad", "identity", "training", "hooks", "attrs", "versions"):
        assert after[key] == before[key], key
    for key in ("tensors", "grads"):
        assert after[key].keys() == before[key].keys(), key
        for name, t in before[key].items():
            u = after[key][name]
            assert (t is None and u is None) or torch.equal(t, u), f"{key}: {name}"


CALLS: dict[str, Callable[[nn.Module, nn.Module], object]] = {
    "compile": lambda m, o: fxpath.compile(m, SHAPE),
    "path_norm": lambda m, o: fxpath.path_norm(m, SHAPE, 2.0),
    "path_metric": lambda m, o: fxpath.path_metric(m, o, SHAPE),
    "path_metric_reverse": lambda m, o: fxpath.path_metric(o, m, SHAPE),
    "lipschitz_bound": lambda m, o: fxpath.lipschitz_bound(m, o, torch.randn(3, *SHAPE)),
    "path_magnitude": lambda m, o: fxpath.path_magnitude(m, SHAPE),
    "generalization_bound": lambda m, o: fxpath.generalization_bound(m, SHAPE, 100),
    "neurons": lambda m, o: fxpath.compile(m, SHAPE).path_magnitude(neurons=True),
    "scores_out": lambda m, o: _twice_with_out(fxpath.compile(m, SHAPE)),
    "differentiable": lambda m, o: fxpath.compile(m, SHAPE).path_norm(differentiable=True),
    "coordinates": lambda m, o: fxpath.compile(m, SHAPE).coordinates(o),
    "magnitudes": lambda m, o: fxpath.compile(m, SHAPE).magnitudes(2.0),
    "parameter": lambda m, o: fxpath.compile(m, SHAPE).parameter("4.weight"),
    "rescale": lambda m, o: fxpath.rescale(m, SHAPE),
    "traced": lambda m, o: fxpath.compile(m, SHAPE).traced,
    "path_network": lambda m, o: fxpath.compile(m, SHAPE).path_network(1.0, mode="diff"),
}


def _twice_with_out(prog: fxpath.PathProgram) -> object:
    return prog.path_magnitude(out=prog.path_magnitude())


@pytest.mark.parametrize("call", sorted(CALLS))
def test_read_only_functions_leave_both_models_untouched(call: str) -> None:
    model = _net()
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[7].weight.mul_(0.5)
    before, before_other = snapshot(model), snapshot(other)
    CALLS[call](model, other)
    assert_unchanged(model, before)
    assert_unchanged(other, before_other)


def test_every_public_function_is_covered() -> None:
    public = {"compile", "path_norm", "path_metric", "lipschitz_bound", "path_magnitude",
              "rescale", "prune", "generalization_bound"}
    assert public <= set(fxpath.__all__)
    assert public - {"prune"} <= set(CALLS)  # prune writes, atomically: tests/apps/test_prune.py
