"""Training with path-norms: `fxpath.PathNormPenalty` and `fxpath.PathSGD`.

Path-SGD's gamma is checked against an explicit path enumeration (the bruteforce package), its
rescaling invariance over 50 steps against plain SGD's lack of it, and its failure modes (a
failed step changes nothing). The DDP tests are in ``test_training_ddp.py``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bruteforce import cases, oracle
from conftest import randomize_batchnorm

import fxpath

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The networks here are tiny: one thread avoids contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 3))


class SmallResNet(nn.Module):
    """conv-BN-ReLU stem, a residual block (conv-BN-ReLU-conv, add, ReLU), a strided conv, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 5, 3, stride=2)
        self.fc = nn.Linear(5 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(x + self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(F.relu(self.conv3(x)).flatten(1))


NETS = {"mlp": (mlp, (6,)), "resnet": (SmallResNet, (2, 6, 6))}


def _net(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    make, shape = NETS[name]
    torch.manual_seed(seed)
    return randomize_batchnorm(make(), seed).to(F64).eval(), shape


def _batches(shape: tuple[int, ...], n: int, size: int = 16, seed: int = 0
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, *shape, generator=gen, dtype=F64),
             torch.randint(3, (size,), generator=gen)) for _ in range(n)]


def _sgd_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
              y: torch.Tensor) -> None:
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


# -- gamma against the path enumeration -------------------------------------------------------
def _coordinates(dag: oracle.NeuronDAG) -> dict[tuple[int, ...], float]:
    """Every coordinate of the DAG (biases ``(neuron,)``, edges ``(neuron, k)``): its value."""
    out: dict[tuple[int, ...], float] = {}
    for i, n in enumerate(dag.neurons):
        if n.has_bias:
            out[(i,)] = n.bias
        for k, e in enumerate(n.edges):
            out[(i, k)] = e.weight
    return out


def brute_gamma(case: cases.Case, per_tensor: int = 4) -> dict[str, dict[tuple[int, ...], float]]:
    """``gamma_e = sum_j gamma_j (d c_j / d theta_e)^2`` by path enumeration, for up to
    ``per_tensor`` entries of every parameter: ``gamma_j`` (a coordinate's) sums, over the
    enumerated paths through ``j``, the product of the other coordinates squared; ``d c_j /
    d theta_e`` is the change of every DAG coordinate when ``theta_e`` grows by 1 (the
    coordinates are affine in each parameter entry)."""
    model = case.module
    dag = case.build(model)
    values = _coordinates(dag)
    mass = dict.fromkeys(values, 0.0)
    for kind, start, trail in oracle.path_lifting(dag):
        ids = ([(start,)] if kind == "bias" else []) + [(d, k) for d, k in trail]
        for j, cid in enumerate(ids):
            mass[cid] += float(np.prod([values[i] ** 2 for n, i in enumerate(ids) if n != j]))
    gen = np.random.default_rng(0)
    out: dict[str, dict[tuple[int, ...], float]] = {}
    for name, p in model.named_parameters():
        entries = list(np.ndindex(*p.shape))
        picked = [entries[i] for i in sorted(set(gen.choice(len(entries), min(
            per_tensor, len(entries)), replace=False)) | {0, len(entries) - 1})]
        out[name] = {}
        for idx in picked:
            twin = copy.deepcopy(model)
            with torch.no_grad():
                dict(twin.named_parameters())[name][idx] += 1.0
            moved = _coordinates(case.build(twin))
            out[name][idx] = sum(mass[c] * (moved[c] - values[c]) ** 2 for c in values)
    return out


@pytest.mark.parametrize("factory", [cases.mlp_with_bias, lambda: cases.conv_bn(True),
                                     lambda: cases.conv_bn(False),
                                     lambda: cases.residual_add(True),
                                     cases.learnable_affine_net],
                         ids=["mlp", "conv_bn_folded", "conv_bn_unfolded", "residual",
                              "learnable_affine"])
def test_gamma_matches_path_enumeration(factory) -> None:  # noqa: ANN001
    """Weights, biases, BatchNorm weights and biases (folded or not), learnable scales."""
    case = factory()
    opt = fxpath.PathSGD(case.module, case.input_shape, lr=0.1, fold_bn=case.module.fold_bn)
    gamma = opt.gamma()
    for name, entries in brute_gamma(case).items():
        for idx, want in entries.items():
            assert float(gamma[name][idx]) == pytest.approx(want, rel=1e-12, abs=1e-300), \
                (name, idx)


