"""ONNX export with parity, prediction without PyTorch, int8, and the default model."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pawnet
from pawnet import imagenet
from pawnet.loader import DEFAULT_MODEL
from pawnet.onnx_export import _batch_axis_is_dynamic

from conftest import BLOCK_TORCH, SHARED_PHOTOS, make_dataset, needs_shared_photos, pattern, run_cli


@pytest.fixture(scope="module")
def exported(trained_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "seed.onnx"
    report = pawnet.export(trained_model, out, log=lambda *_: None)
    return out, report


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict:
    """A run folder of each architecture: one epoch at 64 px on 12 photos."""
    root = tmp_path_factory.mktemp("tiny")
    data = make_dataset(root / "d", n=6)
    archs = ("small", "efficientnet_lite0")
    return {a: pawnet.train(data, arch=a, epochs=1, img_size=64, out=root / a, log=lambda *_: None).path for a in archs}


@pytest.mark.parametrize("arch", ["small", "efficientnet_lite0"])
def test_every_architecture_exports_with_parity(tiny_runs, tmp_path, arch):
    report = pawnet.export(tiny_runs[arch], tmp_path / "m.onnx", log=lambda *_: None)
    assert report["max_probability_difference"] < 1e-4
    assert _batch_axis_is_dynamic(tmp_path / "m.onnx")


def test_onnx_gives_the_same_verdicts_where_a_class_stands_for_an_imagenet_group(tiny_runs, tmp_path):
    clf = pawnet.load(tiny_runs["efficientnet_lite0"], engine="torch")  # its own copy, changed below
    kinds = ("horizontal", "vertical", "disc")
    pixels = np.stack(
        [pattern(kinds[i % 3], 64, seed=i) for i in range(12)]
        + [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(6)]
    )
    out = clf.outputs(pixels)
    # Every photo too far out by its score, and those the body sees as the first one does in the group.
    clf.threshold = clf.check.threshold = clf.config["unknown"]["threshold"] = float(out.scores.min()) / 2
    clf.check.also_known = np.zeros(imagenet.N_CLASSES, bool)
    clf.check.also_known[out.looks_like[0]] = True
    expected = out.looks_like == out.looks_like[0]
    assert 0 < expected.sum() < len(expected)
    report = pawnet.export(clf, tmp_path / "m.onnx", log=lambda *_: None)
    assert report["max_probability_difference"] < 1e-4
    onnx = pawnet.load(tmp_path / "m.onnx")
    np.testing.assert_array_equal(clf.known(clf.outputs(pixels)), expected)
    np.testing.assert_array_equal(onnx.known(onnx.outputs(pixels)), expected)


def test_seed_export_parity_and_dynamic_batch(exported, trained_model):
    path, report = exported
    assert report["max_probability_difference"] < 1e-4
    assert _batch_axis_is_dynamic(path)
    onnx_clf, torch_clf = pawnet.load(path), pawnet.load(trained_model)
    assert onnx_clf.classes == torch_clf.classes and onnx_clf.preprocessing == torch_clf.preprocessing
    for n in (1, 7):
        pixels = np.stack([pattern("horizontal" if i % 2 else "vertical", 32, seed=i) for i in range(n)])
        p_onnx, p_torch = onnx_clf.probabilities(pixels), torch_clf.probabilities(pixels)
        assert p_onnx.shape == (n, 2) and np.abs(p_onnx - p_torch).max() < 1e-4


def test_onnx_predicts_and_evaluates_without_torch(exported, trained_model, tmp_path):
    path, _ = exported
    photo = tmp_path / "v.png"
    Image.fromarray(pattern("vertical", 48, seed=123)).save(photo)
    script = tmp_path / "no_torch.py"
    script.write_text(BLOCK_TORCH)
    import subprocess

    result = subprocess.run(
        [sys.executable, str(script), "predict", str(path), str(photo), "--json"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    (onnx_answer,) = json.loads(result.stdout)
    (torch_answer,) = pawnet.load(trained_model).predict(photo)
    assert onnx_answer["label"] == torch_answer["label"]
    assert onnx_answer["probability"] == pytest.approx(torch_answer["probability"], abs=1e-4)
    result = subprocess.run(
        [sys.executable, str(script), "evaluate", str(path), str(trained_model.parent / "data"), "--json"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(
        pawnet.load(trained_model).evaluate(trained_model.parent / "data")["accuracy"]
    )


def test_int8_export_reports_its_accuracy_change(trained_model, tmp_path):
    result = run_cli(
        "export",
        trained_model,
        "--out",
        tmp_path / "q.onnx",
        "--quantize",
        "--calibrate",
        trained_model.parent / "data",
        "--check",
        trained_model.parent / "data",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["quantized"] and 0 <= report["accuracy_int8"] <= 1 and 0 <= report["accuracy_float"] <= 1
    from pawnet.data import collect_images

    assert report["calibration_images"] == min(256, len(collect_images([trained_model.parent / "data"])))
    assert pawnet.load(tmp_path / "q.onnx").classes == ["horizontal", "vertical"]
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # int8 activations, not int8 weights alone


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--quantize needs --calibrate PHOTOS"),
        (["--calibrate", "nowhere"], "nowhere: no such folder of photos (--calibrate)"),
        (["--calibrate", "EMPTY"], "holds no readable images (--calibrate)"),
    ],
)
def test_int8_without_photos_to_calibrate_on_is_one_line(trained_model, tmp_path, extra, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.jpg").write_text("not a photo")
    extra = [str(tmp_path / "empty") if e == "EMPTY" else e for e in extra]
    result = run_cli("export", trained_model, "--out", tmp_path / "q.onnx", "--quantize", *extra)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("MODEL/config.json", "file name ends in .onnx"),
        ("MODEL/model.safetensors", "file name ends in .onnx"),
        ("TMP/noext", "file name ends in .onnx"),
        ("TMP/newdir/", "file name ends in .onnx"),
        ("TMP/fifo.onnx", "not a regular file"),
        pytest.param(
            "/proc/m.onnx",
            "/proc: cannot write there",
            marks=pytest.mark.skipif(
                not Path("/proc/self").is_dir(), reason="Linux's /proc is a folder no file goes in"
            ),
        ),
    ],
)
def test_export_writes_only_an_onnx_file_where_it_can(trained_model, tmp_path, out, message):
    os.mkfifo(tmp_path / "fifo.onnx")
    before = {p.name: p.read_bytes() for p in trained_model.iterdir() if p.is_file()}
    out = out.replace("MODEL", str(trained_model)).replace("TMP", str(tmp_path))
    result = run_cli("export", trained_model, "--out", out)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert {p.name: p.read_bytes() for p in trained_model.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.onnx"]


def test_export_onto_a_link_replaces_the_link_not_the_file_it_names(trained_model, tmp_path):
    config = (trained_model / "config.json").read_bytes()
    (tmp_path / "x.onnx").symlink_to(trained_model / "config.json")
    result = run_cli("export", trained_model, "--out", tmp_path / "x.onnx")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "x.onnx").is_symlink() and pawnet.load(tmp_path / "x.onnx").classes
    assert (trained_model / "config.json").read_bytes() == config


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--check", "nowhere"], "nowhere: no such folder"),
        (["--check", "DATA/horizontal/0.png"], "not a folder"),
        (["--calibrate", "DATA/horizontal/0.png"], "not a folder of photos (--calibrate)"),
    ],
)
def test_int8_export_refuses_a_wrong_folder_before_exporting(trained_model, tmp_path, extra, message):
    data = trained_model.parent / "data"
    photo = next((data / "test_set" / "horizontal").iterdir())
    extra = [e.replace("DATA/horizontal/0.png", str(photo)) for e in extra]
    calibrate = [] if "--calibrate" in extra else ["--calibrate", data]
    result = run_cli("export", trained_model, "--out", tmp_path / "q.onnx", "--quantize", *calibrate, *extra)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "" and not (tmp_path / "q.onnx").exists()


def test_int8_calibration_reads_past_files_it_cannot_read_and_says_so(trained_model, tmp_path):
    folder = tmp_path / "calibrate"
    folder.mkdir()
    for i in range(300):
        (folder / f"a{i:03}.jpg").write_bytes(b"not a photo")
    for i in range(3):
        Image.fromarray(pattern("vertical", 32, seed=i)).save(folder / f"z{i}.png")
    said = []
    report = pawnet.export(trained_model, tmp_path / "q.onnx", quantize=True, calibrate=folder, log=said.append)
    assert report["calibration_images"] == 3
    assert any("300 files that are not readable images left out of the calibration" in line for line in said)


def test_an_export_sweeps_what_killed_exports_left_beside_it(trained_model, tmp_path):
    dead = 2**22 + 1  # above Linux's largest process id
    left = [tmp_path / f".q.onnx.{dead}.tmp", tmp_path / f".q.onnx.prepared.{dead}.tmp"]
    for file in left:
        file.write_bytes(b"half an export")
    pawnet.export(trained_model, tmp_path / "q.onnx", quantize=True, calibrate=trained_model.parent / "data", log=print)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]


def test_ctrl_c_inside_the_exporter_is_a_ctrl_c(trained_model, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:  # as torch.onnx.export wraps it
            raise RuntimeError("Failed to export the model with torch.export") from e

    monkeypatch.setattr(torch.onnx, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pawnet.export(trained_model, tmp_path / "m.onnx", log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_an_export_stopped_halfway_leaves_the_file_there_was(trained_model, tmp_path, monkeypatch):
    from pawnet import onnx_export

    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "_quantize", stopped)
    with pytest.raises(KeyboardInterrupt):
        pawnet.export(trained_model, out, quantize=True, calibrate=trained_model.parent / "data", log=lambda *_: None)
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_file_that_is_not_onnx_exits_2(tmp_path):
    (tmp_path / "fake.onnx").write_bytes(b"not a model")
    (tmp_path / "x.png").write_bytes(b"")
    result = run_cli("predict", tmp_path / "fake.onnx", tmp_path / "x.png")
    assert result.returncode == 2 and "not a readable ONNX model" in result.stderr and "Traceback" not in result.stderr


def test_explain_refuses_onnx_in_one_line(exported, tmp_path):
    photo = tmp_path / "v.png"
    Image.fromarray(pattern("vertical", 48, seed=1)).save(photo)
    result = run_cli("explain", exported[0], photo)
    assert result.returncode == 2 and "needs a model directory" in result.stderr


def test_an_onnx_file_asked_to_run_on_pytorch_is_one_line(exported, tmp_path, monkeypatch):
    photo = tmp_path / "v.png"
    Image.fromarray(pattern("vertical", 48, seed=1)).save(photo)
    result = run_cli("predict", exported[0], photo, "--engine", "torch")
    assert (
        result.returncode == 2
        and "an ONNX file runs on onnxruntime; --engine torch is for a model directory" in result.stderr
    )
    monkeypatch.setenv("PAWNET_ENGINE", "torch")  # set for model directories: an ONNX file still runs
    assert run_cli("predict", exported[0], photo).returncode == 0


def test_default_model_is_small_and_loads():
    assert (DEFAULT_MODEL / "model.safetensors").stat().st_size < 100_000
    clf = pawnet.load()
    assert clf.classes == ["cats", "dogs"] and clf.config["weights"] == "head"
    assert clf.config["metrics"]["val_accuracy"] >= 0.985


@needs_shared_photos
def test_default_model_predicts_a_real_cat_without_a_model_argument(tmp_path):
    source = sorted((SHARED_PHOTOS / "test_set" / "cats").iterdir())[0]
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(source.read_bytes())
    result = run_cli("predict", photo, "--json")
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    assert answer["label"] == "cats" and answer["probability"] > 0.9


def test_export_into_a_missing_folder_says_only_what_it_did(trained_model, tmp_path):
    out = tmp_path / "nodir" / "m.onnx"
    result = run_cli("export", trained_model, "--out", out, "--quantize", "--calibrate", trained_model.parent / "data")
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    said = result.stdout + result.stderr
    for noise in ("torchvision", "Warning", "pre-processing", "WARNING"):
        assert noise not in said, said
    assert len(said.strip().splitlines()) == 3, said


def test_the_shipped_model_exports_outside_the_package(tmp_path, monkeypatch):
    from pawnet.onnx_export import output_path

    monkeypatch.chdir(tmp_path)
    assert output_path("default", None, quantize=False) == Path("runs", "export", "default.onnx")
    assert output_path(None, None, quantize=True) == Path("runs", "export", "default.int8.onnx")
    assert output_path("runs/seed", None, quantize=False) == Path("runs", "seed", "model.onnx")


# Crafted configs: each is one line and exit 2, whether it sits in config.json or in an ONNX file's metadata.
CRAFTED = {
    "no-classes": (lambda c: c.pop("classes"), "'classes'"),
    "one-class": (lambda c: c.update(classes=["cats"]), "at least two"),
    "classes-as-a-string": (lambda c: c.update(classes="cd"), "at least two"),
    "size-0": (lambda c: c["preprocessing"].update(size=0), "size"),
    "no-arch": (lambda c: c.pop("arch"), "'arch'"),
    "seed-with-3-classes": (lambda c: c.update(classes=["a", "b", "c"]), "3"),
    "size-1200": (lambda c: c["preprocessing"].update(size=1200), "size"),
    "std-0": (lambda c: c["preprocessing"].update(std=[0, 0, 0]), "std"),
}


def _crafted(kind, case, trained_model, onnx_path, tmp_path):
    config = json.loads((trained_model / "config.json").read_text())
    CRAFTED[case][0](config)
    if kind == "directory":
        target = tmp_path / "model"
        target.mkdir()
        (target / "config.json").write_text(json.dumps(config))
        (target / "model.safetensors").write_bytes((trained_model / "model.safetensors").read_bytes())
        return target
    import onnx

    model = onnx.load(str(onnx_path))
    for entry in model.metadata_props:
        if entry.key == "pawnet_config":
            entry.value = json.dumps(config)
    onnx.save(model, str(tmp_path / "crafted.onnx"))
    return tmp_path / "crafted.onnx"


@pytest.mark.parametrize("case", list(CRAFTED))
@pytest.mark.parametrize("kind", ["directory", "onnx"])
def test_a_crafted_config_is_one_line_and_exit_2(exported, trained_model, tmp_path, kind, case):
    model = _crafted(kind, case, trained_model, exported[0], tmp_path)
    Image.fromarray(pattern("vertical", 48, seed=1)).save(tmp_path / "dog.png")
    result = run_cli("predict", model, tmp_path / "dog.png")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert CRAFTED[case][1] in result.stderr, result.stderr


def test_an_onnx_file_whose_outputs_do_not_match_its_classes_exits_2(exported, trained_model, tmp_path):
    model = _crafted("onnx", "seed-with-3-classes", trained_model, exported[0], tmp_path)
    config = json.loads((trained_model / "config.json").read_text())
    import onnx

    onnx_model = onnx.load(str(model))
    for entry in onnx_model.metadata_props:
        if entry.key == "pawnet_config":
            entry.value = json.dumps({**config, "arch": "small", "classes": ["a", "b", "c"]})
    onnx.save(onnx_model, str(model))
    Image.fromarray(pattern("vertical", 48, seed=1)).save(tmp_path / "dog.png")
    result = run_cli("predict", model, tmp_path / "dog.png")
    assert result.returncode == 2 and "2 probabilities" in result.stderr and "3 classes" in result.stderr, result.stderr


def test_a_config_whose_size_does_not_fit_the_weights_is_refused_before_the_network_is_built(trained_model, tmp_path):
    import os
    import subprocess

    def peak_refusing(size: int) -> int:
        """The peak memory (KB) of `pawnet predict` refusing the model at `size`."""
        config = json.loads((trained_model / "config.json").read_text())
        config["preprocessing"]["size"] = size
        model = tmp_path / f"m{size}"
        model.mkdir()
        (model / "config.json").write_text(json.dumps(config))
        (model / "model.safetensors").write_bytes((trained_model / "model.safetensors").read_bytes())
        child = subprocess.Popen(
            [sys.executable, "-m", "pawnet", "predict", str(model), str(tmp_path)], stderr=subprocess.PIPE, text=True
        )
        _, status, usage = os.wait4(child.pid, 0)
        stderr = child.stderr.read()
        assert os.waitstatus_to_exitcode(status) == 2 and "weights do not fit" in stderr, stderr
        return usage.ru_maxrss

    # At 1,024 px the seed network's dense layer alone holds 1 GB; at 48 px, 2 MB. Refused before
    # either is built, the two processes peak alike, whatever PyTorch's own share on this machine.
    extra = peak_refusing(1024) - peak_refusing(48)
    assert extra < 300_000, f"{extra / 1000:.0f} MB more to refuse the larger network's weights"
