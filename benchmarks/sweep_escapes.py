"""Sweep timm / torchvision models through ``fxpath.compile`` and record how each one ends.

A sweep, not a test. Every model
must either compile or be refused with an fxpath error; a raw Python exception escaping the
tracer, the lowering or the passes is a bug. For each model the sweep records one of:

* ``ok``       compiled;
* ``refused``  `UnsupportedModelError` or `TraceError` (the first reason is kept);
* ``fxpath``   another `FxPathError` (e.g. `IRVerificationError`: a bug too, but a named one);
* ``raw``      any other exception: its type, message and the innermost fxpath frame;
* ``timeout``  / ``crashed``: the worker ran past the per-model limit or died;
* ``skipped``  over the parameter limit; ``build``: the model itself could not be built.

Models run one at a time in a worker subprocess (one CPU thread) that is restarted after a
timeout or a crash. Run it niced, it is meant for shared machines::

    nice -n 19 python benchmarks/sweep_escapes.py                 # one timm model per family + tv
    nice -n 19 python benchmarks/sweep_escapes.py --sample 150    # ~150 timm names across families
    nice -n 19 python benchmarks/sweep_escapes.py --names bat_resnext26ts tv:resnet18
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAX_SIDE = 256


# -- worker side ------------------------------------------------------------------------------
def _input_shape(cfg_size: Any) -> tuple[int, ...]:
    c, *spatial = cfg_size
    return (int(c), *(min(int(s), MAX_SIDE) for s in spatial))


def _build(name: str, max_params: float) -> tuple[Any, tuple[int, ...]]:
    import torch

    if name.startswith("tv:"):
        import torchvision.models as tm

        tv = name[3:]
        weights = tm.get_model_weights(tv)
        crop = next(iter(weights)).transforms.keywords.get("crop_size", 224)
        shape: tuple[int, ...] = (3, min(int(crop), MAX_SIDE), min(int(crop), MAX_SIDE))

        def make() -> Any:
            return tm.get_model(tv, weights=None)
    else:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        size = tuple((cfg.input_size if cfg is not None else None) or (3, 224, 224))
        shape = _input_shape(size)
        kwargs = {"img_size": shape[1:]} if tuple(size) != shape else {}

        def make() -> Any:
            try:
                return timm.create_model(name, pretrained=False, **kwargs)
            except TypeError:  # a model without an img_size argument
                if not kwargs:
                    raise
                return timm.create_model(name, pretrained=False)
    try:  # count on the meta device: no memory, no init (giants are skipped cheaply)
        with torch.device("meta"):
            count = sum(p.numel() for p in make().parameters())
    except Exception:  # an init that reads values (torchvision's regnets): count for real
        model = make()
        count = sum(p.numel() for p in model.parameters())
        if count > max_params:
            raise _TooBig(count) from None
        return model.eval(), shape
    if count > max_params:
        raise _TooBig(count)
    return make().eval(), shape


class _TooBig(Exception):
    pass


def _fxpath_frame(exc: BaseException) -> str:
    """``file:line fn`` of the innermost traceback frame inside fxpath/ or passes/."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "/fxpath/" in f.filename or "/passes/" in f.filename]
    f = (own or frames)[-1] if frames else None
    if f is None:
        return "?"
    return f"{os.path.relpath(f.filename, ROOT)}:{f.lineno} {f.name}"