def test_gamma_is_the_derivative_in_the_squared_weight() -> None:
    """For a weight, gamma_e = d||Phi||_2^2 / d(theta_e^2): ||Phi||_2^2 is affine in theta_e^2,
    so moving theta_e^2 by 1 moves it by gamma_e exactly; gamma of a zero weight is not 0."""
    model, shape = _net("mlp")
    with torch.no_grad():
        model[2].weight[1, 2] = 0.0
    gamma = fxpath.PathSGD(model, shape, lr=0.1).gamma()
    for layer, idx in ((0, (3, 1)), (2, (1, 2)), (4, (0, 5))):
        twin = copy.deepcopy(model)
        with torch.no_grad():
            w = twin[layer].weight
            w[idx] = torch.sqrt(w[idx] ** 2 + 1.0)
        base = 2 ** (2 * fxpath.path_norm(model, shape, q=2).log2)
        moved = 2 ** (2 * fxpath.path_norm(twin, shape, q=2).log2)
        assert moved - base == pytest.approx(float(gamma[f"{layer}.weight"][idx]), rel=1e-9)
    assert float(gamma["2.weight"][1, 2]) > 0


def test_gamma_scale_past_float32() -> None:
    """A float32 network whose ||Phi||_2^2 passes float32's range (2^128): gamma and the step
    agree with a float64 copy (the exponent is carried, never multiplied out in float32), also
    for biases near the output, whose share of the path mass (2^-166) is below float32's
    range, and for an all-zero bias."""
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(6, 6), nn.ReLU())],
                          nn.Linear(6, 2)).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(2.0 ** 10)
        model[14].bias.zero_()
    ref_model = copy.deepcopy(model).double()
    assert 2 * fxpath.path_norm(model, (6,), q=2).log2 > 140
    opt = fxpath.PathSGD(model, (6,), lr=1.0, dtype=torch.float32)
    ref = fxpath.PathSGD(ref_model, (6,), lr=1.0)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 0, 1])
    for m, o in ((model, opt), (ref_model, ref)):
        o.zero_grad()
        F.cross_entropy(m(x.to(m[0].weight.dtype)), y).backward()
    gamma, ref_gamma = opt.gamma(), ref.gamma()
    assert max(float(g.max()) for g in gamma.values()) > 2.0 ** 128
    for name, g in gamma.items():
        np.testing.assert_allclose(g.numpy(), ref_gamma[name].numpy(), rtol=1e-4)
    for (_, step, _), (_, ref_step, _) in zip(opt._plan(), ref._plan()):
        assert step.dtype == torch.float32 and bool(torch.isfinite(step).all())
        np.testing.assert_allclose(step.double().numpy(), ref_step.numpy(), rtol=1e-3,
                                   atol=1e-6 * float(ref_step.abs().max()))


