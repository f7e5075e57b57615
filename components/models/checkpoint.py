"""The one file format of every trained network: safe to load, self-describing, resumable.

Two kinds of file live in each stage folder (e.g. ``models/face_sr/<stage>/``):

* ``checkpoint.pt`` (kind ``"checkpoint"``): everything needed to continue training
  exactly where it stopped (written by :mod:`components.training.loop`);
* ``model.pt`` (kind ``"model"``): the networks the next stages, evaluation and
  inference use (``{"models": {name: state_dict}, "step": n}``).

Both are plain dicts of tensors, numbers and strings, read with
``torch.load(weights_only=True)``: nothing in them can run code when loaded, so a file
from anywhere is safe to open. Every file starts with the same header:

* ``format`` (:data:`FORMAT`) and ``version`` (:data:`VERSION`);
* ``family``: whose networks these are (``"face_sr"``, ``"face_judge"``, ...);
* ``kind``, ``stage``: which file, written by which stage;
* ``config``: the JSON of the family's config, from which its networks are rebuilt.

A family registers how to rebuild its networks from a config (and, optionally, which
config differences matter for the networks a file holds) with :func:`register_family`,
from its own package (``components/models/face_sr/``): loading needs the models
package only, never training code. :func:`load_checkpoint` checks the header and raises
:class:`CheckpointError` naming the file when it is not one of ours, was written by
another version of this code, or holds another family, stage, kind or config than the
caller expects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.errors import EarshotError
from components.io import atomic_path

FORMAT = "earshot"
VERSION = 2
"""Version 1 files had format ``earshot.face_sr`` (or ``earshot.face_evaluator`` for the
judge) and a face-SR ``model_config``; version 2 adds the family and a generic config."""

Config = Mapping[str, Any]
Builder = Callable[[Config, tuple[str, ...]], dict[str, nn.Module]]
Checker = Callable[[Config, Config, Sequence[str]], list[str]]


class CheckpointError(EarshotError):
    """A checkpoint or model file is missing, unreadable, or not what the caller expects."""


@dataclass(frozen=True)
class Family:
    """How to rebuild the networks of one family from the config its files record.

    ``check(found, expected, networks)`` lists the differences (``"field: X in the file,
    Y in params"``) that matter for ``networks``, the names a file holds (empty for a
    checkpoint.pt); without it every field of the expected config must match.
    ``settings`` names the params the config comes from, for the error message.
    """

    name: str
    build: Builder
    check: Checker | None = None
    settings: str = ""
    network_fields: Mapping[str, Iterable[str]] | None = None
    shared_fields: tuple[str, ...] = ()

    def differences(self, found: Config, expected: Config, networks: Sequence[str]) -> list[str]:
        """With ``network_fields``, only the fields of the networks a file holds count (a
        file of none of them, e.g. checkpoint.pt, is compared on every field)."""
        if self.check is not None:
            return self.check(found, expected, networks)
        held = [n for n in networks if self.network_fields is not None and n in self.network_fields]
        wanted = fields_of(expected, self.network_fields, held, self.shared_fields) if held else expected
        return [f"{k}: {found.get(k)!r} in the file, {v!r} in params" for k, v in wanted.items() if found.get(k) != v]


def fields_of(config: Config, network_fields: Mapping[str, Iterable[str]], networks: Iterable[str],
              shared: Iterable[str] = ()) -> dict[str, Any]:
    """The part of a family's ``config`` that shapes ``networks`` (``network_fields``: the
    fields of each network; ``shared``: fields every network depends on)."""
    keep = set(shared).union(*(network_fields[n] for n in networks))
    return {k: v for k, v in config.items() if k in keep}


FAMILIES: dict[str, Family] = {}


def register_family(name: str, *, build: Builder, check: Checker | None = None, settings: str = "",
                    network_fields: Mapping[str, Iterable[str]] | None = None,
                    shared_fields: Iterable[str] = ()) -> None:
    """Make the files of family ``name`` loadable (called by the family's models package)."""
    FAMILIES[name] = Family(name, build, check, settings, network_fields, tuple(shared_fields))


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise CheckpointError(f"no network family {name!r} is registered (known: {sorted(FAMILIES)}): "
                              "import its models package first")
    return FAMILIES[name]


def config_json(config: Config) -> str:
    return json.dumps(dict(config), sort_keys=True)


def save(path: str | Path, kind: str, *, family: str, stage: str, config: Config, body: Mapping[str, Any]) -> None:
    """Write a file atomically (a kill midway leaves the previous one intact)."""
    header = {"format": FORMAT, "version": VERSION, "family": family, "kind": kind, "stage": stage,
              "config": config_json(config)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # Saved through a file object, the archive inside is named "archive" rather than
        # after the (random) temporary file: the same networks give the same bytes, so the
        # later stages' fingerprints (file hashes) do not change on a re-export.
        torch.save({**header, **body}, f)


def save_model(path: str | Path, *, family: str, stage: str, config: Config, networks: Mapping[str, nn.Module],
               step: int) -> None:
    """``model.pt``: the state dicts of ``networks`` (e.g. ``{"G": g_ema, "D": d}``)."""
    states = {name: {k: v.detach().cpu() for k, v in net.state_dict().items()} for name, net in networks.items()}
    save(path, "model", family=family, stage=stage, config=config, body={"models": states, "step": step})


def load_checkpoint(path: str | Path, *, expect_family: str | None = None, expect_stage: str | None = None,
                    expect_kind: str | None = None, expect_config: Config | None = None) -> dict[str, Any]:
    """Read and check a ``checkpoint.pt`` or ``model.pt`` (tensors land on the CPU).

    Raises :class:`CheckpointError`, with the path in the message, when the file is
    missing or unreadable, not an earshot file, of another format version, or of another
    family, stage or kind than expected, or made for another config (compared as the
    family says, see :class:`Family`).
    """
    path = Path(path)
    if not path.is_file():
        stage = f" {expect_stage}" if expect_stage else ""
        raise CheckpointError(f"{path}: no such checkpoint (train it with `dvc repro{stage}`)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a torch file at all
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
    if not isinstance(found, str) or not (found == FORMAT or found.startswith(f"{FORMAT}.")):
        raise CheckpointError(f"{path}: not an earshot checkpoint (format {found!r}, expected {FORMAT!r})")
    if found != FORMAT or ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format {found!r} version {ckpt.get('version')!r}, this code reads "
                              f"{FORMAT!r} version {VERSION}: retrain with this version")
    if expect_family is not None and ckpt.get("family") != expect_family:
        raise CheckpointError(f"{path}: a {ckpt.get('family')!r} checkpoint, expected {expect_family!r}")
    if expect_stage is not None and ckpt.get("stage") != expect_stage:
        raise CheckpointError(f"{path}: written by stage {ckpt.get('stage')!r}, expected {expect_stage!r}")
    if expect_kind is not None and ckpt.get("kind") != expect_kind:
        raise CheckpointError(f"{path}: a {ckpt.get('kind')!r} file, expected a {expect_kind!r} file")
    if expect_config is not None:
        fam = family(ckpt["family"])
        diff = fam.differences(checkpoint_config(ckpt), expect_config, list(ckpt.get("models", {})))
        if diff:
            settings = f" ({fam.settings})" if fam.settings else ""
            raise CheckpointError(f"{path}: made for another model{settings}: {'; '.join(diff)}")
    return ckpt


def checkpoint_config(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The config a loaded file was made with (the family's JSON config, as a dict)."""
    return json.loads(ckpt["config"])


@dataclass(frozen=True)
class Model:
    """Networks rebuilt from a ``model.pt``, with the config and stage that made them."""

    networks: dict[str, nn.Module]
    config: dict[str, Any]
    stage: str
    step: int


def load_model(path: str | Path, names: tuple[str, ...], *, expect_family: str, expect_stage: str | None = None,
               expect_config: Config | None = None) -> Model:
    """Rebuild networks ``names`` from a ``model.pt`` (CPU, eval mode, no gradients).

    The architecture comes from the file's own config (checked against
    ``expect_config`` when given) and the family's registered builder, so inference
    needs nothing but the file and the family's models package.
    """
    ckpt = load_checkpoint(path, expect_family=expect_family, expect_stage=expect_stage, expect_kind="model",
                           expect_config=expect_config)
    missing = [n for n in names if n not in ckpt["models"]]
    if missing:
        raise CheckpointError(f"{path}: has networks {sorted(ckpt['models'])}, not {missing}")
    config = checkpoint_config(ckpt)
    nets = family(expect_family).build(config, names)
    for name, net in nets.items():
        net.load_state_dict(ckpt["models"][name])
        net.eval().requires_grad_(False)
    return Model(nets, config, ckpt["stage"], int(ckpt["step"]))
