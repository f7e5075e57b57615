"""One unit of a stage's per-item work, and calling it so that it never raises.

An :class:`Item` is what :func:`~components.orchestration.runner.run_items` hands to a
stage's ``work(item)``; :func:`call_item` runs that call and returns its outcome as
data, so that the outcome crosses process boundaries the same way from every executor
(:mod:`components.orchestration.executors`).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from components.errors import Rejected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One unit of work. ``key`` is unique in the stage and safe as a relative path."""

    key: str
    payload: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def call_item(work: Callable[[Item], dict[str, Any]], item: Item) -> tuple[str, dict[str, Any]]:
    """Run one item: ``("ok", record)``, ``("rejected", why)`` for a :class:`Rejected`
    item, ``("error", why)`` for any other exception; never raises."""
    try:
        record = work(item)
        return "ok", dict(record or {})
    except Rejected as exc:
        return "rejected", {"reason": exc.reason, "detail": exc.detail}
    except Exception as exc:  # noqa: BLE001 - any failure of one item must not stop the stage
        log.debug("item %s failed:\n%s", item.key, traceback.format_exc())
        return "error", {"reason": "error", "detail": f"{type(exc).__name__}: {exc}"}
