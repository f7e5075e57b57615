"""Checkpoints of the face-SR training stages: safe to load, self-describing, resumable.

Two kinds of file live in each stage folder ``models/face_sr/<stage>/``:

* ``checkpoint.pt`` (kind ``"checkpoint"``): everything needed to continue training
  exactly where it stopped: every network, optimiser and loss-scaler state, extra loop
  state (e.g. the path-length mean), the step, the data position (epoch, batches
  consumed in it) and the RNG states (torch, CUDA, numpy, python) of every process;
* ``model.pt`` (kind ``"model"``): the networks the next stages (and inference) use.

Both are plain dicts of tensors, numbers and strings, read with
``torch.load(weights_only=True)``: nothing in them can run code when loaded, so a
checkpoint from anywhere is safe to open. Configs are JSON strings, RNG states tensors.
Every file carries ``format``, ``version``, ``stage`` and ``model_config``;
:func:`load_checkpoint` checks them and raises :class:`CheckpointError` naming the file
when it is not one of ours, was written by another version of this code, comes from
another stage, or holds networks of another size than the params ask for.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from components.errors import EarshotError
from components.io import atomic_path
from components.models.face_sr import ModelConfig, build_models
from components.models.face_sr.presets import NETWORK_FIELDS, config_fields

FORMAT = "earshot.face_sr"
VERSION = 1


class CheckpointError(EarshotError):
    """A checkpoint or model file is missing, unreadable, or not what the caller expects."""


def model_config_json(cfg: ModelConfig) -> str:
    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True)


def _header(kind: str, stage: str, cfg: ModelConfig) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "kind": kind, "stage": stage,
            "model_config": model_config_json(cfg)}


def save(path: str | Path, kind: str, stage: str, cfg: ModelConfig, body: Mapping[str, Any]) -> None:
    """Write a checkpoint atomically: a kill midway leaves the previous file intact."""
    with atomic_path(path) as tmp:
        torch.save({**_header(kind, stage, cfg), **body}, tmp)


def save_model(path: str | Path, stage: str, cfg: ModelConfig, networks: Mapping[str, nn.Module],
               step: int) -> None:
    """``model.pt``: the state dicts of ``networks`` (e.g. ``{"G": g_ema, "D": d}``)."""
    states = {name: {k: v.detach().cpu() for k, v in net.state_dict().items()} for name, net in networks.items()}
    save(path, "model", stage, cfg, {"models": states, "step": step})


def load_checkpoint(path: str | Path, *, expect_stage: str | None = None, expect_kind: str | None = None,
                    expect_config: ModelConfig | None = None) -> dict[str, Any]:
    """Read and check a ``checkpoint.pt`` or ``model.pt`` (tensors land on the CPU).

    Raises :class:`CheckpointError`, with the path in the message, when the file is
    missing or unreadable, not an earshot face-SR file, of another format version, of
    another stage or kind than expected, or made for another model config.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint (train it with `dvc repro`)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, not a torch file at all
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an earshot face-SR checkpoint (format {found!r}, expected {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt.get('version')!r}, this code reads "
                              f"version {VERSION}: retrain with this version")
    if expect_stage is not None and ckpt.get("stage") != expect_stage:
        raise CheckpointError(f"{path}: written by stage {ckpt.get('stage')!r}, expected {expect_stage!r}")
    if expect_kind is not None and ckpt.get("kind") != expect_kind:
        raise CheckpointError(f"{path}: a {ckpt.get('kind')!r} file, expected a {expect_kind!r} file")
    if expect_config is not None:
        found = json.loads(ckpt["model_config"])
        held = [n for n in ckpt.get("models", {}) if n in NETWORK_FIELDS]
        wanted = config_fields(expect_config, held) if held else expect_config.model_dump(mode="json")
        diff = [f"{k}: {found.get(k)!r} in the file, {v!r} in params" for k, v in wanted.items() if found.get(k) != v]
        if diff:
            raise CheckpointError(f"{path}: made for another model (params face_sr: preset, overrides, lr_size, audio_seconds, audio, fusion): {'; '.join(diff)}")
    return ckpt


def checkpoint_config(ckpt: Mapping[str, Any]) -> ModelConfig:
    """The :class:`ModelConfig` a loaded checkpoint was made with."""
    return ModelConfig(**json.loads(ckpt["model_config"]))


def load_networks(path: str | Path, names: tuple[str, ...], *, expect_stage: str | None = None,
                  expect_config: ModelConfig | None = None) -> dict[str, nn.Module]:
    """Rebuild networks ``names`` from a ``model.pt`` (CPU, eval mode, no gradients).

    The architecture comes from the file's own model config (checked against
    ``expect_config`` when given), so inference needs nothing but the file.
    """
    ckpt = load_checkpoint(path, expect_stage=expect_stage, expect_kind="model", expect_config=expect_config)
    missing = [n for n in names if n not in ckpt["models"]]
    if missing:
        raise CheckpointError(f"{path}: has networks {sorted(ckpt['models'])}, not {missing}")
    nets = build_models(checkpoint_config(ckpt), names=names)
    for name, net in nets.items():
        net.load_state_dict(ckpt["models"][name])
        net.eval().requires_grad_(False)
    return nets


# RNG states as tensors (weights_only=True loads tensors, numbers and strings only).

def rng_state() -> dict[str, Any]:
    """This process's RNG states: torch CPU (+ CUDA), numpy's global, python's ``random``."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_ints, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
        "numpy_pos": int(np_state["state"]["pos"]),
        "numpy_has_gauss": int(np_state["has_gauss"]),
        "numpy_gauss": float(np_state["gauss"]),
        "python": torch.tensor(py_ints, dtype=torch.int64),
        "python_version": py_version,
        "python_gauss": py_gauss,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": state["numpy_key"].numpy().astype(np.uint32), "pos": state["numpy_pos"]},
                         "has_gauss": state["numpy_has_gauss"], "gauss": state["numpy_gauss"]})
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"]), state["python_gauss"]))
