"""Which engine predicts: a model directory on onnxruntime by default (exported once into the
cache folder), on PyTorch when asked or when the export cannot be made, with the same answers."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pawnet
from pawnet import engine
from pawnet.classifier import Classifier
from pawnet.errors import UserError

from conftest import BLOCK_TORCH, pattern, run_cli
from nodes import free_port


@pytest.fixture
def model(trained_model, tmp_path, monkeypatch):
    """A copy of the trained model and a cache folder of this test's own."""
    monkeypatch.setenv("PAWNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(engine.ENGINE_VARIABLE, raising=False)
    shutil.copytree(trained_model, tmp_path / "run")
    return tmp_path / "run"


def pixels(n: int = 6) -> np.ndarray:
    kinds = ["horizontal", "vertical", "disc"]
    return np.stack([pattern(kinds[i % 3], 32, seed=i) for i in range(n)])


def test_auto_runs_onnxruntime_with_pytorchs_answers_and_exports_once(model, monkeypatch):
    said = []
    fast = pawnet.load(model, log=said.append)
    assert isinstance(fast, engine.CompiledModel) and said == []  # exported when it first predicts
    slow = pawnet.load(model, engine="torch")
    assert isinstance(slow, Classifier)
    a, b = fast.outputs(pixels()), slow.outputs(pixels())
    assert len(said) == 1 and "once" in said[0] and fast.session is not None
    assert np.abs(a.probabilities - b.probabilities).max() < 1e-4
    assert np.array_equal(a.probabilities.argmax(1), b.probabilities.argmax(1))
    assert np.abs(a.scores - b.scores).max() < 1e-4

    def no_export(*_):
        raise AssertionError("exported again")

    monkeypatch.setattr(engine.CompiledModel, "_export", no_export)
    again = pawnet.load(model, log=said.append)
    again.outputs(pixels(1))
    assert again.session is not None and len(said) == 1


def test_the_engine_is_chosen_by_argument_or_environment(model, monkeypatch):
    monkeypatch.setenv(engine.ENGINE_VARIABLE, "torch")
    assert isinstance(pawnet.load(model), Classifier)
    assert isinstance(pawnet.load(model, engine="onnxruntime"), engine.CompiledModel)
    monkeypatch.setenv(engine.ENGINE_VARIABLE, "tensorflow")
    with pytest.raises(UserError, match="^PAWNET_ENGINE='tensorflow': choose one of auto, onnxruntime, torch$"):
        pawnet.load(model)
    with pytest.raises(UserError, match="^engine 'gpu': choose one of"):
        pawnet.load(model, engine="gpu")


def test_a_retrained_model_is_exported_anew(model):
    before = engine.exported_path(model)
    (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes() + b" ")
    assert engine.exported_path(model) != before


def test_a_failed_export_falls_back_to_pytorch_saying_so(model, monkeypatch):
    def broken(*_, **__):
        raise RuntimeError("the exporter fell over\nwith a long story")

    monkeypatch.setattr("pawnet.onnx_export.export", broken)
    said = []
    clf = pawnet.load(model, log=said.append)
    expected = pawnet.load(model, engine="torch").outputs(pixels()).probabilities
    assert np.array_equal(clf.outputs(pixels()).probabilities, expected)
    assert said[-1].endswith("runs on PyTorch (its export for onnxruntime failed: the exporter fell over)")
    clf.outputs(pixels())
    assert len(said) == 2  # said once
    with pytest.raises(UserError, match="could not run on onnxruntime"):
        pawnet.load(model, engine="onnxruntime", log=lambda *_: None).outputs(pixels())
    assert not engine.exported_path(model).exists()


def test_a_cache_folder_that_cannot_be_written_leaves_pytorch_to_predict(model, monkeypatch, tmp_path):
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("PAWNET_CACHE", str(tmp_path / "a file" / "cache"))
    said = []
    clf = pawnet.load(model, log=said.append)
    clf.outputs(pixels())
    folder = tmp_path / "a file" / "cache" / "onnx"
    assert said == [f"note: {model} runs on PyTorch (cannot write to the cache folder {folder}: Not a directory)"]


def test_a_damaged_cached_export_is_made_again(model):
    pawnet.load(model, log=lambda *_: None).outputs(pixels(1))
    cached = engine.exported_path(model)
    cached.write_bytes(cached.read_bytes()[:1000])
    said = []
    pawnet.load(model, log=said.append).outputs(pixels(1))
    assert len(said) == 1 and engine.OnnxClassifier.load(cached).config["classes"] == ["horizontal", "vertical"]


@pytest.mark.parametrize("name", ["model.safetensors", "unknown.safetensors"])
def test_a_broken_model_directory_is_the_usual_one_line_error(model, name):
    (model / name).write_bytes(b"not weights")
    with pytest.raises(UserError, match=name):
        pawnet.load(model, log=lambda *_: None)


def test_explanations_follow_gradients_through_pytorch(model):
    fast = pawnet.load(model, log=lambda *_: None)
    cam = fast.grad_cam(pixels(1)[0])
    assert cam.heatmap.shape == (32, 32) and 0 <= cam.heatmap.min() <= cam.heatmap.max() <= 1


def test_predict_exports_once_then_runs_without_pytorch(model, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(pattern("vertical", 32)).save(photo)
    first = run_cli("predict", str(model), str(photo), "--json")
    assert first.returncode == 0 and "preparing" in first.stderr and "once" in first.stderr
    torch_run = run_cli("predict", str(model), str(photo), "--json", "--engine", "torch")
    second = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "predict", str(model), str(photo), "--json"],
        capture_output=True,
        text=True,
    )
    assert second.returncode == 0, second.stderr
    assert "preparing" not in second.stderr
    a, b = json.loads(second.stdout)[0], json.loads(torch_run.stdout)[0]
    assert a["label"] == b["label"] and abs(a["probabilities"]["vertical"] - b["probabilities"]["vertical"]) < 1e-4


