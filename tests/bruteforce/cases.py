"""The catalogue of tiny test networks: factories returning a :class:`Case`.

Each factory builds a :class:`~bruteforce.builders.Spec` under a fixed seed (BatchNorm and PReLU
parameters randomised so biases are non-zero), casts it and pairs it with
:func:`bruteforce.lowering.build_dag`. :data:`ALL_FACTORIES` names the ones the tests sweep over.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from bruteforce.builders import Affine, Spec, SpecNet, StdConv2d
from bruteforce.lowering import build_dag
from bruteforce.oracle import NeuronDAG

# --------------------------------------------------------------------------------------------
# Ready-made tiny networks
# --------------------------------------------------------------------------------------------


class Case(NamedTuple):
    """A factory result: eval-mode module, per-sample input shape, DAG builder."""

    module: SpecNet
    input_shape: tuple[int, ...]
    build: Callable[[SpecNet], NeuronDAG]


def _randomize(net: nn.Module) -> None:
    """Random BN affine parameters and running stats (non-zero biases) and PReLU slopes."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                sign = torch.where(torch.rand(c) < 0.25, -1.0, 1.0)
                if m.weight is not None:
                    m.weight.copy_(sign * (0.5 + torch.rand(c)))
                    m.bias.copy_(0.5 * torch.randn(c))
                m.running_mean.copy_(0.5 * torch.randn(c))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c))
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape) - 0.5)


def _make(fn: Callable[[], Spec], seed: int, dtype: torch.dtype) -> Case:
    """Build a spec under a fixed seed, randomise, cast, eval."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = fn().build()
        _randomize(net)
    net = net.to(dtype).eval()
    return Case(net, net.input_shape, build_dag)


def mlp_no_bias(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Bias-free 2-layer MLP 4 -> 5 -> 3 (closed-form path-norm)."""
    def spec() -> Spec:
        return (Spec((4,)).node("fc1", nn.Linear(4, 5, bias=False)).node("relu1", nn.ReLU())
                .node("fc2", nn.Linear(5, 3, bias=False)))
    return _make(spec, seed, dtype)


