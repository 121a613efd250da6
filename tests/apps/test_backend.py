"""The torch.compile backend (`fxpath.backend`): the same path-norm and scores from a module, from
its ExportedProgram and from the graph dynamo captures; graph breaks and refusals are clear
errors while the model still runs.

The default tier runs the captured graph eagerly (``compiler="eager"``); inductor, which
compiles C++ for a minute or more on 2 cores, is in the slow tier.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torchvision
from conftest import randomize_batchnorm

import fxpath
from fxpath.apps.backend import network_module, state_name

SHAPE = (3, 12, 12)


class Small(nn.Module):
    """A small ReLU-DAG with what ResNets have: conv-BN-ReLU, a residual add, max and average
    pooling, a linear head (dynamo and torch.export take seconds, not tens of seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.branch = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6),
                                    nn.ReLU(), nn.Conv2d(6, 6, 1))
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.branch(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def small() -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(Small().double().eval())


def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).double().eval()
    return randomize_batchnorm(model)


def timm_resnet() -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)  # random BatchNorms: timm's zero-initialized ones hide the branches
    return randomize_batchnorm(timm.create_model("resnet10t", num_classes=7).double().eval())


def captured(model: nn.Module, x: torch.Tensor, **kw: object) -> fxpath.apps.backend:
    handle = fxpath.backend(compiler="eager", **kw)  # type: ignore[arg-type]
    compiled = torch.compile(model, backend=handle, fullgraph=True)
    with torch.no_grad():
        out = compiled(x)
        torch.testing.assert_close(out, model(x), rtol=1e-12, atol=1e-12)  # it still runs
    return handle


def assert_same_scores(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("build", [small, pytest.param(resnet, marks=pytest.mark.slow),
                                   pytest.param(timm_resnet, marks=pytest.mark.slow)])
def test_module_exported_program_and_backend_agree(build) -> None:
    """float64: the path-norms (q = 1, 2) and every score of the module, of its
    ExportedProgram and of the graph the backend captures agree to 1e-12 / 1e-10."""
    model = build()
    shape = SHAPE if build is small else (3, 32, 32)
    x = torch.randn(2, *shape, dtype=torch.float64)
    module = fxpath.compile(model, shape)
    exported = fxpath.compile(torch.export.export(model, (x,)))
    handle = captured(model, x)
    want = module.path_norm()
    for prog in (exported, handle.program):
        assert prog.path_norm().log2 == pytest.approx(want.log2, rel=1e-12)
        assert prog.path_norm(q=2).log2 == pytest.approx(module.path_norm(q=2).log2, rel=1e-12)
    assert handle.path_norm().log2 == pytest.approx(want.log2, rel=1e-12)
    scores = module.path_magnitude()
    assert "fc.weight" in scores and "fc.bias" in scores  # state_dict names
    assert_same_scores(handle.path_magnitude(), scores)
    assert_same_scores(exported.path_magnitude(), scores)


def test_backend_reads_live_weights_and_gives_the_metric() -> None:
    model = small()
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    handle = captured(model, x)
    before = handle.path_norm().log2
    dense = copy.deepcopy(model)
    with torch.no_grad():
        model.fc.weight.mul_(4.0)
    after = fxpath.compile(model, SHAPE).path_norm().log2
    assert after > before + 1.0  # the weights read are the live ones, not a copy
    assert handle.path_norm().log2 == pytest.approx(after, rel=1e-12)
    want = fxpath.path_metric(model, dense, SHAPE)
    got = handle.path_metric(dense)
    assert got.exact == want.exact and got.log2 == pytest.approx(want.log2, rel=1e-12)


def test_train_mode_is_analysed_as_eval() -> None:
    model = small().train()
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    handle = fxpath.backend(compiler="eager")
    torch.compile(model, backend=handle, fullgraph=True)(x)  # updates the running statistics
    want = fxpath.compile(model, SHAPE).path_norm()  # the statistics as they are now
    assert handle.path_norm().log2 == pytest.approx(want.log2, rel=1e-12)


class Breaks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a(x))
        torch._dynamo.graph_break()
        return self.b(x)


def test_graph_break_is_a_clear_error() -> None:
    model = Breaks().eval()
    handle = fxpath.backend(compiler="eager")
    x = torch.randn(3, 4)
    out = torch.compile(model, backend=handle)(x)  # the model runs in two graphs
    torch.testing.assert_close(out, model(x))
    assert handle.graphs == 2
    with pytest.raises(fxpath.FxPathError, match=r"captured 2 graphs.*fullgraph=True"):
        handle.path_norm()
    handle.reset()
    with pytest.raises(fxpath.FxPathError, match="nothing captured yet"):
        handle.path_magnitude()


@pytest.mark.parametrize("dynamic", [False, None])
def test_recompilation_is_not_a_graph_break(dynamic: bool | None) -> None:
    model = small()
    handle = fxpath.backend(compiler="eager")
    calls = []

    def counted(gm: torch.fx.GraphModule, example_inputs: list[object]):
        calls.append(len(example_inputs))
        return gm.forward

    handle.compiler = counted
    compiled = torch.compile(model, backend=handle, dynamic=dynamic)
    with torch.no_grad():
        for batch in (2, 5, 3):  # another batch: recompiled (dynamic=None: with a SymInt)
            compiled(torch.randn(batch, *SHAPE, dtype=torch.float64))
    assert len(calls) >= 2 and handle.graphs == 1
    assert handle.path_norm().log2 == pytest.approx(
        fxpath.compile(model, SHAPE).path_norm().log2, rel=1e-12)


