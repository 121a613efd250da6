"""Dense prediction: models with several named outputs, and real segmentation networks.

Every supported client gets the same checks (`dense_checks`): its function reproduced through
the reference interpreter; its path-norm unchanged under `fxpath.rescale` (which changes its
weights); the Lipschitz certificate holding on random same-sign and mixed-sign perturbations
at random inputs, over every pixel of every output; path-magnitude pruning masks identical
before and after rescaling; and the same path-norm, scores and metric from its torch.export
program (its function, path-norms, scores, metric, Lipschitz bound and one named output).

The default tier runs the several-outputs tests and the refusals that need no extra package.
``-m slow`` runs the real clients: small configurations (32x32: smp's six architectures on a
ResNet-18 encoder cut to depth 3, torchvision's FCN and DeepLabV3 classes with their aux head
on a ResNet-10, MONAI's 3-d U-Nets, hrnet_w18_small, the CLI), the real fcn/deeplabv3
ResNet-50/101 models at 64x64, smp on full ResNet-34 encoders at 128x128 and the hrnet family.
``-m zoo`` runs the sweep of every architecture with every ReLU encoder.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable
from types import ModuleType

import pytest
import torch
import torch.nn as nn
import torchvision
from conftest import assert_same_function, randomize_batchnorm
from torch.utils._pytree import tree_leaves

import fxpath
from fxpath.errors import ArgumentError
from fxpath.frontend.export import trace_export

F64 = torch.float64


# -- shared checks ------------------------------------------------------------------------------
def flat_outputs(model: nn.Module, x: torch.Tensor, output: str | None = None) -> torch.Tensor:
    """Every output tensor (or the one named ``output`` of a dict), flattened per sample and
    concatenated: the vector ``R(x)`` of the theorem."""
    with torch.no_grad():
        out = model(x)
    if output is not None:
        out = out[output]
    return torch.cat([t.flatten(1) for t in tree_leaves(out) if isinstance(t, torch.Tensor)], 1)


def perturbed(model: nn.Module, kind: str, seed: int) -> nn.Module:
    """A twin with every weight and bias multiplied by a factor in [0.5, 1.5] (``same_sign``)
    or, for 30% of the entries, by minus such a factor (``mixed_sign``)."""
    gen = torch.Generator().manual_seed(seed)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            u = torch.rand(p.shape, generator=gen, dtype=p.dtype)
            factor = 0.5 + u
            if kind == "mixed_sign":
                flip = torch.rand(p.shape, generator=gen, dtype=p.dtype) < 0.3
                factor = torch.where(flip, -factor, factor)
            p.mul_(factor)
    return twin


def _masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith("_mask")}


def dense_checks(model: nn.Module, shape: tuple[int, ...], *, export: bool = True,
                 prune: bool = True, seed: int = 0) -> fxpath.PathProgram:
    """The checks every dense client passes (see the module docstring); returns its program."""
    model = model.to(F64).eval()
    prog = fxpath.compile(model, shape, dtype=F64)
    assert_same_function(prog.graph, model, shape, batch=2, seed=seed)
    norm = prog.path_norm()
    assert 0 < norm.value

    twin = fxpath.rescale(model, shape, seed=seed)
    moved = [k for k, v in model.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, twin.state_dict()[k])]
    assert moved, "rescaling left every weight alone: the check would prove nothing"
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, *shape), generator=gen, dtype=F64)
    torch.testing.assert_close(flat_outputs(twin, x), flat_outputs(model, x), rtol=1e-9,
                               atol=1e-9)
    assert fxpath.path_norm(twin, shape, dtype=F64).log2 == pytest.approx(norm.log2, rel=1e-12)

    for kind in ("same_sign", "mixed_sign"):
        other = perturbed(model, kind, seed)
        x = 3.0 * torch.randn((3, *shape), generator=gen, dtype=F64)
        bound = fxpath.lipschitz_bound(model, other, x)
        measured = (flat_outputs(model, x) - flat_outputs(other, x)).abs().sum(1)
        assert bool((measured > 0).all()) and bool(torch.isfinite(bound).all())
        assert bool((measured <= bound * (1 + 1e-9)).all()), (measured, bound)

    if prune:
        a, b = copy.deepcopy(model), copy.deepcopy(twin)
        fxpath.prune(a, 0.5, shape, dtype=F64)
        fxpath.prune(b, 0.5, shape, dtype=F64)
        masks_a, masks_b = _masks(a), _masks(b)
        assert masks_a and masks_a.keys() == masks_b.keys()
        for k in masks_a:
            assert torch.equal(masks_a[k], masks_b[k]), k

    if export:
        ep = trace_export(model, [shape])
        exported = fxpath.compile(ep, dtype=F64)
        assert exported.output_names == prog.output_names
        assert_same_function(exported.graph, model, shape, batch=2, seed=seed)
        assert exported.path_norm().log2 == pytest.approx(norm.log2, rel=1e-12)
        assert exported.path_norm(2).log2 == pytest.approx(prog.path_norm(2).log2, rel=1e-12)
        want, got = prog.path_magnitude(), exported.path_magnitude()
        assert want.keys() == got.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-9, atol=1e-300)
        other = perturbed(model, "mixed_sign", seed + 1)
        assert exported.path_metric(other).log2 == pytest.approx(
            prog.path_metric(other).log2, rel=1e-9)
        x = 3.0 * torch.randn((2, *shape), generator=gen, dtype=F64)
        torch.testing.assert_close(fxpath.lipschitz_bound(ep, other, x),
                                   fxpath.lipschitz_bound(model, other, x), rtol=1e-9, atol=0)
        if len(prog.output_names) > 1:  # one named output, from the exported program too
            first = prog.output_names[0]
            assert fxpath.path_norm(ep, None, output=first).log2 == pytest.approx(
                fxpath.path_norm(model, shape, dtype=F64, output=first).log2, rel=1e-12)
    return prog


def light_checks(model: nn.Module, shape: tuple[int, ...]) -> fxpath.PathProgram:
    """The function through the interpreter, and the path-norm unchanged under rescaling and
    with dense convs (the default tier's checks for the bigger clients; `dense_checks` runs on
    them under ``-m slow``)."""
    model = model.to(F64).eval()
    prog = fxpath.compile(model, shape, dtype=F64)
    assert_same_function(prog.graph, model, shape, batch=2)
    twin = fxpath.rescale(model, shape)
    assert fxpath.path_norm(twin, shape, dtype=F64).log2 == pytest.approx(
        prog.path_norm().log2, rel=1e-12)
    dense = fxpath.compile(model, shape, dtype=F64, interior=False)
    assert dense.path_norm().log2 == pytest.approx(prog.path_norm().log2, rel=1e-12)
    return prog


# -- several outputs ------------------------------------------------------------------------------
class Heads(nn.Module):
    """A stem and three heads, returned in a structure chosen by ``kind``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.stem = nn.Conv2d(2, 3, 3, padding=1)
        self.a = nn.Conv2d(3, 2, 1)
        self.b = nn.Conv2d(3, 1, 3, padding=1)
        self.c = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> object:
        h = torch.relu(self.stem(x))
        a, b, c = self.a(h), self.b(h), self.c(h.flatten(1))
        if self.kind == "dict":
            return {"out": a, "aux": b, "logits": c}
        if self.kind == "tuple":
            return a, b, c
        if self.kind == "list":
            return [a, b, c]
        if self.kind == "nested":
            return {"maps": (a, b), "logits": [c]}
        return a


