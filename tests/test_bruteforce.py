"""Tests of the brute-force reference (tests/bruteforce/) itself, against torch and algebra."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from bruteforce import builders, cases, lowering, oracle
from torch import nn

FACTORIES = sorted(cases.ALL_FACTORIES)


def _case(name: str) -> cases.Case:
    """Factory result by name."""
    return cases.ALL_FACTORIES[name]()


def _inputs(shape: tuple[int, ...], n: int = 3, scale: float = 5.0, seed: int = 0) -> list:
    """Random float64 inputs, large enough to reach ReLU6 / Hardtanh saturation."""
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(n)]


def _linear_map(dag: oracle.NeuronDAG) -> np.ndarray:
    """Matrix of a DAG of inputs feeding identity output neurons directly (one op)."""
    col = {nid: j for j, nid in enumerate(dag.inputs)}
    mat = np.zeros((len(dag.outputs), len(dag.inputs)))
    for i, o in enumerate(dag.outputs):
        for e in dag.neurons[o].edges:
            mat[i, col[e.src]] += e.weight
    return mat


def _single_op(op: nn.Module, shape: tuple[int, ...]) -> tuple[builders.SpecNet, oracle.NeuronDAG]:
    """SpecNet and DAG of one float64 module applied to the input."""
    net = builders.Spec(shape).node("op", op).build().double()
    return net, lowering.build_dag(net)


# ---- the DAG computes the module's function -------------------------------------------------


@pytest.mark.parametrize("name", FACTORIES)
def test_dag_forward_matches_module(name: str) -> None:
    module, shape, build = _case(name)
    dag = build(module)
    assert module.input_shape == shape and not module.training
    for x in _inputs(shape):
        np.testing.assert_allclose(dag.forward(x), builders.module_output(module, x),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", FACTORIES)
def test_module_is_fx_traceable_with_state_dict_names(name: str) -> None:
    module, shape, build = _case(name)
    gm = torch.fx.symbolic_trace(module)
    x = _inputs(shape, n=1)[0].unsqueeze(0)
    out_m, out_g = module(x), gm(x)
    outs_m = out_m if isinstance(out_m, tuple) else (out_m,)
    outs_g = out_g if isinstance(out_g, tuple) else (out_g,)
    for a, b in zip(outs_m, outs_g, strict=True):
        torch.testing.assert_close(a, b)
    assert set(gm.state_dict()) == set(module.state_dict())
    sd = module.state_dict()
    # a parametrized tensor is reported under its attribute's name (``conv.weight``)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    for path, m in module.named_modules():
        if torch.nn.utils.parametrize.is_parametrized(m):
            for attr in m.parametrizations:
                shapes[f"{path}.{attr}"] = tuple(getattr(m, attr).shape)
    dag = build(module)
    for pname, pshape in dag.param_shapes.items():
        assert shapes.get(pname) == pshape, pname


def test_rewrites_hit_both_regimes() -> None:
    """The activation nets' forward check is meaningful: saturation and negative side reached."""
    module, shape, build = cases.activations("relu6")
    dag = build(module)
    conv1 = dag.node_neurons["conv1"].reshape(-1)
    vals = []
    for x in _inputs(shape, n=10, scale=6.0):
        sub = oracle.NeuronDAG(shape)
        sub.neurons, sub.inputs, sub.outputs = dag.neurons, dag.inputs, [int(n) for n in conv1]
        vals.append(sub.forward(x))
    v = np.concatenate(vals)
    assert (v > 6).any() and (v < 0).any() and ((v > 0) & (v < 6)).any()


# ---- single ops against torch ---------------------------------------------------------------


def test_avgpool_divisors_match_torch() -> None:
    kernels, strides, pads = [2, 3, (2, 3)], [1, 2, 3], [0, 1]
    n_checked = 0
    configs = itertools.product(kernels, strides, pads, [False, True], [False, True], [None, 5])
    for n, (k, s, p, ceil, cip, dov) in enumerate(configs):
        h, w = [(5, 5), (6, 7), (7, 4)][n % 3]
        op = nn.AvgPool2d(k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip,
                          divisor_override=dov)
        _, dag = _single_op(op, (1, h, w))
        eye = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
        ref = F.avg_pool2d(eye, k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip,
                           divisor_override=dov)
        torch_map = ref.reshape(h * w, -1).T.numpy()
        assert torch_map.shape == (len(dag.outputs), h * w)
        np.testing.assert_allclose(_linear_map(dag), torch_map, rtol=1e-14, atol=0)
        for o in dag.outputs:  # one divisor per output neuron
            assert len({e.weight for e in dag.neurons[o].edges}) == 1
        n_checked += 1
    assert n_checked == 144


