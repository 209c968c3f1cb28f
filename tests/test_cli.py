"""The command line: user mistakes are one line and exit status 2; the console script runs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from pawnet.rundir import RunDir

from conftest import make_dataset, run_cli


def _newer_model(trained_model, tmp_path):
    target = tmp_path / "newer"
    target.mkdir()
    config = json.loads((trained_model / "config.json").read_text())
    config["format_version"] = 99
    (target / "config.json").write_text(json.dumps(config))
    (target / "model.safetensors").write_bytes((trained_model / "model.safetensors").read_bytes())
    return target


def _broken_weights(trained_model, tmp_path):
    target = tmp_path / "broken"
    target.mkdir()
    (target / "config.json").write_text((trained_model / "config.json").read_text())
    (target / "model.safetensors").write_bytes(b"\x00" * 100)
    return target


def _only_unreadable(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    return tmp_path / "bad.jpg"


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda m, t: ["train", t / "missing"], "no such folder"),
        (lambda m, t: ["train", (t / "empty").mkdir() or t / "empty"], "no images found"),
        (lambda m, t: ["train", make_dataset(t / "one", classes=("cats",), n=3)], "only one class"),
        (lambda m, t: ["train", make_dataset(t / "d", n=3), "--arch", "resnet9000"], "unknown architecture"),
        (lambda m, t: ["train", make_dataset(t / "d", n=3), "--out", m], "already holds files"),
        (lambda m, t: ["train", make_dataset(t / "d", n=3), "--out", t / "d" / "vertical" / "run"], "inside DATA"),
        (lambda m, t: ["train", make_dataset(t / "d", n=3), "--epochs", "0"], "--epochs 0: must be at least 1"),
        (lambda m, t: ["train", make_dataset(t / "d", n=3), "--img-size", "7"], "--img-size 7: must be from"),
        (lambda m, t: ["train", make_dataset(t / "d", n=3), "--out", _only_unreadable(t)], "is a file; --out names"),
        (lambda m, t: ["train", make_dataset(t / "d", n=3), "--out", _only_unreadable(t) / "run"], "bad.jpg is a file"),
        (lambda m, t: ["evaluate", t, m.parent / "data"], "not a pawnet model directory"),
        (lambda m, t: ["evaluate", t / "nope", m.parent / "data"], "no such model directory"),
        (lambda m, t: ["predict", _newer_model(m, t), t], "made by a newer pawnet"),
        (lambda m, t: ["predict", _broken_weights(m, t), t], "weights do not fit"),
        (lambda m, t: ["evaluate", m, make_dataset(t / "zoo", classes=("horizontal", "giraffe"), n=2)], "giraffe"),
        (lambda m, t: ["predict", m, _only_unreadable(t)], "could not be read"),
        (lambda m, t: ["predict", m, (t / "nothing").mkdir() or t / "nothing"], "no images found"),
    ],
    ids=[
        "train-missing-folder",
        "train-empty-folder",
        "train-one-class",
        "train-unknown-arch",
        "train-out-exists",
        "train-out-inside-data",
        "train-zero-epochs",
        "train-img-size-7",
        "train-out-a-file",
        "train-out-under-a-file",
        "not-a-model-directory",
        "missing-model",
        "newer-pawnet-model",
        "corrupt-weights",
        "evaluate-unknown-class",
        "predict-only-unreadable",
        "predict-empty-folder",
    ],
)
def test_user_mistakes_exit_2_with_one_line(trained_model, tmp_path, args, message):
    result = run_cli(*args(trained_model, tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "args, name",
    [
        (["predict", "", "photo.png"], "PATH"),
        (["predict", "photo.png", ""], "PATH"),
        (["train", "d", "--out", ""], "--out"),
        (["train", "--resume", ""], "--resume"),
        (["evaluate", "default", ""], "DATA"),
        (["data", "check", ""], "DATA"),
        (["export", "default", "--quantize", "--calibrate", ""], "--calibrate"),
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, args, name):
    make_dataset(tmp_path / "d", n=3)
    (tmp_path / "d" / "horizontal" / "0.png").rename(tmp_path / "photo.png")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert result.stderr == f"pawnet: error: {name}: an empty path names no file or folder\n"


def test_a_run_refused_for_its_photos_leaves_nothing_and_the_same_command_then_trains(tmp_path):
    data = make_dataset(tmp_path / "d", n=6, size=32)
    for photo in (data / "vertical").iterdir():
        photo.write_bytes(b"not a photo")
    command = ["train", data, "--out", tmp_path / "run", "--epochs", "1", "--img-size", "32"]
    result = run_cli(*command)
    assert result.returncode == 2 and "vertical has no readable training images" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()
    make_dataset(tmp_path / "d", n=6, size=32)  # the photos mended
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr


def test_training_whose_output_nobody_reads_goes_on_to_the_end(tmp_path):
    data = make_dataset(tmp_path / "d", n=6, size=32)
    command = [sys.executable, "-m", "pawnet", "train", str(data), "--out", str(tmp_path / "run"), "--epochs", "2"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as it usually is
    command += ["--img-size", "32"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
        p.stdout.close()  # as `| head` does once it has its lines
        err = p.stderr.read().decode()
    assert p.returncode == 0, err
    assert RunDir(tmp_path / "run").weights.is_file()


def test_an_empty_token_and_a_file_for_a_folder_are_one_line(tmp_path):
    # With a timeout of its own: a server that started would never end.
    result = subprocess.run(
        [sys.executable, "-m", "pawnet", "serve", "--token", ""], capture_output=True, text=True, timeout=120
    )
    assert (
        result.returncode == 2
        and result.stderr == "pawnet: error: --token: empty, so no request could ever be let in\n"
    )
    (tmp_path / "photo.jpg").write_bytes(b"")
    result = run_cli("data", "check", tmp_path / "photo.jpg")
    assert result.returncode == 2 and result.stderr == f"pawnet: error: {tmp_path / 'photo.jpg'}: not a folder\n"


@pytest.mark.parametrize("unbuffered", [False, True])
def test_predict_whose_reader_stops_early_ends_quietly(trained_model, unbuffered):
    folder = trained_model.parent / "data"  # dozens of photos: lines after the reader has gone
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | (
        {"PYTHONUNBUFFERED": "1"} if unbuffered else {}
    )
    pawnet = shlex.join([sys.executable, "-m", "pawnet", "predict", str(trained_model), str(folder)])
    script = f"{pawnet} | head -1 >/dev/null; exit ${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "unexpected" not in result.stderr, result.stderr


def test_console_script_entry_and_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("pawnet ")


def test_every_option_of_every_command_says_what_it_does():
    import argparse

    from pawnet.cli import _parser

    def commands(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, f"{prefix} {name}")
        yield prefix, parser

    silent = [
        f"{name} {action.option_strings[0] if action.option_strings else action.metavar}"
        for name, parser in commands(_parser(), "pawnet")
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert not silent, silent
