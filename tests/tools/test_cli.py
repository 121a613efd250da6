"""The ``fxpath`` command line: exit codes, parse-time validation, messages and outputs.

Success paths run on a tiny conv net (``build_model`` is monkeypatched); unknown model names use
the real timm/torchvision registries (listing names only, nothing big is built). One test builds
torchvision's ResNet-18 for real.
"""

from __future__ import annotations

import argparse
import re

import pytest
import torch
import torch.nn as nn

import fxpath
from fxpath.tools import arguments, cli, cli_docs, commands, models

TINY_SHAPE = (3, 8, 8)


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2)).eval()


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every MODEL builds the tiny net (weights from the CLI's seed); records the names."""
    built: list[str] = []

    def build(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
        built.append(spec)
        return tiny(), TINY_SHAPE

    monkeypatch.setattr(cli, "build_model", build)
    return built


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code: int, err: str, *fragments: str) -> None:
    assert code == cli.EXIT_USAGE == 2
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# -- parse-time validation --------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["norm", "resnet18", "--size", "3", "0", "0"], "each input dimension must be an integer >= 1"),
    (["norm", "resnet18", "--size", "-1"], "input dimension must be an integer >= 1, got '-1'"),
    (["norm", "resnet18", "--size", "3", "2.5", "8"], "must be an integer, got '2.5'"),
    (["norm", "resnet18", "--q", "inf"], "the l^inf path-norm is not supported"),
    (["norm", "resnet18", "--q=-inf"], "q must be a finite number > 0, got '-inf'"),
    (["norm", "resnet18", "--q", "nan"], "q must be a finite number > 0"),
    (["norm", "resnet18", "--q", "0"], "q must be a finite number > 0, got '0'"),
    (["norm", "resnet18", "--q", "1", "-2"], "q must be a finite number > 0, got '-2'"),
    (["norm", "resnet18", "--q", "one"], "q must be a number, got 'one'"),
    (["scores", "resnet18", "--top", "0"], "argument --top: the value must be an integer >= 1"),
    (["scores", "resnet18", "--top", "2.0"], "argument --top: the value must be an integer"),
    (["prune", "resnet18", "--amount", "1.5"], "amount must be in [0, 1], got '1.5'"),
    (["prune", "resnet18", "--amount", "-0.1"], "amount must be in [0, 1]"),
    (["prune", "resnet18", "--amount", "nan"], "amount must be in [0, 1]"),
    (["prune", "resnet18", "--steps", "0"], "argument --steps: the value must be an integer >= 1"),
    (["prune", "resnet18", "--scope", "row"], "argument --scope: invalid choice: 'row'"),
    (["prune", "resnet18", "--criterion", "random"], "argument --criterion: invalid choice"),
    (["norm", "resnet18", "--seed", "1.5"], "seed must be an integer, got '1.5'"),
    (["norm", "resnet18", "--seed", str(2**64)], "seed must be in [-2**63, 2**64 - 1]"),
    (["norm", "resnet18", "--top", "3"], "unrecognized arguments: --top 3"),
    (["norm", "foo:bar"], "unknown model prefix 'foo:' in 'foo:bar'"),
    (["norm", "torchvision:"], "empty model name in 'torchvision:'"),
    (["norm"], "the following arguments are required: MODEL"),
    (["sparsify", "resnet18"], "invalid choice: 'sparsify'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_rejected_at_parse_time(capsys: pytest.CaptureFixture[str], tiny_model: list[str],
                                argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert_usage_error(code, err, message, "usage: fxpath")
    assert out == ""
    assert "%" not in err  # never an fx node dump
    assert tiny_model == []  # nothing was built


@pytest.mark.parametrize("text", ["1", "3", "224"])
def test_positive_int_accepts(text: str) -> None:
    assert arguments.positive_int()(text) == int(text)


@pytest.mark.parametrize("text", ["0", "-3", "x", ""])
def test_positive_int_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        arguments.positive_int()(text)


def test_q_accepts_finite_positive() -> None:
    assert arguments.exponent("2") == 2.0
    assert arguments.exponent("0.5") == 0.5
    assert arguments.fraction("0") == 0.0 and arguments.fraction("1") == 1.0


# -- model names -------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "fragments"), [
    (["norm", "not_a_model"], ["fxpath: unknown timm model 'not_a_model'", "timm.list_models()"]),
    (["norm", "torchvision:not_a_model"],
     ["fxpath: unknown torchvision model 'not_a_model' in 'torchvision:not_a_model'",
      "torchvision.models.list_models()"]),
    (["norm", "torchvision:resnet19"], ["did you mean torchvision:resnet18, torchvision:"]),
    (["scores", "resnet19"], ["unknown timm model 'resnet19'", "did you mean resnet18"]),
    (["prune", "timm:resnet19"], ["did you mean timm:resnet18"]),
    (["norm", "alexnet"], ["did you mean torchvision:alexnet"]),  # only torchvision has it
])
def test_unknown_model_names(capsys: pytest.CaptureFixture[str], argv: list[str],
                             fragments: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert_usage_error(code, err, *fragments)
    assert out == ""
    assert err.count("\n") == 1  # one line, no usage dump


def test_build_failure_names_the_model(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    def boom(*args: object, **kwargs: object) -> nn.Module:
        raise RuntimeError("out of cheese")

    monkeypatch.setattr(timm, "create_model", boom)
    code, _, err = run(capsys, "norm", "resnet18")
    assert_usage_error(code, err, "fxpath: could not build 'resnet18': RuntimeError: out of cheese")


def test_build_model_raises_fxpath_error_for_bad_prefix() -> None:
    with pytest.raises(fxpath.FxPathError, match="unknown model prefix"):
        models.build_model("hf-hub:timm/resnet18")


def test_build_model_torchvision_random_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    calls: list[tuple[str, object]] = []

    def get_model_builder(name: str) -> object:
        def build(weights: object = "default") -> nn.Module:
            calls.append((name, weights))
            return tiny().train()

        return build

    monkeypatch.setattr(torchvision.models, "get_model_builder", get_model_builder)
    model, shape = models.build_model("torchvision:resnet18")
    assert calls == [("resnet18", None)]
    assert not model.training and shape == (3, 224, 224)


# -- refused models and shapes ---------------------------------------------------------------

def test_refused_model_is_exit_2(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sigmoid = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()).eval()
    monkeypatch.setattr(cli, "build_model", lambda spec: (sigmoid, (4,)))
    code, _, err = run(capsys, "norm", "sigmoid_net")
    assert_usage_error(code, err, "fxpath: ", "not a ReLU-DAG network", "Sigmoid")


def test_float64_hint(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                      tiny_model: list[str]) -> None:
    def overflow(*args: object, **kwargs: object) -> None:
        raise fxpath.FxPathError("overflowed: compile with dtype=torch.float64")

    monkeypatch.setattr(cli, "compile_program", overflow)
    code, _, err = run(capsys, "scores", "tiny")
    assert_usage_error(code, err, "fxpath: overflowed: compile with dtype=torch.float64 "
                                  "(here: add --float64)\n")
    code, _, err = run(capsys, "norm", "tiny", "--float32")
    assert_usage_error(code, err, "dtype=torch.float64 (here: leave out --float32)\n")
    code, _, err = run(capsys, "norm", "tiny")  # float64 already: no hint
    assert_usage_error(code, err, "dtype=torch.float64\n")


def test_wrong_size_is_exit_2(capsys: pytest.CaptureFixture[str], tiny_model: list[str]) -> None:
    code, _, err = run(capsys, "norm", "tiny", "--size", "5", "8", "8")
    assert_usage_error(code, err, "fxpath: ")


# -- success paths ---------------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "dtype", "digits"), [([], torch.float64, 10),
                                                    (["--float32"], torch.float32, 6)])