def test_maxpool_matches_torch() -> None:
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64)
    for k, s, p, d, ceil in itertools.product([2, 3], [1, 2, 3], [0, 1], [1, 2], [False, True]):
        op = nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
        net, dag = _single_op(op, (2, 7, 6))
        ref = op(x)[0]
        assert dag.node_neurons["op"].shape == tuple(ref.shape)
        np.testing.assert_array_equal(dag.forward(x), ref.reshape(-1).numpy())


def test_adaptive_pools_match_torch() -> None:
    x = torch.randn(1, 2, 5, 7, dtype=torch.float64)
    for size in [1, (2, 3), (3, None), (5, 7), (4, 4), (6, 9)]:
        for cls in (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d):
            net, dag = _single_op(cls(size), (2, 5, 7))
            ref = net(x)[0]
            assert dag.node_neurons["op"].shape == tuple(ref.shape)
            np.testing.assert_allclose(dag.forward(x), ref.reshape(-1).numpy(), rtol=1e-13)


def test_conv2d_matches_torch() -> None:
    x = torch.randn(1, 6, 6, 5, dtype=torch.float64)
    chans = [(2, 4, 2), (2, 2, 1), (3, 3, 3)]
    configs = itertools.product([1, 3, (2, 3)], [1, (2, 1)], [0, 1, (2, 1)], [1, 2])
    for n, (k, s, p, d) in enumerate(configs):
        (cin, cout, g), bias = chans[n % 3], n % 2 == 0
        op = nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias)
        net, dag = _single_op(op, (cin, 6, 5))
        xi = x[:, :cin]
        ref = net(xi)[0]
        assert dag.node_neurons["op"].shape == tuple(ref.shape)
        np.testing.assert_allclose(dag.forward(xi[0]), ref.reshape(-1).detach().numpy(),
                                   rtol=1e-12, atol=1e-13)


# ---- closed forms ---------------------------------------------------------------------------


def test_path_norm_closed_form_bias_free_mlp() -> None:
    module, _, build = cases.mlp_no_bias()
    dag = build(module)
    w1 = module.fc1.weight.detach().numpy()  # (h, d)
    w2 = module.fc2.weight.detach().numpy()  # (o, h)
    l1 = sum(abs(w2[k, j]) * abs(w1[j, i]) for i in range(4) for j in range(5) for k in range(3))
    l2 = np.sqrt(sum((w2[k, j] * w1[j, i]) ** 2
                     for i in range(4) for j in range(5) for k in range(3)))
    assert len(oracle.path_lifting(dag)) == 4 * 5 * 3
    assert oracle.path_norm(dag, 1) == pytest.approx(l1, rel=1e-13)
    assert oracle.path_norm(dag, 2) == pytest.approx(l2, rel=1e-13)
    assert oracle.path_norm(dag, float("inf")) == pytest.approx(
        np.max(np.abs(w2)[:, :, None] * np.abs(w1)[None]), rel=1e-13)
    # s_ij for fc1: |W1_ji| * sum_k |W2_kj|
    mass = oracle.mass_by_parameter(dag)
    np.testing.assert_allclose(mass["fc1.weight"],
                               np.abs(w1) * np.abs(w2).sum(0)[:, None], rtol=1e-13)
    np.testing.assert_allclose(mass["fc2.weight"],
                               np.abs(w2) * np.abs(w1).sum(1)[None, :], rtol=1e-13)


def test_mlp_with_bias_path_count() -> None:
    module, _, build = cases.mlp_with_bias()
    dag = build(module)
    # inputs 6*5*4*3, fc1 biases 5*4*3, fc2 biases 4*3, fc3 biases 3
    assert len(oracle.path_lifting(dag)) == oracle.count_paths(dag) == 360 + 60 + 12 + 3