def test_serve_prepares_the_model_before_it_says_serving(model, tmp_path, monkeypatch):
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("PAWNET_CACHE", str(tmp_path / "a file"))
    done = run_cli("serve", str(model), "--engine", "onnxruntime", "--port", str(free_port()))
    assert done.returncode == 2 and "serving" not in done.stdout
    assert done.stderr.strip().splitlines() == [
        f"pawnet: error: {model} could not run on onnxruntime (cannot write to the cache folder "
        f"{tmp_path / 'a file' / 'onnx'}: Not a directory)"
    ]


@pytest.fixture
def with_ranges(model, trained_model):
    """The model with the ranges of its layers' values on its training photos, as the shipped one has."""
    pawnet.export(
        model,
        model.parent / "measured.int8.onnx",
        quantize=True,
        calibrate=trained_model.parent / "data",
        keep_ranges=model / "int8_ranges.json",
        log=lambda *_: None,
    )
    return model


def test_a_model_holding_its_ranges_runs_int8_and_float32_for_the_photos_it_is_unsure_of(with_ranges, monkeypatch):
    said = []
    fast = pawnet.load(with_ranges, log=said.append)
    fast.outputs(pixels())
    assert fast.int8 and len(said) == 1 and "in int8" in said[0]
    plain = pawnet.load(with_ranges, engine="onnxruntime")
    reference = plain.outputs(pixels())
    assert not plain.int8

    monkeypatch.setattr(engine, "UNSURE_BELOW", 1.01)
    monkeypatch.setattr(engine, "UNSURE_WITHIN", np.inf)  # unsure of every photo: float32's answers throughout
    every = pawnet.load(with_ranges).outputs(pixels())
    np.testing.assert_allclose(every.probabilities, reference.probabilities, atol=1e-6)
    np.testing.assert_allclose(every.scores, reference.scores, atol=1e-6)

    monkeypatch.setattr(engine, "UNSURE_BELOW", 0.0)
    monkeypatch.setattr(engine, "UNSURE_WITHIN", 0.0)  # sure of every photo: int8's own answers, near float32's
    none = pawnet.load(with_ranges).outputs(pixels())
    assert not np.allclose(none.probabilities, reference.probabilities, atol=1e-6)
    assert np.abs(none.probabilities - reference.probabilities).max() < 0.2


def _renamed(stored: dict) -> str:
    stored["data"] = {f"renamed_{name}": value for name, value in stored["data"].items()}  # another exporter's names
    return json.dumps(stored)