NAMES = {"dict": ("out", "aux", "logits"), "tuple": ("0", "1", "2"), "list": ("0", "1", "2"),
         "nested": ("maps.0", "maps.1", "logits.0"), "single": ("output",)}


@pytest.mark.parametrize("kind", list(NAMES))
def test_outputs_keep_their_names_in_both_front_ends(kind: str) -> None:
    torch.manual_seed(0)
    model = Heads(kind).double().eval()
    prog = fxpath.compile(model, (2, 4, 4), dtype=F64)
    assert prog.output_names == NAMES[kind]
    assert prog.graph.output.attrs["names"] == NAMES[kind]
    exported = fxpath.compile(trace_export(model, [(2, 4, 4)]), dtype=F64)
    assert exported.output_names == NAMES[kind]
    assert exported.path_norm().log2 == pytest.approx(prog.path_norm().log2, rel=1e-12)


class _Only(nn.Module):
    """``model`` returning only its output ``key`` (the reference for ``output=key``)."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[self.key]


def test_all_outputs_by_default_one_on_request() -> None:
    """The default covers every output: its path-norm is the sum of each output's (l^1: the
    output layer is all of them), and ``output=`` gives exactly the model returning only the
    selected output(s)."""
    torch.manual_seed(0)
    model = randomize_batchnorm(Heads("dict")).double().eval()
    shape = (2, 4, 4)
    norms = {k: fxpath.path_norm(_Only(model, k), shape, dtype=F64).value for k in NAMES["dict"]}
    total = fxpath.path_norm(model, shape, dtype=F64).value
    assert total == pytest.approx(sum(norms.values()), rel=1e-12)
    for key, want in norms.items():
        prog = fxpath.compile(model, shape, dtype=F64, output=key)
        assert prog.output_names == (key,)
        assert prog.path_norm().value == pytest.approx(want, rel=1e-12)
        only = fxpath.compile(_Only(model, key), shape, dtype=F64)
        scores = prog.path_magnitude()
        want_scores = {k.removeprefix("model."): v for k, v in only.path_magnitude().items()}
        assert scores.keys() == want_scores.keys()  # the other heads carry no path here
        for k in scores:
            torch.testing.assert_close(scores[k], want_scores[k], rtol=1e-12, atol=0)
    two = fxpath.path_norm(model, shape, dtype=F64, output=["out", "logits"]).value
    assert two == pytest.approx(norms["out"] + norms["logits"], rel=1e-12)


def test_lipschitz_bound_per_output() -> None:
    torch.manual_seed(0)
    model = Heads("dict").double().eval()
    other = perturbed(model, "same_sign", 0)
    x = torch.randn((4, 2, 4, 4), dtype=F64)
    whole = fxpath.lipschitz_bound(model, other, x)
    measured = (flat_outputs(model, x) - flat_outputs(other, x)).abs().sum(1)
    assert bool((measured > 0).all()) and bool((measured <= whole).all())  # every output
    for key in NAMES["dict"]:
        bound = fxpath.lipschitz_bound(model, other, x, output=key)
        measured = (flat_outputs(model, x, key) - flat_outputs(other, x, key)).abs().sum(1)
        assert bool((measured <= bound).all()) and bool((bound < whole).all())
        # the metric of one output is the metric of the model returning only that output
        metric = fxpath.path_metric(model, other, (2, 4, 4), output=key)
        alone = fxpath.path_metric(_Only(model, key), _Only(other, key), (2, 4, 4))
        assert metric.value == pytest.approx(alone.value, rel=1e-12)
    metric = fxpath.path_metric(model, other, (2, 4, 4), output="aux")
    assert metric.value == pytest.approx(float(fxpath.lipschitz_bound(
        model, other, torch.zeros(1, 2, 4, 4), output="aux")[0]), rel=1e-12)


@pytest.mark.parametrize("output, message", [
    ("main", "output='main' is not an output of the model; its outputs are 'out', 'aux', "
             "'logits'"),
    (0, "output must be the name of a model output"),
    ([], "output must be the name of a model output"),
    (["out", 1], "output must be the name of a model output"),
])
def test_bad_output_names_are_argument_errors(output: object, message: str) -> None:
    model = Heads("dict").eval()
    with pytest.raises(ArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fxpath.compile(model, (2, 4, 4), output=output)


# -- torchvision's FCN and DeepLabV3 ----------------------------------------------------------
def _small_torchvision(kind: str, aux: bool) -> nn.Module:
    """torchvision's FCN / DeepLabV3 classes on a ResNet-10 backbone (torchvision's ResNet
    with one basic block per stage; not dilated: basic blocks cannot be): the same heads, the
    same ``{"out", "aux"}`` dict, a fraction of the cost (the dilated ResNet-50/101 models are
    under ``-m slow``)."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.resnet import BasicBlock, ResNet
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    backbone = ResNet(BasicBlock, [1, 1, 1, 1])
    layers = {"layer4": "out", "layer3": "aux"} if aux else {"layer4": "out"}
    body = IntermediateLayerGetter(backbone, return_layers=layers)
    aux_head = FCNHead(256, 3) if aux else None
    if kind == "fcn":
        return FCN(body, FCNHead(512, 3), aux_head)
    return DeepLabV3(body, DeepLabHead(512, 3), aux_head)


