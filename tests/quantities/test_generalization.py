"""The path-norm generalization bound: its ingredients against neuron-level path enumeration,
its constants against the formula, and the published ResNet table."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from bruteforce import cases, oracle
from bruteforce.builders import Spec
from conftest import small_head
from torch import nn

import fxpath
from fxpath.quantities.generalization import complexity_constants, ingredients

N_IMAGENET = math.floor(0.99 * 1281167)
B_IMAGENET = 2.64
#: the published table: depth, factor and sharpened factor per unit of l^1 path-norm
TABLE = {"resnet18": (18, 0.0881, 0.0599), "resnet34": (34, 0.1145, 0.0716),
         "resnet50": (50, 0.1359, 0.0817), "resnet101": (101, 0.1885, 0.1077),
         "resnet152": (152, 0.2294, 0.1286)}


def residual_pools() -> cases.Case:
    """A conv, a 3x3 max-pool, a residual block around it (two convs against the pool's
    output), a 2x2 max-pool and a linear head: D = 4, M = 2, K = 9."""
    def spec() -> Spec:
        return (Spec((1, 5, 5))
                .node("conv1", nn.Conv2d(1, 1, 3, padding=1)).node("relu1", nn.ReLU())
                .node("pool1", nn.MaxPool2d(3, stride=1, padding=1))
                .node("conv2", nn.Conv2d(1, 1, 3, padding=1)).node("relu2", nn.ReLU())
                .node("conv3", nn.Conv2d(1, 1, 1))
                .node("res", "add", "conv3", "pool1").node("relu3", nn.ReLU())
                .node("pool2", nn.MaxPool2d(2)).node("flat", nn.Flatten())
                .node("fc", nn.Linear(4, 2)))
    return cases._make(spec, 0, torch.float64)


def padded_window() -> cases.Case:
    """A 5x5 max-pool (padding 2) over a 3x3 map: its largest window holds 3x3 = 9 neurons."""
    def spec() -> Spec:
        return (Spec((2, 3, 3)).node("conv", nn.Conv2d(2, 2, 1)).node("relu", nn.ReLU())
                .node("pool", nn.MaxPool2d(5, stride=1, padding=2))
                .node("flat", nn.Flatten()).node("fc", nn.Linear(18, 3)))
    return cases._make(spec, 0, torch.float64)


def brute_force(case: cases.Case) -> tuple[int, int, int, int, int, int]:
    """``D, K, P, M, d_in, d_out`` from the neuron DAG: every path enumerated, counting its
    conv/linear edges and its max-pooling neurons; K = the largest max neuron's in-degree."""
    dag = case.build(case.module)
    weights = {f"{name}.weight" for name, m in case.module.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d,
                                 nn.Linear))}
    depth = pools = 0
    for key in oracle.path_lifting(dag):
        edges = [dag.neurons[dst].edges[k] for dst, k in key[2]]
        depth = max(depth, sum(e.param in weights for e in edges))
        pools = max(pools, sum(dag.neurons[dst].act == "max" for dst, _ in key[2]))
    fan_in = [len(n.edges) for n in dag.neurons if n.act == "max"]
    return (depth, max(fan_in, default=1), 1 if fan_in else 0, pools, len(dag.inputs),
            len(dag.outputs))


BRUTE = {"residual_pools": residual_pools, "padded_window": padded_window,
         **{name: cases.ALL_FACTORIES[name] for name in (
             "pools", "residual_add_nofold", "concat_net", "bn_after_concat", "split_chunk_net",
             "mlp_with_bias", "tiny_unet")}}


@pytest.mark.parametrize("name", sorted(BRUTE))
def test_ingredients_match_path_enumeration(name: str) -> None:
    case = BRUTE[name]()
    prog = fxpath.compile(case.module, case.input_shape, dtype=torch.float64,
                          fold_bn=case.module.fold_bn)
    assert tuple(ingredients(prog.graph)) == brute_force(case)


def test_hand_counted_ingredients() -> None:
    case = residual_pools()
    got = ingredients(fxpath.compile(case.module, case.input_shape).graph)
    assert tuple(got) == (4, 9, 1, 2, 25, 2)
    case = padded_window()
    assert ingredients(fxpath.compile(case.module, case.input_shape).graph).max_pool_kernel == 9


def test_constants_follow_the_formula() -> None:
    d, k, p, m, d_in, d_out = 7, 4, 1, 3, 12, 5
    c, sharp = complexity_constants(d, k, p, m, d_in, d_out)
    assert c == pytest.approx(math.sqrt(7 * math.log(5 * 4) + math.log(5 / 2 * 13 * 5)))
    assert sharp == pytest.approx(math.sqrt(7 * math.log(3) + 3 * math.log(4)
                                            + math.log(13 * 5)))
    # no max-pool: K = 1, P = 0, M = 0 (the log K terms vanish, (3+2P)/(1+P) = 3)
    c, sharp = complexity_constants(d, 1, 0, 0, d_in, d_out)
    assert c == pytest.approx(math.sqrt(7 * math.log(3) + math.log(3 * 13 * 5)))
    assert sharp == pytest.approx(math.sqrt(7 * math.log(3) + math.log(13 * 5)))