def test_norm_prints_value_and_log10(capsys: pytest.CaptureFixture[str], tiny_model: list[str],
                                     flag: list[str], dtype: torch.dtype, digits: int) -> None:
    """norm computes in float64 unless --float32; it prints the digits its dtype carries (issue
    21: ten digits of a float32 computation depend on the CPU's kernels)."""
    code, out, err = run(capsys, "norm", "tiny", "--q", "1", "2", "0.5", *flag)
    assert code == 0 and tiny_model == ["tiny"]
    torch.manual_seed(0)
    expected = fxpath.compile(tiny(), TINY_SHAPE, dtype=dtype)
    lines = out.splitlines()
    assert len(lines) == 3
    for line, q in zip(lines, (1.0, 2.0, 0.5)):
        pn = expected.path_norm(q)
        assert line == (f"l^{q:g} path-norm of tiny at (3, 8, 8): {pn.value:.{digits}g} "
                        f"(log10 {pn.log10:.{digits}f})")
    assert re.fullmatch(rf"\(\d+\.\d\d s, {dtype}\)\n", err)


def test_seed_changes_the_weights(capsys: pytest.CaptureFixture[str],
                                  tiny_model: list[str]) -> None:
    outs = [run(capsys, "norm", "tiny", "--seed", seed)[1] for seed in ("0", "0", "7")]
    assert outs[0] == outs[1] != outs[2]


def test_size_overrides_the_default(capsys: pytest.CaptureFixture[str],
                                    tiny_model: list[str]) -> None:
    code, out, _ = run(capsys, "norm", "tiny", "--size", "3", "12", "10", "--q", "1")
    assert code == 0 and "at (3, 12, 10):" in out


