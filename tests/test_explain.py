"""Grad-CAM finds the evidence, the steps figure shows the network's real activations, and the
report holds what it promises."""

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import pawnet
from pawnet.explanations import block_steps, grad_cam, last_feature_layer, seed_steps
from pawnet.models import SmallNet

from conftest import PATCH, SIZE, make_dataset, patch_image, pattern, run_cli


def test_grad_cam_peak_lands_on_the_patch(patch_model):
    hits, n = 0, 0
    for colour in ("red", "blue"):
        for i in range(25):
            img, (y, x) = patch_image(colour, 777_000 + 100 * (colour == "red") + i)
            heatmap = pawnet.explain(patch_model, img)
            assert heatmap.shape == (SIZE, SIZE) and heatmap.min() >= 0 and heatmap.max() <= 1
            py, px = np.unravel_index(heatmap.argmax(), heatmap.shape)
            # On the patch, give or take one cell of the 14x14 feature map the heatmap comes from.
            margin = SIZE // 14
            hits += (y - margin <= py < y + PATCH + margin) and (x - margin <= px < x + PATCH + margin)
            n += 1
    rate = hits / n
    print(f"Grad-CAM localisation rate: {rate:.2f} ({hits}/{n})")
    assert rate >= 0.9


def test_grad_cam_of_either_class(patch_model):
    img, _ = patch_image("red", 5)
    for name in patch_model.classes:
        cam = grad_cam(patch_model, img, class_name=name)
        assert patch_model.classes[cam.class_index] == name and cam.layer == "pool2"


def test_seed_steps_are_the_networks_activations(patch_model):
    model = patch_model.model
    img, _ = patch_image("blue", 3)
    recorded = {}
    hooks = [
        getattr(model, n).register_forward_hook(lambda m, a, out, n=n: recorded.__setitem__(n, out[0]))
        for n in ("conv1", "conv2", "pool2", "dense", "output")
    ]
    with torch.inference_mode():
        model(torch.from_numpy(img[None]).permute(0, 3, 1, 2).float())
    for h in hooks:
        h.remove()
    steps = seed_steps(model, img)
    assert np.allclose(steps["conv1"], F.relu(recorded["conv1"]).numpy(), atol=1e-5)
    assert np.allclose(steps["conv2"], F.relu(recorded["conv2"]).numpy(), atol=1e-5)
    # The network pools before its ReLU; the tutorial's order gives the same pooled maps.
    assert np.allclose(steps["pool2"], F.relu(recorded["pool2"]).numpy(), atol=1e-5)
    assert np.allclose(steps["dense"], F.relu(recorded["dense"]).numpy(), atol=1e-5)
    assert np.allclose(steps["output"], torch.sigmoid(recorded["output"]).numpy(), atol=1e-6)
    assert steps["flatten"].size == 32 * 14 * 14 and steps["detectors"].shape == (32, 3, 3, 3)


def test_deep_networks_show_first_and_last_blocks(tmp_path):
    data = make_dataset(tmp_path / "d", n=8)
    clf = pawnet.train(data, arch="small", epochs=1, img_size=32, out=tmp_path / "run", log=lambda *_: None)
    img = np.zeros((32, 32, 3), np.uint8)
    steps = block_steps(clf.model, img)
    assert steps["first"].shape == (SmallNet.widths[0], 32, 32)
    assert steps["last_name"] == last_feature_layer(clf.model, 32)
    assert steps["output"].sum() == pytest.approx(1, abs=1e-5)


def test_explain_command_writes_figures(patch_model, tmp_path):
    img_path = tmp_path / "red.png"
    Image.fromarray(patch_image("red", 42)[0]).save(img_path)
    result = run_cli("explain", patch_model.path, img_path, "--out", tmp_path / "cam.png", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["label"] in ("red", "blue") and summary["layer"] == "pool2"
    assert Image.open(tmp_path / "cam.png").size[0] > 300
    result = run_cli("explain", patch_model.path, img_path, "--steps", "--out", tmp_path / "steps.png", "--json")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "steps.png").size[0] > 1000
    # The steps end in the probability predict gives: the model's calibrated one.
    (said,) = json.loads(run_cli("predict", patch_model.path, img_path, "--json", "--all-known").stdout)
    steps = json.loads(result.stdout)
    assert steps["probability"] == pytest.approx(said["probability"], abs=1e-5) == summary["probability"]


