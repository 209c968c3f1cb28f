"""Runs that survive kill -9 at any moment and resume to what an uninterrupted run gives."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pawnet.errors import UserError
from pawnet.rundir import CHECKPOINT_FORMAT, RunDir

from conftest import TRAIN, final_weights, rows, run_cli

HERE = Path(__file__).parent


def _stalled(moment, data, out, tmp_path, cwd=None):
    """A `pawnet train` process stopped still at `moment` (see stall.py), its run folder open."""
    env = {**os.environ, "PAWNET_CACHE": str(tmp_path / "cold-cache")}  # so that decoding happens
    child = subprocess.Popen(
        [sys.executable, str(HERE / "stall.py"), moment, "train", str(data), *TRAIN, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    for line in child.stdout:
        if line.strip() == "STALLED":
            return child
    pytest.fail(f"the run ended (exit {child.wait()}) before reaching {moment}")


@pytest.mark.parametrize("moment", ["decode", "step:7", "checkpoint:2", "checkpoint:4"])
def test_kill_9_at_any_moment_then_resume_equals_an_uninterrupted_run(moment, data, reference, tmp_path):
    out = tmp_path / "run"
    child = _stalled(moment, data, out, tmp_path)
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


def test_a_run_begun_with_a_relative_path_resumes_from_another_folder(data, reference, tmp_path):
    out = tmp_path / "run"
    child = _stalled("checkpoint:2", os.path.relpath(data, tmp_path), out, tmp_path, cwd=tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_cli("train", "--resume", out, cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert rows(out) == rows(reference)


def test_a_run_resumed_on_photos_changed_since_says_so(data, tmp_path):
    photos = shutil.copytree(data, tmp_path / "data")
    out = tmp_path / "run"
    child = _stalled("checkpoint:2", photos, out, tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    cats = sorted((photos / "training_set" / "horizontal").iterdir())
    shutil.copy(cats[0], cats[0].with_name("added.png"))
    r = run_cli("train", "--resume", out)
    assert r.returncode == 0, r.stderr
    assert "the photos have changed since the run began" in r.stdout + r.stderr


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


def test_a_checkpoint_of_another_network_layout_is_refused_in_one_line(data, tmp_path):
    # As a run of an earlier pawnet would be, whose network had another layout.
    out = tmp_path / "run"
    child = _stalled("checkpoint:2", data, out, tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    state = RunDir(out).load_checkpoint()
    state["model"] = {f"earlier.{k}": v for k, v in state["model"].items()}
    RunDir(out).save_checkpoint(state)

    r = run_cli("train", "--resume", out)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"pawnet: error: {out}: its checkpoint does not fit this pawnet's seed network (the run was started by a "
        "version that built or trained it otherwise), so it cannot be continued; train a new run"
    ]
    assert RunDir(out).load_checkpoint()["model"].keys() == state["model"].keys()  # nothing of it lost


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    torch.save({"format": CHECKPOINT_FORMAT, "payload": Path("x")}, RunDir(tmp_path).checkpoint)
    with pytest.raises(UserError, match="unreadable checkpoint"):
        RunDir(tmp_path).load_checkpoint()


def test_a_second_run_into_a_folder_in_use_is_refused_and_a_killed_one_resumes(data, tmp_path):
    out = tmp_path / "run"
    child = _stalled("step:3", data, out, tmp_path)
    try:
        for args in (["--resume", out], [data, *TRAIN, "--out", out]):  # not "already holds files" for a new run
            r = run_cli("train", *args)
            assert r.returncode == 2, r.stderr
            assert f"{out}: another pawnet run (process {child.pid}) is writing into this folder" in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert "data:" not in r.stdout  # refused before reading the data
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    r = run_cli("train", "--resume", out)  # the lock died with the process
    assert r.returncode == 0, r.stderr


def test_two_new_runs_into_one_folder_the_second_is_refused(data, tmp_path):
    import pawnet

    holder = RunDir(tmp_path / "run")
    holder.create()  # a run that got there first and is still deciding its data
    try:
        with pytest.raises(UserError, match="another pawnet run .* is writing into this folder"):
            pawnet.train(data, out=holder.path, epochs=1, log=lambda *_: None)
        assert [p.name for p in holder.path.iterdir()] == [".lock"]
    finally:
        holder.unlock()


def test_ctrl_c_during_training_says_how_to_resume(data, tmp_path):
    out = tmp_path / "run"
    child = _stalled("step:3", data, out, tmp_path)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130
    assert stderr.strip().splitlines()[-1] == f"pawnet: interrupted; continue with pawnet train --resume {out}"