@pytest.mark.parametrize(("flag", "dtype"), [([], torch.float32), (["--float64"], torch.float64)])
def test_dtype_is_passed_explicitly(capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch, tiny_model: list[str],
                                    flag: list[str], dtype: torch.dtype) -> None:
    """The commands that run many passes (scores, prune) compute in float32 unless --float64."""
    seen: list[torch.dtype] = []
    real_compile, real_prune = cli.compile_program, cli.prune

    def compile_spy(model: nn.Module, shape: tuple[int, ...], **kw: object) -> object:
        seen.append(kw["dtype"])  # type: ignore[arg-type]
        return real_compile(model, shape, **kw)  # type: ignore[arg-type]

    def prune_spy(*args: object, **kw: object) -> object:
        seen.append(kw["dtype"])  # type: ignore[arg-type]
        return real_prune(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "compile_program", compile_spy)
    monkeypatch.setattr(cli, "prune", prune_spy)
    for command in ("scores", "prune"):
        code, _, err = run(capsys, command, "tiny", *flag)
        assert code == 0 and f"torch.{str(dtype).split('.')[-1]})" in err
    assert seen == [dtype] * 2


@pytest.mark.parametrize(("flag", "dtype"), [([], torch.float64), (["--float64"], torch.float64),
                                             (["--float32"], torch.float32)])
def test_one_shot_commands_compute_in_float64(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch,
                                              tiny_or_real: None, tmp_path, flag: list[str],
                                              dtype: torch.dtype) -> None:
    """norm and metric (one pass of the path network) compute in float64 unless --float32."""
    seen: list[torch.dtype] = []
    real_compile = cli.compile_program

    def compile_spy(model: nn.Module, shape: tuple[int, ...], **kw: object) -> object:
        seen.append(kw["dtype"])  # type: ignore[arg-type]
        return real_compile(model, shape, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "compile_program", compile_spy)
    other = tmp_path / "other.pt"
    torch.save(seeded_tiny(3).state_dict(), other)
    for argv in (["norm", "tiny"], ["metric", "tiny", str(other)]):
        code, out, err = run(capsys, *argv, *flag)
        assert code == 0 and err.endswith(f", {dtype})\n")
        value = re.search(r": (\S+) \(log10", out).group(1)  # type: ignore[union-attr]
        assert len(value.replace(".", "").lstrip("0").split("e")[0]) <= (
            10 if dtype == torch.float64 else 6)
    assert seen == [dtype] * 2


def test_scores_prints_tensors_by_mass(capsys: pytest.CaptureFixture[str],
                                       tiny_model: list[str]) -> None:
    code, out, _ = run(capsys, "scores", "tiny", "--top", "3")
    assert code == 0
    head, *rows = out.splitlines()
    assert head == "path mass fraction through each tensor of tiny at (3, 8, 8) (top 3 of 4):"
    assert len(rows) == 3
    masses = [float(r.split()[0]) for r in rows]
    assert masses == sorted(masses, reverse=True)
    assert {r.split()[1] for r in rows} <= {"0.weight", "0.bias", "4.weight", "4.bias"}
    code, out, _ = run(capsys, "scores", "tiny", "--top", "100")
    assert code == 0 and "(top 4 of 4)" in out and len(out.splitlines()) == 5


def test_prune_forwards_flags_and_prints_metric(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch,
                                                tiny_model: list[str]) -> None:
    calls: list[dict[str, object]] = []
    real_prune = cli.prune

    def prune_spy(model: nn.Module, amount: float, shape: tuple[int, ...],
                  **kw: object) -> object:
        calls.append({"amount": amount, "shape": shape, **kw})
        return real_prune(model, amount, shape, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "prune", prune_spy)
    code, out, _ = run(capsys, "prune", "tiny", "--amount", "0.5", "--steps", "3",
                       "--scope", "layer", "--criterion", "magnitude", "--float64")
    assert code == 0
    assert calls == [{"amount": 0.5, "shape": TINY_SHAPE, "criterion": "magnitude",
                      "scope": "layer", "steps": 3, "dtype": torch.float64}]
    first, second, third = out.splitlines()
    assert re.fullmatch(r"tiny at \(3, 8, 8\): pruned \d+\.\d% of the conv/linear weights by "
                        r"magnitude \(layer, 3 steps\)", first)
    assert re.fullmatch(r"certified l\^1 path-metric to the dense model: \S+ \(log10 \S+, "
                        r"relative \S+, (exact|upper bound)\)", second)
    assert re.fullmatch(r"certified bound: \|\|R\(x\) - R_pruned\(x\)\|\|_1 <= max\(1, "
                        r"\|\|x\|\|_inf\) \* \S+ for every input x", third)


def test_prune_defaults(capsys: pytest.CaptureFixture[str], tiny_model: list[str]) -> None:
    code, out, _ = run(capsys, "prune", "tiny")
    assert code == 0
    assert "by path_magnitude (global)" in out
    sparsity = float(re.search(r"pruned (\d+\.\d)%", out).group(1))  # type: ignore[union-attr]
    assert abs(sparsity - 60.0) < 1.0