# ---- enumeration vs dynamic programming (licenses the *_dp helpers) --------------------------


@pytest.mark.parametrize("name", FACTORIES)
def test_enumeration_equals_dp(name: str) -> None:
    module, _, build = _case(name)
    dag = build(module)
    paths = oracle.path_lifting(dag)
    assert len(paths) == oracle.count_paths(dag)
    assert oracle.path_norm(dag, 1) == oracle.path_norm(paths, 1)
    for q in (1.0, 2.0, 3.5):
        assert oracle.path_norm(paths, q) == pytest.approx(oracle.path_norm_dp(dag, q), rel=1e-12)
    m_enum, m_dp = oracle.mass_by_parameter(dag, paths), oracle.mass_by_parameter_dp(dag)
    assert m_enum.keys() == m_dp.keys() == oracle.parameter_mask(dag).keys()
    for k in m_enum:
        np.testing.assert_allclose(m_enum[k], m_dp[k], rtol=1e-11, atol=0)
    rng = np.random.default_rng(0)
    nm = oracle.neuron_mass_dp(dag)
    for nid in rng.choice(len(dag), size=3, replace=False):
        assert oracle.path_mass_through_neurons(paths, [nid]) == pytest.approx(nm[nid], rel=1e-11)


# ---- parameter attribution ------------------------------------------------------------------


def _zeroed(module: builders.SpecNet, pname: str, idx: tuple[int, ...]) -> builders.SpecNet:
    """Deep copy of module with one parameter coordinate set to 0."""
    m = copy.deepcopy(module)
    with torch.no_grad():
        dict(m.named_parameters())[pname][idx] = 0.0
    return m


@pytest.mark.parametrize(
    ("name", "pnames"),
    [
        ("mlp_with_bias", ["fc1.weight", "fc2.bias", "fc3.weight"]),
        ("conv_bn_fold", ["conv1.weight", "conv2.weight", "fc.weight"]),
        ("conv_bn_nofold", ["conv1.weight", "conv1.bias", "bn1.weight", "bn3.weight"]),
        ("activations_prelu", ["act1.weight", "act2.weight", "conv2.weight"]),
        ("activations_prelu1", ["act1.weight"]),
        ("bn_after_concat", ["bn.weight", "conv_b.bias", "fc.bias"]),
    ],
)
def test_mass_equals_norm_drop(name: str, pnames: list[str]) -> None:
    """s_i = ||Phi(theta)||_1 - ||Phi(theta_i := 0)||_1 where theta_i is itself an edge/bias.

    A standalone BN's bias t = b - mean*s moves with its weight g unless mean = 0, so running
    means are zeroed first (then g is exactly the edge-weight coordinate s up to a constant).
    """
    module, _, build = _case(name)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
    dag = build(module)
    paths = oracle.path_lifting(dag)
    norm = oracle.path_norm(paths, 1)
    mass = oracle.mass_by_parameter(dag, paths)
    rng = np.random.default_rng(1)
    for pname in pnames:
        shape = mass[pname].shape
        for flat in rng.choice(int(np.prod(shape)), size=min(3, int(np.prod(shape))),
                               replace=False):
            idx = np.unravel_index(flat, shape)
            dropped = norm - oracle.path_norm_dp(build(_zeroed(module, pname, idx)), 1)
            assert mass[pname][idx] == pytest.approx(dropped, rel=1e-9, abs=1e-12)


def test_attribution_names() -> None:
    fold = oracle.mass_by_parameter_dp(
        cases.conv_bn(fold=True).build(cases.conv_bn(fold=True).module))
    nofold = oracle.mass_by_parameter_dp(
        cases.conv_bn(fold=False).build(cases.conv_bn(fold=False).module))
    # folded: W*s -> conv weight, combined bias -> BN bias; BN weight and conv bias absorbed
    assert set(fold) == {"conv1.weight", "bn1.bias", "conv2.weight", "bn2.bias",
                         "fc.weight", "bn3.bias"}
    assert set(nofold) == {"conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias",
                           "conv2.weight", "bn2.weight", "bn2.bias", "fc.weight", "fc.bias",
                           "bn3.weight", "bn3.bias"}
    for m in (fold, nofold):
        assert all((v > 0).all() for v in m.values())
    ba = oracle.mass_by_parameter_dp(cases.bn_after_concat().build(cases.bn_after_concat().module))
    assert {"bn.weight", "bn.bias", "bn_b.weight", "bn_b.bias", "conv_b.bias"} <= set(ba)


