"""Every architecture family learns a multi-class problem, and the pretrained weights are the package's."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import pawnet
from pawnet.architectures import ARCHITECTURES, build
from pawnet.images import Preprocessing, load_pixels
from pawnet.models import SmallNet, SmallNet1, SmallNet2, imagenet_weights

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


def test_a_run_begun_with_the_layout_before_is_finished_with_it(three_classes, tmp_path, monkeypatch):
    """A run interrupted under a pawnet whose `small` had the layout before continues, under this
    one, with the network it began with, and its model says which."""
    run = tmp_path / "run"

    def interrupt_after_the_first_epoch(line):
        if line.startswith("epoch   1/"):
            raise KeyboardInterrupt

    monkeypatch.setitem(ARCHITECTURES, "small", dataclasses.replace(ARCHITECTURES["small"], network=SmallNet2))
    with pytest.raises(KeyboardInterrupt):
        pawnet.train(three_classes, arch="small", epochs=3, img_size=32, out=run, log=interrupt_after_the_first_epoch)
    monkeypatch.undo()
    assert ARCHITECTURES["small"].network is SmallNet

    clf = pawnet.resume(run, log=lambda *_: None)
    assert type(clf.model) is SmallNet2
    config = json.loads((run / "config.json").read_text())
    assert config["network_revision"] == 2 and config["metrics"]["epochs"] == 3
    assert config["metrics"]["resumed_after_epoch"] == 1
    assert type(pawnet.load(run, engine="torch").model) is SmallNet2


@pytest.mark.parametrize("revision, layout", [(1, SmallNet1), (2, SmallNet2)])
def test_a_small_model_of_an_earlier_layout_still_loads(three_classes, tmp_path, revision, layout):
    """Models trained with an earlier `small` layout (the first: no network_revision in their
    config; the second: batch norm before pooling) load with the layout they were trained with,
    and predict what that network computes."""
    run = tmp_path / "run"
    pawnet.train(three_classes, arch="small", epochs=1, img_size=32, out=run, log=lambda *_: None)
    config = json.loads((run / "config.json").read_text())
    assert config["network_revision"] == 3
    prep = Preprocessing.from_dict(config["preprocessing"])
    old = build("small", 3, prep, revision=revision).eval()
    assert isinstance(old, layout)
    save_file(old.state_dict(), str(run / "model.safetensors"))
    del config["unknown"]
    if revision == 1:
        del config["network_revision"]
    else:
        config["network_revision"] = revision
    (run / "config.json").write_text(json.dumps(config))
    (run / "unknown.safetensors").unlink()

    photo = three_classes / "disc" / "0.png"
    (prediction,) = pawnet.load(run, engine="torch").predict(photo)
    x = torch.from_numpy(load_pixels(photo, prep)[None].copy()).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        expected = (old(x) / config["calibration"]["temperature"]).softmax(1)[0]
    assert [prediction["probabilities"][c] for c in config["classes"]] == pytest.approx(expected.tolist(), abs=1e-5)

    for revision, error in (("two", "network_revision must be a whole number"), (4, "not one this pawnet knows")):
        config["network_revision"] = revision
        (run / "config.json").write_text(json.dumps(config))
        result = run_cli("predict", run, photo)
        assert result.returncode == 2 and error in result.stderr and "Traceback" not in result.stderr