def mlp_with_bias(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """MLP 6 -> 5 -> 4 -> 3 with biases and ReLUs."""
    def spec() -> Spec:
        return (Spec((6,)).node("fc1", nn.Linear(6, 5)).node("relu1", nn.ReLU())
                .node("fc2", nn.Linear(5, 4)).node("relu2", nn.ReLU())
                .node("fc3", nn.Linear(4, 3)))
    return _make(spec, seed, dtype)


def conv_stride_pad_groups(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Grouped strided padded conv, then a grouped dilated bias-free conv, mean, linear."""
    def spec() -> Spec:
        return (Spec((2, 6, 6))
                .node("conv1", nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2))
                .node("relu1", nn.ReLU())
                .node("conv2", nn.Conv2d(4, 4, (3, 2), stride=(1, 2), padding=(2, 1),
                                         dilation=(2, 1), groups=2, bias=False))
                .node("relu2", nn.ReLU())
                .node("pool", "mean")
                .node("fc", nn.Linear(4, 2)))
    return _make(spec, seed, dtype)


def conv_bn(fold: bool = True, seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """conv(bias)-BN-ReLU, conv(no bias)-BN-ReLU, flatten, linear-BN1d; ``fold`` sets fold_bn."""
    def spec() -> Spec:
        return (Spec((2, 5, 5), fold_bn=fold)
                .node("conv1", nn.Conv2d(2, 3, 3, padding=1)).node("bn1", nn.BatchNorm2d(3))
                .node("relu1", nn.ReLU())
                .node("conv2", nn.Conv2d(3, 2, 3, stride=2, bias=False))
                .node("bn2", nn.BatchNorm2d(2)).node("relu2", nn.ReLU())
                .node("flat", nn.Flatten())
                .node("fc", nn.Linear(8, 3)).node("bn3", nn.BatchNorm1d(3)))
    return _make(spec, seed, dtype)


def bn_after_concat(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Standalone BNs: after a concat, and after a conv with two consumers; two outputs."""
    def spec() -> Spec:
        return (Spec((2, 5, 5), fold_bn=True)
                .node("conv_a", nn.Conv2d(2, 2, 3, padding=1), "x")
                .node("conv_b", nn.Conv2d(2, 1, 1), "x")
                .node("cat", "cat", "conv_a", "conv_b")
                .node("bn", nn.BatchNorm2d(3)).node("relu", nn.ReLU())
                .node("pool", "mean").node("fc", nn.Linear(3, 2))
                .node("bn_b", nn.BatchNorm2d(1), "conv_b").node("relu_b", nn.ReLU())
                .node("pool_b", "mean")
                .output("fc", "pool_b"))
    return _make(spec, seed, dtype)


def pools(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Avg-pools (ceil_mode, count_include_pad=False, divisor_override), max ceil_mode, adaptive."""
    def spec() -> Spec:
        return (Spec((1, 7, 7))
                .node("conv1", nn.Conv2d(1, 2, 3, padding=1)).node("relu1", nn.ReLU())
                .node("avg_a", nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                            count_include_pad=False), "relu1")
                .node("avg_b", nn.AvgPool2d(2, stride=2, padding=1, ceil_mode=True,
                                            divisor_override=3), "relu1")
                .node("max_a", nn.MaxPool2d(3, stride=2, ceil_mode=True), "avg_a")
                .node("amax", nn.AdaptiveMaxPool2d(3), "avg_b")
                .node("aavg", nn.AdaptiveAvgPool2d((3, 2)), "avg_b")
                .node("flat_m", nn.Flatten(), "max_a")
                .node("flat_x", nn.Flatten(), "amax")
                .node("flat_v", nn.Flatten(), "aavg")
                .node("feats", "cat", "flat_m", "flat_x", "flat_v")
                .node("fc", nn.Linear(8 + 18 + 12, 3)))
    return _make(spec, seed, dtype)


def residual_add(fold: bool = True, seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Basic residual block: conv-BN-ReLU-conv-BN + x, ReLU, mean, linear."""
    def spec() -> Spec:
        return (Spec((2, 5, 5), fold_bn=fold)
                .node("conv1", nn.Conv2d(2, 2, 3, padding=1, bias=False))
                .node("bn1", nn.BatchNorm2d(2)).node("relu1", nn.ReLU())
                .node("conv2", nn.Conv2d(2, 2, 3, padding=1, bias=False))
                .node("bn2", nn.BatchNorm2d(2))
                .node("res", "add", "bn2", "x").node("relu2", nn.ReLU())
                .node("pool", "mean").node("fc", nn.Linear(2, 2)))
    return _make(spec, seed, dtype)


def concat_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Two conv branches and the input concatenated, 1x1 conv, two heads (fc and mean)."""
    def spec() -> Spec:
        return (Spec((2, 4, 4))
                .node("b1", nn.Conv2d(2, 1, 1), "x")
                .node("b2", nn.Conv2d(2, 2, 3, padding=1), "x").node("relu_b2", nn.ReLU())
                .node("cat", "cat", "b1", "relu_b2", "x")
                .node("mix", nn.Conv2d(5, 2, 1)).node("relu", nn.ReLU())
                .node("pool", nn.MaxPool2d(2))
                .node("flat", nn.Flatten()).node("fc", nn.Linear(8, 2))
                .node("aux", "mean", "cat")
                .output("fc", "aux"))
    return _make(spec, seed, dtype)


def split_chunk_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """A conv whose 5 channels are chunked (3 + 2) and split (2 + 2 + 1); the pieces feed a
    residual add, a second conv and a concat, one piece is left unused."""
    def spec() -> Spec:
        return (Spec((2, 4, 4))
                .node("stem", nn.Conv2d(2, 5, 3, padding=1)).node("relu", nn.ReLU())
                .node("c0", "chunk:2:0", "relu").node("c1", "chunk:2:1", "relu")
                .node("s0", "split:2:0", "relu").node("s2", "split:2:2", "relu")
                .node("conv", nn.Conv2d(2, 2, 3, padding=1), "c1").node("r2", nn.ReLU())
                .node("res", "add", "r2", "s0")
                .node("cat", "cat", "c0", "res", "s2")
                .node("pool", nn.MaxPool2d(2)).node("flat", nn.Flatten())
                .node("fc", nn.Linear(6 * 2 * 2, 3)))
    return _make(spec, seed, dtype)


def learnable_affine_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Multiplications by and additions of parameters: a scalar affine after a ReLU (timm's
    learnable affine block), a per-channel layer scale before a residual add, a subtracted
    per-channel bias, a per-position scale and a bias-only shift."""
    def spec() -> Spec:
        return (Spec((2, 4, 4))
                .node("stem", nn.Conv2d(2, 3, 3, padding=1)).node("r0", nn.ReLU())
                .node("lab", Affine((1,), (1,)))
                .node("conv", nn.Conv2d(3, 3, 3, padding=1)).node("gamma", Affine((1, 3, 1, 1),
                                                                                   None))
                .node("res", "add", "gamma", "lab").node("r1", nn.ReLU())
                .node("shift", Affine(None, (3, 1, 1), sign=-1.0))
                .node("pos", Affine((4, 4), None)).node("r2", nn.ReLU())
                .node("pool", nn.MaxPool2d(2)).node("flat", nn.Flatten())
                .node("fc", nn.Linear(3 * 2 * 2, 2)))
    return _make(spec, seed, dtype)


def padded_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Constant padding: -inf in front of max-pools (asymmetric 'same' padding, as timm's
    MaxPool2dSame does it), and a finite non-zero value in front of a conv, whose padded
    entries start paths of their own."""
    def spec() -> Spec:
        return (Spec((2, 5, 5))
                .node("stem", nn.Conv2d(2, 3, 3, padding=1)).node("r0", nn.ReLU())
                .node("same", nn.ConstantPad2d((0, 1, 0, 1), -math.inf))
                .node("pool", nn.MaxPool2d(2, stride=1))
                .node("pad", nn.ConstantPad2d((1, 1, 2, 0), 0.75))
                .node("conv", nn.Conv2d(3, 3, 3)).node("r1", nn.ReLU())
                .node("pad2", nn.ConstantPad2d(1, -math.inf))
                .node("pool2", nn.MaxPool2d(3, stride=2))
                .node("flat", nn.Flatten()).node("fc", nn.Linear(3 * 3 * 3, 2)))
    return _make(spec, seed, dtype)


def derived_weights_net(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """Weights computed from parameters at run time: a weight-standardized conv with a gain,
    and torch's weight normalization (a parametrization) on a conv and the classifier."""
    def spec() -> Spec:
        conv = nn.Conv2d(3, 3, 3)
        fc = nn.Linear(3 * 2 * 2, 2)
        torch.nn.utils.parametrizations.weight_norm(conv)
        torch.nn.utils.parametrizations.weight_norm(fc)
        return (Spec((2, 4, 4))
                .node("std", StdConv2d(2, 3, 3, padding=1)).node("r0", nn.ReLU())
                .node("conv", conv).node("r1", nn.ReLU())
                .node("flat", nn.Flatten()).node("fc", fc))
    return _make(spec, seed, dtype)


def _act(kind: str, channels: int) -> nn.Module:
    """The activation module for ``activations(kind)``."""
    table: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "leaky": lambda: nn.LeakyReLU(0.1),
        "hardtanh": lambda: nn.Hardtanh(-0.5, 0.75),
        "prelu": lambda: nn.PReLU(channels),
        "prelu1": lambda: nn.PReLU(1),
    }
    if kind not in table:
        raise ValueError(f"unknown activation kind {kind!r}")
    return table[kind]()


def activations(kind: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """conv -> act -> conv(stride 2) -> flatten -> linear -> act -> linear; ``kind`` is one of
    relu / relu6 / leaky / hardtanh / prelu (per-channel) / prelu1 (single parameter)."""
    def spec() -> Spec:
        return (Spec((1, 4, 4))
                .node("conv1", nn.Conv2d(1, 2, 3, padding=1)).node("act1", _act(kind, 2))
                .node("conv2", nn.Conv2d(2, 2, 3, stride=2, padding=1))
                .node("flat", nn.Flatten()).node("fc1", nn.Linear(8, 3))
                .node("act2", _act(kind, 3)).node("fc2", nn.Linear(3, 2)))
    return _make(spec, seed, dtype)


def tiny_unet(seed: int = 0, dtype: torch.dtype = torch.float64) -> Case:
    """A tiny U-Net: down by max-pool, up by a transposed conv (with a folded BatchNorm) and by
    bilinear upsampling, skip concatenations, and two outputs (the segmentation map and a
    coarse auxiliary one). Small enough to enumerate its paths."""
    def spec() -> Spec:
        return (Spec((1, 4, 4))
                .node("enc1", nn.Conv2d(1, 1, 3, padding=1)).node("bn1", nn.BatchNorm2d(1))
                .node("r1", nn.ReLU())
                .node("down", nn.MaxPool2d(2))
                .node("enc2", nn.Conv2d(1, 2, 3, padding=1)).node("r2", nn.ReLU())
                .node("up_t", nn.ConvTranspose2d(2, 1, 2, stride=2), "r2")
                .node("bn_t", nn.BatchNorm2d(1)).node("r_t", nn.ReLU())
                .node("up_b", nn.Upsample(scale_factor=2, mode="bilinear",
                                          align_corners=False), "r2")
                .node("skip", "cat", "r_t", "up_b", "r1")
                .node("head", nn.Conv2d(4, 1, 1))
                .node("aux", nn.Conv2d(2, 1, 1), "r2")
                .output("head", "aux"))
    return _make(spec, seed, dtype)


ACTIVATION_KINDS = ("relu", "relu6", "leaky", "hardtanh", "prelu", "prelu1")

ALL_FACTORIES: dict[str, Callable[[], Case]] = {
    "mlp_no_bias": mlp_no_bias,
    "mlp_with_bias": mlp_with_bias,
    "conv_stride_pad_groups": conv_stride_pad_groups,
    "conv_bn_fold": lambda: conv_bn(fold=True),
    "conv_bn_nofold": lambda: conv_bn(fold=False),
    "bn_after_concat": bn_after_concat,
    "pools": pools,
    "residual_add_fold": lambda: residual_add(fold=True),
    "residual_add_nofold": lambda: residual_add(fold=False),
    "concat_net": concat_net,
    "split_chunk_net": split_chunk_net,
    "learnable_affine_net": learnable_affine_net,
    "padded_net": padded_net,
    "derived_weights_net": derived_weights_net,
    **{f"activations_{k}": (lambda k=k: activations(k)) for k in ACTIVATION_KINDS},
    "tiny_unet": tiny_unet,
}
