"""Where a training process runs: device, precision, process group, and its random state.

:func:`setup_runtime` picks the device (CPU threads, or CUDA with autocast: bf16 where
the GPU has it, else fp16), and joins the process group when ``torchrun`` launched the
process (``WORLD_SIZE > 1``: gloo on CPU, NCCL on GPU). :func:`seed_everything` seeds
torch, numpy and python's ``random`` per rank; :func:`rng_state` / :func:`set_rng_state`
capture and restore those generators as tensors and numbers (what a checkpoint read
with ``weights_only=True`` may hold), and :func:`gather_rng_states` collects every
rank's so that a resumed run draws exactly what the unbroken one would have.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from components.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    """Device, precision and process group of this process."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None  # autocast dtype; None: full precision
    channels_last: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_runtime(device: str = "auto", *, amp: bool = True, channels_last: bool = True,
                  threads: int = 2) -> Runtime:
    """Pick the device and join the process group when launched by ``torchrun``.

    AMP applies on CUDA only (CPU bf16 is slower than float32 on most processors).
    Channels-last (NHWC) applies on both: cuDNN's tensor-core kernels want it, and on
    CPU oneDNN's NHWC convolutions made every small-preset face-SR step 15-22% cheaper.

    CPU threads: small networks run thousands of tiny parallel regions per step.
    OpenMP's default is to spin while waiting for the other threads; on a machine shared
    with other work (CI, a laptop) a spinning thread burns the time slice its partner
    needs, and a 2-thread train_g step measured 2-17x slower than a 1-thread one on a
    busy 2-core machine. The training entry point therefore defaults ``OMP_WAIT_POLICY``
    to ``PASSIVE`` (it must be set before torch loads), which kept 2 threads within ~25%
    of 1 thread there while still using both cores when they are free.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("params.yaml: the device is 'cuda' but torch sees no CUDA device")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        torch.set_num_threads(threads)
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    amp_dtype = None
    if amp and device == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(dev, rank, world_size, amp_dtype, channels_last)


def teardown_runtime(runtime: Runtime) -> None:
    """Wait for every rank, then leave the process group (no-op in a single process)."""
    if runtime.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int) -> None:
    """Seed torch, numpy and python RNGs; ranks differ so they draw different noise."""
    value = seed * 1000 + rank
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


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


def gather_rng_states(runtime: Runtime) -> list[dict[str, Any]]:
    """The RNG states of every rank (a collective: all ranks call it at the same step)."""
    state = rng_state()
    if not runtime.distributed:
        return [state]
    states: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(states, state)
    return states
