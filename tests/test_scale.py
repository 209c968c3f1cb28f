"""Devices, several processes through torchrun, and runs that survive kill -9."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pawnet import augment, devices
from pawnet.cache import MappedPixels, cached_decode
from pawnet.distributed import Group
from pawnet.errors import UserError
from pawnet.images import Preprocessing, load_pixels
from pawnet.rundir import CHECKPOINT_FORMAT, RunDir

from conftest import make_dataset, run_cli

HERE = Path(__file__).parent
TRAIN = ["--epochs", "4", "--img-size", "32", "--batch-size", "16"]


def test_auto_device_is_the_best_present_and_a_missing_one_is_one_line():
    assert devices.pick("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if devices._mps_available() else "cpu"
    assert devices.pick("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            devices.pick("cuda")
    with pytest.raises(UserError, match="unknown device"):
        devices.pick("tpu")
    with pytest.raises(UserError, match="needs a GPU"):
        devices.precision("fp16", torch.device("cpu"))
    assert devices.precision("fp32", torch.device("cpu")).dtype is None
    assert devices.precision("fp16", torch.device("cuda")).scaled  # float16 gradients get a scaler
    assert not devices.precision("bf16", torch.device("cuda")).scaled


def test_train_on_a_missing_device_is_one_line(data):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = run_cli("train", data, "--device", "cuda", "--out", data.parent / "nowhere")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in r.stderr


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


def test_cache_hands_back_pages_so_resident_memory_stays_bounded(tmp_path, monkeypatch):
    if not Path("/proc/self/smaps").exists():
        pytest.skip("resident memory per mapping is read from Linux's /proc/self/smaps")
    from PIL import Image

    prep = Preprocessing(size=64)
    files = []
    for i in range(400):  # 400 x 12 KB = 4.9 MB of pixels
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8)).save(files[-1])
    monkeypatch.setenv("PAWNET_CACHE", str(tmp_path / "cache"))
    cached_decode(files, prep)
    pixels = cached_decode(files, prep).pixels
    assert isinstance(pixels, MappedPixels)

    def resident_kb():
        lines = Path("/proc/self/smaps").read_text().splitlines()
        total, inside = 0, False
        for line in lines:
            if line[:1].isalnum() and "-" in line.split()[0]:
                inside = line.endswith(".pixels")
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
        return total

    monkeypatch.setattr(MappedPixels, "RELEASE_BYTES", 1 << 20)
    peak = 0
    for start in range(0, len(pixels), 20):
        assert np.array_equal(pixels[start : start + 20][0], load_pixels(files[start], prep))
        peak = max(peak, resident_kb())
    # Without handing pages back the whole 4.9 MB file ends up resident.
    assert peak < 2.5 * 1024


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("scale") / "data", layout="tutorial", n=40, size=32)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run, to compare interrupted and distributed runs with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    r = run_cli("train", data, *TRAIN, "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def final_weights(run: Path) -> dict:
    return torch.load(RunDir(run).checkpoint, weights_only=True)["model"]


@pytest.mark.parametrize("moment", ["decode", "step:7", "checkpoint:2", "checkpoint:4"])
def test_kill_9_at_any_moment_then_resume_equals_an_uninterrupted_run(moment, data, reference, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PAWNET_CACHE": str(tmp_path / "cold-cache")}  # so that decoding happens
    child = subprocess.Popen(
        [sys.executable, str(HERE / "stall.py"), moment, "train", str(data), *TRAIN, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    for line in child.stdout:
        if line.strip() == "STALLED":
            break
    else:
        pytest.fail(f"the run ended (exit {child.wait()}) before reaching {moment}")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)

    r = run_cli("train", "--resume", out)
    assert r.returncode == 0, r.stderr
    assert rows(out) == rows(reference)  # every epoch once, with the same figures
    assert [row["epoch"] for row in rows(out)] == ["1", "2", "3", "4"]
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    resumed = final_weights(out)
    for name, tensor in final_weights(reference).items():
        assert torch.equal(resumed[name], tensor), name
    assert not list(out.glob(".*.tmp")), "a killed write's temporary file was left behind"
    assert (out / "report.html").exists()


def test_resume_of_a_finished_run_says_so(reference, tmp_path):
    run = shutil.copytree(reference, tmp_path / "run")
    r = run_cli("train", "--resume", run)
    assert r.returncode == 0
    assert "finished already" in r.stdout
    assert (run / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()


def test_resume_refuses_what_is_not_a_run_and_new_settings(reference, tmp_path):
    for target in (tmp_path, tmp_path / "missing"):
        r = run_cli("train", "--resume", target)
        assert r.returncode == 2 and "not a pawnet training run" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("train", "--resume", reference, "--epochs", "9")
    assert r.returncode == 2 and "drop --epochs" in r.stderr


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    torch.save({"format": CHECKPOINT_FORMAT, "payload": Path("x")}, RunDir(tmp_path).checkpoint)
    with pytest.raises(UserError, match="unreadable checkpoint"):
        RunDir(tmp_path).load_checkpoint()


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
    import json

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


def test_data_refused_at_the_start_leaves_no_run_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    three = make_dataset(tmp_path / "three", classes=("a", "b", "c"), n=3)
    for data in (tmp_path / "empty", three):
        r = run_cli("train", data, "--out", tmp_path / "run")
        assert r.returncode == 2, r.stderr
        assert not (tmp_path / "run").exists()  # so the same --out works once the data is fixed