@pytest.mark.slow  # real segmentation models
@pytest.mark.parametrize("kind", ["fcn", "deeplabv3"])
def test_torchvision_segmentation_with_aux(kind: str) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(_small_torchvision(kind, aux=True))
    prog = dense_checks(model, (3, 32, 32), export=kind == "fcn", prune=kind == "fcn")
    assert prog.output_names == ("out", "aux")
    out = fxpath.compile(model, (3, 32, 32), dtype=F64, output="out")
    aux = fxpath.compile(model, (3, 32, 32), dtype=F64, output="aux")
    assert prog.path_norm().value == pytest.approx(
        out.path_norm().value + aux.path_norm().value, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50",
                                  "deeplabv3_resnet101"])
@pytest.mark.parametrize("aux", [False, True])
def test_torchvision_segmentation_models(name: str, aux: bool) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                         aux_loss=aux, num_classes=3)
    prog = dense_checks(randomize_batchnorm(model), (3, 64, 64), prune=name.endswith("50"))
    assert prog.output_names == (("out", "aux") if aux else ("out",))


def test_lraspp_is_refused() -> None:
    model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None).eval()
    with pytest.raises(fxpath.UnsupportedModelError) as info:
        fxpath.compile(model, (3, 64, 64))
    text = str(info.value)
    assert "Hardswish at backbone.0.2: not positively homogeneous" in text
    assert "product of two activations" in text  # the sigmoid gates of the SE blocks and head


