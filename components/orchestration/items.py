"""One unit of a stage's per-item work, and calling it so that it never raises.

An :class:`Item` is what :func:`~components.orchestration.runner.run_items` hands to a
stage's ``work(item)``; :func:`call_item` runs that call and returns its outcome as
data, so that the outcome crosses process boundaries the same way from every executor
(:mod:`components.orchestration.executors`).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from components.errors import Rejected


@dataclass(frozen=True)
class Item:
    """One unit of work. ``key`` is unique in the stage and safe as a relative path."""

    key: str
    payload: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def call_item(work: Callable[[Item], dict[str, Any]], item: Item) -> tuple[str, dict[str, Any]]:
    """Run one item: ``("ok", record)``, ``("rejected", why)`` for a :class:`Rejected`
    item, ``("error", why)`` for any other exception; never raises.

    An unexpected error's ``why`` carries, beside its one-line ``detail``, where it was
    raised (``where``: the innermost frame in the project's own code, else the innermost
    one) and its formatted ``traceback``, so that the stage process can log it whichever
    process the item ran in.
    """
    try:
        record = work(item)
        return "ok", dict(record or {})
    except Rejected as exc:
        return "rejected", {"reason": exc.reason, "detail": exc.detail}
    except Exception as exc:  # noqa: BLE001 - any failure of one item must not stop the stage
        return "error", unexpected_error(exc)


def unexpected_error(exc: BaseException) -> dict[str, Any]:
    """The quarantine record of an unexpected exception (reason ``error``), with its traceback."""
    text = str(exc).strip().splitlines()
    frames = [f"{_relative(f.filename)}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)]
    ours = [f for f in frames if not os.path.isabs(f) and "site-packages" not in f]  # the project's own code
    detail = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return {"reason": "error", "detail": detail, "where": (ours or frames or [""])[-1],
            "traceback": "".join(traceback.format_exception(exc))}


def _relative(filename: str) -> str:
    """A source file named from the working directory when it is inside it (``components/...``)."""
    try:
        rel = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if rel.startswith("..") else rel
