"""The compat layer makes the CUDA-built torchvision/torchaudio wheels import on CPU torch."""

import subprocess
import sys

import torch

from components import torch_compat


def test_imports_work_in_a_fresh_interpreter():
    code = ("import torch, torchvision, torchaudio, lpips, torchmetrics\n"
            "from torchvision.ops import nms\n"
            "b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])\n"
            "print(nms(b, torch.tensor([.9, .8, .7]), .5).tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[0, 2]"


def test_nms_cpu_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=g) * 30], 1)
    scores = torch.rand(200, generator=g)
    keep = torch_compat.nms_cpu(boxes, scores, 0.4).tolist()
    # brute force: a box is kept iff no kept higher-scoring box overlaps it by > 0.4
    from torchvision.ops import box_iou

    iou = box_iou(boxes, boxes)
    expect = []
    for i in scores.argsort(descending=True).tolist():
        if all(iou[i, j] <= 0.4 for j in expect):
            expect.append(i)
    assert keep == expect


def test_needed_is_false_for_cpu_builds(monkeypatch):
    monkeypatch.setattr(torch_compat, "_is_cuda_build", lambda name: False)
    assert torch_compat.needed() == {"torchvision": False, "torchaudio": False}
    monkeypatch.setattr(torch_compat, "_is_cuda_build", lambda name: True)
    monkeypatch.setattr(torch_compat, "_torch_is_cpu_only", lambda: False)  # a CUDA torch
    assert torch_compat.needed() == {"torchvision": False, "torchaudio": False}