# -- segmentation_models_pytorch -----------------------------------------------------------------
def _smp_package() -> ModuleType:
    """segmentation_models_pytorch, imported by the tests that use it (a test extra)."""
    return pytest.importorskip("segmentation_models_pytorch")

#: architecture -> small constructor keywords: encoders cut to depth 3 or 4 (the unused
#: ResNet stages are deleted, `_smp`), thin decoders; 32x32 inputs
SMP_SMALL: dict[str, dict] = {
    "Unet": {"encoder_depth": 3, "decoder_channels": (16, 8, 8)},
    "UnetPlusPlus": {"encoder_depth": 3, "decoder_channels": (16, 8, 8)},
    "Linknet": {"encoder_depth": 3},
    "DeepLabV3Plus": {"encoder_depth": 3, "encoder_output_stride": 8, "decoder_channels": 16,
                      "decoder_atrous_rates": (2, 4, 6)},
    "PSPNet": {"encoder_depth": 3, "psp_out_channels": 16},
    "Segformer": {"encoder_depth": 3, "decoder_segmentation_channels": 16},
}


def _smp(arch: str, encoder: str = "resnet18", **kwargs: object) -> nn.Module:
    """An smp model with random weights and BatchNorm statistics; the ResNet stages a reduced
    ``encoder_depth`` leaves unused are deleted (they are dead weight in every copy)."""
    torch.manual_seed(0)
    model = _smp_package().create_model(arch, encoder_name=encoder, encoder_weights=None,
                                        classes=2, **kwargs)
    depth = getattr(model.encoder, "_depth", 5)
    for k in range(max(depth, 1), 5):
        if encoder.startswith("resnet") and hasattr(model.encoder, f"layer{k}"):
            delattr(model.encoder, f"layer{k}")
    return randomize_batchnorm(model)


