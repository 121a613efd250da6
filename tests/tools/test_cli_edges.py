"""Rough edges of the ``fxpath`` command line (issue 21, section 5): empty and damaged files,
torch's logs and graph dumps kept off stderr, a factory module that does not import, a zoo
selection that matches nothing, file suffixes and ``--q`` refused while parsing, ``--json`` on
every command, and zoo reasons cut at a word.

The commands run on a tiny conv net (``build_model`` is monkeypatched) or on tiny files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import warnings

import pytest
import torch
import torch.nn as nn
from test_cli import run  # the one CLI runner of the tests

from fxpath.apps.quantize.report import QuantizeReport
from fxpath.tools import arguments, cli, commands
from fxpath.tools.zoo import command as zoo_command
from fxpath.tools.zoo.report import write_markdown
from fxpath.tools.zoo.result import ZooResult

TINY_SHAPE = (3, 8, 8)


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2)).eval()


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``tiny`` builds the tiny net, other MODELs the real builder; records every build."""
    built: list[str] = []
    real = cli.build_model

    def build(spec: str) -> tuple[object, tuple[int, ...] | None]:
        built.append(spec)
        return (tiny(), TINY_SHAPE) if spec == "tiny" else real(spec)

    monkeypatch.setattr(cli, "build_model", build)
    return built


def assert_clean_usage_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2 with one line ``fxpath: ...`` on stderr: no traceback, no log, no graph dump."""
    assert code == cli.EXIT_USAGE, err
    assert err.startswith("fxpath: ") and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# -- empty and damaged files -------------------------------------------------------------------

def test_error_text_of_an_exception_without_message() -> None:
    assert commands.error_text(EOFError()) == "EOFError"
    assert commands.error_text(RuntimeError("first\nsecond")) == "RuntimeError: first"
    assert commands.error_text(ValueError("\n")) == "ValueError"


def test_check_reports_an_error_without_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import fxpath.api
    from fxpath.errors import FxPathError
    from fxpath.tools.support import support_report

    def silent(*args: object, **kwargs: object) -> None:
        raise FxPathError()

    monkeypatch.setattr(fxpath.api, "compile", silent)
    report = support_report(tiny(), TINY_SHAPE)
    assert not report.supported and report.error == "FxPathError"


def test_empty_checkpoint_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                           tiny_model: list[str], tmp_path) -> None:
    """A 0-byte file as --checkpoint or as metric's OTHER: exit 2, "empty", never exit 1."""
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    code, _, err = run(capsys, "norm", "tiny", "--checkpoint", str(empty))
    assert_clean_usage_error(code, err, f"{str(empty)!r} is empty (0 bytes): not a checkpoint")
    code, _, err = run(capsys, "metric", "tiny", str(empty))
    assert_clean_usage_error(code, err, "is empty (0 bytes): not a checkpoint")