# -- rescaling invariance -----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NETS))
def test_path_sgd_is_rescaling_invariant(name: str) -> None:
    """From theta and from a neuron-wise rescaling T(theta), with the same batches: the same
    function after every one of 50 steps (1e-6 relative); plain SGD drifts apart."""
    model, shape = _net(name)
    twin = fxpath.rescale(model, shape, factors=(0.3, 1.0, 3.7, 130.0), seed=1)
    x_test = torch.randn(32, *shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(twin(x_test), model(x_test), rtol=1e-12, atol=1e-12)
    assert any(not torch.allclose(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    batches = _batches(shape, 50)
    worst = {}
    for kind in ("path_sgd", "sgd"):
        a, b = copy.deepcopy(model), copy.deepcopy(twin)
        if kind == "path_sgd":
            oa = fxpath.PathSGD(a, shape, lr=0.05, momentum=0.5)
            ob = fxpath.PathSGD(b, shape, lr=0.05, momentum=0.5)
        else:
            oa = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.5)
            ob = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.5)
        worst[kind] = 0.0
        for x, y in batches:
            _sgd_step(a, oa, x, y)
            _sgd_step(b, ob, x, y)
            with torch.no_grad():
                fa, fb = a(x_test), b(x_test)
            gap = float((fa - fb).abs().max() / fa.abs().max())
            worst[kind] = max(worst[kind], gap) if gap == gap else float("inf")
        if kind == "path_sgd":  # it trained: the weights moved
            first, start = next(a.parameters()), next(model.parameters())
            assert float((first - start).detach().abs().max()) > 1e-3
    assert worst["path_sgd"] <= 1e-6
    assert worst["sgd"] > 1e-2


# -- what each parameter gets --------------------------------------------------------------------
class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.main, self.aux = nn.Linear(4, 5), nn.Linear(5, 2), nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = F.relu(self.body(x))
        return {"main": self.main(h), "aux": self.aux(h)}


def test_parameters_outside_the_path_network_take_a_plain_sgd_step() -> None:
    torch.manual_seed(0)
    model = TwoHeads().double()
    opt = fxpath.PathSGD(model, (4,), lr=0.1, output="main")
    assert set(opt.gamma()) == {"body.weight", "body.bias", "main.weight", "main.bias"}
    out = model(torch.randn(8, 4, dtype=F64))
    (out["main"].square().mean() + out["aux"].square().mean()).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    gamma = opt.gamma()
    opt.step()
    for n, p in model.named_parameters():
        want = before[n] - 0.1 * (grads[n] / gamma[n] if n in gamma else grads[n])
        torch.testing.assert_close(p.detach(), want, rtol=1e-12, atol=1e-15)


def test_momentum_accumulates_the_path_direction() -> None:
    model, shape = _net("mlp")
    opt = fxpath.PathSGD(model, shape, lr=0.1, momentum=0.9)
    ref = copy.deepcopy(model)
    buf = None
    for x, y in _batches(shape, 3):
        gamma = fxpath.PathSGD(ref, shape, lr=0.0).gamma()
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        d = {n: p.grad / gamma[n] for n, p in ref.named_parameters()}
        buf = d if buf is None else {n: 0.9 * buf[n] + d[n] for n in d}
        with torch.no_grad():
            for n, p in ref.named_parameters():
                p.sub_(0.1 * buf[n])
        _sgd_step(model, opt, x, y)
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_batchnorm_in_train_mode_is_refused_and_eval_bn_trains() -> None:
    model, shape = _net("resnet")
    opt = fxpath.PathSGD(model, shape, lr=0.05)
    x, y = _batches(shape, 1)[0]
    model.train()
    before = copy.deepcopy(model.state_dict())
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(fxpath.UnsupportedModelError, match=r"(?s)bn0.*model\.eval\(\)"):
        opt.step()
    model.eval()
    for k, v in model.state_dict().items():
        if "running" not in k and "num_batches" not in k:  # the train forward moved these
            torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    opt.zero_grad()
    _sgd_step(model, opt, x, y)  # eval mode: BatchNorm weight and bias train too
    assert not torch.equal(model.bn1.weight, before["bn1.weight"])
    assert not torch.equal(model.bn1.bias, before["bn1.bias"])


def test_derived_weights_are_refused() -> None:
    case = cases.derived_weights_net()
    with pytest.raises(fxpath.UnsupportedModelError, match="Path-SGD"):
        fxpath.PathSGD(case.module, case.input_shape, lr=0.1)


# -- a failed step changes nothing --------------------------------------------------------------
def _state(model: nn.Module, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    bufs = [s["momentum_buffer"].clone() for s in opt.state.values() if "momentum_buffer" in s]
    return [p.detach().clone() for p in model.parameters()] + bufs


def _unchanged(model: nn.Module, opt: torch.optim.Optimizer, saved: list[torch.Tensor]) -> None:
    now = _state(model, opt)
    assert len(now) == len(saved)
    for a, b in zip(now, saved):
        assert torch.equal(a, b)


@pytest.mark.parametrize("failure", ["nan_grad_last", "nan_weight", "inside_gamma",
                                     "inside_momentum"])
def test_a_failed_step_leaves_parameters_and_state_unchanged(failure: str,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    model, shape = _net("resnet")
    opt = fxpath.PathSGD(model, shape, lr=0.05, momentum=0.9)
    batches = _batches(shape, 2)
    _sgd_step(model, opt, *batches[0])  # momentum buffers exist
    opt.zero_grad()
    F.cross_entropy(model(batches[1][0]), batches[1][1]).backward()
    params = list(model.parameters())
    if failure == "nan_grad_last":
        params[-1].grad[0] = float("nan")
        error = fxpath.NonFiniteError
    elif failure == "nan_weight":
        with torch.no_grad():
            model.conv2.weight[0, 0, 0, 0] = float("inf")
        error = fxpath.NonFiniteError
    elif failure == "inside_gamma":
        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("injected")
        monkeypatch.setattr(opt.program, "path_network", broken)
        error = RuntimeError
    else:  # the last parameter's momentum update fails, after all others were planned
        last = params[-1]
        real = opt.state[last]["momentum_buffer"]

        class Failing(torch.Tensor):
            def mul(self, *args: object, **kwargs: object) -> torch.Tensor:
                raise RuntimeError("injected")
        opt.state[last]["momentum_buffer"] = real.as_subclass(Failing)
        error = RuntimeError
    saved = _state(model, opt)
    with pytest.raises(error):
        opt.step()
    _unchanged(model, opt, saved)


# -- the penalty --------------------------------------------------------------------------------
def test_penalty_value_log_and_gradient_match_the_enumeration() -> None:
    """q = 1: theta_e * d||Phi||_1/d theta_e is the path mass through e (enumerated)."""
    case = cases.mlp_with_bias()
    model = case.module
    value = fxpath.PathNormPenalty(model, case.input_shape, log=False)()
    log = fxpath.PathNormPenalty(model, case.input_shape)()
    dag = case.build(model)
    norm = oracle.path_norm(dag, 1.0)
    assert float(value.detach()) == pytest.approx(norm, rel=1e-12)
    assert float(log.detach()) == pytest.approx(np.log(norm), rel=1e-12)
    value.backward()
    mass = oracle.mass_by_parameter(dag)
    for name, p in model.named_parameters():
        np.testing.assert_allclose((p.grad * p).detach().numpy(), mass[name], rtol=1e-10,
                                   atol=1e-14)


def test_penalty_q2_gradient_is_consistent_with_gamma() -> None:
    """d||Phi||_2/d theta_e = theta_e gamma_e / ||Phi||_2 (gamma from Path-SGD)."""
    model, shape = _net("resnet")
    penalty = fxpath.PathNormPenalty(model, shape, q=2, log=False)
    value = penalty()
    value.backward()
    gamma = fxpath.PathSGD(model, shape, lr=0.1).gamma()
    for name, p in model.named_parameters():
        if name.endswith("weight") and not name.startswith("bn"):
            torch.testing.assert_close(p.grad, p.detach() * gamma[name] / value.detach(),
                                       rtol=1e-9, atol=1e-15)


def test_penalty_reads_live_weights_and_running_stats_in_train_mode() -> None:
    model, shape = _net("resnet")
    penalty = fxpath.PathNormPenalty(model, shape)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in _batches(shape, 3):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) + 0.1 * penalty()
        loss.backward()
        assert model.bn1.weight.grad is not None and model.bn1.bias.grad is not None
        opt.step()
        want = fxpath.path_norm(copy.deepcopy(model).eval(), shape).log2 * np.log(2)
        assert float(penalty().detach()) == pytest.approx(want, rel=1e-12)


def test_penalty_training_lowers_the_path_norm() -> None:
    model, shape = _net("mlp")
    penalty = fxpath.PathNormPenalty(model, shape)
    start = float(penalty().detach())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in _batches(shape, 30):
        opt.zero_grad()
        (F.cross_entropy(model(x), y) + 1.0 * penalty()).backward()
        opt.step()
    assert float(penalty().detach()) < start - 0.5


class FoldedNet(nn.Module):
    """conv-BN (a zero BatchNorm weight, a zero conv weight), transposed conv-BN, dense."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn1 = nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.up, self.bn2 = nn.ConvTranspose2d(6, 3, 2, stride=2), nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.up(F.relu(self.bn1(self.conv(x))))))
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("block", [None, 8, 40])
def test_magnitude_gradients_match_autograd_through_the_signed_coordinates(
        block: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The q = 1 magnitudes the penalty differentiates (BatchNorm folded: ``|W| |s|``) have the
    values, gradients and second derivatives of ``|coordinate|`` through plain autograd
    (``block``: the backward in blocks of that many entries: one row or two)."""
    from fxpath.ops import linear

    if block is not None:
        monkeypatch.setattr(linear, "_BLOCK", block)
    torch.manual_seed(0)
    model = FoldedNet().to(F64).eval()
    randomize_batchnorm(model)
    with torch.no_grad():
        model.bn1.weight[0] = 0.0
        model.conv.weight[1, 0, 0, 0] = 0.0
    prog = fxpath.compile(model, (2, 4, 4), dtype=F64)
    mags = prog.magnitudes(1.0)
    ref = [c.abs() for c in prog.coordinates().values()]
    for m, r in zip(mags, ref):
        assert torch.equal(m.detach(), r.detach())
    params = list(model.parameters())
    cot = [torch.randn_like(m) for m in mags]
    fast = torch.autograd.grad(mags, params, cot, retain_graph=True)
    want = torch.autograd.grad(ref, params, cot, create_graph=True)
    got = torch.autograd.grad(mags, params, cot, create_graph=True)
    v = [torch.randn_like(p) for p in params]
    for a, b, c in zip(fast, got, want):
        torch.testing.assert_close(a, c.detach(), rtol=1e-13, atol=0)
        torch.testing.assert_close(b.detach(), c.detach(), rtol=1e-13, atol=0)
    for a, b in zip(torch.autograd.grad(got, params, v, allow_unused=True),
                    torch.autograd.grad(want, params, v, allow_unused=True)):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


def _reference_penalty(penalty: fxpath.PathNormPenalty) -> torch.Tensor:
    """The log path-norm through plain autograd: ``|c|`` of the signed coordinates, the same
    path network, the same formula."""
    from fxpath.engine.precision import ieee_float32

    prog = penalty.program
    with ieee_float32():
        total, exp = prog.path_network(1.0)(*[c.abs() for c in prog.coordinates().values()])
    return torch.log(total) + exp * torch.log(torch.tensor(2.0, dtype=total.dtype))


def _grads(value: torch.Tensor, params: list[torch.Tensor], **kw: bool) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value, params, **kw))