def _bad_value(stored: dict) -> str:
    first = next(iter(stored["data"].values()))
    first["lowest"] = "abc"
    return json.dumps(stored)


@pytest.mark.parametrize(
    ("damage", "note"),
    [
        (_renamed, "was measured on another export of this model"),
        (lambda stored: "{not json", "not readable int8 ranges (not onnxruntime's calibration cache"),
        (lambda stored: "", "not readable int8 ranges"),
        (_bad_value, "int8 ranges that cannot be used"),
    ],
)
def test_ranges_that_do_not_fit_the_export_leave_float32_said_once(with_ranges, tmp_path, damage, note):
    ranges = with_ranges / "int8_ranges.json"
    ranges.write_text(damage(json.loads(ranges.read_text())))
    said = []
    clf = pawnet.load(with_ranges, log=said.append)
    got = clf.outputs(pixels())
    assert not clf.int8 and said[-1].startswith(f"note: {with_ranges} runs in float32 (") and note in said[-1]
    expected = pawnet.load(with_ranges, engine="onnxruntime").outputs(pixels())
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-6)
    said.clear()
    pawnet.load(with_ranges, log=said.append).outputs(pixels())
    assert said == []
    result = run_cli("export", with_ranges, "--out", tmp_path / "q.onnx", "--quantize")
    assert result.returncode == 2 and note in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_int8_stopped_halfway_leaves_no_file_behind(with_ranges, tmp_path, monkeypatch):
    import onnxruntime.quantization

    def stopped(model_input, *_, calibration_cache_path=None, **__):
        # as onnxruntime's quantizer does: a file of its own beside its input, left when stopped
        Path(str(model_input).replace(".onnx", "-inferred.onnx")).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", stopped)
    with pytest.raises(KeyboardInterrupt):
        pawnet.load(with_ranges, log=lambda *_: None).outputs(pixels())
    cache = tmp_path / "cache" / "onnx"
    assert sorted(p.name for p in cache.iterdir()) == [engine.exported_path(with_ranges).name]


def test_files_of_an_export_killed_earlier_are_swept(model, tmp_path):
    cache = tmp_path / "cache" / "onnx"
    cache.mkdir(parents=True)
    left = cache / f".{engine.exported_path(model).name}.99999999.tmp.99999999.tmp"  # a process long gone
    left.write_bytes(b"half a model")
    pawnet.load(model, log=lambda *_: None).outputs(pixels(1))
    assert not left.exists()


def test_a_damaged_float32_export_beside_the_int8_one_is_made_again(with_ranges, monkeypatch):
    pawnet.load(with_ranges, log=lambda *_: None).outputs(pixels(1))
    float32 = engine.exported_path(with_ranges)
    float32.write_bytes(float32.read_bytes()[:1000])
    monkeypatch.setattr(engine, "UNSURE_BELOW", 1.01)
    monkeypatch.setattr(engine, "UNSURE_WITHIN", np.inf)  # every photo needs the float32 graph
    got = pawnet.load(with_ranges, log=lambda *_: None).outputs(pixels())
    expected = pawnet.load(with_ranges, engine="torch").outputs(pixels())
    assert np.abs(got.probabilities - expected.probabilities).max() < 1e-4
    assert engine.OnnxClassifier.load(float32).classes == ["horizontal", "vertical"]


def test_export_quantize_needs_no_photos_from_a_model_holding_its_ranges(with_ranges, tmp_path):
    result = run_cli("export", with_ranges, "--out", tmp_path / "q.onnx", "--quantize")
    assert result.returncode == 0, result.stderr
    assert f"its ranges from {with_ranges / 'int8_ranges.json'}" in result.stdout + result.stderr
    assert pawnet.load(tmp_path / "q.onnx").int8


def test_the_shipped_model_runs_int8_from_its_ranges(monkeypatch, tmp_path):
    """Its int8_ranges.json names the tensors of this PyTorch's export: else it would run float32."""
    monkeypatch.setenv("PAWNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(engine.ENGINE_VARIABLE, raising=False)
    said = []
    shipped = pawnet.load(log=said.append)
    photo = np.full((1, 256, 256, 3), 128, np.uint8)
    shipped.outputs(photo)
    assert shipped.int8 and not any("float32" in s for s in said)
