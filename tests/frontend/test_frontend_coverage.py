"""Every op of the registry is built by a rule of each front end, or exempted with a reason.

Each rule of a front end's table declares the IR ops it can emit (`fxpath.frontend.lower.rule`).
An op registered in `fxpath.ops` without a rule in each front end (nor an entry below) fails
here; so does a rule that emits an op it does not declare.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fxpath.frontend.export import trace_export
from fxpath.frontend.lower import aten_rules, fx_rules
from fxpath.frontend.lower.aten_reader import AtenLowering
from fxpath.frontend.lower.fx import has_rule
from fxpath.frontend.lower.fx_reader import FxLowering
from fxpath.frontend.lower.rule import Rule
from fxpath.frontend.tracer import trace
from fxpath.ir.graph import Graph
from fxpath.ops import REGISTRY

#: the rule tables of the front ends
TABLES: dict[str, Mapping[Any, Rule]] = {"fx": fx_rules.RULES, "export": aten_rules.RULES}

#: registered ops that no rule builds, and why
EXEMPT: dict[str, str] = {
    "input": "the walk emits one per tensor input of the model, not a rule",
    "output": "the walk emits it for the model's outputs (core.Lowering.output), not a rule",
    "unsupported": "the walk emits it for every refused call (core.Lowering.unsupported)",
    "frame_conv": "made by the frame_convs pass from a zero-padded conv",
    "affine": "made by fold_batchnorm (a BatchNorm it cannot fold) and rewrite_activations",
    "pool": "made by the lower_pooling pass from maxpool, avgpool, adaptive pools and mean",
}


def _built(table: Mapping[Any, Rule]) -> set[str]:
    return {op for rule in table.values() for op in rule.builds}


@pytest.mark.parametrize("front_end", sorted(TABLES))
def test_every_registered_op_has_a_rule_or_an_exemption(front_end: str) -> None:
    missing = sorted(set(REGISTRY) - _built(TABLES[front_end]) - set(EXEMPT))
    assert missing == [], (f"ops without a rule in the {front_end} front end: {missing}; add "
                           "a rule (fx_rules / aten_rules) or an exemption with its reason")


@pytest.mark.parametrize("front_end", sorted(TABLES))
def test_every_rule_declares_registered_ops(front_end: str) -> None:
    table = TABLES[front_end]
    assert all(isinstance(rule, Rule) for rule in table.values())
    unknown = sorted(_built(table) - set(REGISTRY))
    assert unknown == []


def test_every_exemption_is_needed() -> None:
    """An exempt op exists and no rule builds it (else its exemption is stale)."""
    assert set(EXEMPT) <= set(REGISTRY)
    built = set().union(*(_built(t) for t in TABLES.values()))
    assert sorted(set(EXEMPT) & built) == []


# -- the declarations are what the rules emit ---------------------------------------------------
class _ManyOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.prelu = nn.PReLU(8)
        self.gamma = nn.Parameter(torch.ones(8))
        self.fc = nn.Linear(8 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.prelu(F.leaky_relu(x, 0.1))
        x = torch.clamp(F.hardtanh(F.relu6(x), -2.0, 2.0), min=0.0)
        a, b = torch.chunk(x, 2, dim=1)
        x = torch.cat([b, a], dim=1) * 0.5 - x / 2.0 + (-x)
        x = x * self.gamma.view(1, -1, 1, 1)
        x = F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)
        x = F.pad(F.interpolate(x, scale_factor=2, mode="bilinear"), (1, 1, 1, 1))
        x = F.adaptive_avg_pool2d(x, 2) + F.adaptive_max_pool2d(x, 2)
        x = F.dropout(x.permute(0, 1, 3, 2), training=False) + x.mean(dim=1, keepdim=True)
        return self.fc(torch.flatten(x, 1))


def _checked(table: Mapping[Any, Rule], wrong: list[str]) -> dict[Any, Rule]:
    """``table`` with each rule noting in ``wrong`` the ops it emits but does not declare."""
    def check(rule: Rule) -> Rule:
        def run(lw: Any, n: Any, *args: Any, **kwargs: Any) -> None:
            mark = len(lw.nodes)
            rule(lw, n, *args, **kwargs)
            extra = {m.op for m in lw.nodes[mark:]} - rule.builds
            if extra:
                wrong.append(f"{rule.fn.__qualname__} on {n.name} emitted {sorted(extra)}, "
                             f"declares {sorted(rule.builds)}")
        return Rule(run, rule.builds, rule.pieces)
    return {target: check(rule) for target, rule in table.items()}


def _fx(model: nn.Module, shape: tuple[int, ...], table: Mapping[Any, Rule]) -> Graph:
    gm = trace(model, [shape], has_rule=has_rule)
    return FxLowering(gm, table).run(list(gm.graph.nodes))


def _aten(program: Any, table: Mapping[Any, Rule]) -> Graph:
    lw = AtenLowering(program, table)
    lw.find_prelu()
    return lw.run(list(lw.graph.nodes))


def test_rules_emit_only_the_ops_they_declare() -> None:
    model, shape, wrong = _ManyOps().eval(), (3, 8, 8), []
    program = trace_export(model, shape)
    graphs: dict[str, Callable[[], Graph]] = {
        "fx": lambda: _fx(model, shape, _checked(fx_rules.RULES, wrong)),
        "export": lambda: _aten(program, _checked(aten_rules.RULES, wrong)),
        "decomposed": lambda: _aten(program.run_decompositions(),
                                    _checked(aten_rules.RULES, wrong))}
    for front_end, lower in graphs.items():
        graph = lower()
        refused = [n.attrs["reason"] for n in graph if n.op == "unsupported"]
        assert refused == [], (front_end, refused)
        assert {"linear", "relu", "concat", "scale", "maxpool", "resample"} <= {
            n.op for n in graph}, front_end
    assert wrong == []
