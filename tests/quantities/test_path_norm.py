"""Path-norms against brute-force path enumeration and the reference magnitudes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision
from bruteforce import cases, oracle

import fxpath


@pytest.mark.parametrize("name", sorted(cases.ALL_FACTORIES))
@pytest.mark.parametrize("q", [1.0, 2.0, 4.0])
def test_matches_path_enumeration(name: str, q: float) -> None:
    module, shape, build = cases.ALL_FACTORIES[name]()
    expected = oracle.path_norm(build(module), q)
    got = fxpath.compile(module, shape, dtype=torch.float64, fold_bn=module.fold_bn).path_norm(q)
    assert got.value == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("fold", [True, False])
def test_folding_convention(fold: bool) -> None:
    """Folded BN (one combined bias) gives a smaller norm than separate conv and BN biases."""
    folded = cases.conv_bn(fold=True)
    separate = cases.conv_bn(fold=False)
    assert oracle.path_norm_dp(folded.build(folded.module)) < oracle.path_norm_dp(
        separate.build(separate.module))
    case = folded if fold else separate
    got = fxpath.compile(case.module, case.input_shape, dtype=torch.float64,
                         fold_bn=fold).path_norm()
    assert got.value == pytest.approx(oracle.path_norm_dp(case.build(case.module)), rel=1e-10)


@pytest.mark.parametrize("arch, l1, l2", [
    ("resnet18", 6.282851162e30, 512.0112247),
    # float64 VGG-11 at 224x224 holds 1 GB per copy of its coordinates: about 4 GB in all
    pytest.param("vgg11", 1.087326398e23, 726.3537153, marks=pytest.mark.slow),
])
def test_reference_magnitudes(arch: str, l1: float, l2: float) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)().eval()
    prog = fxpath.compile(model, (3, 224, 224), dtype=torch.float64)
    assert prog.path_norm(1).value == pytest.approx(l1, rel=1e-9)
    assert prog.path_norm(2).value == pytest.approx(l2, rel=1e-9)


def test_pathnorm_fields() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    pn = fxpath.path_norm(model.eval(), (4,))
    assert float(pn) == pn.value
    assert pn.log10 == pytest.approx(math.log10(pn.value), rel=1e-12)
    zero = torch.nn.Linear(4, 2, bias=False).eval()
    torch.nn.init.zeros_(zero.weight)
    assert fxpath.path_norm(zero, (4,)).value == 0.0


def test_multiple_outputs_are_one_output_layer() -> None:
    case = cases.concat_net()
    assert fxpath.compile(case.module, case.input_shape, dtype=torch.float64).path_norm().value \
        == pytest.approx(oracle.path_norm(case.build(case.module)), rel=1e-10)


def test_differentiable_path_norm_regularizes_a_train_mode_network() -> None:
    """``loss + lam * log ||Phi||_1`` in a training loop (train mode, BatchNorm updating its
    statistics): the path-norm falls, and the model stays in train mode."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.BatchNorm2d(6),
                              torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(6 * 4 * 4, 8), torch.nn.BatchNorm1d(8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 3)).train()
    prog = fxpath.compile(net, (2, 8, 8))
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    x, y = torch.randn(32, 2, 8, 8), torch.randint(0, 3, (32,))
    norms = []
    for _ in range(8):
        opt.zero_grad()
        log_norm = prog.path_norm(differentiable=True)
        norms.append(log_norm.log2)
        loss = torch.nn.functional.cross_entropy(net(x), y) + 2.0 * log_norm.log_tensor
        loss.backward()
        opt.step()
    assert net.training
    # log2 falls by bits (not step by step: the running statistics, which gradients do not
    # reach, move too)
    assert norms[-1] < norms[0] - 2.0
    eval_norm = fxpath.path_norm(copy.deepcopy(net).eval(), (2, 8, 8)).log2
    assert prog.path_norm().log2 == pytest.approx(eval_norm, rel=1e-6)


@pytest.mark.parametrize("name", ["conv_bn_fold", "pools", "residual_add_fold",
                                  "activations_leaky"])
@pytest.mark.parametrize("q", [0.3, 8.0, 40.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_and_large_q_against_path_enumeration(name: str, q: float,
                                                    dtype: torch.dtype) -> None:
    """|w|^q of small weights leaves float32's range for q = 40 (0.3**40 = 1e-21 is fine, but
    the products are not): mantissa/exponent inputs keep every digit."""
    case = cases.ALL_FACTORIES[name]()
    expected = oracle.path_norm(case.build(case.module), q)
    got = fxpath.compile(case.module, case.input_shape, dtype=dtype,
                         fold_bn=case.module.fold_bn).path_norm(q)
    assert got.value == pytest.approx(expected, rel=1e-12 if dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize("q", [16.0, 200.0, 1000.0])
def test_very_large_q_agrees_across_dtypes(q: float) -> None:
    """Past what enumeration can represent: float32 and float64 programs agree, and the
    l^q norm tends to the largest path product as q grows."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    f32 = fxpath.compile(net, (3, 32, 32), dtype=torch.float32).path_norm(q)
    f64 = fxpath.compile(net, (3, 32, 32), dtype=torch.float64).path_norm(q)
    assert math.isfinite(f64.log2) and f32.log2 == pytest.approx(f64.log2, rel=1e-5, abs=1e-5)
    with pytest.raises(fxpath.FxPathError, match="above 1000"):
        fxpath.path_norm(net, (3, 32, 32), q=1001)
