"""Real models: the IR computes the model's function; path-norms are consistent."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import assert_same_function, randomize_batchnorm

import fxpath
from fxpath.tools.cli import main

MODELS = ["resnet18", "resnet50d", "densenet121", "vgg11_bn", "mobilenetv2_100"]


@pytest.mark.parametrize("name", MODELS)
def test_timm_model_is_a_relu_dag(name: str) -> None:
    torch.manual_seed(0)
    # timm's VGG head is a 7x7 conv to 4096 channels (100M weights): a narrow one of the same
    # form keeps the test tier's memory small
    kwargs = {"mlp_ratio": 0.0625} if name.startswith("vgg") else {}
    model = randomize_batchnorm(timm.create_model(name, pretrained=False, num_classes=10,
                                                  **kwargs))
    model = model.double().eval()
    shape = (3, 64, 64)
    prog = fxpath.compile(model, shape, dtype=torch.float64, debug=True)
    assert_same_function(prog.graph, model, shape, batch=2)
    ops = {n.op for n in prog.graph}
    if name == "densenet121":
        assert "affine" in ops  # BatchNormAct2d after concat stays standalone
    if name == "resnet50d":
        assert any(n.op == "pool" and n.attrs.get("ceil_mode") for n in prog.graph)
    f32 = fxpath.compile(model.float(), shape).path_norm()
    assert f32.log10 == pytest.approx(prog.path_norm().log10, rel=1e-5)


def test_cli_norm_and_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["norm", "resnet18", "--size", "3", "32", "32", "--q", "1"]) == 0
    assert "l^1 path-norm of resnet18 at (3, 32, 32)" in capsys.readouterr().out
    assert main(["norm", "efficientnet_b0", "--size", "3", "32", "32"]) == 2
    assert "SiLU at bn1.act" in capsys.readouterr().err
    assert main(["scores", "torchvision:resnet18", "--size", "3", "32", "32", "--top", "3"]) == 0
    assert "conv1.weight" in capsys.readouterr().out
