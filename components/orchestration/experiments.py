"""Ablation variants as DVC experiments: the ``dvc exp run -S ...`` argv of a variant,
with each value written in the override grammar (Hydra's) that DVC parses ``-S`` with;
whether the params.yaml DVC wrote reads back as intended; the order variants run in;
the metrics a variant leaves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from components.config import SweepParams

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def override_value(value: Any) -> str:
    """A value in the override grammar DVC parses ``-S key=value`` with (Hydra's), such
    that DVC writes back exactly ``value``: strings are always quoted (``'true'``, ``'8'``
    stay strings), ``${`` is escaped (no interpolation), floats keep their type (``1.0``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        # Inside quotes a backslash is literal except before a quote or `${` (and before
        # the closing quote): those backslashes are doubled, the quote and `${` escaped.
        text = re.sub(r"(\\*)(')", lambda m: m[1] * 2 + "\\'", value)
        text = re.sub(r"(\\*)(\$\{)", lambda m: m[1] * 2 + "\\${", text)
        text = re.sub(r"(\\+)$", lambda m: m[1] * 2, text)
        return f"'{text}'"
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str) or not _KEY.match(key):
                raise ValueError(f"override key {key!r}: DVC's -S accepts only identifier keys in a mapping")
        return "{" + ", ".join(f"{k}: {override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(override_value(v) for v in value) + "]"
    raise TypeError(f"override value {value!r}: {type(value).__name__} is not a YAML value")


def _lookup(tree: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def set_param_args(overrides: Mapping[str, Any], params_tree: Mapping[str, Any]) -> list[str]:
    """``-S`` arguments making params.yaml (read as ``params_tree``) hold ``overrides``,
    with the semantics of :func:`components.config.set_dotted` (a value replaces, sections
    are created). DVC's plain ``key=value`` refuses a key params.yaml lacks (``++`` adds
    it) and MERGES a mapping into an existing one, so a mapping over an existing key is
    deleted first (``~key``) and added back (``+key``)."""
    args: list[str] = []
    for key, value in overrides.items():
        exists, _ = _lookup(params_tree, key)
        if isinstance(value, Mapping) and exists:
            args += ["-S", f"~{key}", "-S", f"+{key}={override_value(value)}"]
        else:
            args += ["-S", f"++{key}={override_value(value)}"]
    return args


def exp_name(sweep: str, variant: str, short_id: str) -> str:
    """``<sweep>-<variant>-<short id>``: unique per sweep run, and a valid git ref name
    (DVC stores each experiment as one)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{sweep}-{variant}-{short_id}").strip("-.")


def exp_run_argv(name: str, overrides: Mapping[str, Any], params_tree: Mapping[str, Any],
                 dvc: Sequence[str] = ("dvc",), target: str | None = None) -> list[str]:
    """``dvc exp run -n NAME -S ... [TARGET]`` of one variant (run in the workspace, not queued): with
    ``target`` (the sweep's evaluation stage) only that stage and what it depends on are reproduced, not
    every stage the overrides reach (a video sweep does not rerun the codec's evaluation)."""
    return [*dvc, "exp", "run", "-n", name, *set_param_args(overrides, params_tree), *([target] if target else [])]


def params_drift(expected: Any, written: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose value in ``written`` (params.yaml as DVC rewrote it, read as
    the stages read it) differs from ``expected``. DVC writes YAML 1.2 without the quotes
    the user had, so a string such as ``'on'`` or ``'no'`` comes back a boolean to
    PyYAML (YAML 1.1); a float it writes as ``1e-05`` comes back a string, which params
    validation converts back (no drift)."""
    if isinstance(expected, Mapping) and isinstance(written, Mapping):
        return [key for k in dict.fromkeys([*expected, *written])
                for key in params_drift(expected.get(k), written.get(k), f"{prefix}{k}.")]
    if isinstance(expected, float) and isinstance(written, str):
        try:
            return [] if float(written) == expected else [prefix.rstrip(".")]
        except ValueError:
            pass
    same = expected == written and type(expected) is type(written) or (
        isinstance(expected, (int, float)) and isinstance(written, (int, float))
        and not isinstance(expected, bool) and not isinstance(written, bool) and expected == written)
    return [] if same else [prefix.rstrip(".")]


def variant_order(sweep: SweepParams) -> list[str]:
    """The variants in their declared order, the baseline last: the workspace ends on the
    baseline's outputs, which match the user's params.yaml when the baseline overrides
    nothing (every sweep of params.yaml), so ``dvc status`` is clean after a sweep."""
    return [v for v in sweep.variants if v != sweep.baseline] + [sweep.baseline]


def flat_numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a (possibly nested) metrics file, with dotted keys."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out |= flat_numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out