def test_truncated_checkpoint_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                               tiny_model: list[str], tmp_path) -> None:
    whole = tmp_path / "whole.pt"
    torch.save(tiny().state_dict(), whole)
    for n in (1, 64, whole.stat().st_size // 2):
        cut = tmp_path / f"cut{n}.pt"
        cut.write_bytes(whole.read_bytes()[:n])
        code, _, err = run(capsys, "metric", "tiny", str(cut))
        assert_clean_usage_error(code, err, f"cannot read the checkpoint {str(cut)!r}: ")


def test_empty_and_damaged_pt2(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    """One line, without the traceback torch logs when ``torch.export.load`` fails."""
    empty, junk = tmp_path / "empty.pt2", tmp_path / "junk.pt2"
    empty.write_bytes(b"")
    junk.write_text("not a program")
    code, out, err = run(capsys, "norm", str(empty))
    assert_clean_usage_error(code, err, "is empty (0 bytes): not an ExportedProgram")
    code, out, err = run(capsys, "norm", str(junk))
    assert_clean_usage_error(code, err, f"cannot load the ExportedProgram {str(junk)!r}")
    assert out == ""


# -- library logs ------------------------------------------------------------------------------

DATA_DEPENDENT = """
import torch.nn as nn


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x).relu()
        return self.fc(x)


def make():
    return Branchy()
"""


def test_data_dependent_branch_prints_only_the_trace_error(
        capsys: pytest.CaptureFixture[str], tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.export, tried after torch.fx, prints two FX graphs and torch logs a warning:
    none of it reaches stderr; the logger levels are restored."""
    (tmp_path / "fxpath_cli_branchy.py").write_text(DATA_DEPENDENT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TORCH_LOGS", raising=False)
    level = logging.getLogger("torch").level
    code, out, err = run(capsys, "norm", "fxpath_cli_branchy:make", "--size", "4")
    assert_clean_usage_error(code, err, "torch.fx could not trace Branchy", "x.sum() > 0")
    assert "def forward" not in err and out == ""
    code, out, err = run(capsys, "check", "fxpath_cli_branchy:make", "--size", "4")
    assert code == cli.EXIT_UNSUPPORTED and "NOT supported" in out
    assert "def forward" not in out + err and err.count("\n") == 1  # the timing line
    assert logging.getLogger("torch").level == level


def test_warnings_pass_and_a_bug_keeps_the_library_output(
        capsys: pytest.CaptureFixture[str], tiny_model: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_compile = cli.compile_program

    def chatty(*args: object, **kwargs: object) -> object:
        print("torch chatter", file=sys.stderr)
        warnings.warn("a warning the user should see", UserWarning, stacklevel=1)
        return real_compile(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "compile_program", chatty)
    code, _, err = run(capsys, "norm", "tiny")
    assert code == 0 and "a warning the user should see" in err and "torch chatter" not in err

    def broken(*args: object, **kwargs: object) -> None:
        print("torch chatter", file=sys.stderr)
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli, "compile_program", broken)
    code, _, err = run(capsys, "norm", "tiny")
    assert code == cli.EXIT_INTERNAL and "torch chatter" in err and "kaboom" in err


def test_torch_logs_asked_for_are_kept(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TORCH_LOGS", "export")
    with commands.quiet_libraries():
        print("asked for", file=sys.stderr)
    assert "asked for" in capsys.readouterr().err


# -- MODEL module.path:factory whose import fails ----------------------------------------------

def test_factory_module_that_cannot_be_imported(capsys: pytest.CaptureFixture[str], tmp_path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "norm", "fxpath_no_such_pkg.nets:make_net")
    assert code == cli.EXIT_USAGE and out == ""
    assert "unknown model prefix" not in err
    assert ("cannot import 'fxpath_no_such_pkg.nets' for MODEL 'fxpath_no_such_pkg.nets:make_net'"
            " (module.path:factory): ModuleNotFoundError: No module named 'fxpath_no_such_pkg'"
            in err)
    (tmp_path / "fxpath_cli_broken_nets.py").write_text("import fxpath_no_such_dependency\n")
    code, _, err = run(capsys, "norm", "fxpath_cli_broken_nets:make_net", "--size", "3", "8", "8")
    assert_clean_usage_error(code, err, "cannot import 'fxpath_cli_broken_nets'",
                             "No module named 'fxpath_no_such_dependency'")


def test_unknown_prefix_says_why_it_is_no_module(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "norm", "foo:bar")
    assert code == cli.EXIT_USAGE
    assert "unknown model prefix 'foo:' in 'foo:bar'" in err
    assert "No module named 'foo'" in err


# -- zoo ---------------------------------------------------------------------------------------

def test_zoo_filter_that_matches_nothing(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    stem = tmp_path / "z"
    code, out, err = run(capsys, "zoo", "--filter", "nosuchmodel*", "--out", str(stem),
                         "--no-progress")
    assert_clean_usage_error(code, err, "no model matches --source all, --filter 'nosuchmodel*'")
    assert out == "" and not (tmp_path / "z.csv").exists()
    assert zoo_command.main(["--filter", "nosuchmodel*", "--out", str(stem)]) == 2
    assert capsys.readouterr().err.startswith("fxpath zoo: no model matches")


def test_zoo_json(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    code, out, _ = run(capsys, "zoo", "--source", "torchvision", "--filter", "resnet1*",
                       "--list", "--json")
    assert code == 0 and json.loads(out) == ["torchvision:resnet18"]
    code, out, _ = run(capsys, "zoo", "--source", "torchvision", "--filter", "resnet18",
                       "--mode", "status", "--jobs", "0", "--no-progress", "--json",
                       "--out", str(tmp_path / "z"))
    result = json.loads(out)
    assert code == 0 and result["coverage"]["torchvision"]["supported"] == 1
    assert result["written"] == [str(tmp_path / "z.csv"), str(tmp_path / "z.md")]


def test_zoo_markdown_cuts_reasons_at_a_word(tmp_path) -> None:
    reason = ("scaled_dot_product_attention: product of two activations (e.g. a "
              "squeeze-excitation gate or attention)")
    rows = [ZooResult("vit", "timm", "vision_transformer", status="refused", reason=reason),
            ZooResult("x", "timm", "x", status="gap", reason="y" * 120)]
    write_markdown(rows, tmp_path / "z.md", {"commit": "abc"})
    text = (tmp_path / "z.md").read_text()
    assert "gate o" not in text
    assert "squeeze-excitation gate… |" in text
    assert f"| {'y' * 90}… |" in text  # one word longer than a cell: cut, with the ellipsis


# -- refused while parsing ---------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["scores", "tiny", "--save", "s.npy"], "argument --save: the file is a state dict"),
    (["scores", "tiny", "--save", "scores"], "give FILE.pt or FILE.safetensors, got 'scores'"),
    (["prune", "tiny", "--out", "p.npz"], "argument --out: the file is a state dict"),
    (["prune", "tiny", "--export", "p.pt"], "argument --export: the program is an "
                                            "ExportedProgram"),
    (["quantize", "tiny", "--out", "q.bin"], "give FILE.pt or FILE.safetensors, got 'q.bin'"),
    (["plot", "mass", "tiny", "--out", "m.jpg"], "the picture is a PNG: give FILE.png"),
    (["plot", "zoo", "zoo.csv", "--out", "zoo.svg"], "the picture is a PNG"),
    (["norm", "tiny", "--q", "1e6"], "argument --q: q=1e+06 is above 1000"),
    (["metric", "tiny", "o.pt", "--float32", "--float64"], "not allowed with argument"),
])
def test_refused_before_the_model_is_built(capsys: pytest.CaptureFixture[str],
                                           tiny_model: list[str], argv: list[str],
                                           message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == cli.EXIT_USAGE and out == ""
    assert f"usage: fxpath {argv[0]}" in err and message in err, err
    assert tiny_model == []  # build_model never ran


def test_q_bound_is_the_library_one() -> None:
    from fxpath.validate import MAX_Q

    assert arguments.exponent(str(MAX_Q)) == MAX_Q
    with pytest.raises(argparse.ArgumentTypeError, match="is above"):
        arguments.exponent(str(MAX_Q * 2))


# -- --json on every command -------------------------------------------------------------------

def test_every_command_has_json() -> None:
    sub = next(a for a in arguments.build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    missing = [name for name, p in sub.choices.items()
               if not any("--json" in a.option_strings for a in p._actions)]
    assert missing == []


def test_quantize_json_has_every_report_field(capsys: pytest.CaptureFixture[str],
                                              tiny_model: list[str], tmp_path) -> None:
    out_file = tmp_path / "q.safetensors"
    code, out, _ = run(capsys, "quantize", "tiny", "--scheme", "int4", "--per-channel",
                       "--json", "--out", str(out_file))
    result = json.loads(out)
    assert code == 0 and result["model"] == "tiny" and result["saved"] == str(out_file)
    assert {f.name for f in dataclasses.fields(QuantizeReport)} <= set(result)
    assert result["scheme"] == "int4" and result["metric"]["value"] > 0
    assert {"0", "4"} == set(result["layers"]) and result["layers"]["0"]["bits"] == 4
    assert len(result["layers"]["0"]["scale"]) == 4  # one per output channel
    assert "relative" in result and "exact" in result  # the report's properties too
    assert sorted(commands.load_state(str(out_file))) == sorted(tiny().state_dict())


def test_as_json_takes_new_fields_and_properties() -> None:
    @dataclasses.dataclass(frozen=True)
    class Report:
        bits: int
        scale: torch.Tensor
        ratio: float = float("inf")

        @property
        def double(self) -> int:
            return 2 * self.bits

    assert commands.as_json(Report(3, torch.tensor([0.5, 0.25]))) == {
        "bits": 3, "scale": [0.5, 0.25], "ratio": "inf", "double": 6}
    assert commands.as_json({"x": torch.tensor(2.0), "d": torch.float32}) == {
        "x": 2.0, "d": "torch.float32"}


@pytest.mark.parametrize("kind", ["mass", "sparsity"])
def test_plot_json(capsys: pytest.CaptureFixture[str], tiny_model: list[str], tmp_path,
                   kind: str) -> None:
    picture = tmp_path / f"{kind}.png"
    code, out, _ = run(capsys, "plot", kind, "tiny", "--out", str(picture), "--json")
    result = json.loads(out)
    assert code == 0 and result["picture"] == str(picture) and picture.exists()
    assert result["kind"] == kind and result["input_shape"] == list(TINY_SHAPE)
    if kind == "mass":
        assert {t["name"] for t in result["tensors"]} == {"0.weight", "0.bias", "4.weight",
                                                           "4.bias"}
    else:
        assert set(result["sparsity"]) == {"0.weight", "4.weight"}
        assert result["overall_sparsity"] == pytest.approx(0.6, abs=0.02)
