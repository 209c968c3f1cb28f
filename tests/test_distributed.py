"""Several processes through torchrun: each takes its part of every batch, and together they match one process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pawnet import augment
from pawnet.distributed import Group

import nodes
from conftest import TRAIN, final_weights, rows, run_cli


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


# Two machines simulated on one (tests/nodes.py): the same tolerance as two processes on one.
TWO_NODES = [*TRAIN, "--precision", "fp32", "--batch-size", "15"]


def assert_same_run(a: Path, b: Path) -> None:
    """Two runs of the same settings: the same metrics per epoch and best weights within fp32
    noise; the last epoch's weights drift a little further (1.2e-4 measured after 4 epochs)."""
    for ra, rb in zip(rows(a), rows(b), strict=True):
        for key in ("train_loss", "val_loss", "val_acc", "train_acc"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), abs=2e-4), (ra["epoch"], key)
    best_a, best_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    last_a, last_b = final_weights(a), final_weights(b)
    for name in best_a:
        assert torch.allclose(best_a[name], best_b[name], atol=1e-4), name
        assert torch.allclose(last_a[name], last_b[name], atol=2e-4), name


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    r = run_cli("train", data, *TWO_NODES, "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def finish(launchers, timeout=300) -> list[int | None]:
    """The launchers' exit statuses; None for one still running after `timeout` seconds (then killed)."""
    codes = []
    for launcher in launchers:
        try:
            codes.append(launcher.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            nodes.kill_node(launcher)
            codes.append(None)
    return codes


@pytest.fixture(scope="module")
def two_nodes(data, tmp_path_factory) -> Path:
    """An uninterrupted run on two simulated machines: root/node0 and root/node1."""
    root = tmp_path_factory.mktemp("nodes")
    assert finish(nodes.start_nodes(root, data, ["data", *TWO_NODES, "--out", "run"])) == [0, 0]
    return root


def test_two_machines_train_one_model_equal_to_one_process_and_only_node_0_writes(one_process, two_nodes):
    logs = [(two_nodes / f"node{n}.log").read_text() for n in (0, 1)]
    assert "best epoch" in logs[0] and "best epoch" not in logs[1]  # only rank 0 speaks
    assert sorted(p.name for p in (two_nodes / "node1").iterdir()) == ["data"]  # node 1 wrote nothing
    run = two_nodes / "node0" / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in one_process.iterdir())
    assert json.loads((run / "config.json").read_text())["training"]["processes"] == 2
    assert_same_run(one_process, run)


def test_a_machine_killed_mid_run_stops_the_other_and_the_run_resumes_on_both(data, two_nodes, tmp_path):
    launchers = nodes.start_nodes(tmp_path, data, ["data", *TWO_NODES, "--out", "run"])
    metrics = tmp_path / "node0" / "run" / "metrics.csv"
    deadline = time.monotonic() + 300  # about 20 s beside other tests on 2 cores: a bound on a hang, not a speed test
    while not metrics.exists() and launchers[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metrics.exists(), (tmp_path / "node0.log").read_text()
    nodes.kill_node(launchers[1])  # node 1's machine dies during epoch 2
    killed = time.monotonic()
    assert finish(launchers[:1], timeout=60) == [1]  # node 0 fails, and soon: its peer's connections closed
    assert time.monotonic() - killed < 30
    left = len(rows(tmp_path / "node0" / "run"))
    assert 1 <= left < 4

    # The same two commands with --resume: the run folder is on node 0's machine only.
    assert finish(nodes.start_nodes(tmp_path, data, ["--resume", "run"])) == [0, 0]
    assert f"resuming run after epoch {left} of 4" in (tmp_path / "node0.log").read_text()
    assert sorted(p.name for p in (tmp_path / "node1").iterdir()) == ["data"]
    assert_same_run(two_nodes / "node0" / "run", tmp_path / "node0" / "run")
