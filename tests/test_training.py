"""Training through the command line and the Python API: what a run writes, and what it refuses."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import pawnet

from conftest import make_dataset, pattern, run_cli


def test_train_writes_a_model_directory(trained_model):
    assert {p.name for p in trained_model.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "metrics.csv",
        "curves.png",
    }
    config = json.loads((trained_model / "config.json").read_text())
    assert config["arch"] == "seed" and config["classes"] == ["horizontal", "vertical"]
    assert config["preprocessing"]["size"] == 32
    assert config["augmentation"]["shear_deg"] == 0.2
    assert config["training"]["epochs"] == 3 and config["training"]["batch_size"] == 32
    assert config["data"]["train_counts"] == {"horizontal": 24, "vertical": 24}
    assert config["pawnet_version"] == pawnet.__version__ and "torch_version" in config
    with open(trained_model / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    best = max(rows, key=lambda r: float(r["val_acc"]))
    assert config["metrics"]["val_accuracy"] == float(best["val_acc"])
    assert (trained_model / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_saved_weights_are_the_best_epochs(trained_model):
    config = json.loads((trained_model / "config.json").read_text())
    result = pawnet.load(trained_model).evaluate(trained_model.parent / "data")
    assert result["accuracy"] == pytest.approx(config["metrics"]["val_accuracy"], abs=1e-6)


def test_same_seed_repeats_exactly(tmp_path):
    data = make_dataset(tmp_path / "d", n=12)
    for name in ("a", "b"):
        pawnet.train(data, epochs=2, img_size=32, seed=7, out=tmp_path / name, log=lambda *_: None)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert (tmp_path / "a" / "metrics.csv").read_text().split("\n")[1].split(",")[:5] == (
        (tmp_path / "b" / "metrics.csv").read_text().split("\n")[1].split(",")[:5]
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_is_chosen_and_recorded(tmp_path, precision):
    data = make_dataset(tmp_path / "d", n=6)
    clf = pawnet.train(data, epochs=1, img_size=32, precision=precision, out=tmp_path / "run", log=lambda *_: None)
    assert clf.config["training"]["precision"] == precision


def test_unreadable_training_images_are_skipped_and_listed(tmp_path):
    data = make_dataset(tmp_path / "d", n=8)
    (data / "horizontal" / "zero.jpg").write_bytes(b"")
    (data / "vertical" / "text.png").write_text("hello")
    (data / "vertical" / "gone.png").symlink_to(tmp_path / "moved-away.png")
    (data / "vertical" / "loop.png").symlink_to("loop.png")  # reading it fails; naming it must not
    messages = []
    clf = pawnet.train(data, epochs=1, img_size=32, out=tmp_path / "run", log=messages.append)
    skipped = clf.config["data"]["skipped"]
    assert set(skipped) == {
        str(data / c / f)
        for c, f in [
            ("horizontal", "zero.jpg"),
            ("vertical", "gone.png"),
            ("vertical", "loop.png"),
            ("vertical", "text.png"),
        ]
    }
    assert (
        skipped[str(data / "vertical" / "gone.png")] == f"a link to {tmp_path / 'moved-away.png'}, which is not there"
    )
    assert skipped[str(data / "vertical" / "text.png")] == "not an image Pillow can read"
    left = [
        re.search(r"4 unreadable files skipped: (\d+) training images and (\d+) validation images left", m)
        for m in messages
    ]
    assert sum(map(int, next(m for m in left if m).groups())) == 16


def test_class_imbalance_turns_on_weights(tmp_path):
    data = make_dataset(tmp_path / "d", n=4)
    for i in range(10, 22):
        Image.fromarray(pattern("horizontal", 48, seed=i)).save(data / "horizontal" / f"extra{i}.png")
    clf = pawnet.train(data, epochs=1, img_size=32, out=tmp_path / "run", log=lambda *_: None)
    w = clf.config["training"]["class_weights"]
    assert w is not None and w[1] > w[0]


def test_data_refused_at_the_start_leaves_no_run_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    three = make_dataset(tmp_path / "three", classes=("a", "b", "c"), n=3)
    for data in (tmp_path / "empty", three):
        r = run_cli("train", data, "--out", tmp_path / "run")
        assert r.returncode == 2, r.stderr
        assert not (tmp_path / "run").exists()  # so the same --out works once the data is fixed


def test_finetune_trains_every_weight_of_the_pretrained_network(tmp_path):
    from pawnet.models import imagenet_weights

    data = make_dataset(tmp_path / "d", n=8)
    clf = pawnet.train(
        data, arch="efficientnet_lite0", finetune=True, epochs=1, img_size=32, out=tmp_path / "run", log=lambda *_: None
    )
    assert clf.config["training"]["train"] == "all" and clf.config["run"]["finetune"] is True
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    body = "backbone._conv_stem.weight"
    assert body in saved  # the whole network is saved, not just the head
    assert not torch.equal(saved[body], imagenet_weights()["_conv_stem.weight"])  # and the body was trained


def test_finetune_is_refused_for_networks_trained_whole_already(tmp_path):
    data = make_dataset(tmp_path / "d", n=4)
    result = run_cli("train", data, "--arch", "small", "--finetune", "--out", tmp_path / "run")
    assert result.returncode == 2 and "--finetune is for pretrained networks" in result.stderr


def test_an_empty_class_folder_is_named_in_the_log(tmp_path):
    data = make_dataset(tmp_path / "d", n=6)
    (data / "birds").mkdir()
    messages = []
    clf = pawnet.train(data, epochs=1, img_size=32, out=tmp_path / "run", log=messages.append)
    assert clf.classes == ["horizontal", "vertical"]
    assert (
        f"warning: {data / 'birds'}: holds no images, so it is not a class (the classes are horizontal, vertical)"
        in messages
    )


def test_a_file_it_may_not_read_is_skipped_not_a_crash(tmp_path, unreadable):
    data = make_dataset(tmp_path / "d", layout="tutorial", n=8)
    locked = unreadable(data / "training_set" / "horizontal" / "1.png")
    messages = []
    clf = pawnet.train(data, epochs=1, img_size=32, out=tmp_path / "run", log=messages.append)
    assert clf.config["data"]["skipped"] == {str(locked): "permission denied"}
    assert f"skipped {locked}: permission denied" in messages


def test_empty_files_in_both_sets_are_not_a_leak(tmp_path):
    data = make_dataset(tmp_path / "d", layout="tutorial", n=8)
    (data / "training_set" / "horizontal" / "empty.png").write_bytes(b"")
    (data / "test_set" / "horizontal" / "empty.png").write_bytes(b"")
    messages = []
    clf = pawnet.train(data, epochs=1, img_size=32, out=tmp_path / "run", log=messages.append)
    assert clf.config["data"]["leakage"]["exact_duplicates"] == 0
    assert not any("byte-identical" in m for m in messages)