def test_refused_model_still_runs() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.SiLU(), nn.Linear(3, 2)).eval()
    handle = fxpath.backend(compiler="eager")
    x = torch.randn(2, 4)
    torch.testing.assert_close(torch.compile(model, backend=handle)(x), model(x))
    with pytest.raises(fxpath.UnsupportedModelError, match="not positively homogeneous"):
        handle.path_norm()


def test_registered_name() -> None:
    from fxpath.apps.backend import register, registered

    register()
    assert "fxpath" in torch._dynamo.list_backends(exclude_tags=())
    model = small()
    registered.reset()
    try:
        compiled = torch.compile(model, backend="fxpath", options={"compiler": "eager"})
        compiled(torch.randn(2, *SHAPE, dtype=torch.float64))
        assert registered.compiler == "inductor"  # the option served this compilation only
        assert registered.path_norm().log2 == pytest.approx(
            fxpath.compile(model, SHAPE).path_norm().log2, rel=1e-12)
        torch._dynamo.reset()  # resets the backends dynamo used: the handle forgets the graph
        assert registered.graphs == 0
    finally:
        registered.reset()


def test_entry_point_names_the_registered_backend() -> None:
    """dynamo discovers ``"fxpath"`` through the package's entry point (pyproject.toml); it
    fails on an install that predates the entry point (reinstall: pip install -e .)."""
    from importlib.metadata import entry_points

    from fxpath.apps.backend import compile_registered

    found = {ep.name: ep for ep in entry_points(group="torch_dynamo_backends")}
    assert "fxpath" in found, "reinstall fxpath (pip install -e .): no torch_dynamo_backends"
    assert found["fxpath"].load() is compile_registered


FRESH_PROCESS = """
import sys
import torch
import torch.nn as nn

assert "fxpath" not in sys.modules
assert "fxpath" in torch._dynamo.list_backends()  # found through the entry point alone
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
compiled = torch.compile(model, backend="fxpath", fullgraph=True, options={"compiler": "eager"})
x = torch.randn(2, 4, dtype=torch.float64)
torch.testing.assert_close(compiled(x), model(x))
import fxpath
from fxpath.apps.backend import registered

print(registered.path_norm().log2, fxpath.path_norm(model, (4,)).log2)
"""


@pytest.mark.slow
def test_name_works_without_importing_fxpath() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    got, want = map(float, done.stdout.split())
    assert got == pytest.approx(want, rel=1e-12)


def test_options_are_checked() -> None:
    model = small()
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    for kwargs, message in [({"options": {"compiler": "eager", "bogus": 1}},
                             r"unknown option\(s\) \['bogus'\]"),
                            ({"options": {"compiler": 3}}, "compiler must be"),
                            ({"mode": "max-autotune"}, "does not apply to the fxpath backend")]:
        torch._dynamo.reset()
        handle = fxpath.backend(compiler="eager")
        with pytest.raises(Exception, match=message) as info:
            torch.compile(model, backend=handle, **kwargs)(x)  # type: ignore[arg-type]
        assert isinstance(getattr(info.value, "inner_exception", info.value),
                          fxpath.ArgumentError)


@pytest.mark.parametrize(("name", "want"), [
    ("L_self_modules_conv1_parameters_weight_", ("conv1.weight", "parameters")),
    ("L_self_modules_layer1_modules_0_modules_bn1_buffers_running_mean_",
     ("layer1.0.bn1.running_mean", "buffers")),
    ("L_self_modules_stem_modules_conv_dw_parameters_bias_", ("stem.conv_dw.bias", "parameters")),
    ("L_self_parameters_scale_", ("scale", "parameters")),
    ("L_x_", None),
    ("L_inputs_0_", None),
])
def test_state_names(name: str, want: tuple[str, str] | None) -> None:
    assert state_name(name) == want


def test_network_module_holds_the_models_own_tensors() -> None:
    model = small()
    graphs = []

    def keep(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        graphs.append((gm, example_inputs))
        return gm.forward

    torch.compile(model, backend=keep, fullgraph=True)(torch.randn(2, *SHAPE,
                                                                   dtype=torch.float64))
    module, shapes, names = network_module(*graphs[0])
    assert shapes == [SHAPE]
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    assert names <= set(own)
    for name, tensor in module.state_dict(keep_vars=True).items():
        assert tensor is own[name], name


@pytest.mark.slow
def test_inductor_runs_the_model() -> None:
    model = small().float()
    handle = fxpath.backend()  # inductor
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        out = torch.compile(model, backend=handle, fullgraph=True)(x)
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-4)
    assert handle.path_norm().log2 == pytest.approx(
        fxpath.compile(model, SHAPE).path_norm().log2, rel=1e-6)
