"""``fxpath prune --structured``: channel pruning from the command line.

`fxpath.prune_channels` removes whole channels and returns a physically smaller model with its
exact certificate; this module times the dense and the small model side by side (`latency`),
turns the report into the lines the command prints (`text`) and its ``--json`` result
(`result`), and writes ``--out`` and ``--export`` (`save`). The small model has other layer
shapes than MODEL's architecture, so a state dict alone cannot rebuild it: ``--out FILE.pt``
saves the whole module (``torch.save``), ``--out FILE.safetensors`` its weights only, whose
architecture comes from ``--export FILE.pt2``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from fxpath.errors import FxPathError
from fxpath.tools import commands

__all__ = ["FORWARDS", "Latency", "latency", "most_cut", "output_channels", "result", "save",
           "saved_lines", "text"]

#: timed forwards of each model (after two warm-up forwards each)
FORWARDS = 9
_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class Latency:
    """Batch-1 CPU forwards of the dense and the small model, timed in one run.

    Attributes:
        dense: median seconds of a forward of the dense model.
        small: median seconds of a forward of the small model.
        forwards: timed forwards of each model; the two alternate, the first one switching
            each round, so that both see the same state of the machine.
        threads: torch's intra-op threads while timing.
    """

    dense: float
    small: float
    forwards: int
    threads: int

    @property
    def ratio(self) -> float:
        """``small / dense``: the small model's share of the dense model's time."""
        return self.small / self.dense if self.dense > 0 else float("nan")

    @property
    def speedup(self) -> float:
        """``dense / small``: how many times faster the small model runs."""
        return self.dense / self.small if self.small > 0 else float("nan")


def latency(dense: nn.Module, small: nn.Module, shape: Sequence[int],
            forwards: int = FORWARDS, threads: int = 1) -> Latency:
    """Median seconds of a batch-1 forward of ``dense`` and of ``small`` (in their own dtype,
    on the CPU, under ``torch.inference_mode``, with ``threads`` intra-op threads), paired:
    the two alternate forward by forward after two warm-up forwards each.

    One thread by default: a batch of one is too small to share out, and on a machine whose
    cores are busy, torch's threads wait for each other far longer than a forward takes (a
    batch-1 ResNet-18 at 3x32x32 timed 25 ms on one thread and 1.1 s on two, 2 cores
    shared by other jobs)."""
    ref = next((p for p in dense.parameters() if p.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0)).to(dtype)
    times: dict[int, list[float]] = {0: [], 1: []}
    models = (dense, small)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for model in models * 2:
                model(x)
            for i in range(forwards):
                for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                    t0 = time.perf_counter()
                    models[k](x)
                    times[k].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return Latency(statistics.median(times[0]), statistics.median(times[1]), forwards, threads)


def output_channels(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv/linear layer of ``model``, by module path."""
    return {name: int(m.out_features if isinstance(m, nn.Linear) else m.out_channels)
            for name, m in model.named_modules() if isinstance(m, _LAYERS)}


def most_cut(report: Any, n: int = 5) -> list[tuple[str, int, int]]:
    """``(layer, dense channels, small channels)`` of the ``n`` layers that lost the most
    output channels (by count; ties by name)."""
    rows = sorted(report.channels.items(), key=lambda kv: (kv[1][1] - kv[1][0], kv[0]))
    return [(name, dense, small) for name, (dense, small) in rows[:n]]


def _ratio(pair: Sequence[int]) -> float:
    return pair[1] / pair[0] if pair[0] else float("nan")


def result(name: str, shape: Sequence[int], report: Any, timing: Latency, total: int,
           dtype: torch.dtype, saved: dict[str, str]) -> dict[str, Any]:
    """``fxpath prune --structured --json``: every field of the report (`commands.as_json`),
    the ratios, the latency, the channel counts, the 5 layers cut most and the files written."""
    removed = sum(len(r) for r in report.removed.values())
    return {"model": name, "input_shape": list(shape), "dtype": str(dtype), "structured": True,
            **commands.as_json(report),
            "ratios": {"params": _ratio(report.params), "macs": _ratio(report.macs),
                       "latency": commands.as_json(timing.ratio)},
            "latency": {"batch": 1, "device": "cpu", **commands.as_json(timing)},
            "channels_removed": removed, "channels_total": total,
            "most_cut": [{"layer": n, "dense": d, "small": s} for n, d, s in most_cut(report)],
            **saved}


