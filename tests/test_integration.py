"""The real photos: train the seed network briefly through the command line, then use it."""

import json

import pytest

from conftest import SHARED_PHOTOS, needs_shared_photos, run_cli

pytestmark = [
    pytest.mark.integration,
    needs_shared_photos,
]


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "seed"
    result = run_cli("train", SHARED_PHOTOS, "--epochs", "2", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["model"] == str(out)
    assert "2000 training images, 1000 validation images" in result.stderr
    return out, summary


def test_two_epochs_learn_something(seed_model):
    out, summary = seed_model
    # Two epochs of the tutorial's recipe get past chance on these photos, short of the 25-epoch result.
    assert 0.55 < summary["val_accuracy"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == ["cats", "dogs"]
    assert config["data"]["train_counts"] == {"cats": 1000, "dogs": 1000}


def test_evaluate_on_test_set(seed_model):
    out, summary = seed_model
    result = run_cli("evaluate", out, SHARED_PHOTOS / "test_set", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["n_images"] == 1000 and metrics["n_skipped"] == 0
    assert metrics["accuracy"] == pytest.approx(summary["val_accuracy"], abs=1e-6)
    assert [m["support"] for m in metrics["per_class"].values()] == [500, 500]


def test_predict_one_photo(seed_model):
    out, _ = seed_model
    photo = (
        SHARED_PHOTOS / "test_set" / "dogs" / sorted(p.name for p in (SHARED_PHOTOS / "test_set" / "dogs").iterdir())[0]
    )
    result = run_cli("predict", out, photo)
    assert result.returncode == 0, result.stderr
    path, label, probability = result.stdout.split()
    assert path == str(photo) and label in ("cats", "dogs") and 0.5 <= float(probability) <= 1.0