@pytest.mark.parametrize("name", sorted(TABLE))
def test_published_factors_from_the_constants(name: str) -> None:
    depth, factor, sharpened = TABLE[name]
    c, sharp = complexity_constants(depth, 9, 1, 1, 3 * 224 * 224, 1000)
    scale = 4 * B_IMAGENET / math.sqrt(N_IMAGENET)
    assert round(scale * c, 4) == factor and round(scale * sharp, 4) == sharpened


def _check_row(name: str, report: fxpath.GeneralizationBound) -> None:
    depth, factor, sharpened = TABLE[name]
    assert tuple(report.ingredients) == (depth, 9, 1, 1, 3 * 224 * 224, 1000)
    assert round(report.factor, 4) == factor and round(report.sharpened_factor, 4) == sharpened
    assert report.log10_bound == pytest.approx(math.log10(factor) + report.path_norm.log10,
                                               abs=1e-3)


def test_resnet18_row() -> None:
    report = fxpath.generalization_bound(torchvision.models.resnet18().eval(), (3, 224, 224),
                                         N_IMAGENET, input_bound=B_IMAGENET)
    _check_row("resnet18", report)
    assert report.log10_sharpened_bound < report.log10_bound
    assert report.bound == pytest.approx(10 ** report.log10_bound)
    text = str(report)
    for part in ("n (training samples)          1268355", "D (conv/linear layers, path)  18",
                 "K (largest max-pool window)   9", "0.0881", "0.0599"):
        assert part in text


def test_vgg11_counts_its_convs_and_pools() -> None:
    torch.manual_seed(0)
    vgg = small_head(torchvision.models.vgg11()).eval()
    report = fxpath.generalization_bound(vgg, (3, 64, 64), 1000)
    assert tuple(report.ingredients) == (11, 4, 1, 5, 3 * 64 * 64, 10)


def test_mlp_without_pooling_and_small_inputs() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    report = fxpath.generalization_bound(mlp, (4,), 100, input_bound=0.5)
    assert tuple(report.ingredients) == (2, 1, 0, 0, 4, 3)
    c = math.sqrt(2 * math.log(3) + math.log(3 * 5 * 3))
    assert report.constant == pytest.approx(c)
    # B < 1: the bias paths see the constant input 1, so max(1, B) = 1 is used
    assert report.factor == pytest.approx(4 * c / 10)
    assert "max(1, B) = 1" in str(report)
    norm = fxpath.path_norm(mlp, (4,))
    assert report.path_norm.log2 == pytest.approx(norm.log2)


@pytest.mark.parametrize("n_train", [0, -3, 2.5, 1e6, True, "1000", None])
def test_bad_sample_counts(n_train: object) -> None:
    mlp = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(fxpath.ArgumentError, match="n_train must be the number of training"):
        fxpath.generalization_bound(mlp, (4,), n_train)


@pytest.mark.parametrize("bound", [0, -1.0, math.inf, math.nan, "2.64", None, False])
def test_bad_input_bounds(bound: object) -> None:
    mlp = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(fxpath.ArgumentError, match="input_bound must be a finite number B > 0"):
        fxpath.generalization_bound(mlp, (4,), 10, input_bound=bound)


def test_non_relu_dag_is_refused() -> None:
    with pytest.raises(fxpath.UnsupportedModelError):
        fxpath.generalization_bound(nn.Sequential(nn.Linear(4, 4), nn.GELU()), (4,), 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TABLE))
def test_published_table(name: str) -> None:
    """ICLR 2024's ResNet table, D read from the IR (resnet152 compiles in about 12 s)."""
    model = getattr(torchvision.models, name)(weights=None).eval()
    _check_row(name, fxpath.generalization_bound(model, (3, 224, 224), N_IMAGENET,
                                                 input_bound=B_IMAGENET))


@pytest.mark.slow
@pytest.mark.parametrize("name, depth, kernel, pools", [("vgg16", 16, 4, 5),
                                                        ("densenet121", 121, 9, 1)])
def test_other_depths(name: str, depth: int, kernel: int, pools: int) -> None:
    model = getattr(torchvision.models, name)(weights=None).eval()
    report = fxpath.generalization_bound(model, (3, 224, 224), N_IMAGENET,
                                         input_bound=B_IMAGENET)
    assert tuple(report.ingredients)[:4] == (depth, kernel, 1, pools)