def test_mass_through_single_edge_and_bias() -> None:
    module, _, build = cases.mlp_with_bias()
    dag = build(module)
    mass = oracle.mass_by_parameter(dag)
    fc2 = dag.node_neurons["fc2"]
    relu1 = dag.node_neurons["relu1"]
    k = [e.src for e in dag.neurons[int(fc2[1])].edges].index(int(relu1[3]))
    assert dag.neurons[int(fc2[1])].edges[k].index == (1, 3)
    assert oracle.path_mass_through_edge(dag, int(fc2[1]), k) == pytest.approx(
        mass["fc2.weight"][1, 3], rel=1e-13)
    assert oracle.path_mass_through_bias(dag, int(fc2[2])) == pytest.approx(
        mass["fc2.bias"][2], rel=1e-13)


# ---- structure and metric -------------------------------------------------------------------


def test_relu_in_place_and_fold_structure() -> None:
    module, _, build = cases.bn_after_concat()
    dag = build(module)
    nn_ = dag.node_neurons
    # conv_b has two consumers: its BN is standalone (new neurons), cat+BN standalone too
    assert not set(nn_["bn_b"].ravel()) & set(nn_["conv_b"].ravel())
    assert not set(nn_["bn"].ravel()) & set(nn_["cat"].ravel())
    assert all(dag.neurons[int(n)].act == "relu" for n in nn_["relu"].ravel())
    assert (nn_["relu"] == nn_["bn"]).all()  # fresh standalone-BN neurons switched in place
    assert len(dag.outputs) == 2 + 1
    m2, _, b2 = cases.conv_bn(fold=True)
    d2 = b2(m2)
    assert (d2.node_neurons["bn1"] == d2.node_neurons["conv1"]).all()
    assert (d2.node_neurons["relu1"] == d2.node_neurons["conv1"]).all()


def test_fold_equivalent_function_and_smaller_norm() -> None:
    mf, shape, bld = cases.conv_bn(fold=True)
    mu, _, _ = cases.conv_bn(fold=False)
    df, du = bld(mf), bld(mu)
    for x in _inputs(shape):
        np.testing.assert_allclose(df.forward(x), du.forward(x), rtol=1e-10, atol=1e-12)
    assert oracle.path_norm_dp(df, 1) < oracle.path_norm_dp(du, 1)


@pytest.mark.parametrize("name", ["conv_bn_fold", "concat_net", "pools", "activations_leaky"])
def test_pruning_keeps_keys_and_metric_is_norm_difference(name: str) -> None:
    module, _, build = _case(name)
    pruned = copy.deepcopy(module)
    g = torch.Generator().manual_seed(3)
    bn_params = {f"{n}.{p}" for n, m in module.named_modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in ("weight", "bias")}
    with torch.no_grad():
        for p in pruned.parameters():
            # with BN, zeroing g, b or a conv bias moves the combined bias: not a domination
            if not bn_params or p.dim() >= 2:
                p.mul_(torch.rand(p.shape, generator=g, dtype=p.dtype) > 0.4)
    da, db = build(module), build(pruned)
    for na, nb in zip(da.neurons, db.neurons, strict=True):  # |theta'| <= |theta|, same signs
        pairs = [(na.bias, nb.bias)] + [(ea.weight, eb.weight)
                                        for ea, eb in zip(na.edges, nb.edges, strict=True)]
        assert all(b == 0 or (a * b > 0 and abs(b) <= abs(a)) for a, b in pairs)
    pa, pb = oracle.path_lifting(da), oracle.path_lifting(db)
    assert pa.keys() == pb.keys()
    assert any(v == 0.0 for v in pb.values())
    metric = oracle.path_metric(pa, pb)
    assert metric == pytest.approx(oracle.path_norm(pa, 1) - oracle.path_norm(pb, 1), rel=1e-10)
    assert oracle.path_metric(pb, pa) == metric
    assert oracle.path_metric(pa, pa) == 0.0


