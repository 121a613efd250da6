"""Independent baselines: the path network built the way the published code builds it.

``published_style_*`` deep-copies the model, converts it to float64 and rewrites it on every
call (``|w|`` in place, ReLU -> identity, max-pool -> sum-pool, frozen BatchNorm -> its affine
map with ``|s|`` and ``|t|``), then runs it on an all-ones input; scores are ``|theta| * grad``.
BatchNorm stays a separate layer (the published convention). It runs the model's own modules
(no fxpath code), which makes it an independent check as well as the speed baseline.
Supports models built from Conv/Linear/BatchNorm2d/ReLU/MaxPool2d/AvgPool/AdaptiveAvgPool/adds
(torchvision ResNets and VGGs).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["published_style_path_magnitude", "published_style_path_norm"]


class _SumPool(nn.Module):
    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.k, self.s, self.p, self.c = pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.k, self.s, self.p, self.c, True, 1)


class _Affine(nn.Module):
    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        self.weight = nn.Parameter(s.detach().abs())
        self.bias = nn.Parameter((bn.bias - bn.running_mean * s).detach().abs())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def _rewrite(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.Identity())
        elif isinstance(child, nn.MaxPool2d):
            setattr(module, name, _SumPool(child))
        elif isinstance(child, nn.BatchNorm2d):
            setattr(module, name, _Affine(child))
        elif isinstance(child, nn.Dropout):
            setattr(module, name, nn.Identity())
        else:
            _rewrite(child)


def _path_network(model: nn.Module) -> nn.Module:
    net = copy.deepcopy(model).double().eval()
    _rewrite(net)
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    return net


def _ones(net: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    return torch.ones((1, *input_shape), dtype=torch.float64,
                      device=next(net.parameters()).device)


def published_style_path_norm(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """l^1 path-norm, published style (float64, no scale tracking: overflows past 1e308)."""
    net = _path_network(model)
    with torch.no_grad():
        return float(net(_ones(net, input_shape)).sum())


def published_style_path_magnitude(model: nn.Module,
                                   input_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """Path-magnitude scores ``|theta| * d||Phi||_1 / d|theta|`` (absolute, not fractions).

    BatchNorm ``weight``/``bias`` entries are the scores of its affine map's ``|s|`` and ``|t|``.
    """
    net = _path_network(model)
    total = net(_ones(net, input_shape)).sum()
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
    return {n: (p.detach() * g if g is not None else torch.zeros_like(p)).float()
            for (n, p), g in zip(params.items(), grads)}
