"""Make the PyPI torchvision/torchaudio wheels importable on a CPU-only torch.

The torchvision 0.28 and torchaudio 2.11 wheels on PyPI are CUDA builds. On the CPU
torch this project pins (2.13.0+cpu) their compiled extensions cannot load:

* ``import torchvision`` dies with ``operator torchvision::nms does not exist``, because
  ``torchvision/_meta_registrations.py`` registers a fake kernel for ``nms``/``qnms``
  without checking that the C++ extension (which defines those ops) loaded;
* ``import torchaudio`` dies with ``OSError: libc10_cuda.so`` because its ``_load_lib``
  re-raises loader errors.

Everything else in both packages is pure Python and works on CPU (models, transforms,
MelSpectrogram, Resample, ...), and lpips, torchmetrics and pyannote.audio import them.
This module installs an import hook (:func:`install`, run from a ``.pth`` file that
``scripts/setup.sh`` writes only when it is needed) that, at the moment torchvision or
torchaudio is first imported:

* defines the ``torchvision::nms``/``qnms`` schemas with a plain-torch CPU kernel, and
  lets ``torchvision.ops.nms``/``batched_nms`` use it;
* makes torchaudio's ``_load_lib`` report "extension not available" instead of raising.

Other compiled ops (roi_align, deform_conv2d, video decoders) stay unavailable and
raise torchvision's own clear error. With a CUDA torch, or CPU builds of torchvision and
torchaudio, :func:`needed` is False and nothing is patched. Importing this module does
no work; nothing imports torch until torchvision/torchaudio is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

_HOOKED: dict[str, tuple[str, Callable[[ModuleType], None]]] = {}


def _package_dir(name: str) -> Path | None:
    """Folder of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _is_cuda_build(name: str) -> bool:
    """A torchvision/torchaudio wheel built for CUDA says so in its version.py (``+cu130``)."""
    folder = _package_dir(name)
    return folder is not None and (folder / "version.py").exists() and "+cu" in (folder / "version.py").read_text()


def _torch_is_cpu_only() -> bool:
    """A CUDA torch ships libtorch_cuda/libc10_cuda; a CPU build does not."""
    folder = _package_dir("torch")
    if folder is None:
        return False
    return not any((folder / "lib").glob("lib*_cuda*.so*"))


def needed() -> dict[str, bool]:
    """Which packages need the compat layer in this environment (cheap: reads metadata)."""
    cpu = _torch_is_cpu_only()
    return {"torchvision": cpu and _is_cuda_build("torchvision"), "torchaudio": cpu and _is_cuda_build("torchaudio")}


# --- torchvision ------------------------------------------------------------------


def nms_cpu(dets, scores, iou_threshold: float):  # type: ignore[no-untyped-def]
    """Greedy non-maximum suppression in plain torch (same contract as torchvision's)."""
    import torch

    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    order = scores.argsort(descending=True)
    keep = []
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool, device=dets.device)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


_LIBS: list = []  # keep torch.library.Library objects alive


def _define_torchvision_ops() -> None:
    import torch

    if hasattr(torch.ops, "torchvision") and hasattr(torch.ops.torchvision, "nms"):
        return
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl(op, nms_cpu, "CPU")
    _LIBS.append(lib)


def _patch_torchvision_boxes(module: ModuleType) -> None:
    original = module._assert_has_ops

    def assert_has_nms() -> None:
        # nms/batched_nms only need the op defined above; anything else keeps the check.
        caller = sys._getframe(1).f_code.co_name
        if caller not in ("nms", "_batched_nms_vanilla", "_batched_nms_coordinate_trick", "batched_nms"):
            original()

    module._assert_has_ops = assert_has_nms


# --- torchaudio -------------------------------------------------------------------


def _patch_torchaudio_utils(module: ModuleType) -> None:
    original = module._load_lib

    def load_lib(lib: str) -> bool:
        try:
            return original(lib)
        except OSError:
            return False

    module._load_lib = load_lib


# --- the import hook ----------------------------------------------------------------


class _Loader(importlib.abc.Loader):
    def __init__(self, wrapped: importlib.abc.Loader, before: Callable[[], None] | None,
                 after: Callable[[ModuleType], None] | None):
        self.wrapped, self.before, self.after = wrapped, before, after

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self.wrapped.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if self.before:
            self.before()
        self.wrapped.exec_module(module)
        if self.after:
            self.after(module)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, hooks: dict[str, tuple[Callable[[], None] | None, Callable[[ModuleType], None] | None]]):
        self.hooks = hooks

    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name not in self.hooks:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        before, after = self.hooks[name]
        spec.loader = _Loader(spec.loader, before, after)
        return spec


def install() -> bool:
    """Install the hook if this environment needs it; return whether it did."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return True
    need = needed()
    hooks: dict[str, tuple[Callable[[], None] | None, Callable[[ModuleType], None] | None]] = {}
    if need["torchvision"]:
        hooks["torchvision"] = (_define_torchvision_ops, None)
        hooks["torchvision.ops.boxes"] = (None, _patch_torchvision_boxes)
    if need["torchaudio"]:
        hooks["torchaudio._extension.utils"] = (None, _patch_torchaudio_utils)
    if not hooks:
        return False
    sys.meta_path.insert(0, _Finder(hooks))
    return True


PTH_NAME = "zz_earshot_torch_compat.pth"  # after setuptools' __editable__ .pth files
PTH_LINE = "import components.torch_compat as _c; _c.install()\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m components.torch_compat [--write-pth DIR]``: report, optionally install."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-pth", metavar="SITE_PACKAGES", help="write (or remove) the .pth hook there")
    args = parser.parse_args(argv)
    need = needed()
    if args.write_pth:
        pth = Path(args.write_pth) / PTH_NAME
        if any(need.values()):
            pth.write_text(PTH_LINE)
        else:
            pth.unlink(missing_ok=True)
    print(json.dumps({"needed": need}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