@pytest.mark.slow  # real segmentation models
@pytest.mark.parametrize("arch", list(SMP_SMALL))
def test_smp_architectures_with_a_resnet_encoder(arch: str) -> None:
    dense_checks(_smp(arch, **SMP_SMALL[arch]), (3, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(SMP_SMALL))
def test_smp_architectures_full_size(arch: str) -> None:
    dense_checks(_smp(arch, encoder="resnet34"), (3, 128, 128))


@pytest.mark.slow  # real segmentation models
@pytest.mark.parametrize("arch, encoder, shape, reason", [
    ("FPN", "resnet18", (3, 64, 64), "GroupNorm at decoder.seg_blocks.0"),
    ("MAnet", "resnet18", (3, 64, 64), "Softmax at decoder.center.map_softmax"),
    ("PAN", "resnet18", (3, 128, 128), "Sigmoid at"),
    ("UPerNet", "resnet18", (3, 64, 64), "layer_norm at decoder.feature_norms.0"),
    ("Unet", "efficientnet-b0", (3, 64, 64), "product of two activations"),
    ("Unet", "mit_b0", (3, 64, 64), "data-dependent normalization"),
])
def test_smp_models_outside_relu_dags_are_refused(arch: str, encoder: str,
                                                  shape: tuple[int, ...], reason: str) -> None:
    torch.manual_seed(0)
    model = _smp_package().create_model(arch, encoder_name=encoder, encoder_weights=None,
                                        classes=2)
    with pytest.raises(fxpath.UnsupportedModelError) as info:
        fxpath.compile(model.eval(), shape)
    assert reason in str(info.value)
    assert all(op.reason for op in info.value.ops)


#: smp's ReLU encoder families (ReLU6 for MobileNetV2, rewritten exactly)
RELU_ENCODERS = ["resnet18", "resnet34", "resnet50", "resnext50_32x4d", "vgg11_bn", "vgg13",
                 "densenet121", "dpn68", "mobilenet_v2", "tu-resnet18", "tu-resnet26d",
                 "tu-densenet121", "tu-vgg11_bn", "tu-dla34", "tu-regnetx_002"]
ZOO_ARCHS = ["Unet", "UnetPlusPlus", "Linknet", "DeepLabV3Plus", "PSPNet", "Segformer"]
SAMPLE = int(os.environ.get("FXPATH_ZOO_SAMPLE", "0"))
_PAIRS = [(a, e) for a in ZOO_ARCHS for e in RELU_ENCODERS]
ZOO_PAIRS = _PAIRS if SAMPLE <= 0 else sorted(random.Random(
    int(os.environ.get("FXPATH_ZOO_SEED", "0"))).sample(_PAIRS, min(SAMPLE, len(_PAIRS))))


@pytest.mark.zoo
@pytest.mark.parametrize("arch, encoder", ZOO_PAIRS)
def test_smp_relu_encoders(arch: str, encoder: str) -> None:
    """Every architecture with every ReLU encoder: the function through the interpreter, the
    path-norm with and without compressed-image convs and from the exported program."""
    try:
        model = _smp(arch, encoder).to(F64).eval()
    except Exception as exc:  # an encoder an architecture does not take (depth, dilation)
        pytest.skip(f"smp cannot build {arch}({encoder}): {exc}")
    shape = (3, 64, 64)
    prog = fxpath.compile(model, shape, dtype=F64)
    assert_same_function(prog.graph, model, shape, batch=2)
    dense = fxpath.compile(model, shape, dtype=F64, interior=False)
    assert prog.path_norm().log2 == pytest.approx(dense.path_norm().log2, rel=1e-12)
    exported = fxpath.compile(trace_export(model, [shape]), dtype=F64)
    assert exported.path_norm().log2 == pytest.approx(prog.path_norm().log2, rel=1e-12)


# -- MONAI and timm ---------------------------------------------------------------------------
def _monai_nets() -> dict[str, Callable[[], nn.Module]]:
    nets = pytest.importorskip("monai.networks.nets")
    return {
        "BasicUNet3d": lambda: nets.BasicUNet(spatial_dims=3, in_channels=1, out_channels=2,
                                              features=(4, 4, 8, 8, 16, 4), act="relu",
                                              norm="batch"),
        "UNet3d": lambda: nets.UNet(spatial_dims=3, in_channels=1, out_channels=2,
                                    channels=(4, 8, 16), strides=(2, 2), num_res_units=2,
                                    act="relu", norm="batch"),
    }


@pytest.mark.slow  # real segmentation models
@pytest.mark.filterwarnings("ignore:fxpath. torch.fx could not trace BasicUNet")
@pytest.mark.parametrize("name", [
    "UNet3d", pytest.param("BasicUNet3d", marks=pytest.mark.slow)])
def test_monai_unets(name: str) -> None:
    """(BasicUNet branches on ``torch.jit.isinstance(x_e, torch.Tensor)``, which torch.fx
    cannot follow: it is analysed through torch.export, with a warning.)"""
    torch.manual_seed(0)
    model = randomize_batchnorm(_monai_nets()[name]())
    dense_checks(model, (1, 16, 16, 16), export=name == "UNet3d")


@pytest.mark.slow  # real segmentation models
@pytest.mark.filterwarnings("ignore:fxpath. torch.fx could not trace BasicUNet")
def test_monai_basic_unet() -> None:
    torch.manual_seed(0)
    prog = light_checks(randomize_batchnorm(_monai_nets()["BasicUNet3d"]()), (1, 16, 16, 16))
    assert any(n.op == "linear" and n.attrs["kind"] == "conv_transpose" for n in prog.graph)


@pytest.mark.slow  # real segmentation models
def test_monai_defaults_are_refused() -> None:
    nets = pytest.importorskip("monai.networks.nets")
    model = nets.UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8),
                      strides=(2,)).eval()  # PReLU and instance norm by default
    with pytest.raises(fxpath.UnsupportedModelError, match="data-dependent normalization"):
        fxpath.compile(model, (1, 16, 16))


