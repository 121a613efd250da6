"""Inputs and shapes (issue 21, section 4): one shape per input of the forward, no more and no
fewer; a Lipschitz certificate for a model with several inputs; advice phrased for ``x`` when
no ``input_shape`` was given; a warning for an MLP whose input_shape carries a leading size."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn

import fxpath
from fxpath.errors import ArgumentError, NonFiniteError
from fxpath.validate import check_input_count


class TwoInputs(nn.Module):
    """``c(relu(a(x) + b(y)))``: a ReLU network with two inputs of 2 and 3 features."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(2, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.a(x) + self.b(y)))


class OptionalInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(2, 4), nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.a(x)
        if y is not None:
            h = h + self.b(y)
        return self.c(torch.relu(h))


def _two(seed: int = 0) -> TwoInputs:
    torch.manual_seed(seed)
    return TwoInputs().double().eval().requires_grad_(False)


def _conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2)).eval()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)).eval()


# -- one shape per input --------------------------------------------------------------------
def test_one_shape_for_two_inputs_says_the_model_takes_two() -> None:
    with pytest.raises(ArgumentError, match=r"gives 1 shape, but TwoInputs.forward takes 2 "
                                            r"inputs \(x, y\).*input_shape=\[<x's shape>, "
                                            r"<y's shape>\]"):
        fxpath.path_norm(_two(), (2,))
    with pytest.raises(ArgumentError, match="takes 2 inputs"):
        fxpath.compile(_two(), (2,), front_end="export")


@pytest.mark.parametrize("model, shapes", [
    (_two(), [(2,), (3,), (5,)]),
    (_mlp(), [(16,), (16,)]),
    (OptionalInput().eval(), [(2,), (3,), (1,)]),
])
def test_extra_shapes_are_refused(model: nn.Module, shapes: list) -> None:
    with pytest.raises(ArgumentError, match=f"gives {len(shapes)} shapes, but"):
        fxpath.path_norm(model, shapes)


def test_one_shape_per_input_is_the_path_norm_of_both() -> None:
    model = _two()
    direct = fxpath.path_norm(model, [(2,), (3,)]).value
    a, b, c = model.a, model.b, model.c
    paths = sum(float((c.weight.abs() @ layer.weight.abs()).sum()
                      + (c.weight.abs() @ layer.bias.abs()).sum()) for layer in (a, b))
    assert direct == pytest.approx(paths + float(c.bias.abs().sum()), rel=1e-12)


