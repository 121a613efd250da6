"""Live parameters: a compiled program answers for the weights the model holds now, however
they were changed, and refuses a model that is no longer the compiled network."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

import fxpath
from fxpath.errors import ArchitectureMismatchError

SHAPE = (3, 8, 8)


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(6 * 2 * 2, 5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 1.5)
    return net.eval().double()


def _data(net: nn.Module) -> None:
    net[4].weight.data.mul_(0.5)
    net[9].bias.data.fill_(3.0)


def _load_state_dict(net: nn.Module) -> None:
    net.load_state_dict(_net(seed=1).state_dict())


def _copy(net: nn.Module) -> None:
    with torch.no_grad():
        net[0].weight.copy_(torch.randn_like(net[0].weight))


def _optimizer_step(net: nn.Module) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    net(torch.randn(2, *SHAPE, dtype=torch.float64)).square().sum().backward()
    opt.step()


def _replaced_parameter(net: nn.Module) -> None:
    net[7].weight = nn.Parameter(torch.randn_like(net[7].weight))


def _running_stats(net: nn.Module) -> None:
    net[1].running_var.data.mul_(4.0)


def _torch_prune(net: nn.Module) -> None:
    torch_prune.l1_unstructured(net[4], "weight", amount=0.5)


def _torch_prune_then_remove(net: nn.Module) -> None:
    torch_prune.random_unstructured(net[7], "weight", amount=0.3)
    torch_prune.remove(net[7], "weight")


def _replaced_module_same_shape(net: nn.Module) -> None:
    net[9] = nn.Linear(5, 3).double()


def _train_mode_forward(net: nn.Module) -> None:  # BatchNorm updates its running statistics
    net.train()
    net(torch.randn(4, *SHAPE, dtype=torch.float64) * 3 + 1)


MUTATIONS: dict[str, Callable[[nn.Module], None]] = {
    f.__name__.lstrip("_"): f for f in (
        _data, _load_state_dict, _copy, _optimizer_step, _replaced_parameter, _running_stats,
        _torch_prune, _torch_prune_then_remove, _replaced_module_same_shape, _train_mode_forward)
}


def _answers(prog: fxpath.PathProgram) -> dict[str, object]:
    twin = _net(seed=2)
    return {"l1": prog.path_norm(1).log2, "l2": prog.path_norm(2).log2,
            "scores": prog.path_magnitude(), "neurons": prog.path_magnitude(neurons=True),
            "metric": prog.path_metric(twin).log2,
            "differentiable": float(prog.path_norm(differentiable=True).log_tensor.detach())}


def _assert_equal(got: dict[str, object], want: dict[str, object]) -> None:
    assert got.keys() == want.keys()
    for key, w in want.items():
        g = got[key]
        if isinstance(w, dict):
            assert g.keys() == w.keys(), key
            for name in w:
                torch.testing.assert_close(g[name], w[name], rtol=1e-12, atol=0, msg=name)
        else:
            assert g == pytest.approx(w, rel=1e-12), key


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_compiled_program_answers_for_the_live_weights(mutation: str) -> None:
    net = _net()
    prog = fxpath.compile(net, SHAPE)
    before = _answers(prog)
    MUTATIONS[mutation](net)
    after = _answers(prog)
    _assert_equal(after, _answers(fxpath.compile(net, SHAPE)))
    assert after["l1"] != before["l1"]


def test_repeated_calls_reuse_their_buffers_and_stay_correct() -> None:
    net = _net()
    prog = fxpath.compile(net, SHAPE)
    for step in range(3):
        with torch.no_grad():
            net[0].weight.data.add_(0.1 * step)
        want = fxpath.compile(net, SHAPE).path_norm().log2
        assert prog.path_norm().log2 == pytest.approx(want, rel=1e-14)
    assert len(prog.runner._buffers) == 1  # one set of magnitude buffers, rewritten in place


def test_replaced_module_of_another_shape_is_refused() -> None:
    net = _net()
    prog = fxpath.compile(net, SHAPE)
    net[9] = nn.Linear(5, 7).double()
    with pytest.raises(ArchitectureMismatchError, match="Compile it again"):
        prog.path_norm()


def test_replaced_module_of_another_kind_is_refused() -> None:
    net = _net()
    prog = fxpath.compile(net, SHAPE)
    net[3] = nn.AvgPool2d(2)  # same shapes, another network
    with pytest.raises(ArchitectureMismatchError, match="changed since fxpath.compile"):
        prog.path_magnitude()


def test_replaced_parameter_of_another_shape_is_refused() -> None:
    net = _net()
    prog = fxpath.compile(net, SHAPE)
    net[7].weight = nn.Parameter(torch.randn(5, 30, dtype=torch.float64))
    with pytest.raises(ArchitectureMismatchError, match=r"'7.weight' has shape \(5, 30\)"):
        prog.path_norm()


def test_second_model_is_checked_again_after_it_changes() -> None:
    net, twin = _net(), _net(seed=3)
    prog = fxpath.compile(net, SHAPE)
    prog.path_metric(twin)
    twin[9] = nn.Linear(5, 4).double()
    with pytest.raises(ArchitectureMismatchError):
        prog.path_metric(twin)


def test_state_dict_of_a_larger_network_is_refused() -> None:
    net = _net()
    bigger = nn.Sequential(*copy.deepcopy(list(net)), nn.ReLU(), nn.Linear(3, 3).double())
    with pytest.raises(ArchitectureMismatchError, match="'11.weight'"):
        fxpath.compile(net, SHAPE).path_metric(bigger.state_dict())
