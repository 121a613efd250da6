"""The path networks on a GPU: same numbers as float64 on the CPU, no host syncs, CUDA graphs.

Skipped without CUDA (CI has none); run on a GPU machine with ``python -m pytest
tests/engine/test_cuda.py -m ''`` (the empty marker expression includes the slow torch.compile
test).
"""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import timm
import torch
import torchvision
from conftest import randomize_batchnorm

import fxpath
from fxpath.quantities.scores import from_magnitudes

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SHAPE = (3, 64, 64)


def _models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"resnet18": randomize_batchnorm(torchvision.models.resnet18()).eval(),
            "vgg11": torchvision.models.vgg11().eval(),
            "densenet121": randomize_batchnorm(timm.create_model("densenet121")).eval()}


MODELS = _models()


def _cpu_reference(name: str) -> fxpath.PathProgram:
    return fxpath.compile(copy.deepcopy(MODELS[name]).double(), SHAPE, dtype=torch.float64)


def test_cuda_graphs_need_a_cuda_device() -> None:
    with pytest.raises(fxpath.FxPathError, match="cuda_graphs=True needs a CUDA device"):
        fxpath.compile(MODELS["vgg11"], SHAPE, cuda_graphs=True)


@cuda
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("graphs", [False, True])
def test_path_norm_on_gpu_matches_float64_cpu(name: str, graphs: bool) -> None:
    ref = _cpu_reference(name)
    prog = fxpath.compile(copy.deepcopy(MODELS[name]).cuda(), SHAPE, cuda_graphs=graphs)
    for q in (1.0, 2.0):
        want = ref.path_norm(q).log2
        for _ in range(3):  # eager, capture, replay
            got = prog.path_norm(q).log2
            assert abs(got - want) <= 1e-5 * abs(want), (q, got, want)


@cuda
@pytest.mark.parametrize("name", sorted(MODELS))
def test_scores_on_gpu_match_float64_cpu_and_graphs_match_eager(name: str) -> None:
    """Also checks that no TF32 sneaks in (cuDNN allows it by default: errors near 1e-3)."""
    want = _cpu_reference(name).path_magnitude()
    model = copy.deepcopy(MODELS[name]).cuda()
    eager = fxpath.compile(model, SHAPE, cuda_graphs=False).path_magnitude()
    graphed = fxpath.compile(model, SHAPE, cuda_graphs=True)
    assert graphed.use_graphs
    calls = [graphed.path_magnitude() for _ in range(3)]  # eager, capture, replay
    assert graphed.runner._graphed[("scores",)].graph is not None, "the scores were not captured"
    assert set(eager) == set(want)
    for k, w in want.items():
        torch.testing.assert_close(eager[k].double().cpu(), w, rtol=1e-4, atol=1e-9)
        for c in calls:  # same kernels; cuDNN's weight-gradient sums are not bitwise stable
            torch.testing.assert_close(c[k], eager[k], rtol=1e-5, atol=1e-12)


@cuda
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("graphs", [False, True])
def test_interior_convs_on_gpu_match_float64_cpu(name: str, graphs: bool) -> None:
    """`interior=True` (off by default on a GPU): compressed-image convs, captured or not."""
    ref = _cpu_reference(name)
    want = ref.path_magnitude()
    prog = fxpath.compile(copy.deepcopy(MODELS[name]).cuda(), SHAPE, cuda_graphs=graphs,
                          interior=True)
    assert "frame_conv" in prog.path_network(1.0).code
    for _ in range(3):  # eager, capture, replay
        got = prog.path_magnitude()
        assert abs(prog.path_norm().log2 - ref.path_norm().log2) <= 1e-5 * abs(
            ref.path_norm().log2)
        for k, w in want.items():
            torch.testing.assert_close(got[k].double().cpu(), w, rtol=1e-4, atol=1e-9)


@cuda
def test_user_tf32_settings_do_not_reach_the_path_network() -> None:
    torch.set_float32_matmul_precision("high")  # the user allows TF32 for matmuls
    try:
        want = _cpu_reference("vgg11").path_magnitude()
        prog = fxpath.compile(copy.deepcopy(MODELS["vgg11"]).cuda(), SHAPE)
        for _ in range(3):
            got = prog.path_magnitude()
            for k, w in want.items():
                torch.testing.assert_close(got[k].double().cpu(), w, rtol=1e-4, atol=1e-9)
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.set_float32_matmul_precision("highest")


@cuda
def test_replay_sees_parameter_updates_and_returned_scores_are_owned() -> None:
    model = copy.deepcopy(MODELS["resnet18"]).cuda()
    prog = fxpath.compile(model, SHAPE)
    assert prog.use_graphs  # the default on a GPU
    for _ in range(3):
        before, norm_before = prog.path_magnitude(), prog.path_norm().log2
    kept = {k: v.clone() for k, v in before.items()}
    with torch.no_grad():  # a change that is not a rescaling: the norm and scores move
        model.layer1[0].conv1.weight[:8].mul_(3.0)
        model.fc.weight[:, :100].zero_()
    after, norm_after = prog.path_magnitude(), prog.path_norm().log2
    fresh = fxpath.compile(model, SHAPE, cuda_graphs=False)
    assert abs(norm_after - norm_before) > 1e-3
    assert abs(norm_after - fresh.path_norm().log2) <= 1e-6 * abs(norm_after)
    for k, v in fresh.path_magnitude().items():
        torch.testing.assert_close(after[k], v, rtol=1e-5, atol=1e-12)
        assert torch.equal(before[k], kept[k]), f"{k}: a later call overwrote earlier scores"


