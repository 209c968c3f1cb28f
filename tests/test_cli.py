"""train, evaluate and predict through the command line and the Python API, on images made here."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

import pawnet
from pawnet.cli import main

from conftest import make_dataset, pattern, read_json, run_cli


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


def test_evaluate_json_has_the_contracts_fields(trained_model, capsys):
    assert main(["evaluate", str(trained_model), str(trained_model.parent / "data"), "--json"]) == 0
    result = read_json(capsys.readouterr().out)
    for key in ("accuracy", "loss", "n_images", "n_skipped", "classes", "per_class", "confusion_matrix"):
        assert key in result
    assert result["data"].endswith("test_set") and result["n_images"] == 16
    assert set(result["per_class"]["horizontal"]) == {"precision", "recall", "f1", "support"}
    assert sum(map(sum, result["confusion_matrix"])) == 16


def test_evaluate_table(trained_model, capsys):
    assert main(["evaluate", str(trained_model), str(trained_model.parent / "data" / "test_set")]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out and "horizontal" in out


def test_predict_files_and_folders_with_an_unreadable_file(trained_model, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(pattern("vertical", 48, seed=99)).save(folder / "v.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    single = tmp_path / "h.png"
    Image.fromarray(pattern("horizontal", 48, seed=98)).save(single)
    assert main(["predict", str(trained_model), str(single), str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    results = read_json(captured.out)
    assert [r["path"] for r in results] == [str(single), str(folder / "broken.jpg"), str(folder / "v.png")]
    ok = results[0]
    assert ok["label"] in ("horizontal", "vertical")
    assert ok["probability"] == max(ok["probabilities"].values())
    assert sum(ok["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert "error" in results[1] and "label" not in results[1]
    assert "1 of 3 files could not be read" in captured.err


def test_predict_table_line(trained_model, tmp_path, capsys):
    path = tmp_path / "cat_or_dog_1.png"
    Image.fromarray(pattern("horizontal", 48, seed=5)).save(path)
    assert main(["predict", str(trained_model), str(path)]) == 0
    line = capsys.readouterr().out.strip()
    name, label, prob = line.split()
    assert name == str(path) and label in ("horizontal", "vertical") and 0.5 <= float(prob) <= 1


def test_python_api_predicts_arrays_and_pil_images(trained_model):
    clf = pawnet.load(trained_model)
    img = pattern("vertical", 48, seed=3)
    by_array, by_pil = clf.predict([img, Image.fromarray(img)])
    assert by_array["probabilities"] == by_pil["probabilities"]
    assert by_array["path"] == "<image 0>"


def test_tta_averages_with_the_mirror_image(trained_model):
    clf = pawnet.load(trained_model)
    img = pattern("disc", 32, seed=1)
    plain = clf.probabilities(img[None])
    mirrored = clf.probabilities(img[None, :, ::-1].copy())
    assert np.allclose(clf.probabilities(img[None], tta=True), (plain + mirrored) / 2, atol=1e-6)


# Each user mistake: one line on stderr, exit status 2, no traceback.
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
        (lambda m, t: ["train", make_dataset(t / "d", n=3), "--epochs", "0"], "at least 1"),
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
        "train-zero-epochs",
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


def test_unreadable_training_images_are_skipped_and_listed(tmp_path):
    data = make_dataset(tmp_path / "d", n=8)
    (data / "horizontal" / "zero.jpg").write_bytes(b"")
    (data / "vertical" / "text.png").write_text("hello")
    messages = []
    clf = pawnet.train(data, epochs=1, img_size=32, out=tmp_path / "run", log=messages.append)
    skipped = clf.config["data"]["skipped"]
    assert set(skipped) == {str(data / "horizontal" / "zero.jpg"), str(data / "vertical" / "text.png")}
    assert any("2 unreadable files skipped" in m for m in messages)


def test_class_imbalance_turns_on_weights(tmp_path):
    data = make_dataset(tmp_path / "d", n=4)
    for i in range(10, 22):
        Image.fromarray(pattern("horizontal", 48, seed=i)).save(data / "horizontal" / f"extra{i}.png")
    clf = pawnet.train(data, epochs=1, img_size=32, out=tmp_path / "run", log=lambda *_: None)
    w = clf.config["training"]["class_weights"]
    assert w is not None and w[1] > w[0]


def test_console_script_entry_and_version():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("pawnet ")
