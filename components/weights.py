"""Reading a weights file so that a crafted one cannot run code: one loader for every caller.

``torch.load(weights_only=True)`` unpickles tensors, containers and numbers only (plus
the classes a caller allows by name); anything else in the file is refused before it
runs. :func:`load_weights` wraps it with the project's error: one line naming the file
and what it should have been, whatever the refusal was (a crafted pickle, a corrupt or
truncated file, not a torch file at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.errors import EarshotError


def load_weights(path: str | Path, refusal: str, *, error: type[EarshotError] = EarshotError,
                 allowed: Sequence[type] = (), hint: str = "") -> Any:
    """The contents of ``path`` on the CPU, or ``error("<refusal>: refused by the
    weights-only loader (<exception type>[; <hint>])")``. ``allowed``: classes the file
    may hold beside tensors (e.g. pyannote's task specifications)."""
    import torch

    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - refused pickles and corrupt files alike
        raise error(f"{refusal}: refused by the weights-only loader "
                    f"({type(exc).__name__}{'; ' + hint if hint else ''})") from None