@cuda
def test_out_reuse_with_cuda_graphs() -> None:
    prog = fxpath.compile(copy.deepcopy(MODELS["vgg11"]).cuda(), SHAPE)
    first = prog.path_magnitude()
    buffers = {k: torch.full_like(v, math.nan) for k, v in first.items()}
    for _ in range(3):
        got = prog.path_magnitude(out=buffers)
        assert all(got[k] is buffers[k] for k in got)
        for k, v in first.items():
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-12)


@cuda
@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize("interior", [False, True])
def test_no_host_sync_on_gpu(graphs: bool, interior: bool) -> None:
    """Warm path networks and scores never wait for the GPU: any sync raises here (device to
    host copies included, which is also how a CPU fallback would show)."""
    prog = fxpath.compile(copy.deepcopy(MODELS["resnet18"]).cuda(), SHAPE, cuda_graphs=graphs,
                          interior=interior)
    other = {k: v * 0.9 for k, v in prog.model.state_dict().items()}
    for _ in range(2):  # the first call runs eagerly, the second captures (which syncs)
        prog.path_magnitude()
        prog.path_norm()
        prog.path_metric(other)
    mags = prog.magnitudes_detached()
    lo = [m * 0.5 for m in mags]
    args = [t for pair in zip(lo, mags) for t in pair]
    live = prog.network_inputs(1.0)
    borrowed = prog.runner.borrowed(live)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:  # the public calls add one sync each: the finiteness check of the result
        scores, _ = prog.runner.call(("scores",), partial(from_magnitudes, prog), live, borrowed)
        total, exp = prog.runner.call(("norm", 1.0), prog.path_network(1.0), live, borrowed)
        _, delta, dexp = prog.runner.call(("diff",), prog.path_network(1.0, mode="diff"), args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(s.is_cuda for s in scores.values())
    assert total.is_cuda and delta.is_cuda and exp.is_cuda and dexp.is_cuda
    assert prog.path_metric(other).log2 < prog.path_norm().log2


@cuda
def test_path_metric_on_gpu_matches_float64_cpu() -> None:
    model = MODELS["resnet18"]
    gen = torch.Generator().manual_seed(1)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(torch.rand(p.shape, generator=gen) + 0.5)
    want = _cpu_reference("resnet18").path_metric(copy.deepcopy(other).double())
    prog = fxpath.compile(copy.deepcopy(model).cuda(), SHAPE)
    for _ in range(3):
        got = prog.path_metric(copy.deepcopy(other).cuda())
        assert got.exact == want.exact
        assert abs(got.log2 - want.log2) <= 1e-5 * abs(want.log2)


@cuda
def test_prune_on_gpu_matches_cpu() -> None:
    cpu = copy.deepcopy(MODELS["vgg11"])
    gpu = copy.deepcopy(MODELS["vgg11"]).cuda()
    a = fxpath.prune(cpu, 0.6, SHAPE, dtype=torch.float64)
    b = fxpath.prune(gpu, 0.6, SHAPE, dtype=torch.float64)
    assert a.overall_sparsity == b.overall_sparsity
    assert abs(a.metric.log2 - b.metric.log2) <= 1e-6 * abs(a.metric.log2)
    gpu_state = gpu.state_dict()  # float64 sums in another order: near-ties may swap
    differ = sum(int(((p == 0) != (gpu_state[n].cpu() == 0)).sum())
                 for n, p in cpu.state_dict().items())
    assert differ <= 1e-5 * sum(p.numel() for p in cpu.parameters()), differ


@cuda
def test_top_selection_on_gpu_matches_cpu_with_ties() -> None:
    from fxpath.apps.prune import _top

    gen = torch.Generator().manual_seed(2)
    flat = torch.randint(0, 50, (100_003,), generator=gen).float()  # heavy ties
    for keep in (0, 1, 777, 50_000, 100_002, 100_003):
        assert torch.equal(_top(flat.cuda(), keep).cpu(), _top(flat, keep)), keep


@cuda
@pytest.mark.slow
def test_torch_compile_on_gpu_matches_eager() -> None:
    model = copy.deepcopy(MODELS["resnet18"]).cuda()
    eager = fxpath.compile(model, SHAPE, cuda_graphs=False)
    compiled = fxpath.compile(model, SHAPE, torch_compile=True)
    assert not compiled.use_graphs
    assert abs(compiled.path_norm().log2 - eager.path_norm().log2) <= 1e-6 * abs(
        eager.path_norm().log2)
    want = eager.path_magnitude()
    for _ in range(2):
        got = compiled.path_magnitude()
        for k, v in want.items():
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-8)
