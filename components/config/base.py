"""The machinery under the typed params: strict sections, reading, completing, overriding.

Values live in the project's ``params.yaml``; the classes built on :class:`Section` only
validate them (types, bounds, descriptions, unknown keys) and hold no values of their own.
A params file may therefore be partial: :func:`load` completes it from the project's own
``params.yaml`` (:func:`project_params_path`), section by section and key by key, so a file
holding only ``faces: {detect_every: 3}`` means "the project's params with that change".
Nothing here knows which sections exist: ``components.config`` composes them into
``Params`` and binds these functions to it.

Every error names the file and the dotted key, e.g. ``params.yaml: faces.detect_every:
Input should be greater than or equal to 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

import components
from components.errors import ConfigError

PROJECT_PARAMS = Path(components.__file__).resolve().parents[1] / "params.yaml"
"""The project's params file, beside the ``components`` package: where every value lives."""

ModelT = TypeVar("ModelT", bound=BaseModel)



# Keys of a training stage's sections that change how a run goes, not what it learns: the
# stage families leave them out of their checkpoints' fingerprints, so a checkpoint made
# with other values is still resumed (e.g. raise `steps` to train a finished stage further).
RUN_ONLY = frozenset({"steps", "log_every", "sample_every", "checkpoint_every", "threads", "device", "amp",
                      "channels_last", "out_dir"})

class Section(BaseModel):
    """A strict, immutable group of params: an unknown key or a bad value is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def project_params_path() -> Path:
    """The project's ``params.yaml``; a :class:`ConfigError` says where it was looked for."""
    if not PROJECT_PARAMS.is_file():
        raise ConfigError(f"{PROJECT_PARAMS}: the project's params file is missing; it holds the value of every "
                          f"param (components/ must sit in the project checkout, next to params.yaml)")
    return PROJECT_PARAMS


def format_errors(source: str, exc: ValidationError) -> str:
    """One line per validation error: ``<source>: <dotted key>: <message>``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling and section)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for ``dotted='a.b'``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[leaf] = value


def read_tree(path: Path) -> dict[str, Any]:
    """The mapping of sections in the YAML file ``path`` (empty when the file does not exist)."""
    try:
        tree = yaml.safe_load(path.read_text()) if path.exists() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return dict(tree or {})


def section_type(annotation: Any) -> type[Section] | None:
    """The :class:`Section` class a field's annotation names, else None."""
    return annotation if isinstance(annotation, type) and issubclass(annotation, Section) else None


def _merge_value(value: Any, default: Any, annotation: Any) -> Any:
    """``value`` completed from ``default`` where the field's type is a section (key by key)
    or a mapping of named sections (name by name, then key by key); any other value,
    free-form mappings included (``face_sr.overrides``, a sweep's ``variants``), is whole."""
    if not (isinstance(value, Mapping) and isinstance(default, Mapping)):
        return value
    if section := section_type(annotation):
        return merge_trees(value, default, section)
    if get_origin(annotation) is dict and (entry := section_type(get_args(annotation)[1])):
        return {**default, **{name: _merge_value(v, default.get(name), entry) for name, v in value.items()}}
    return value


def merge_trees(tree: Mapping[str, Any], defaults: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """``tree`` with what it lacks taken from ``defaults``, guided by ``model``'s fields.
    Keys ``model`` does not know are kept, for validation to name them."""
    fields = model.model_fields
    merged = {key: _merge_value(value, defaults.get(key), fields[key].annotation) if key in fields else value
              for key, value in tree.items()}
    return {**defaults, **merged}


def validate(model: type[ModelT], tree: Mapping[str, Any], source: str) -> ModelT:
    """``model`` validated from ``tree``; a :class:`ConfigError` names ``source`` and each key."""
    try:
        return model.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc)) from None


def parse(model: type[ModelT], tree: Mapping[str, Any] | None, source: str) -> ModelT:
    """``model`` from a (partial) tree; what it lacks comes from the project's params file."""
    defaults = read_tree(project_params_path())
    return validate(model, merge_trees(tree or {}, defaults, model), source)


def load(model: type[ModelT], path: str | Path, overrides: Mapping[str, Any] | None) -> ModelT:
    """``model`` from the (partial) params file ``path``, completed from the project's params
    file, then changed by ``overrides`` (dotted keys, e.g. ``{"faces.detect_every": 3}``).

    A ``path`` that is not a file is an error naming it: a mistyped ``--params`` must never
    run silently on the project's values."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a params file" if path.is_dir() else "no such params file"
        raise ConfigError(f"{path}: {what}")
    tree = merge_trees(read_tree(path), read_tree(project_params_path()), model)
    for key, value in (overrides or {}).items():
        set_dotted(tree, key, value)
    return validate(model, tree, str(path))