def _one(name: str, max_params: float) -> dict[str, Any]:
    import fxpath
    from fxpath.errors import FxPathError, TraceError, UnsupportedModelError

    t0 = time.perf_counter()
    try:
        model, shape = _build(name, max_params)
    except _TooBig as big:
        return {"status": "skipped", "detail": f"{big.args[0] / 1e6:.0f}M params"}
    except Exception as exc:  # the model itself, not fxpath
        return {"status": "build", "detail": f"{type(exc).__name__}: {exc}"[:300]}
    res: dict[str, Any] = {"shape": list(shape)}
    try:
        fxpath.compile(model, shape)
        res["status"] = "ok"
    except (UnsupportedModelError, TraceError) as exc:
        lines = str(exc).splitlines()
        first = next((ln.strip()[2:] for ln in lines if ln.strip().startswith("- ")), lines[0])
        res.update(status="refused", kind=type(exc).__name__, detail=first[:300])
    except FxPathError as exc:
        res.update(status="fxpath", kind=type(exc).__name__, detail=str(exc)[:300])
    except Exception as exc:
        res.update(status="raw", kind=type(exc).__name__, detail=str(exc)[:300],
                   frame=_fxpath_frame(exc))
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def worker(max_params: float) -> None:
    """Read model names on stdin, answer one JSON line per name on stdout."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    out = sys.stdout
    sys.stdout = sys.stderr  # models that print must not break the protocol
    for line in sys.stdin:
        out.write(json.dumps(_one(line.strip(), max_params)) + "\n")
        out.flush()


# -- parent side ------------------------------------------------------------------------------
class _Worker:
    def __init__(self, max_params: float) -> None:
        self.max_params = max_params
        self.proc: subprocess.Popen[str] | None = None

    def ask(self, name: str, timeout: float) -> dict[str, Any]:
        import selectors

        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", "--max-params", str(self.max_params)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True, cwd=ROOT)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
        sel.close()
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        status = "crashed" if ready else "timeout"
        self.close()
        return {"status": status, "detail": f"> {timeout:.0f} s" if status == "timeout" else ""}

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None


def _timm_families() -> Iterator[tuple[str, list[str]]]:
    import timm

    for module in sorted(timm.list_modules()):
        names = timm.list_models(module=module)
        if names:
            yield module, names


def _timm_sample(n: int) -> Iterator[tuple[str, list[str]]]:
    """About ``n`` names spread over families: round-robin over each family's names."""
    families = [names for _, names in _timm_families()]
    picked: list[str] = []
    i = 0
    while len(picked) < n and any(i < len(f) for f in families):
        picked += [f[i] for f in families if i < len(f)][: n - len(picked)]
        i += 1
    for name in picked:
        yield name, [name]


def _jobs(args: argparse.Namespace) -> Iterator[tuple[str, list[str]]]:
    if args.names:
        for name in args.names:
            yield name, [name]
        return
    if not args.no_timm:
        yield from (_timm_sample(args.sample) if args.sample else _timm_families())
    if not args.no_torchvision:
        import torchvision

        for name in torchvision.models.list_models(module=torchvision.models):
            yield f"tv:{name}", [f"tv:{name}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--names", nargs="*", help="model names (tv:NAME for torchvision)")
    p.add_argument("--sample", type=int, default=0, help="timm: N names across families "
                   "instead of one per family")
    p.add_argument("--no-timm", action="store_true")
    p.add_argument("--no-torchvision", action="store_true")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per model")
    p.add_argument("--max-params", type=float, default=150e6)
    p.add_argument("--tries", type=int, default=4,
                   help="per timm family: names tried until one is under --max-params")
    p.add_argument("--out", type=Path, default=Path("sweep_escapes.jsonl"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.max_params)
        return
    w = _Worker(args.max_params)
    rows: list[dict[str, Any]] = []
    try:
        with args.out.open("w") as f:
            for family, names in _jobs(args):
                for name in names[: args.tries]:
                    res = {"family": family, "name": name, **w.ask(name, args.timeout)}
                    if res["status"] not in ("skipped", "build"):
                        break
                rows.append(res)
                f.write(json.dumps(res) + "\n")
                f.flush()
                extra = f" [{res.get('frame')}]" if res["status"] == "raw" else ""
                print(f"{res['status']:8} {name:40} {res.get('kind', '')} "
                      f"{res.get('detail', '')[:110]}{extra}", flush=True)
    finally:
        w.close()
    counts = Counter(r["status"] for r in rows)
    print("\n" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for r in rows:
        if r["status"] in ("raw", "fxpath", "crashed", "timeout"):
            print(f"  {r['status']}: {r['name']}: {r.get('kind', '')} {r.get('detail', '')[:150]}"
                  f" [{r.get('frame', '')}]")


if __name__ == "__main__":
    main()
