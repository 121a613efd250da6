"""Layer collapse (issue 21): `fxpath.prune` detects exactly when no input-rooted path of
non-zero mass is left, names the weights that cut the network, warns or refuses, and with
``steps > 1`` keeps a path at the same sparsity."""

from __future__ import annotations

import copy
import json
import time
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune
import torchvision
from bruteforce import cases, oracle

import fxpath
from fxpath.apps import collapse
from fxpath.apps.collapse import CollapseError, CollapseWarning
from fxpath.errors import ArgumentError, FxPathError
from fxpath.tools import cli


def _connected(case: cases.Case, model: nn.Module) -> bool:
    """The oracle, on the explicit neuron DAG: some output neuron is reached from an input
    neuron along edges of non-zero weight (a path of non-zero mass)."""
    dag = case.build(model)
    reached = [False] * len(dag)
    for nid, neuron in enumerate(dag.neurons):
        reached[nid] = neuron.act == "input" or any(reached[e.src] and e.weight != 0
                                                     for e in neuron.edges)
    return any(reached[o] for o in dag.outputs)


def test_the_oracle_agrees_with_path_enumeration() -> None:
    """Reachability along non-zero edges is the enumeration's "an input path is not zero"."""
    case = cases.ALL_FACTORIES["residual_add_fold"]()
    for amount in (0.0, 0.6, 0.9, 1.0):
        model = copy.deepcopy(case.module)
        fxpath.prune(model, amount, case.input_shape, on_collapse="ignore")
        lifting = oracle.path_lifting(case.build(model))
        assert _connected(case, model) is any(v != 0 for (kind, _, _), v in lifting.items()
                                              if kind == "input")


def _restored(pruned: nn.Module, names: list[str]) -> nn.Module:
    """A copy of ``pruned`` with the weights ``names`` given back their entries."""
    trial = copy.deepcopy(pruned)
    for name in names:
        path, _, attr = name.rpartition(".")
        module = trial.get_submodule(path)
        getattr(module, f"{attr}_mask").fill_(1)
        torch_prune.remove(module, attr)
    return trial


def _expected_cut(case: cases.Case, pruned: nn.Module, names: list[str]) -> tuple[str, ...]:
    """The cut by its definition, from path enumeration: the weights whose restoration alone
    reconnects; if none, those without which restoring all the others does not."""
    alone = [n for n in names if _connected(case, _restored(pruned, [n]))]
    if alone:
        return tuple(alone)
    return tuple(n for n in names
                 if not _connected(case, _restored(pruned, [m for m in names if m != n])))


#: one network of each kind of bias-like coordinate and of each way paths join or split
CASES = ["mlp_with_bias", "conv_bn_fold", "conv_bn_nofold", "bn_after_concat", "pools",
         "residual_add_fold", "concat_net", "split_chunk_net", "learnable_affine_net",
         "padded_net", "activations_relu6", "activations_hardtanh", "activations_prelu",
         "tiny_unet"]


@pytest.mark.parametrize("name", CASES)
def test_collapse_and_cut_equal_the_oracle(name: str) -> None:
    """On every catalogue network (biases, folded and standalone BatchNorms, constant adds of
    the ReLU rewrites, constant padding, concat, residual adds, two outputs), at sparsities up
    to 1, ``collapsed`` and ``cut`` are what enumerating every path gives."""
    case = cases.ALL_FACTORIES[name]()
    assert _connected(case, case.module)
    for amount, criterion in ((0.8, "path_magnitude"), (0.95, "path_magnitude"),
                              (0.95, "magnitude"), (1.0, "path_magnitude")):
        pruned = copy.deepcopy(case.module)
        report = fxpath.prune(pruned, amount, case.input_shape, criterion=criterion,
                              on_collapse="ignore")
        assert report.collapsed is not _connected(case, pruned), (amount, criterion)
        expected = _expected_cut(case, pruned, list(report.sparsity)) if report.collapsed else ()
        assert report.cut == expected, (amount, criterion)


def test_bias_rooted_paths_do_not_count() -> None:
    """Every weight pruned: the folded BatchNorm biases, the constants of the ReLU6 rewrite and
    constant padding still carry path mass (the path-norm is not zero), yet no input reaches
    an output: collapsed, and the model's output is the same for every input."""
    for name in ("conv_bn_fold", "activations_relu6", "padded_net", "learnable_affine_net"):
        case = cases.ALL_FACTORIES[name]()
        model = copy.deepcopy(case.module)
        with pytest.warns(CollapseWarning):
            report = fxpath.prune(model, 1.0, case.input_shape)
        assert report.collapsed and report.overall_sparsity == 1.0
        assert fxpath.path_norm(model, case.input_shape).value > 0, name
        x = torch.randn(5, *case.input_shape, dtype=torch.float64) * 3
        with torch.no_grad():
            y = model(x)
        y = y if isinstance(y, torch.Tensor) else torch.cat([t.flatten(1) for t in y], 1)
        assert torch.equal(y, y[:1].expand_as(y)), name