# -- files: --save, --out, --export, --checkpoint, .pt2 and module:factory MODELs ---------------

@pytest.fixture
def tiny_or_real(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tiny`` builds the tiny net; .pt2 files and module:factory go to the real builder."""
    real = cli.build_model

    def build(spec: str) -> tuple[object, tuple[int, ...] | None]:
        return (tiny(), TINY_SHAPE) if spec == "tiny" else real(spec)

    monkeypatch.setattr(cli, "build_model", build)


def seeded_tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return tiny()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_scores_save(capsys: pytest.CaptureFixture[str], tiny_model: list[str], tmp_path,
                     suffix: str) -> None:
    path = str(tmp_path / f"scores{suffix}")
    code, out, _ = run(capsys, "scores", "tiny", "--save", path)
    assert code == 0 and f"saved 4 score tensors to {path}" in out
    saved = commands.load_state(path)
    want = fxpath.compile(seeded_tiny(), TINY_SHAPE, dtype=torch.float32).path_magnitude()
    assert sorted(saved) == sorted(want)
    for key in want:
        torch.testing.assert_close(saved[key], want[key])


def test_prune_out_export_then_metric_and_norm(capsys: pytest.CaptureFixture[str],
                                               tiny_or_real: None, tmp_path) -> None:
    """prune writes a checkpoint and an ExportedProgram; metric between the rebuilt dense model
    and the checkpoint is the metric prune printed; the .pt2 has the checkpoint's path-norm."""
    ckpt, pt2 = str(tmp_path / "pruned.safetensors"), str(tmp_path / "pruned.pt2")
    code, out, _ = run(capsys, "prune", "tiny", "--amount", "0.5", "--out", ckpt,
                       "--export", pt2, "--float64")
    assert code == 0 and f"saved the pruned weights to {ckpt}" in out and pt2 in out
    printed = re.search(r"dense model: (\S+) ", out).group(1)  # type: ignore[union-attr]
    state = commands.load_state(ckpt)
    assert "0.weight_orig" not in state and "0.weight" in state  # pruning made permanent
    zeros = sum(int((state[k] == 0).sum()) for k in ("0.weight", "4.weight"))
    assert zeros == round(0.5 * (4 * 3 * 9 + 2 * 4))
    code, out, _ = run(capsys, "metric", "tiny", ckpt, "--float64")
    assert code == 0
    assert re.search(rf"between tiny and {re.escape(ckpt)} at \(3, 8, 8\): {printed} ", out)
    assert "exact" in out and "R_other(x)" in out
    want = fxpath.path_metric(seeded_tiny().double(), {k: v.double() for k, v in state.items()},
                              TINY_SHAPE)
    assert f"{want.value:.10g}" == printed
    code, from_ckpt, _ = run(capsys, "norm", "tiny", "--checkpoint", ckpt, "--q", "1")
    assert code == 0
    code, from_pt2, _ = run(capsys, "norm", pt2, "--q", "1")
    assert code == 0
    value = re.compile(r": (\S+ \(log10 \S+\))")
    assert value.search(from_pt2).group(1) == value.search(from_ckpt).group(1)  # type: ignore


def test_metric_between_two_checkpoints(capsys: pytest.CaptureFixture[str],
                                        tiny_or_real: None, tmp_path) -> None:
    """MODEL's weights from --checkpoint, OTHER a second checkpoint (.pt and .safetensors): the
    library's metric between the two weight sets, not between the seed's and OTHER."""
    import safetensors.torch

    a, b = seeded_tiny(1).double(), seeded_tiny(2).double()
    with torch.no_grad():  # b = a with some weights shrunk toward zero: a dominates b, exact
        b.load_state_dict(a.state_dict())
        b[0].weight.mul_(torch.rand(b[0].weight.shape, dtype=torch.float64))
    first, second = str(tmp_path / "a.pt"), str(tmp_path / "b.safetensors")
    torch.save(a.state_dict(), first)
    safetensors.torch.save_file(b.state_dict(), second)
    code, out, _ = run(capsys, "metric", "tiny", second, "--checkpoint", first, "--float64")
    assert code == 0
    want = fxpath.path_metric(a, b, TINY_SHAPE)
    assert want.exact and want.value > 0
    assert f"between tiny and {second} at (3, 8, 8): {want.value:.10g} " in out
    assert "exact" in out
    seeded = fxpath.path_metric(seeded_tiny().double(), b, TINY_SHAPE)
    assert f"{seeded.value:.10g}" != f"{want.value:.10g}"  # --checkpoint was read


def test_json_results(capsys: pytest.CaptureFixture[str], tiny_or_real: None, tmp_path) -> None:
    import json

    prog = fxpath.compile(seeded_tiny(), TINY_SHAPE, dtype=torch.float32)
    prog64 = fxpath.compile(seeded_tiny(), TINY_SHAPE, dtype=torch.float64)
    code, out, _ = run(capsys, "norm", "tiny", "--json", "--q", "1", "2")
    result = json.loads(out)
    assert code == 0 and result["model"] == "tiny" and result["input_shape"] == [3, 8, 8]
    assert result["dtype"] == "torch.float64"
    assert [n["q"] for n in result["path_norms"]] == [1.0, 2.0]
    assert result["path_norms"][1]["log2"] == pytest.approx(prog64.path_norm(2).log2, rel=1e-12)
    code, out, _ = run(capsys, "scores", "tiny", "--json", "--top", "2")
    result = json.loads(out)
    masses = {k: float(v.sum()) for k, v in prog.path_magnitude().items()}
    assert result["tensors_total"] == 4 and len(result["tensors"]) == 2
    for row in result["tensors"]:
        assert row["mass"] == pytest.approx(masses[row["name"]], rel=1e-6)
    ckpt = str(tmp_path / "p.pt")
    code, out, _ = run(capsys, "prune", "tiny", "--json", "--out", ckpt)
    result = json.loads(out)
    assert code == 0 and result["checkpoint"] == ckpt and result["metric"]["exact"] is True
    assert result["overall_sparsity"] == pytest.approx(0.6, abs=0.02)
    code, out, _ = run(capsys, "metric", "tiny", ckpt, "--json")
    again = json.loads(out)
    assert again["metric"]["log2"] == pytest.approx(result["metric"]["log2"], rel=1e-5)
    code, out, _ = run(capsys, "check", "tiny", "--json")
    result = json.loads(out)
    assert code == 0 and result["supported"] is True
    assert {row["op"] for row in result["ops"]} >= {"Conv2d", "ReLU", "Linear"}


def test_checkpoint_errors(capsys: pytest.CaptureFixture[str], tiny_model: list[str],
                           tmp_path) -> None:
    wrong = str(tmp_path / "wrong.pt")
    torch.save({"0.weight": torch.zeros(1)}, wrong)
    code, _, err = run(capsys, "norm", "tiny", "--checkpoint", wrong)
    assert_usage_error(code, err, f"the checkpoint {wrong!r} does not fit the model")
    code, _, err = run(capsys, "norm", "tiny", "--checkpoint", str(tmp_path / "missing.pt"))
    assert_usage_error(code, err, "no such checkpoint")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    code, _, err = run(capsys, "metric", "tiny", str(junk))
    assert_usage_error(code, err, "cannot read the checkpoint")


FACTORY_MODULE = """
import torch.nn as nn

def build():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))

def sized():
    net = build()
    net.pretrained_cfg = {"input_size": (3, 9, 9)}
    return net

NOT_CALLABLE = 3

def broken():
    raise RuntimeError("no cheese")
"""


def test_module_factory_models(capsys: pytest.CaptureFixture[str], tmp_path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fxpath_cli_user_nets.py").write_text(FACTORY_MODULE)
    monkeypatch.chdir(tmp_path)
    spec = "fxpath_cli_user_nets:build"
    assert models.parse_model(spec) == ("factory", spec)
    code, out, _ = run(capsys, "norm", spec, "--size", "3", "8", "8", "--q", "1")
    assert code == 0
    want = fxpath.compile(seeded_tiny(), TINY_SHAPE, dtype=torch.float64).path_norm()
    assert f"{want.value:.10g}" in out  # the same net, the same seed
    code, out, _ = run(capsys, "norm", "fxpath_cli_user_nets:sized", "--q", "1")
    assert code == 0 and "at (3, 9, 9)" in out  # its own input size
    code, _, err = run(capsys, "norm", spec)
    assert_usage_error(code, err, "records no input size", "--size")
    for name, message in [("NOT_CALLABLE", "is not callable"), ("nothing", "has no attribute"),
                          ("broken", "RuntimeError: no cheese")]:
        code, _, err = run(capsys, "norm", f"fxpath_cli_user_nets:{name}", "--size", "3", "8",
                           "8")
        assert_usage_error(code, err, message)


def test_missing_pt2(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    code, _, err = run(capsys, "norm", str(tmp_path / "nothing.pt2"))
    assert_usage_error(code, err, "no such file", "ExportedProgram")


# -- check, plot and zoo -----------------------------------------------------------------------

def test_check_supported_and_refused(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "build_model", lambda spec: (tiny(), TINY_SHAPE))
    code, out, _ = run(capsys, "check", "tiny")
    assert code == 0 and "supported: a ReLU-DAG" in out
    assert re.search(r"Conv2d\s+1\s+supported \(linear\)", out)
    gated = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.Linear(144, 2),
                          nn.SiLU()).eval()
    monkeypatch.setattr(cli, "build_model", lambda spec: (gated, TINY_SHAPE))
    code, out, _ = run(capsys, "check", "gated")
    assert code == cli.EXIT_UNSUPPORTED == 3
    assert "NOT supported: 2 unsupported op(s)" in out
    assert re.search(r"Sigmoid\s+1\s+UNSUPPORTED: not positively homogeneous", out)
    assert "at 1" in out and "at 4" in out  # where they sit
    assert re.search(r"Linear\s+1\s+supported", out)


@pytest.mark.parametrize("kind", ["mass", "scores", "sparsity"])
def test_plot_model_pictures(capsys: pytest.CaptureFixture[str], tiny_model: list[str], tmp_path,
                             kind: str) -> None:
    out_file = tmp_path / f"{kind}.png"
    code, out, _ = run(capsys, "plot", kind, "tiny", "--out", str(out_file))
    assert code == 0 and out.strip() == f"wrote {out_file}"
    assert out_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(capsys: pytest.CaptureFixture[str], tiny_model: list[str],
                                 tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without matplotlib: exit 2 with the install command, before the model is built."""
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    for argv in (["mass", "tiny"], ["zoo", str(tmp_path / "zoo.csv")]):
        code, _, err = run(capsys, "plot", *argv, "--out", str(tmp_path / "x.png"))
        assert_usage_error(code, err, "matplotlib", 'pip install "fxpath[plot]"')
    assert tiny_model == []  # refused before building the model
    from fxpath.tools import plot

    with pytest.raises(fxpath.FxPathError, match=r"fxpath\[plot\]"):
        plot.plot_sparsity({"a": 0.5}, 0.5, tmp_path / "s.png", "toy")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "s.png").exists()


def test_plot_refuses_other_suffixes(capsys: pytest.CaptureFixture[str], tiny_model: list[str],
                                     tmp_path) -> None:
    """Refused while parsing, before the model is built (issue 21)."""
    code, _, err = run(capsys, "plot", "mass", "tiny", "--out", str(tmp_path / "mass.jpg"))
    assert_usage_error(code, err, "argument --out: the picture is a PNG: give FILE.png, got",
                       "usage: fxpath plot")
    assert tiny_model == []


def test_zoo_list_and_status(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    code, out, _ = run(capsys, "zoo", "--source", "torchvision", "--filter", "resnet*", "vgg1*",
                       "--list")
    assert code == 0
    assert out.split() == ["torchvision:resnet18", "torchvision:vgg11", "torchvision:vgg11_bn"]
    code, out, _ = run(capsys, "zoo", "--source", "torchvision", "--filter", "resnet18",
                       "--all", "--mode", "status", "--jobs", "0", "--no-progress",
                       "--out", str(tmp_path / "z"))
    assert code == 0 and "1 supported" in out
    rows = (tmp_path / "z.csv").read_text()
    assert "\nresnet18,torchvision,resnet,resnet#,11689512,3x224x224,supported," in rows
    assert "commit=" in rows and str(tmp_path) not in rows.replace(str(tmp_path / "z"), "")
    code, _, err = run(capsys, "zoo", "--shard", "4/4")
    assert_usage_error(code, err, "the index must be in [0, 4)")


# -- help --------------------------------------------------------------------------------------

def test_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for text in ("norm", "scores", "prune", "torchvision:NAME", "timm:NAME", "examples:",
                 "fxpath norm resnet18", "exit codes:", "internal error", "usage error"):
        assert text in out


@pytest.mark.parametrize("command", ["norm", "scores", "prune", "metric", "check", "zoo",
                                     "plot"])
def test_subcommand_help_has_examples_and_defaults(capsys: pytest.CaptureFixture[str],
                                                   command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "examples:" in out and f"fxpath {command} " in out and "exit codes:" in out
    sub = next(a for a in arguments.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert "(default:" in (action.help or ""), action.option_strings
            assert action.option_strings[0] in out


def test_docs_are_generated_from_the_parser() -> None:
    """docs/cli.md is what `cli_docs.render` writes, and it names every flag of every command."""
    from pathlib import Path

    text = cli_docs.render()
    docs = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    assert docs.read_text() == text, "docs/cli.md is stale: python -m fxpath.tools.cli_docs"
    sub = next(a for a in arguments.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        assert f"### `fxpath {name}`" in text
        for action in parser._actions:
            for option in action.option_strings:
                assert f"`{option}" in text, (name, option)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"fxpath {fxpath.__version__}"


# -- internal errors ---------------------------------------------------------------------------

def test_internal_error_is_exit_1_with_traceback(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 tiny_model: list[str]) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli, "compile_program", broken)
    code, out, err = run(capsys, "norm", "tiny")
    assert code == cli.EXIT_INTERNAL == 1
    assert err.startswith("fxpath: internal error, please report: RuntimeError: kaboom\n")
    assert "Traceback" in err and "kaboom" in err.splitlines()[-1]
    assert out == ""


def test_interrupt_and_out_of_memory(capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch,
                                     tiny_model: list[str]) -> None:
    def raise_(exc: BaseException) -> object:
        def f(*args: object, **kwargs: object) -> None:
            raise exc
        return f

    monkeypatch.setattr(cli, "compile_program", raise_(KeyboardInterrupt()))
    code, _, err = run(capsys, "scores", "tiny")
    assert code == 130 and err == "fxpath: interrupted\n"
    monkeypatch.setattr(cli, "compile_program", raise_(MemoryError()))
    code, _, err = run(capsys, "scores", "tiny", "--size", "3", "9", "9")
    assert_usage_error(code, err, "fxpath: out of memory for tiny at input shape (3, 9, 9)")


def test_closed_pipe_is_quiet(capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch, tiny_model: list[str]) -> None:
    def closed(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(cli._COMMANDS, "scores", closed)
    code, _, err = run(capsys, "scores", "tiny")
    assert code == 0 and err == ""


# -- one real model ----------------------------------------------------------------------------

def test_real_torchvision_resnet18(capsys: pytest.CaptureFixture[str]) -> None:
    """Seed 0: l^1 path-norm 6.282851162e+30, computed in float64 by default; --float32 prints
    the six digits float32 carries (its seventh depends on the CPU's kernels: 6.282850349e+30
    with AVX-512 convolutions, 6.28284914e+30 with AVX2 ones)."""
    code, out64, err = run(capsys, "norm", "torchvision:resnet18", "--q", "1")
    assert code == 0 and "torch.float64" in err
    assert out64 == ("l^1 path-norm of torchvision:resnet18 at (3, 224, 224): 6.282851162e+30 "
                     "(log10 30.7981567716)\n")
    code, out32, err = run(capsys, "norm", "torchvision:resnet18", "--q", "1", "--float32")
    assert code == 0 and "torch.float32" in err
    assert out32 == ("l^1 path-norm of torchvision:resnet18 at (3, 224, 224): 6.28285e+30 "
                     "(log10 30.798157)\n")


def _readme_section() -> str:
    """The README's "Install, test, run" section."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return text.split("## Install, test, run", 1)[1].split("\n## ", 1)[0]


def _readme_quickstart() -> tuple[list[str], str, str]:
    """The README's quick start: its fxpath commands, the path-norm lines and the prune output
    it shows."""
    section = _readme_section()
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [c.strip() for line in block.splitlines() if line.startswith("fxpath ")
                for c in line.split("#", 1)[0].split("&&")]
    norms = section.split("The second command prints", 1)[1].split("```\n", 2)[1]
    pruned = section.split("The third command prunes", 1)[1].split("```\n", 2)[1]
    return commands, norms, pruned


def _readme_transcripts() -> list[tuple[str, str]]:
    """The ``$ fxpath ...`` transcripts of the README's install section: (command, stdout)."""
    pairs = []
    for block in re.findall(r"```\n(\$ fxpath .*?)```", _readme_section(), re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            pairs.append((command, output))
    return pairs


def test_readme_transcripts_are_found() -> None:
    """The README shows torchvision's ResNet-18 in float64 and float32 (checked below)."""
    assert [c for c, _ in _readme_transcripts()] == [
        "fxpath norm torchvision:resnet18", "fxpath norm torchvision:resnet18 --float32"]


@pytest.mark.slow
def test_readme_quickstart_commands(capsys: pytest.CaptureFixture[str], tmp_path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's three commands after the install, run as written in an empty directory:
    the printed path-norms and prune report are the README's, the files are written and
    `fxpath norm` reads the exported program back; then the README's torchvision transcripts."""
    import shlex

    commands, norms, pruned = _readme_quickstart()
    assert [c.split()[:2] for c in commands] == [["fxpath", "norm"], ["fxpath", "scores"],
                                                ["fxpath", "prune"]]
    monkeypatch.chdir(tmp_path)
    outs = []
    for command in commands:
        code, out, _ = run(capsys, *shlex.split(command)[1:])
        assert code == 0, command
        outs.append(out)
    assert outs[0] == norms
    assert re.search(r"\(top 10 of 42\):\n(    1\.000000  \S+\n){5}    0\.000000", outs[1])
    assert outs[2] == pruned
    for line in pruned.splitlines()[-2:]:  # the files it says it saved
        assert (tmp_path / line.split()[-1]).stat().st_size > 10**7
    code, out, _ = run(capsys, "norm", "resnet18_pruned.pt2")
    assert code == 0 and out == norms.replace("of resnet18 at", "of resnet18_pruned.pt2 at")
    for command, shown in _readme_transcripts():
        code, out, _ = run(capsys, *shlex.split(command)[1:])
        assert code == 0 and out == shown, command


#: settings that make torch run other CPU kernels, as another x86_64 CPU would: oneDNN's
#: convolutions held to AVX2 (MKL too) reproduce the AMD EPYC's float32 6.28284914e+30 of issue
#: 21; held to SSE4.1 on one thread, timm's ResNet-18 gives 188834640 in float32
OTHER_KERNELS = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
                 "sse41-1-thread": {"ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"}}


@pytest.mark.slow
@pytest.mark.parametrize("kernels", sorted(OTHER_KERNELS))
def test_readme_outputs_hold_on_other_kernels(tmp_path, kernels: str) -> None:
    """The README's path-norm outputs, printed by a fresh process whose torch runs other
    kernels: the same text (float64 digits, and float32's six)."""
    import os
    import shlex
    import subprocess
    import sys

    commands, norms, _ = _readme_quickstart()
    env = {**os.environ, **OTHER_KERNELS[kernels]}
    for command, shown in [(commands[0], norms), *_readme_transcripts()]:
        done = subprocess.run([sys.executable, "-m", "fxpath.tools.cli",
                               *shlex.split(command)[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        assert done.stdout == shown, (kernels, command)


# -- quantize ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["quantize", "resnet18", "--scheme", "int9"], "argument --scheme: invalid choice: 'int9'"),
    (["quantize", "resnet18", "--rounding", "up"], "argument --rounding: invalid choice: 'up'"),
    (["quantize", "resnet18", "--budget", "0"], "budget must be a finite number > 0, got '0'"),
    (["quantize", "resnet18", "--budget", "inf"], "budget must be a finite number > 0"),
    (["quantize", "resnet18", "--budget", "x"], "budget must be a number, got 'x'"),
    (["quantize", "resnet18", "--top", "-1"], "the value must be an integer >= 0, got '-1'"),
])
def test_quantize_rejected_at_parse_time(capsys: pytest.CaptureFixture[str],
                                         tiny_model: list[str], argv: list[str],
                                         message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert_usage_error(code, err, message, "usage: fxpath quantize")
    assert out == "" and tiny_model == []


def test_quantize_prints_the_certificate(capsys: pytest.CaptureFixture[str],
                                         tiny_model: list[str], tmp_path) -> None:
    out_file = tmp_path / "q.pt"
    code, out, err = run(capsys, "quantize", "tiny", "--scheme", "int4", "--rounding",
                         "toward_zero", "--per-channel", "--float64", "--out", str(out_file))
    assert code == 0 and "torch.float64" in err
    lines = out.splitlines()
    assert lines[0] == ("tiny at (3, 8, 8): quantized 2 conv/linear layers (int4, per channel, "
                        "toward_zero), 4.000 bits per weight")
    torch.manual_seed(0)
    model = tiny()
    q, report = fxpath.quantize(model, TINY_SHAPE, "int4", per_channel=True,
                                rounding="toward_zero")
    metric = report.metric
    assert metric.exact
    assert lines[1] == (f"size: {report.size_bytes:,} bytes, against {report.float32_bytes:,} "
                        f"in float32 ({report.compression:.2f}x smaller)")
    assert 0 < report.size_bytes < report.float32_bytes
    lines = lines[:1] + lines[2:]
    assert lines[1] == (f"certified l^1 path-metric to the model: {metric.value:.10g} "
                        f"(log10 {metric.log10:.10f}, relative {metric.relative:.6g}, exact)")
    assert lines[2].startswith("layers with the largest share of the metric (top 2 of 2;")
    shares = [float(r.split()[0]) for r in lines[3:5]]
    assert shares == sorted(shares, reverse=True)
    assert {r.split()[-1] for r in lines[3:5]} == {"0", "4"}
    assert lines[5] == f"saved the quantized state_dict to {out_file}"
    saved = torch.load(out_file)
    for name, value in q.state_dict().items():
        assert torch.equal(saved[name], value)


def test_quantize_budget_and_library_errors(capsys: pytest.CaptureFixture[str],
                                            tiny_model: list[str]) -> None:
    code, out, _ = run(capsys, "quantize", "tiny", "--budget", "0.5", "--top", "0")
    assert code == 0
    assert "(budget 0.5, integer bits, per tensor, nearest)" in out.splitlines()[0]
    margin = float(re.search(r"met with margin (\S+) after", out).group(1))  # type: ignore
    assert margin >= 0 and "layers with the largest share" not in out
    code, _, err = run(capsys, "quantize", "tiny", "--scheme", "float16", "--budget", "0.5")
    assert_usage_error(code, err, "fxpath: a budget chooses integer bit widths")
    code, _, err = run(capsys, "quantize", "tiny", "--budget", "1e-12")
    assert_usage_error(code, err, "fxpath: budget 1e-12 cannot be met")