@pytest.mark.slow  # real segmentation models
def test_timm_hrnet() -> None:
    """timm's hrnet family fuses its branches by nearest upsampling."""
    import timm

    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model("hrnet_w18_small", pretrained=False,
                                                  num_classes=5))
    prog = light_checks(model, (3, 32, 32))
    assert any(n.op == "resample" and n.attrs["mode"] == "nearest" for n in prog.graph)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w18",
                                  "hrnet_w32"])
def test_timm_hrnet_family(name: str) -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=5)
    dense_checks(randomize_batchnorm(model), (3, 64, 64), prune=False)


# -- the command line -------------------------------------------------------------------------
@pytest.mark.slow  # real segmentation models
def test_cli_smp_models(capsys: pytest.CaptureFixture[str]) -> None:
    from fxpath.tools.cli import main
    from fxpath.tools.commands import norm_text

    assert main(["norm", "smp:Unet:resnet18", "--size", "3", "32", "32", "--q", "1"]) == 0
    out = capsys.readouterr().out
    torch.manual_seed(0)
    model = _smp_package().create_model("Unet", encoder_name="resnet18",
                                        encoder_weights=None).eval()
    # the CLI's one-shot answers are computed in float64 and printed with 10 digits
    want = fxpath.compile(model, (3, 32, 32), dtype=torch.float64).path_norm()
    assert out == (f"l^1 path-norm of smp:Unet:resnet18 at (3, 32, 32): "
                   f"{norm_text(want, torch.float64)}\n")
    assert main(["norm", "smp:Unet"]) == 2
    assert "smp:ARCH:ENCODER (smp:Unet:resnet34), got 'smp:Unet'" in capsys.readouterr().err
    assert main(["norm", "smp:Unett:resnet18"]) == 2
    assert "did you mean smp:Unet:resnet18" in capsys.readouterr().err
    assert main(["norm", "smp:FPN:resnet18", "--size", "3", "32", "32"]) == 2
    assert "GroupNorm at decoder.seg_blocks" in capsys.readouterr().err
