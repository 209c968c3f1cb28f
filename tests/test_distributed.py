"""Several processes through torchrun: each takes its part of every batch, and together they match one process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from pawnet import augment
from pawnet.distributed import Group

from conftest import TRAIN, rows, run_cli


def test_processes_augmenting_their_parts_equal_one_process_augmenting_the_batch():
    x = torch.rand(10, 3, 16, 16) * 255
    whole = augment.TUTORIAL(x, torch.Generator().manual_seed(3))
    parts = []
    for rank in range(3):
        rows = Group(rank, 3).part(10)
        parts.append(augment.TUTORIAL(x[rows], torch.Generator().manual_seed(3), draw=10, rows=rows))
    assert [len(p) for p in parts] == [3, 4, 3]
    assert torch.allclose(torch.cat(parts), whole, atol=1e-4)


def test_parts_cover_every_item_once():
    for n in (0, 1, 7, 64):
        for world in (1, 2, 3):
            covered = [i for r in range(world) for i in range(n)[Group(r, world).part(n)]]
            assert covered == list(range(n))


def test_two_processes_with_torchrun_match_one_process(data, tmp_path):
    common = [str(data), *TRAIN, "--precision", "fp32", "--batch-size", "15"]  # odd: parts of 8 and 7
    one = run_cli("train", *common, "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "pawnet",
            "train",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("best epoch") == 1  # only rank 0 speaks

    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["training"]["processes"] == 2
    written = sorted(f.name for f in (tmp_path / "two").iterdir())
    assert written == sorted(f.name for f in (tmp_path / "one").iterdir())  # one complete run directory, no strays
    for a, b in zip(rows(tmp_path / "one"), rows(tmp_path / "two"), strict=True):
        for key in ("train_loss", "val_loss", "val_acc", "train_acc"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-4), key
    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-4), name
