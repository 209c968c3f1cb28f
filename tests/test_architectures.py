"""Every architecture family learns a multi-class problem, and the pretrained weights are the package's."""

import numpy as np
import pytest
import torch

import pawnet
from pawnet.architectures import build
from pawnet.images import Preprocessing
from pawnet.models import imagenet_weights

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
