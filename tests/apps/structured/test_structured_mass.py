"""Channel path mass of coupled groups against the brute-force reference.

For every Torch-Pruning group of tiny networks (a residual stream crossing two adds, a
concatenation read by BatchNorms, a depthwise conv) and every root channel, the exact mass the
group removes, ``N(theta) - N(theta with the group's neurons zeroed)``, is computed on the
explicit neuron DAG of the dense and of the zeroed network (``bruteforce``, independent of
fxpath; its dynamic program is checked against path-by-path enumeration in
tests/test_bruteforce.py). The group score must bound it from above, equal it for a group of
one neuron, and there equal the neuron mass of ``path_magnitude(neurons=True)``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from bruteforce.builders import Spec
from bruteforce.cases import _make
from bruteforce.lowering import build_dag
from bruteforce.oracle import path_norm_dp as path_norm
from torch import nn

import fxpath

tp = pytest.importorskip("torch_pruning")
from fxpath.torch_pruning import PathMagnitudeImportance  # noqa: E402


def stream_net(seed: int = 0):
    """Stem conv-BN-ReLU, two basic blocks on one 3-channel stream, mean, linear."""
    def spec() -> Spec:
        s = Spec((2, 5, 5)).node("stem", nn.Conv2d(2, 3, 3, padding=1, bias=False))
        s = s.node("stem_bn", nn.BatchNorm2d(3)).node("s0", nn.ReLU())
        prev = "s0"
        for b in (1, 2):
            s = (s.node(f"b{b}c1", nn.Conv2d(3, 2, 3, padding=1, bias=False), prev)
                 .node(f"b{b}bn1", nn.BatchNorm2d(2)).node(f"b{b}r", nn.ReLU())
                 .node(f"b{b}c2", nn.Conv2d(2, 3, 3, padding=1, bias=False))
                 .node(f"b{b}bn2", nn.BatchNorm2d(3))
                 .node(f"b{b}add", "add", f"b{b}bn2", prev).node(f"s{b}", nn.ReLU()))
            prev = f"s{b}"
        return s.node("pool", "mean").node("fc", nn.Linear(3, 2))
    return _make(spec, seed, torch.float64)


def concat_bn_net(seed: int = 0):
    """A DenseNet-like block: two convs concatenated, read by two BatchNorm-ReLU-conv layers."""
    def spec() -> Spec:
        return (Spec((2, 4, 4), fold_bn=False)
                .node("a", nn.Conv2d(2, 3, 3, padding=1), "x").node("ra", nn.ReLU())
                .node("b", nn.Conv2d(2, 2, 1), "x").node("rb", nn.ReLU())
                .node("cat", "cat", "ra", "rb")
                .node("n1", nn.BatchNorm2d(5), "cat").node("r1", nn.ReLU())
                .node("c1", nn.Conv2d(5, 2, 1))
                .node("n2", nn.BatchNorm2d(5), "cat").node("r2", nn.ReLU())
                .node("c2", nn.Conv2d(5, 2, 1))
                .node("sum", "add", "c1", "c2").node("rs", nn.ReLU())
                .node("pool", "mean").node("fc", nn.Linear(2, 2)))
    return _make(spec, seed, torch.float64)


def depthwise_net(seed: int = 0):
    """Pointwise expand, depthwise 3x3, pointwise project (MobileNet-like), mean, linear."""
    def spec() -> Spec:
        return (Spec((2, 5, 5))
                .node("pw", nn.Conv2d(2, 4, 1, bias=False)).node("pwbn", nn.BatchNorm2d(4))
                .node("r1", nn.ReLU())
                .node("dw", nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False))
                .node("dwbn", nn.BatchNorm2d(4)).node("r2", nn.ReLU())
                .node("proj", nn.Conv2d(4, 3, 1)).node("r3", nn.ReLU())
                .node("pool", "mean").node("fc", nn.Linear(3, 2)))
    return _make(spec, seed, torch.float64)


NETS = {"stream": stream_net, "concat": concat_bn_net, "depthwise": depthwise_net}


def _zeroed(net: nn.Module, group, channel: int) -> nn.Module:
    """The network with channel ``channel`` of ``group``'s root zeroed in every parameterized
    layer the group removes it from (written out here, independently of fxpath)."""
    twin = copy.deepcopy(net)
    modules = {m: n for n, m in net.named_modules()}
    twin_modules = dict(twin.named_modules())
    with torch.no_grad():
        for item in group:
            layer = item.dep.target.module
            if layer not in modules:
                continue
            (pos,) = [j for j, r in zip(item.idxs, item.root_idxs) if r == channel] or [None]
            if pos is None:
                continue
            m = twin_modules[modules[layer]]
            out = item.dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels,
                                       tp.prune_depthwise_conv_out_channels,
                                       tp.prune_batchnorm_out_channels)
            if not out:
                continue  # a reader's input channel: it receives zeros once the writers are
            m.weight[pos] = 0
            if m.bias is not None:
                m.bias[pos] = 0
    return twin


def _groups(net: nn.Module, shape):
    graph = tp.DependencyGraph().build_dependency(net, torch.randn(1, *shape,
                                                                   dtype=torch.float64))
    return list(graph.get_all_groups(ignored_layers=[net.get_submodule("fc")]))


def _neurons_of(group, net, neurons) -> set[str]:
    """The group's layers that are neurons of the path network (a conv/linear with its folded
    BatchNorm, or a standalone BatchNorm), reached by an out-channel cut."""
    names = {m: n for n, m in net.named_modules()}
    return {names[i.dep.target.module] for i in group
            if names.get(i.dep.target.module) in neurons
            and i.dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels,
                                  tp.prune_depthwise_conv_out_channels,
                                  tp.prune_batchnorm_out_channels)}


@pytest.mark.parametrize("name", sorted(NETS))
def test_group_mass_bounds_the_exact_removed_mass(name: str) -> None:
    case = NETS[name]()
    net, shape = case.module, case.input_shape
    total = path_norm(build_dag(net))
    imp = PathMagnitudeImportance(net, shape, dtype=torch.float64)
    neurons = fxpath.compile(net, shape, dtype=torch.float64).path_magnitude(neurons=True)
    groups = _groups(net, shape)
    assert groups
    strict = exact_groups = 0
    for group in groups:
        scores = imp(group)
        assert scores is not None and scores.shape == (len(group[0].idxs),)
        for c in range(len(group[0].idxs)):
            exact = (total - path_norm(build_dag(_zeroed(net, group, c)))) / total
            assert float(scores[c]) >= exact - 1e-12
            strict += float(scores[c]) > exact + 1e-9
        owners = _neurons_of(group, net, neurons)
        exact_groups += len(owners) == 1
        if len(owners) == 1:  # one neuron per channel: the score is its exact mass
            (layer,) = owners
            for c in range(len(group[0].idxs)):
                exact = (total - path_norm(build_dag(_zeroed(net, group, c)))) / total
                assert float(scores[c]) == pytest.approx(exact, rel=1e-9, abs=1e-15)
                assert float(scores[c]) == pytest.approx(float(neurons[layer][c]), rel=1e-9)
    assert exact_groups > 0 or name == "concat"  # there every channel is read by two BNs
    if name == "stream":  # paths leaving a stream channel and re-entering it are counted twice
        assert strict > 0


def test_group_mass_is_invariant_under_rescaling() -> None:
    case = stream_net(1)
    net, shape = case.module, case.input_shape
    twin = fxpath.rescale(net, shape, factors=(0.01, 3.0, 250.0), seed=3, streams=True,
                          bn_share=0.5)
    changed = [k for k, v in net.state_dict().items()
               if not torch.equal(v, twin.state_dict()[k])]
    assert any(k.startswith("stem") for k in changed)  # the stream itself was rescaled
    a = PathMagnitudeImportance(net, shape, dtype=torch.float64)
    b = PathMagnitudeImportance(twin, shape, dtype=torch.float64)
    for ga, gb in zip(_groups(net, shape), _groups(twin, shape)):
        sa, sb = a(ga), b(gb)
        torch.testing.assert_close(sa, sb, rtol=1e-9, atol=1e-15)
        assert torch.equal(torch.argsort(sa), torch.argsort(sb))


def test_kept_mass_cost_orders_like_the_mass_and_never_empties_a_crossed_layer() -> None:
    from fxpath.apps.structured.mass import kept_mass_cost

    mass = torch.tensor([0.3, 0.05, 0.5, 0.15], dtype=torch.float64)  # a layer every path crosses
    cost = kept_mass_cost(mass)
    assert torch.equal(torch.argsort(cost), torch.argsort(mass))
    assert torch.isinf(cost[2]) and bool(torch.isfinite(cost[[0, 1, 3]]).all())
    # costs add up to -log of the kept fraction, as the model says
    assert float(cost[[1, 3]].sum()) == pytest.approx(-math.log(1 - 0.2), rel=1e-12)
    branch = kept_mass_cost(mass * 0.01)  # a branch 1% of the paths cross: cheap to empty
    assert bool(torch.isfinite(branch).all()) and float(branch.sum()) == pytest.approx(
        -math.log(0.99), rel=1e-12)
    over = kept_mass_cost(mass * 3)  # an over-counted group: its total counts as all the mass
    torch.testing.assert_close(over, cost)


def test_global_path_mass_ranking_does_not_empty_layers() -> None:
    """A plain MLP of one wide and one narrow hidden layer: per-channel masses of the wide layer
    are all below the narrow one's. Ranked by mass, 50% empties the wide layer; ranked by the
    kept-mass cost, both layers keep channels and the cut keeps more path mass."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 40), nn.ReLU(), nn.Linear(40, 4), nn.ReLU(),
                        nn.Linear(4, 3)).double().eval()
    small, report = fxpath.prune_channels(net, 0.5, (6,), dtype=torch.float64)
    assert not report.spared
    assert small[0].out_features > 1 and small[2].out_features >= 1


def test_channel_mass_is_never_stale() -> None:
    """A replaced module deep inside, an in-place weight change: the next masses are new."""
    from fxpath.apps.structured.mass import ChannelMass

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(),
                        nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()),
                        nn.Flatten(), nn.Linear(64, 2)).double().eval()
    mass = ChannelMass(net, (3, 8, 8))
    first = {k: v.clone() for k, v in mass.masses().items()}
    net[2][0] = nn.Conv2d(4, 4, 3).double()
    second = {k: v.clone() for k, v in mass.masses().items()}
    assert not torch.equal(first["2.0"], second["2.0"])
    with torch.no_grad():
        net[0].weight[0].mul_(5.0)
    third = mass.masses()
    want = fxpath.compile(net, (3, 8, 8)).path_magnitude(neurons=True)
    torch.testing.assert_close(third["0"], want["0"].double())