def _rescale_mlp(module: builders.SpecNet, lam: torch.Tensor) -> builders.SpecNet:
    """Rescale hidden neurons of fc1 by lam, the matching fc2 inputs by 1/lam."""
    m = copy.deepcopy(module)
    with torch.no_grad():
        m.fc1.weight.mul_(lam[:, None])
        m.fc1.bias.mul_(lam)
        m.fc2.weight.div_(lam[None, :])
    return m


def _rescale_conv_bn(module: builders.SpecNet, lam: torch.Tensor) -> builders.SpecNet:
    """Rescale conv1's output channels through bn1 by lam, conv2's input channels by 1/lam."""
    m = copy.deepcopy(module)
    with torch.no_grad():
        m.conv1.weight.mul_(lam[:, None, None, None])
        m.conv1.bias.mul_(lam)
        m.bn1.running_mean.mul_(lam)
        m.bn1.bias.mul_(lam)
        m.conv2.weight.div_(lam[None, :, None, None])
    return m


@pytest.mark.parametrize(
    ("name", "rescale", "n"),
    [("mlp_with_bias", _rescale_mlp, 5), ("conv_bn_fold", _rescale_conv_bn, 3),
     ("conv_bn_nofold", _rescale_conv_bn, 3)],
)
def test_rescaling_invariance(name: str, rescale, n: int) -> None:
    module, shape, build = _case(name)
    lam = torch.tensor([1.0, 128.0, 4096.0, 1 / 64, 3.0][:n], dtype=torch.float64)
    scaled = rescale(module, lam)
    for x in _inputs(shape):
        np.testing.assert_allclose(builders.module_output(scaled, x),
                                   builders.module_output(module, x), rtol=1e-9, atol=1e-9)
    da, db = build(module), build(scaled)
    pa, pb = oracle.path_lifting(da), oracle.path_lifting(db)
    assert pa.keys() == pb.keys()
    keys = list(pa)
    np.testing.assert_allclose([pb[k] for k in keys], [pa[k] for k in keys],
                               rtol=1e-9, atol=1e-12)
    assert oracle.path_metric(da, db) <= 1e-9 * oracle.path_norm(da, 1)


@pytest.mark.parametrize("name", ["mlp_with_bias", "conv_bn_nofold", "pools", "concat_net",
                                  "activations_hardtanh", "residual_add_fold"])
def test_lipschitz_bound_same_signs(name: str) -> None:
    """||R(x) - R'(x)||_1 <= max(1, ||x||_inf) ||Phi - Phi'||_1 for same-sign weights."""
    module, shape, build = _case(name)
    other = copy.deepcopy(module)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for pname, p in other.named_parameters():
            if pname.endswith("weight") and p.dim() >= 2:  # conv / linear weights only
                p.mul_(0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))
    da, db = build(module), build(other)
    metric = oracle.path_metric(da, db)
    assert metric > 0
    for x in _inputs(shape, n=5, scale=2.0, seed=7):
        lhs = np.abs(da.forward(x) - db.forward(x)).sum()
        assert lhs <= max(1.0, float(x.abs().max())) * metric * (1 + 1e-12)


def test_unsupported_and_train_mode_refused() -> None:
    net = builders.Spec((3,)).node("fc", nn.Linear(3, 2)).node("act", nn.SiLU()).build()
    with pytest.raises(NotImplementedError, match="act"):
        lowering.build_dag(net)
    module, _, build = cases.conv_bn()
    with pytest.raises(ValueError, match="eval"):
        build(copy.deepcopy(module).train())


@pytest.mark.parametrize("factory", [cases.mlp_with_bias, cases.pools, cases.bn_after_concat])
def test_keys_depend_only_on_spec(factory) -> None:
    a, b = factory(seed=0), factory(seed=1)
    pa, pb = oracle.path_lifting(a.build(a.module)), oracle.path_lifting(b.build(b.module))
    assert pa.keys() == pb.keys()
    assert any(pa[k] != pb[k] for k in pa)