@pytest.mark.parametrize("net, block", [("folded", None), ("folded", 8), ("resnet", None)])
def test_penalty_buffers_give_autograd_values_and_gradients_call_after_call(
        net: str, block: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The differentiable path writes the magnitudes into buffers it keeps and the weights'
    gradients into the network's own: across calls, after optimizer steps, with two calls
    pending at once (the second then takes fresh tensors), with ``retain_graph`` and with a
    double backward, values are bit for bit and gradients to rounding those of autograd
    through the signed coordinates (``block``: the in-place backward a row or two at a
    time, also without a BatchNorm)."""
    from fxpath.ops import linear

    if block is not None:
        monkeypatch.setattr(linear, "_BLOCK", block)
        monkeypatch.setattr(linear, "_SMALL", 0)
    torch.manual_seed(0)
    if net == "folded":
        model, shape = randomize_batchnorm(FoldedNet().to(F64).eval()), (2, 4, 4)
    else:
        model, shape = _net("resnet")
    penalty = fxpath.PathNormPenalty(model, shape, dtype=F64)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.05)

    def check(value: torch.Tensor) -> None:
        ref = _reference_penalty(penalty)
        assert torch.equal(value.detach(), ref.detach())
        for a, b in zip(_grads(value, params, retain_graph=True), _grads(ref, params)):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-300)

    for _ in range(3):  # the first call creates the buffers, the next ones write into them
        check(penalty())
        opt.zero_grad()
        penalty().backward()
        opt.step()
    first, second = penalty(), penalty()  # the first's graph still saves the buffers
    check(second)
    check(first)
    del first, second
    value = penalty()
    assert any(alias() is not None for alias in penalty.program.runner._grad_aliases)
    opt.zero_grad()
    value.backward(retain_graph=True)
    once = [p.grad.clone() for p in params]
    value.backward()
    for p, g in zip(params, once):
        torch.testing.assert_close(p.grad, 2 * g, rtol=1e-14, atol=0)
    value, ref = penalty(), _reference_penalty(penalty)
    got, want = _grads(value, params, create_graph=True), _grads(ref, params, create_graph=True)
    v = [torch.randn_like(p) for p in params]
    hvp = _grads(sum((g * u).sum() for g, u in zip(got, v)), params)
    for a, b in zip(hvp, _grads(sum((g * u).sum() for g, u in zip(want, v)), params)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-300)


ZOO = {
    "resnet18": lambda: __import__("torchvision").models.resnet18(num_classes=10),
    "densenet121": lambda: __import__("torchvision").models.densenet121(num_classes=10),
    "mobilenet_v2": lambda: __import__("torchvision").models.mobilenet_v2(num_classes=10),
    "regnet_x_400mf": lambda: __import__("torchvision").models.regnet_x_400mf(num_classes=10),
    "timm:resnet50d": lambda: __import__("timm").create_model("resnet50d", num_classes=10),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_penalty_gradients_on_real_architectures(name: str) -> None:
    """On torchvision and timm models (random BatchNorms, float64, 32x32), two calls with a
    step between them: the value bit for bit and every parameter's gradient equal those of
    autograd through the signed coordinates (residual streams, concatenations, depthwise and
    grouped convs all hand the buffers' gradients back)."""
    torch.manual_seed(0)
    model = randomize_batchnorm(ZOO[name]().to(F64).eval())
    penalty = fxpath.PathNormPenalty(model, (3, 32, 32), dtype=F64)
    params = list(model.parameters())
    for _ in range(2):
        value, ref = penalty(), _reference_penalty(penalty)
        assert torch.equal(value.detach(), ref.detach())
        for a, b in zip(_grads(value, params, allow_unused=True),
                        _grads(ref, params, allow_unused=True)):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-300)
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p), alpha=1e-3)


