"""Tasks for the worker-pool tests of `fxpath.tools.zoo.pool.sweep` (module-level: workers are
spawned and import them by name)."""

from __future__ import annotations

import os
import time


def task(item: str, options: dict[str, object]) -> str:
    """``ok:X`` answers, ``crash`` kills its worker, ``hang`` sleeps past any timeout,
    ``raise`` raises."""
    if item == "crash":
        os._exit(3)
    if item == "hang":
        time.sleep(600)
    if item == "raise":
        raise ValueError("a bug in the task")
    return f"{item}:{options['tag']}:{os.getpid()}"


def failure(item: str, why: str) -> str:
    """The row of an item whose worker died or timed out."""
    return f"{item} failed: {why}"
