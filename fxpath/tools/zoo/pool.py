"""The zoo's worker pool: `sweep` runs one task per item in spawned worker processes, so that a
crash, a hang or the OOM killer costs one item, never the sweep; `TerminateOnSigterm` turns a
batch system's SIGTERM into SystemExit so the results so far get written."""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

import torch

__all__ = ["STARTUP_S", "TerminateOnSigterm", "sweep"]

#: seconds a fresh worker may take to start (import torch, timm) on top of the time limit
STARTUP_S = 300.0


def _worker_main(conn: Any, task: Callable[..., Any], threads: int) -> None:
    """A worker's loop: receive ``(seq, item, options)``, send ``(kind, seq, value)``:
    ``("started", seq, None)`` then ``("ok", seq, task(item, options))`` or ``("error", seq,
    message)``. The job number ``seq`` ties each answer to its job."""
    torch.set_num_threads(max(1, threads))
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        seq, item, options = job
        conn.send(("started", seq, None))  # the time limit counts from here, not the spawn
        try:
            conn.send(("ok", seq, task(item, options)))
        except KeyboardInterrupt:
            return
        except BaseException as exc:  # noqa: BLE001 - a task bug must not end the sweep
            conn.send(("error", seq, f"{type(exc).__name__}: {exc}"))


class _Worker:
    """One worker process and the job it holds."""

    def __init__(self, ctx: Any, task: Callable[..., Any], threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, task, threads), daemon=True)
        self.proc.start()
        child.close()
        self.item: Any = None
        self.deadline = math.inf
        self.done = 0

    def give(self, item: Any, options: dict[str, Any], timeout: float | None) -> None:
        self.item, self.done = item, self.done + 1
        # until the worker says it started (a fresh one imports torch first): a generous limit
        self.deadline = time.monotonic() + timeout + STARTUP_S if timeout else math.inf
        self.conn.send((self.done, item, options))

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def sweep(items: Sequence[Any], task: Callable[..., Any], options: dict[str, Any], *,
          failure: Callable[[Any, str], Any], jobs: int = 1, timeout: float | None = None,
          tasks_per_worker: int = 1, threads: int = 1,
          on_result: Callable[[Any], None] | None = None) -> list[Any]:
    """``[task(item, options) for item in items]`` in ``jobs`` worker processes.

    Each worker runs at most ``tasks_per_worker`` items and is then replaced by a fresh one;
    an item past ``timeout`` seconds, or whose worker dies (a crash, the OOM killer), gets
    ``failure(item, why)`` and its worker is replaced, so one model never ends the sweep.
    ``jobs=0`` runs in this process (no isolation, no timeout). ``task`` and ``failure`` must be
    module-level functions (workers are spawned). Results come in completion order; each is
    passed to ``on_result`` as it arrives.
    """
    results: list[Any] = []

    def done(r: Any) -> None:
        results.append(r)
        if on_result is not None:
            on_result(r)

    if jobs <= 0:
        for item in items:
            done(task(item, options))
        return results
    ctx = mp.get_context("spawn")
    pending: deque[Any] = deque(items)
    busy: list[_Worker] = []
    idle: list[_Worker] = []
    try:
        while pending or busy:
            while pending and len(busy) < jobs:
                w = idle.pop() if idle else _Worker(ctx, task, threads)
                w.give(pending.popleft(), options, timeout)
                busy.append(w)
            _collect(busy, idle, done, failure, timeout, tasks_per_worker)
    finally:
        for w in busy + idle:
            w.stop(kill=True)
    return results


def _collect(busy: list[_Worker], idle: list[_Worker], done: Callable[[Any], None],
             failure: Callable[[Any, str], Any], timeout: float | None,
             tasks_per_worker: int) -> None:
    """Wait for the first result or deadline among ``busy`` workers; retire the finished."""
    now = time.monotonic()
    wait_s = max(0.0, min(w.deadline for w in busy) - now) if timeout else None
    ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], wait_s)
    now = time.monotonic()
    for w in list(busy):
        outcome: Any = None
        if w.conn in ready or w.proc.sentinel in ready:
            try:
                kind, seq, value = w.conn.recv()
                if seq != w.done:  # an answer to an earlier job (cannot happen): drop it
                    continue
                if kind == "started":
                    w.deadline = now + timeout if timeout else math.inf
                    continue
                outcome = value if kind == "ok" else failure(w.item, f"worker error: {value}")
            except (EOFError, OSError):
                w.proc.join(5)
                outcome = failure(w.item, f"worker died (exit code {w.proc.exitcode}: a crash "
                                          "or out of memory)")
        elif now >= w.deadline:
            outcome = failure(w.item, f"timeout after {timeout:g} s")
            w.stop(kill=True)
        if outcome is None:
            continue
        busy.remove(w)
        done(outcome)
        if w.proc.is_alive() and w.done < tasks_per_worker:
            idle.append(w)
        elif w.proc.is_alive():
            w.stop()


class TerminateOnSigterm:
    """While active, SIGTERM (a batch system stopping the job) raises SystemExit: the sweep
    kills its workers and the results so far are written. The previous handler is restored."""

    def __enter__(self) -> None:
        import signal
        import threading

        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._stop)

    @staticmethod
    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
