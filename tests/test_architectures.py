"""Every architecture family learns a multi-class problem, and the pretrained weights are the package's."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import pawnet
from pawnet.architectures import build
from pawnet.images import Preprocessing, load_pixels
from pawnet.models import SmallNet1, imagenet_weights

from conftest import make_dataset, run_cli

THREE = ("horizontal", "vertical", "disc")


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("three") / "data", classes=THREE, n=40)


@pytest.mark.parametrize("arch, size, epochs", [("small", 48, 8), ("efficientnet_lite0", 64, 20)])
def test_learns_three_classes(three_classes, tmp_path, arch, size, epochs):
    clf = pawnet.train(three_classes, arch=arch, epochs=epochs, img_size=size, out=tmp_path / arch, log=lambda *_: None)
    assert clf.classes == ["disc", "horizontal", "vertical"]
    result = clf.evaluate(three_classes)
    assert result["accuracy"] >= 0.9, result
    assert len(result["confusion_matrix"]) == 3
    (prediction,) = clf.predict(three_classes / "disc" / "0.png")
    assert set(prediction["probabilities"]) == set(THREE)
    assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_seed_refuses_more_than_two_classes(three_classes, tmp_path):
    result = run_cli("train", three_classes, "--out", tmp_path / "run")
    assert result.returncode == 2 and "use --arch small" in result.stderr


def test_pretrained_weights_are_the_packages_bit_for_bit():
    model = build("efficientnet_lite0", 2, Preprocessing(224), pretrained=True)
    shipped = imagenet_weights()
    mine = model.backbone.state_dict()
    compared = [k for k in shipped if not k.startswith("_fc.")]
    assert len(compared) > 100
    assert all(torch.equal(mine[k], shipped[k]) for k in compared)


def test_pretrained_network_gives_imagenet_sensible_output():
    """With its own ImageNet classifier, the network is confident on some class, and repeatable."""
    model = build("efficientnet_lite0", 2, Preprocessing(224), pretrained=True).eval()
    fc = torch.nn.Linear(1280, 1000)
    shipped = imagenet_weights()
    fc.load_state_dict({"weight": shipped["_fc.weight"], "bias": shipped["_fc.bias"]})
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, 224, 224)).astype(np.float32))
    with torch.inference_mode():
        logits = fc(model.embed(x))
        again = fc(model.embed(x))
    assert torch.isfinite(logits).all() and torch.equal(logits, again)
    p = logits.softmax(1)
    assert torch.allclose(p.sum(1), torch.ones(2)) and p.max() > 10 / 1000


def test_small_s_first_filters_are_the_photos_patch_directions_and_stay_fixed(three_classes, tmp_path):
    # Fitted before the first step and never trained: after two epochs they are still orthonormal,
    # each beside its opposite, as no trained filters would be.
    run = tmp_path / "run"
    pawnet.train(three_classes, arch="small", epochs=2, img_size=32, out=run, log=lambda *_: None)
    weights = load_file(str(run / "model.safetensors"))["features.0.weight"].flatten(1)
    half = len(weights) // 2
    assert torch.equal(weights[:half], -weights[half:])
    assert torch.allclose(weights[:half] @ weights[:half].T, torch.eye(half), atol=1e-5)


def test_a_small_model_of_the_first_layout_still_loads(three_classes, tmp_path):
    """Models trained before `small` became narrower (no network_revision in their config) load
    with the layout they were trained with, and predict what that network computes."""
    run = tmp_path / "run"
    pawnet.train(three_classes, arch="small", epochs=1, img_size=32, out=run, log=lambda *_: None)
    config = json.loads((run / "config.json").read_text())
    assert config["network_revision"] == 2
    prep = Preprocessing.from_dict(config["preprocessing"])
    old = build("small", 3, prep, revision=1).eval()
    assert isinstance(old, SmallNet1)
    save_file(old.state_dict(), str(run / "model.safetensors"))
    for key in ("network_revision", "unknown"):
        del config[key]
    (run / "config.json").write_text(json.dumps(config))
    (run / "unknown.safetensors").unlink()

    photo = three_classes / "disc" / "0.png"
    (prediction,) = pawnet.load(run, engine="torch").predict(photo)
    x = torch.from_numpy(load_pixels(photo, prep)[None].copy()).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        expected = (old(x) / config["calibration"]["temperature"]).softmax(1)[0]
    assert [prediction["probabilities"][c] for c in config["classes"]] == pytest.approx(expected.tolist(), abs=1e-5)

    for revision, error in (("two", "network_revision must be a whole number"), (3, "not one this pawnet knows")):
        config["network_revision"] = revision
        (run / "config.json").write_text(json.dumps(config))
        result = run_cli("predict", run, photo)
        assert result.returncode == 2 and error in result.stderr and "Traceback" not in result.stderr
