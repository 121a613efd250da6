"""benchmarks/dense.py: the norms of docs/dense.md's dense table can be reproduced from what
the docs show next to it. The benchmark's models are not the command line's (smp with
``classes=2``, torchvision with ``num_classes=21``): the benchmark records each model's
constructor call, and the docs name those arguments and a command that prints a row's norm."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import dense  # benchmarks/ is on pytest's pythonpath
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "dense.md"


def _prose() -> str:
    """docs/dense.md without its generated table blocks."""
    return re.sub(r"<!-- table: .*?<!-- end table -->", "", DOC.read_text(), flags=re.S)


def test_the_constructor_call_is_what_build_does() -> None:
    for name in dense.DEFAULT_MODELS:
        builder, _, _ = dense.constructor(name)
        assert dense.call(name).startswith(f"{builder}(")
    assert dense.constructor("smp:Unet:resnet34") == (
        "segmentation_models_pytorch.create_model", ("Unet",),
        {"encoder_name": "resnet34", "encoder_weights": None, "classes": 2})
    assert dense.constructor("torchvision:fcn_resnet50")[2] == {
        "weights": None, "weights_backbone": None, "num_classes": 21}
    import segmentation_models_pytorch

    torch.manual_seed(dense.SEED)  # the recorded call, run as written, is build's model
    written = eval(dense.call("smp:Unet:resnet18"),  # our own recorded call
                   {"segmentation_models_pytorch": segmentation_models_pytorch})
    built = dense.build("smp:Unet:resnet18")
    assert written.state_dict().keys() == built.state_dict().keys()
    for key, value in written.state_dict().items():
        assert torch.equal(value, built.state_dict()[key]), key


def test_the_docs_name_the_constructor_arguments() -> None:
    prose = _prose()
    for name in ("smp:Unet:resnet34", "torchvision:fcn_resnet50", "monai:BasicUNet"):
        _, _, kwargs = dense.constructor(name)
        for key, value in kwargs.items():
            if key not in ("encoder_name",):
                assert f"{key}={value!r}" in prose, (name, key)
    assert f"torch.manual_seed({dense.SEED})" in prose
    commands = re.findall(r"python benchmarks/dense\.py[^`\n]*", prose)
    assert commands
    for command in commands:  # every command shown still parses
        dense.parser().parse_args(shlex.split(command)[2:])


def test_the_docs_norm_command_prints_the_tables_norm(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """The ``--norms`` command docs/dense.md shows prints the line shown under it, whose norm
    is the committed table's."""
    shown = re.search(r"^\$ (python benchmarks/dense\.py --norms [^\n]*)\n([^\n]*)\n",
                      _prose(), re.M)
    assert shown, "docs/dense.md shows no --norms command with its output"
    command, output = shown.groups()
    dense.main(shlex.split(command)[2:])
    assert capsys.readouterr().out.strip() == output
    rows = json.loads((ROOT / "benchmarks/results/dense_cpu.json").read_text())["rows"]
    model = shlex.split(command)[shlex.split(command).index("--models") + 1]
    table = next(r["log10_l1"] for r in rows if r["model"] == model)
    assert f"l^1 path-norm (log10) {table:.4f};" in output