def test_a_call_under_inference_mode_leaves_the_buffers_usable() -> None:
    """No buffer is made under inference mode (its tensors could not be written later)."""
    model, shape = _net("resnet")
    penalty = fxpath.PathNormPenalty(model, shape)
    with torch.inference_mode(), contextlib.suppress(RuntimeError):
        penalty()
    params = list(model.parameters())
    for _ in range(2):
        value = penalty()
        ref = _reference_penalty(penalty)
        assert torch.equal(value.detach(), ref.detach())
        for a, b in zip(_grads(value, params), _grads(ref, params)):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-300)


def test_a_rewritten_penalty_buffer_makes_the_pending_backward_raise() -> None:
    """The buffers are rewritten only when no graph saves them; were they rewritten under a
    pending graph, its backward raises (autograd's version counters) rather than return the
    gradient of other weights."""
    model, shape = _net("resnet")
    penalty = fxpath.PathNormPenalty(model, shape)
    penalty()  # creates the buffers
    pending = penalty()
    penalty.program.runner._grad_aliases = []  # the check that it is pending, defeated
    with torch.no_grad():
        model.conv1.weight.mul_(2.0)
    penalty()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        pending.backward()


def test_penalty_value_past_the_dtype_range_raises() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(8, 8), nn.ReLU())],
                          nn.Linear(8, 2))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(1e6)
    assert float(fxpath.PathNormPenalty(model, (8,))().detach()) > np.log(3.4e38)
    with pytest.raises(fxpath.FxPathError, match="log=True"):
        fxpath.PathNormPenalty(model, (8,), log=False)()


