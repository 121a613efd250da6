from __future__ import annotations

import pytest
import timm
import torch

import fxpath
from fxpath import UnsupportedModelError


@pytest.mark.parametrize("name, first", [
    ("efficientnet_b0", "SiLU at bn1.act: not positively homogeneous"),
    ("convnext_atto", "layer_norm at stem.1: data-dependent normalization"),
    ("vit_tiny_patch16_224", "at <model>: mixes activations with a tensor computed from "
                             "parameters"),
])
def test_non_relu_dag_models_are_refused_with_every_op(name: str, first: str) -> None:
    model = timm.create_model(name, pretrained=False).eval()
    with pytest.raises(UnsupportedModelError) as info:
        fxpath.compile(model, (3, 224, 224))
    assert first in str(info.value)
    assert len(info.value.ops) > 5
    assert all(op.reason for op in info.value.ops)


def test_efficientnet_names_the_squeeze_excitation_product() -> None:
    model = timm.create_model("efficientnet_b0", pretrained=False).eval()
    with pytest.raises(UnsupportedModelError) as info:
        fxpath.compile(model, (3, 64, 64))
    text = str(info.value)
    assert "SiLU at blocks.0.0.bn1.act" in text
    assert "mul at blocks.0.0.se: product of two activations" in text


def test_weight_standardization_and_training_bn_are_refused() -> None:
    class WS(torch.nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = (self.weight - self.weight.mean()) / self.weight.std()
            return torch.nn.functional.conv2d(x, w, self.bias)

    net = torch.nn.Sequential(WS(3, 4, 3), torch.nn.ReLU()).eval()
    with pytest.raises(UnsupportedModelError, match="computed at run time"):
        fxpath.compile(net, (3, 8, 8))
    bn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(fxpath.FxPathError, match="eval"):
        fxpath.compile(bn.train(), (3, 8, 8))