def test_inputs_with_defaults_may_be_left_out() -> None:
    model = OptionalInput().eval().requires_grad_(False)
    check_input_count(model, 1)
    check_input_count(model, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.fx cannot follow `if y is not None`
        alone = fxpath.path_norm(model, (2,)).value
    a, c = model.a, model.c
    want = float((c.weight.abs() @ a.weight.abs()).sum() + (c.weight.abs() @ a.bias.abs()).sum()
                 + c.bias.abs().sum())
    assert alone == pytest.approx(want, rel=1e-6)


def test_the_count_follows_the_forward_signature() -> None:
    class Star(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
            return self.a(x)

    class KeywordOnly(Star):
        def forward(self, x: torch.Tensor, *, mask: torch.Tensor,  # type: ignore[override]
                    scale: float = 1.0) -> torch.Tensor:
            return self.a(x)

    for n in (1, 2, 5):
        check_input_count(Star(), n)
    with pytest.raises(ArgumentError, match=r"takes 1 input \(x\) and any number more"):
        check_input_count(Star(), 0)
    check_input_count(KeywordOnly(), 2)
    check_input_count(KeywordOnly(), 3)
    with pytest.raises(ArgumentError, match=r"takes 2 inputs \(x, mask\) and 1 optional "
                                            r"\(scale=1.0\)"):
        check_input_count(KeywordOnly(), 4)


# -- lipschitz_bound with one batch per input -----------------------------------------------
def _lifting(model: TwoInputs) -> torch.Tensor:
    """Every path of ``model``, written out: input -> hidden -> output (one per input entry),
    bias of a or b -> output, and c's bias."""
    a, b, c = model.a, model.b, model.c
    return torch.cat([torch.einsum("kj,ji->kji", c.weight, a.weight).flatten(),
                      torch.einsum("kj,ji->kji", c.weight, b.weight).flatten(),
                      (c.weight * a.bias).flatten(), (c.weight * b.bias).flatten(), c.bias])


def _twin(model: nn.Module, kind: str, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            u = torch.rand(p.shape, generator=gen, dtype=p.dtype)
            p.mul_((u > 0.4).to(p.dtype) if kind == "prune" else 2 * u - 1)
    return twin


@pytest.mark.parametrize("kind", ["prune", "mixed_sign"])
def test_lipschitz_bound_of_a_two_input_network_against_brute_force(kind: str) -> None:
    model = _two()
    for seed in range(3):
        twin = _twin(model, kind, seed)
        brute = float((_lifting(model) - _lifting(twin)).abs().sum())
        metric = fxpath.path_metric(model, twin, [(2,), (3,)])
        assert metric.exact == (kind == "prune")
        if metric.exact:
            assert metric.value == pytest.approx(brute, rel=1e-12)
        else:
            assert metric.value >= brute * (1 - 1e-12)
        gen = torch.Generator().manual_seed(100 + seed)
        # x small and y large in some samples, the other way round in others
        x = torch.randn(64, 2, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(
            -2, 3, (64, 1), generator=gen)
        y = torch.randn(64, 3, generator=gen, dtype=torch.float64) * 10.0 ** torch.randint(
            -2, 3, (64, 1), generator=gen)
        bound = fxpath.lipschitz_bound(model, twin, (x, y))
        scale = torch.cat([x, y], 1).abs().amax(1).clamp(min=1.0)
        torch.testing.assert_close(bound, scale * metric.value, rtol=0, atol=0)
        assert torch.equal(fxpath.lipschitz_bound(model, twin, [x, y]), bound)
        with torch.no_grad():
            measured = (model(x, y) - twin(x, y)).abs().sum(1)
        assert bool((measured <= scale * brute * (1 + 1e-12)).all())  # the theorem itself
        assert bool((measured <= bound).all())
        # the bound of the larger input is needed: x's norm alone does not bound the change
        if kind == "mixed_sign":
            x_only = x.abs().amax(1).clamp(min=1.0) * metric.value
            assert bool((measured > x_only).any())


def test_lipschitz_bound_checks_every_input() -> None:
    model = _two()
    twin = _twin(model, "prune", 0)
    x, y = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ArgumentError, match=r"different batch sizes \[4, 3\]"):
        fxpath.lipschitz_bound(model, twin, (x, y[:3]))
    with pytest.raises(ArgumentError, match=r"x holds 1 batch tensor, but TwoInputs.forward "
                                            r"takes 2 inputs"):
        fxpath.lipschitz_bound(model, twin, x)
    with pytest.raises(ArgumentError, match=r"x\[1\]: x must be a non-empty batch"):
        fxpath.lipschitz_bound(model, twin, (x, y[0]))
    bad = y.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"x\[1\]: x has NaN") as info:
        fxpath.lipschitz_bound(model, twin, (x, bad))
    assert info.value.names == ("x[1][2]",)
    mlp = _mlp()
    with pytest.raises(ArgumentError, match=r"x holds 2 batch tensors.*torch\.stack"):
        fxpath.lipschitz_bound(mlp, copy.deepcopy(mlp), (torch.ones(2, 16), torch.ones(2, 16)))
    with pytest.raises(ArgumentError, match="batch tensor"):
        fxpath.lipschitz_bound(mlp, copy.deepcopy(mlp), (torch.ones(2, 16), [1.0]))


def test_lipschitz_bound_of_a_sample_without_its_batch_dimension() -> None:
    model = _conv()
    twin = copy.deepcopy(model)
    with pytest.raises(ArgumentError, match=r"x of shape \(3, 8, 8\) does not fit.*batch "
                                            r"dimension; add it with x\.unsqueeze\(0\)") as info:
        fxpath.lipschitz_bound(model, twin, torch.randn(3, 8, 8))
    assert "channel" not in str(info.value) and "input_shape" not in str(info.value)
    with pytest.raises(ArgumentError, match=r"expects 3 input channels in x.shape\[1\], x has 1"):
        fxpath.lipschitz_bound(model, twin, torch.randn(2, 1, 8, 8))
    # an input_shape given by the user keeps its own advice
    with pytest.raises(ArgumentError, match=r"add the channel dimension, i.e. input_shape="):
        fxpath.path_norm(model, (8, 8))


# -- a Linear-first model given a leading size ----------------------------------------------
def test_mlp_with_a_leading_size_warns_that_it_is_no_batch() -> None:
    model = _mlp()
    one = fxpath.path_norm(model, (16,)).value
    with pytest.warns(UserWarning, match=r"leading size 4 is read as a second dimension.*not "
                                         r"as a batch.*excludes the batch dimension: pass "
                                         r"\(16,\)"):
        four = fxpath.path_norm(model, (4, 16)).value
    assert four == pytest.approx(4 * one, rel=1e-6)  # four stacked copies, as warned


@pytest.mark.parametrize("model, shape", [
    (_mlp(), (16,)), (_mlp(), (1, 16)),
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval(), (4, 16)),  # flattened: no copies
    (_conv(), (3, 8, 8)),
])
def test_no_warning_without_a_leading_size(model: nn.Module, shape: tuple) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fxpath.compile(model, shape)


def test_lipschitz_bound_reads_a_leading_size_from_x_without_warning() -> None:
    model = _mlp()
    twin = _twin(model, "prune", 0)
    x = torch.randn(5, 4, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bound = fxpath.lipschitz_bound(model, twin, x)
    with torch.no_grad():
        measured = (model(x) - twin(x)).abs().flatten(1).sum(1).double()
    assert bool((measured <= bound).all())