class TwoBranches(nn.Module):
    """``head(relu(a(x)) + relu(b(x)))``: a path through either branch connects."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.a(x)) + torch.relu(self.b(x)))


def _chain() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                         nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2)).eval()


def test_cut_on_networks_built_to_collapse() -> None:
    """Both branches emptied: each one alone reconnects, so both are named, "any one". Two
    layers of a chain emptied: neither alone reconnects, both are needed, "all of these".
    One branch emptied, or a weight of 1e-30 left: not collapsed (no tolerance)."""
    torch.manual_seed(0)
    net = TwoBranches().eval()
    model = copy.deepcopy(net)
    with pytest.warns(CollapseWarning, match="any one of these reconnects it: a.weight, "
                                             "b.weight"):
        report = fxpath.prune(model, 1.0, (4,), prunable=["a.weight", "b.weight"])
    assert report.collapsed and report.cut == ("a.weight", "b.weight")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = fxpath.prune(copy.deepcopy(net), 1.0, (4,), prunable=["a.weight"])
    assert not report.collapsed and report.cut == ()

    chain = _chain()
    with pytest.warns(CollapseWarning, match="only when all of these are restored: 2.weight, "
                                             "4.weight"):
        report = fxpath.prune(copy.deepcopy(chain), 1.0, (4,),
                              prunable=["2.weight", "4.weight"])
    assert report.collapsed and report.cut == ("2.weight", "4.weight")
    with pytest.warns(CollapseWarning):
        report = fxpath.prune(copy.deepcopy(chain), 1.0, (4,))
    assert report.cut == ("0.weight", "2.weight", "4.weight", "6.weight")

    tiny = copy.deepcopy(chain).double()
    with torch.no_grad():
        tiny[2].weight.zero_()
        tiny[2].weight[0, 0] = 1e-30
        tiny[0].weight[0].fill_(1.0)
        tiny[4].weight[:, 0].fill_(1.0)
    report = fxpath.prune(tiny, 0.0, (4,))
    assert not report.collapsed


def _state(model: nn.Module) -> dict:
    return {"tensors": {k: v.clone() for k, v in model.state_dict().items()},
            "params": [(n, id(p)) for n, p in model.named_parameters()],
            "hooks": [(n, list(m._forward_pre_hooks)) for n, m in model.named_modules()],
            "attrs": [(n, sorted(m.__dict__)) for n, m in model.named_modules()]}


def test_on_collapse_policy() -> None:
    """``"raise"`` refuses and leaves the model exactly as it was (a user's own mask and hook
    included); ``"ignore"`` stays silent; a model collapsed before the call is reported but
    never warned about; a bad value is refused before anything runs."""
    def make() -> TwoBranches:
        torch.manual_seed(0)
        model = TwoBranches().eval()
        torch_prune.l1_unstructured(model.head, "weight", amount=0.25)
        model.head.register_forward_pre_hook(lambda m, x: None)
        return model

    model = make()
    state = _state(model)
    with pytest.raises(CollapseError, match="any one of these reconnects it") as info:
        fxpath.prune(model, 1.0, (4,), prunable=["a.weight", "b.weight"], on_collapse="raise")
    assert isinstance(info.value, FxPathError) and info.value.cut == ("a.weight", "b.weight")
    assert "nothing was pruned" in str(info.value)
    now = _state(model)
    assert now.keys() == state.keys()
    for key in ("params", "hooks", "attrs"):
        assert now[key] == state[key]
    assert all(torch.equal(now["tensors"][k], v) for k, v in state["tensors"].items())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = fxpath.prune(make(), 1.0, (4,), prunable=["a.weight", "b.weight"],
                              on_collapse="ignore")
        assert report.collapsed
        dead = make()
        with torch.no_grad():
            dead.head.weight_orig.zero_()
        report = fxpath.prune(dead, 0.5, (4,), on_collapse="raise")
        assert report.collapsed and report.cut == ()
    with pytest.raises(ArgumentError, match="on_collapse must be 'warn', 'raise' or 'ignore'"):
        fxpath.prune(make(), 0.5, (4,), on_collapse="error")


def _small_cnn() -> nn.Module:
    def block(c: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                             nn.ReLU())
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), block(16),
                         nn.Conv2d(16, 64, 3, stride=2, padding=1), nn.ReLU(), block(64),
                         block(64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10)).eval()


def _varies(model: nn.Module, shape: tuple[int, ...]) -> bool:
    x = torch.randn(4, *shape, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        y = model(x)
    return not torch.equal(y, y[:1].expand_as(y))


@pytest.mark.slow  # several prune rounds (~6 s): CI runs it, -m slow
def test_iterative_path_magnitude_keeps_a_path() -> None:
    """One shot at 90% empties the widest conv; the same sparsity in 2 or 4 rescored steps
    leaves a path, and the model's output depends on its input again."""
    shape = (3, 16, 16)
    net = _small_cnn()
    one = copy.deepcopy(net)
    with pytest.warns(CollapseWarning, match="5.0.weight"):
        report = fxpath.prune(one, 0.9, shape)
    assert report.collapsed and report.cut == ("5.0.weight",) and not _varies(one, shape)
    for steps in (2, 4):
        model = copy.deepcopy(net)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = fxpath.prune(model, 0.9, shape, steps=steps)
        assert not again.collapsed and again.cut == () and _varies(model, shape)
        assert sum(again.kept.values()) == sum(report.kept.values())


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_guard_keeps_a_path_at_the_same_sparsity(monkeypatch: pytest.MonkeyPatch,
                                                 scope: str) -> None:
    """Iterative magnitude pruning keeps the one-shot order, so it collapses as one shot does:
    the guard puts back the entries of one path and drops as many kept entries that no
    input-rooted path crosses. Same count of kept entries (per layer with scope="layer")."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 300), nn.ReLU(), nn.Linear(300, 5)).double().eval()
    calls = []
    real = collapse.Connectivity._reconnect
    monkeypatch.setattr(collapse.Connectivity, "_reconnect",
                        lambda self, *a: calls.append(1) or real(self, *a))
    with pytest.warns(CollapseWarning):
        one = fxpath.prune(copy.deepcopy(net), 0.995, (10,), criterion="magnitude",
                           scope=scope)
    assert one.collapsed and not calls
    model = copy.deepcopy(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = fxpath.prune(model, 0.995, (10,), criterion="magnitude", scope=scope, steps=3)
    assert calls and not report.collapsed and _varies(model, (10,))
    if scope == "layer":
        assert report.kept == one.kept
    assert sum(report.kept.values()) == sum(one.kept.values())


def test_guard_gives_up_where_no_path_fits() -> None:
    """Amount 1 leaves nothing to keep a path with: the steps collapse and say so."""
    with pytest.warns(CollapseWarning):
        report = fxpath.prune(_chain(), 1.0, (4,), steps=3)
    assert report.collapsed and report.overall_sparsity == 1.0


@pytest.mark.slow  # a whole CLI prune (~4 s): CI runs it, -m slow
def test_cli_prints_the_collapse(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``fxpath prune`` adds one line when the pruned model is collapsed (the warning goes to
    stderr), and ``--json`` has ``collapsed`` and ``cut``."""
    monkeypatch.setattr(cli, "build_model", lambda spec: (_small_cnn(), (3, 16, 16)))
    code = cli.main(["prune", "cnn", "--amount", "0.9"])
    out, err = capsys.readouterr()
    assert code == 0 and "CollapseWarning" in err
    assert out.splitlines()[-1] == ("collapsed: no path from an input reaches an output (the "
                                    "pruned model is constant); cut by: 5.0.weight")
    code = cli.main(["prune", "cnn", "--amount", "0.9", "--json"])
    result = json.loads(capsys.readouterr()[0])
    assert code == 0 and result["collapsed"] is True and result["cut"] == ["5.0.weight"]
    code = cli.main(["prune", "cnn", "--amount", "0.9", "--steps", "3"])
    out, err = capsys.readouterr()
    assert code == 0 and "collapsed" not in out and "CollapseWarning" not in err


