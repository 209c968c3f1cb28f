"""predict and evaluate, through the command line and the Python API, on images made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pawnet
from pawnet.cli import main

from conftest import pattern, read_json, run_cli


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


def test_photos_named_after_an_option_are_photos_too(trained_model, tmp_path, capsys):
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(paths):
        Image.fromarray(pattern("horizontal", 48, seed=i)).save(path)
    argv = ["predict", str(trained_model), str(paths[0]), "--engine", "torch", str(paths[1]), "--json", str(paths[2])]
    assert main(argv) == 0
    assert [r["path"] for r in read_json(capsys.readouterr().out)] == [str(p) for p in paths]
    result = run_cli("predict", trained_model, paths[0], "--bogus", paths[1])
    assert result.returncode == 2 and result.stderr.endswith("pawnet: error: unrecognized arguments: --bogus\n")


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


def test_a_mistyped_model_path_is_an_error_not_a_photo(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(pattern("vertical", 48, seed=1)).save(photo)
    (tmp_path / "empty").mkdir()
    r = run_cli("predict", "runs/sed", photo, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "pawnet: error: runs/sed: no such model directory (or image)\n"
    r = run_cli("predict", "empty", photo, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == "pawnet: error: empty: not a model directory (no config.json), and it holds no images\n"


def test_photos_and_folders_alone_and_default_use_the_shipped_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    Image.fromarray(pattern("vertical", 48, seed=1)).save(tmp_path / "photos" / "a.png")
    for args in (["photos/a.png"], ["photos"], ["default", "photos"]):
        assert main(["predict", *args, "--json"]) == 0, args
        (row,) = json.loads(capsys.readouterr().out)
        # Stripes are neither a cat nor a dog: the shipped model says so, and names what it sees.
        assert row["path"] == "photos/a.png" and row["known"] is False and row["label"] is None
        assert row["looks_like"] and set(row["probabilities"]) == {"cats", "dogs"}


def test_default_names_the_shipped_model_unless_a_path_of_that_name_exists(tmp_path, monkeypatch):
    from pawnet.loader import DEFAULT_MODEL, is_model, load, resolve

    monkeypatch.chdir(tmp_path)
    assert resolve("default") == resolve(None) == DEFAULT_MODEL and is_model("default")
    assert load("default").classes == ["cats", "dogs"]
    (tmp_path / "default").mkdir()
    assert resolve("default") == Path("default") and not is_model("default")
