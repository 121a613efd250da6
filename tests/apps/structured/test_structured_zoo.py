"""`fxpath.prune_channels` on real architectures (slow tier: CI runs it from .ci/run).

Half of the channels of torchvision's and timm's ResNets, DenseNet-121, MobileNetV2, RegNet and
a segmentation U-Net (VGG: benchmarks/structured_zoo.py), at a small input size: the small
model must be smaller, equal its zeroed twin (checked inside the call, to 1e-9 in float64),
keep the output shape, and its outputs must stay within the certified bound of the dense
model's.
"""

from __future__ import annotations

import pytest
import torch
from conftest import randomize_batchnorm

import fxpath

pytest.importorskip("torch_pruning")

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")


def _smp_unet() -> torch.nn.Module:
    smp = pytest.importorskip("segmentation_models_pytorch")
    return smp.Unet("resnet18", encoder_weights=None, classes=2)


MODELS = {
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=10), 32),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10), 32),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None, num_classes=10), 32),
    "regnet_x_400mf": (lambda: torchvision.models.regnet_x_400mf(weights=None, num_classes=10),
                       32),
    "timm_resnet50d": (lambda: timm.create_model("resnet50d", pretrained=False,
                                                 num_classes=10), 32),
    "smp_unet": (_smp_unet, 64),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_half_the_channels(name: str) -> None:
    factory, size = MODELS[name]
    torch.manual_seed(0)
    model = randomize_batchnorm(factory()).eval()
    shape = (3, size, size)
    x = torch.randn(4, *shape)
    try:
        small, report = fxpath.prune_channels(model, 0.5, shape)
    except fxpath.FxPathError as exc:  # a model Torch-Pruning cannot cut: named, untouched
        assert "Torch-Pruning" in str(exc)
        pytest.skip(f"{name}: {exc}")
    assert report.metric.exact and report.twin_gap <= 1e-9
    assert report.params[1] < report.params[0] and report.macs[1] < report.macs[0]
    with torch.no_grad():
        dense, cut = model(x), small(x)
    assert dense.shape == cut.shape
    gap = (dense - cut).abs().flatten(1).sum(1).double()
    assert bool((gap <= report.lipschitz_bound(x) * (1 + 1e-6)).all())