@pytest.mark.slow
def test_resnet18_collapses_at_90_percent_in_one_step_not_in_five() -> None:
    """The issue's example: torchvision's ResNet-18 (weights=None, seed 0) at 224x224 and 90%
    loses layer4.0.conv2 and layer4.0.downsample and outputs a constant; in 5 steps it keeps
    the same sparsity and a path. The check costs a fraction of the prune call."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    shape = (3, 224, 224)
    model = copy.deepcopy(net)
    spent = []
    real = collapse.Connectivity.analyse

    def timed(self: collapse.Connectivity) -> collapse.Collapse:
        start = time.perf_counter()
        result = real(self)
        spent.append(time.perf_counter() - start)
        return result

    collapse.Connectivity.analyse = timed  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        with pytest.warns(CollapseWarning):
            report = fxpath.prune(model, 0.9, shape)
        whole = time.perf_counter() - start
    finally:
        collapse.Connectivity.analyse = real  # type: ignore[method-assign]
    assert report.collapsed
    assert report.cut == ("layer4.0.conv2.weight", "layer4.0.downsample.0.weight")
    assert not _varies(model, shape) and spent[0] < whole
    model = copy.deepcopy(net)
    again = fxpath.prune(model, 0.9, shape, steps=5)
    assert not again.collapsed and _varies(model, shape)
    assert again.overall_sparsity == report.overall_sparsity