@pytest.mark.parametrize(
    "extra, message",
    [(["--layer", "nope"], "no layer named"), (["--class", "green"], "no class")],
)
def test_explain_mistakes_exit_2(patch_model, tmp_path, extra, message):
    img_path = tmp_path / "red.png"
    Image.fromarray(patch_image("red", 1)[0]).save(img_path)
    result = run_cli("explain", patch_model.path, img_path, "--out", tmp_path / "x.png", *extra)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_explain_unreadable_image_exits_2(patch_model, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    result = run_cli("explain", patch_model.path, tmp_path / "bad.jpg")
    assert result.returncode == 2 and "bad.jpg" in result.stderr


def _images_in(page: str):
    return re.findall(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', page)


def test_training_writes_a_self_contained_report(patch_model):
    page = (patch_model.path / "report.html").read_text()
    for heading in ("Confusion matrix", "Per class", "Learning curves", "Data", "Timing", "Top losses", "Settings"):
        assert heading in page
    images = _images_in(page)
    assert len(images) == 2 + 2 * 16  # curves, calibration, then a thumbnail and a Grad-CAM per top loss
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    assert "http://" not in page and "https://" not in page


def test_evaluate_report_of_a_thousand_photos_stays_small(patch_model, tmp_path):
    folder = tmp_path / "many"
    for colour in ("red", "blue"):
        (folder / colour).mkdir(parents=True)
        for i in range(500):
            Image.fromarray(patch_image(colour, 50_000 + 1000 * (colour == "red") + i)[0]).resize((300, 300)).save(
                folder / colour / f"{i}.jpg"
            )
    result = run_cli("evaluate", patch_model.path, folder, "--report", tmp_path / "r.html")
    assert result.returncode == 0, result.stderr
    size = (tmp_path / "r.html").stat().st_size
    print(f"report on 1,000 photos: {size / 1e6:.2f} MB")
    assert size < 5_000_000 and len(_images_in((tmp_path / "r.html").read_text())) == 2 + 2 * 16


def test_explain_writes_into_runs_explain_by_default_and_makes_missing_folders(patch_model, tmp_path):
    img_path = tmp_path / "red.png"
    Image.fromarray(patch_image("red", 42)[0]).save(img_path)
    result = run_cli("explain", patch_model.path, img_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "explain" / "red_gradcam.png").is_file()
    assert result.stdout.rstrip().endswith(f"-> {Path('runs', 'explain', 'red_gradcam.png')}")
    result = run_cli("explain", patch_model.path, img_path, "--out", tmp_path / "nodir" / "x.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "nodir" / "x.png").is_file()


def test_evaluate_report_into_a_missing_folder(trained_model, tmp_path):
    result = run_cli(
        "evaluate", trained_model, trained_model.parent / "data", "--report", tmp_path / "nodir" / "r.html"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "nodir" / "r.html").is_file()


def test_an_output_folder_that_cannot_be_made_is_refused_before_the_work(trained_model, tmp_path):
    (tmp_path / "file").write_text("")
    result = run_cli("evaluate", trained_model, trained_model.parent / "data", "--report", tmp_path / "file" / "r.html")
    assert result.returncode == 2
    assert result.stderr.startswith(f"pawnet: error: {tmp_path / 'file'}: cannot make the folder (")
    assert "accuracy" not in result.stdout


@pytest.mark.parametrize(
    "command, message",
    [
        (lambda m, img, t: ["explain", m, img, "--out", t], "is a folder; name the file to write"),
        (lambda m, img, t: ["explain", m, img, "--out", t / "x.txt"], "explain draws a PNG; name the file .png"),
        (lambda m, img, t: ["explain", m, img, "--out", t / "noext"], "explain draws a PNG; name the file .png"),
        (lambda m, img, t: ["export", m, "--out", t], "is a folder; name the file to write"),
        (lambda m, img, t: ["evaluate", m, m.parent / "data", "--report", t], "is a folder; name the file to write"),
        (
            lambda m, img, t: ["evaluate", m, m.parent / "data", "--report", f"{t}/new/"],
            "names a folder; name the file",
        ),
    ],
    ids=[
        "explain-into-a-folder",
        "explain-txt",
        "explain-no-extension",
        "export-into-a-folder",
        "report-a-folder",
        "report-a-new-folder",
    ],
)
def test_an_output_that_cannot_be_written_is_one_line_before_the_work(trained_model, tmp_path, command, message):
    img = tmp_path / "img.png"
    Image.fromarray(pattern("vertical", 48, seed=1)).save(img)
    result = run_cli(*command(trained_model, img, tmp_path))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "accuracy" not in result.stdout


def test_the_steps_figure_names_the_predicted_class(monkeypatch, tmp_path):
    import matplotlib.axes

    from pawnet.plots import seed_steps_figure

    titles = []
    set_title = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(
        matplotlib.axes.Axes, "set_title", lambda ax, t, **kw: titles.append(t) or set_title(ax, t, **kw)
    )
    steps = {
        "input": np.zeros((64, 64, 3), np.uint8),
        "detectors": np.random.rand(32, 3, 3, 3),
        **{k: np.random.rand(32, 8, 8) for k in ("conv1", "pool1", "conv2", "pool2")},
        "flatten": np.random.rand(100),
        "dense": np.random.rand(128),
        "output": np.array([0.17]),
    }
    seed_steps_figure(steps, ["cats", "dogs"], tmp_path / "steps.png")
    assert titles[-1] == "Output: sigmoid\ncats with probability 0.83"