def _table(report: Any, timing: Latency) -> list[str]:
    rows = [("parameters", f"{report.params[0]:,}", f"{report.params[1]:,}",
             f"{_ratio(report.params):.3f}"),
            ("MACs", f"{report.macs[0]:,}", f"{report.macs[1]:,}", f"{_ratio(report.macs):.3f}"),
            ("latency", f"{timing.dense * 1e3:.2f} ms", f"{timing.small * 1e3:.2f} ms",
             f"{timing.ratio:.3f}")]
    head = ("", "dense", "small", "small/dense")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(4)]
    return ["  " + "  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in
                                                        zip(r[1:], widths[1:]))]).rstrip()
            for r in (head, *rows)]


def text(name: str, shape: Sequence[int], report: Any, timing: Latency, total: int,
         saved: dict[str, str]) -> list[str]:
    """The lines ``fxpath prune --structured`` prints."""
    removed = sum(len(r) for r in report.removed.values())
    how = report.scope + (f", {report.steps} steps" if report.steps > 1 else "") + (
        f", multiples of {report.round_to}" if report.round_to else "")
    share = removed / total if total else 0.0
    lines = [f"{name} at {tuple(shape)}: removed {removed:,} of the {total:,} output channels "
             f"of the conv/linear layers ({share:.1%}) by {report.criterion} ({how}), "
             f"{len(report.groups)} coupled group(s)",
             *_table(report, timing),
             f"latency: one sample on {timing.threads} CPU thread{_s(timing.threads)}, median of "
             f"{timing.forwards} forwards of each model, alternating: {timing.speedup:.2f}x "
             f"faster"]
    top = most_cut(report)
    if top:
        lines.append(f"layers cut most (top {len(top)} of the {len(report.channels)} cut):")
        lines += [f"  {d - s:6,} of {d:6,}  {n}" for n, d, s in top]
    lines.append("certified l^1 path-metric to the dense model: "
                 f"{commands.metric_text(report.metric, torch.float64)}")
    lines.append(commands.bound_line(report.metric, "small"))
    if report.spared:
        keep = (f"its {report.round_to} best channels" if (report.round_to or 1) > 1
                else "its best channel")
        lines.append(f"spared (the global ranking would have emptied them; each kept {keep}): "
                     f"{', '.join(report.spared)}")
    return lines + saved_lines(saved)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def saved_lines(saved: dict[str, str]) -> list[str]:
    """What `save` wrote, in words (its ``saved`` dict): how to load each file back."""
    lines = []
    if saved.get("checkpoint_format") == "module":
        lines.append(f"saved the small model (the whole module, torch.save) to "
                     f"{saved['checkpoint']}: torch.load(FILE, weights_only=False) returns it")
    elif "checkpoint" in saved:
        where = (f"load them into torch.export.load({saved['exported']!r}).module()"
                 if "exported" in saved else "its architecture is not saved: add --export "
                 "FILE.pt2, or use --out FILE.pt")
        lines.append(f"saved the small model's weights (state dict) to {saved['checkpoint']}; "
                     f"they fit the small model, not MODEL's architecture: {where}")
    if "exported" in saved:
        lines.append(f"saved the small model as an ExportedProgram ({saved['exported_batch']}) "
                     f"to {saved['exported']}")
    return lines


def save(small: nn.Module, shape: Sequence[int], out: str | None,
         export: str | None) -> dict[str, str]:
    """``--out`` and ``--export`` of the small model: ``FILE.pt`` the whole module
    (``torch.save``), ``FILE.safetensors`` its state dict; ``FILE.pt2`` its ExportedProgram
    (`commands.export_program`)."""
    saved: dict[str, str] = {}
    if out:
        if out.endswith(".safetensors"):
            commands.save_tensors(small.state_dict(), out)
            saved["checkpoint_format"] = "state_dict"
        else:
            try:
                torch.save(small, out)
            except OSError as exc:
                raise FxPathError(f"cannot write {out!r}: {exc}") from exc
            saved["checkpoint_format"] = "module"
        saved["checkpoint"] = out
    if export:
        saved["exported_batch"] = commands.export_program(small, shape, export)
        saved["exported"] = export
    return saved