@pytest.mark.parametrize("call, match", [
    (lambda m: fxpath.PathNormPenalty(m, (6,), q=0), "q must be"),
    (lambda m: fxpath.PathNormPenalty(m, (6,), q=-1.0), "q must be"),
    (lambda m: fxpath.PathNormPenalty(m, (6,), log="yes"), "log must be"),
    (lambda m: fxpath.PathNormPenalty("model", (6,)), "nn.Module being trained"),
    (lambda m: fxpath.PathNormPenalty(torch.ones(3), (6,)), "nn.Module being trained"),
    (lambda m: fxpath.PathSGD(m, (6,), lr=-0.1), "lr must be"),
    (lambda m: fxpath.PathSGD(m, (6,), lr=float("nan")), "lr must be"),
    (lambda m: fxpath.PathSGD(m, (6,), lr=0.1, momentum=-0.5), "momentum must be"),
    (lambda m: fxpath.PathSGD(m.requires_grad_(False), (6,), lr=0.1), "requires_grad"),
    (lambda m: fxpath.PathSGD([m], (6,), lr=0.1), "nn.Module being trained"),
])
def test_bad_input(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(fxpath.ArgumentError, match=match):
        call(mlp())


@pytest.mark.parametrize("call", ["penalty", "penalty_value", "path_sgd_gamma"])
def test_reading_calls_leave_the_model_untouched(call: str) -> None:
    """Constructing either tool, computing the penalty (no backward) and gamma write nothing
    (a pruned model with gradients, in train mode: `tests/test_readonly.py`'s model)."""
    from test_readonly import SHAPE, _net, assert_unchanged, snapshot

    model = _net()
    before = snapshot(model)
    if call == "path_sgd_gamma":
        fxpath.PathSGD(model, SHAPE, lr=0.1).gamma()
    else:
        fxpath.PathNormPenalty(model, SHAPE, log=call == "penalty")()
    assert_unchanged(model, before)
