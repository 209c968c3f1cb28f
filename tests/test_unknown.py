"""Photos of none of the classes, and probabilities that mean what they say (calibration)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import pawnet
from pawnet import calibration, imagenet
from pawnet.errors import UserError
from pawnet.unknown import UnknownCheck, auroc

from conftest import make_dataset, pattern, read_json, run_cli


@pytest.fixture(scope="module")
def stripes(tmp_path_factory):
    """A seed network trained on horizontal against vertical stripes, and a folder of discs:
    a third kind, of neither class."""
    root = tmp_path_factory.mktemp("stripes")
    data = make_dataset(root / "data", layout="tutorial", n=48)
    discs = root / "discs"
    discs.mkdir()
    for i in range(20):
        Image.fromarray(pattern("disc", 48, seed=5000 + i)).save(discs / f"{i}.png")
    pawnet.train(data, epochs=6, img_size=32, out=root / "run", log=lambda *_: None)
    return root


def test_the_check_scores_vectors_off_the_training_directions_higher():
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(4, 64))
    inside = lambda n: rng.normal(size=(n, 4)) @ directions + 5 * directions[0]  # noqa: E731
    check = UnknownCheck.fit(inside(400), inside(200))
    outside = rng.normal(size=(200, 64)) * 3
    assert check.known(inside(200)).mean() >= 0.97
    assert check.known(outside).mean() <= 0.05
    assert auroc(check.scores(inside(200)), check.scores(outside)) > 0.99


def test_the_principal_directions_are_the_ones_an_svd_of_the_vectors_finds():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(500, 40)) * np.linspace(3, 0.1, 40)  # a clear order of directions
    check = UnknownCheck.fit(train, train[:100], dims=8)
    unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    svd_basis = np.linalg.svd(unit - unit.mean(0), full_matrices=False)[2][:8].T
    # Same subspace whatever the signs: each projector onto it is the other's.
    np.testing.assert_allclose(check.basis @ check.basis.T, svd_basis @ svd_basis.T, atol=1e-5)


def _group(name: str) -> np.ndarray:
    return next(members for group, members in imagenet.groups() if group == name)


def test_a_class_of_photos_of_most_dog_breeds_stands_for_every_breed():
    rng = np.random.default_rng(3)
    breeds = _group("dog")
    assert len(breeds) == 118 and 183 in breeds  # Kerry blue terrier
    looks_like = np.concatenate(
        [
            rng.choice(breeds[:100], 1000),  # photos of 100 breeds: the class means "dog"
            rng.integers(0, 1000, 1000),  # anything at all: no group
            np.where(rng.uniform(size=1000) < 0.8, 281, rng.integers(0, 1000, 1000)),  # mostly one ImageNet class
            rng.choice(breeds[:20], 30),  # 30 photos of 20 breeds say nothing of the other 98
        ]
    )
    labels = np.repeat([0, 1, 2, 3], [1000, 1000, 1000, 30])
    found = imagenet.widened(looks_like, labels, 4)
    assert set(found) == {0, 2}
    assert found[0][0] == "dog" and set(found[0][1]) == set(breeds)
    assert list(found[2][1]) == [281] and found[2][0] == imagenet.name(281)


def test_a_photo_the_body_sees_as_one_of_a_widened_group_is_known(tmp_path):
    rng = np.random.default_rng(4)
    inside = lambda n: rng.normal(size=(n, 4)) @ np.eye(4, 64) * 3 + 10 * np.eye(1, 64)  # noqa: E731
    check = UnknownCheck.fit(inside(400), inside(200))
    outside = rng.normal(size=(2, 64))
    outside[0, 40] = outside[1, 50] = 20  # what the body sees most: entry 40, and entry 50
    assert not check.known(outside).any()
    check.also_known = np.zeros(64, bool)
    check.also_known[40] = True
    assert check.known(outside).tolist() == [True, False]
    assert check.scores(outside)[0] == pytest.approx(check.threshold)
    assert check.known(inside(200)).mean() >= 0.97  # the rest as before
    from safetensors.numpy import save_file

    save_file(check.tensors(), str(tmp_path / "check.safetensors"))
    again = UnknownCheck.load(tmp_path / "check.safetensors", check.threshold)
    np.testing.assert_array_equal(again.also_known, check.also_known)
    np.testing.assert_allclose(again.scores(outside), check.scores(outside))
    save_file({**check.tensors(), "unknown.also_known": np.ones(3, np.uint8)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UserError, match=r"not a readable unknown-photo check \(unknown.also_known has shape"):
        UnknownCheck.load(tmp_path / "bad.safetensors", check.threshold)


def test_vectors_and_outputs_of_many_photos_are_each_photos_own(stripes):
    clf = pawnet.load(stripes / "run", engine="torch")
    pixels = np.random.default_rng(2).integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)  # two batches at 32 px
    singles = range(len(pixels))
    one_by_one = np.concatenate([clf.vectors(pixels[i : i + 1]) for i in singles])
    np.testing.assert_allclose(clf.vectors(pixels), one_by_one, atol=1e-5)
    out, alone = clf.outputs(pixels), [clf.outputs(pixels[i : i + 1]) for i in singles]
    np.testing.assert_allclose(out.probabilities, np.concatenate([o.probabilities for o in alone]), atol=1e-5)
    np.testing.assert_allclose(out.scores, np.concatenate([o.scores for o in alone]), atol=1e-5)
    assert clf.vectors(pixels[:0]).shape[0] == 0 and clf.outputs(pixels[:0]).probabilities.shape == (0, 2)


def test_auroc_counts_ties_as_half():
    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    # Logits whose honest probability of the right label is about 0.8, blown up five times.
    honest = np.where(labels == 1, 1.4, -1.4)[:, None] * np.array([[-0.5, 0.5]]) + rng.normal(0, 1.5, (2000, 2))
    logits = 5 * honest
    before = calibration.ece(calibration.softmax(logits, False), labels)
    t = calibration.calibrated_temperature(logits, labels, binary=False)
    after = calibration.ece(calibration.softmax(logits / t, False), labels)
    assert t > 2
    assert after < before / 3
    assert after < 0.03


def test_a_temperature_that_raises_the_ece_of_a_few_validation_photos_is_left_out():
    logits = np.array(
        [[-0.4, -0.5], [1.3, -1.1], [-0.9, 1.1], [-0.5, 0.4], [1.3, 0.8], [0.5, -0.4], [1.4, 0.4], [-1, -0.3]]
    )
    labels = np.array([1, 0, 1, 1, 1, 0, 0, 0])
    fitted = calibration.fit_temperature(logits, labels, binary=False)
    assert calibration.ece(calibration.softmax(logits / fitted, False), labels) > calibration.ece(
        calibration.softmax(logits, False), labels
    )
    assert calibration.calibrated_temperature(logits, labels, binary=False) == 1.0


@pytest.mark.parametrize("binary", [False, True])
def test_a_validation_set_without_one_mistake_does_not_make_every_probability_one(binary):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 300)
    # Every photo on the right side, by a margin: the log loss alone falls for ever as T shrinks.
    margin = np.where(labels == 1, 1.0, -1.0) * rng.uniform(0.5, 3, 300)
    logits = margin[:, None] if binary else np.stack([-margin, margin], 1) / 2
    t = calibration.fit_temperature(logits, labels, binary)
    confidence = calibration.softmax(logits / t, binary).max(1)
    assert confidence.mean() == pytest.approx(301 / 302, abs=1e-6)
    assert confidence.min() < 0.99
    # With a mistake among them the log loss has its own minimum, and that is the temperature.
    labels[0] = 1 - labels[0]
    t = calibration.fit_temperature(logits, labels, binary)
    losses = [calibration.log_loss(calibration.softmax(logits / (t * f), binary), labels) for f in (0.95, 1, 1.05)]
    assert losses[1] < min(losses[0], losses[2])


def test_ece_of_a_calibrated_model_is_near_zero_and_of_a_sure_wrong_one_is_one():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.5, 1, 20000)
    labels = (rng.uniform(size=20000) < p).astype(int)  # right exactly as often as it says
    assert calibration.ece(np.stack([1 - p, p], 1), labels) < 0.01
    assert calibration.ece(np.array([[0.0, 1.0]] * 10), np.zeros(10, int)) == pytest.approx(1.0)


def test_training_fits_calibration_and_the_check_and_records_them(stripes):
    config = json.loads((stripes / "run" / "config.json").read_text())
    assert config["calibration"]["temperature"] > 0
    assert config["calibration"]["val_ece_after"] <= config["calibration"]["val_ece_before"] + 1e-9
    assert config["unknown"]["val_known"] >= 0.95
    assert (stripes / "run" / "unknown.safetensors").is_file()
    assert "Calibration and unknown photos" in (stripes / "run" / "report.html").read_text()


def test_a_model_trained_on_two_kinds_calls_a_third_unknown(stripes):
    model = pawnet.load(stripes / "run")
    discs = model.predict(stripes / "discs")
    kept = model.predict(stripes / "data" / "test_set")
    assert np.mean([not r["known"] for r in discs]) >= 0.8
    assert np.mean([r["known"] for r in kept]) >= 0.9
    unknown = next(r for r in discs if not r["known"])
    assert unknown["label"] is None and unknown["probability"] is None
    assert unknown["unknown_score"] > model.threshold
    assert set(unknown["probabilities"]) == {"horizontal", "vertical"}
    assert all(r["known"] and r["label"] for r in model.predict(stripes / "discs", all_known=True))


def test_predict_prints_unknown_with_its_reason_and_json_carries_the_fields(stripes):
    r = run_cli("predict", stripes / "run", stripes / "discs")
    assert r.returncode == 0, r.stderr
    assert "unknown  (unlike the training photos: score" in r.stdout
    rows = read_json(run_cli("predict", stripes / "run", stripes / "discs", "--json").stdout)
    assert {"label", "probability", "probabilities", "known", "unknown_score"} <= set(rows[0])
    assert any(row["known"] is False and row["label"] is None for row in rows)
    rows = read_json(run_cli("predict", stripes / "run", stripes / "discs", "--json", "--all-known").stdout)
    assert all(row["known"] and row["label"] in ("horizontal", "vertical") for row in rows)


def test_evaluate_reports_ece_log_loss_and_with_unknown_how_well_it_tells_them_apart(stripes):
    r = run_cli("evaluate", stripes / "run", stripes / "data", "--unknown", stripes / "discs", "--json")
    assert r.returncode == 0, r.stderr
    result = read_json(r.stdout)
    assert 0 <= result["ece"] <= 1 and result["log_loss"] > 0
    assert result["unknown_auroc"] >= 0.9
    assert result["unknown_called_unknown"] >= 0.8
    assert result["data_called_unknown"] <= 0.1
    assert 0 <= result["accuracy_known"] <= 1
    r = run_cli("evaluate", stripes / "run", stripes / "data", "--unknown", stripes / "nowhere")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "nowhere: no such folder" in r.stderr


def test_evaluate_unknown_refuses_a_wrong_folder_before_the_work_and_counts_what_it_skips(stripes, tmp_path):
    (tmp_path / "empty").mkdir()
    photo = sorted((stripes / "discs").iterdir())[0]
    wrong = {tmp_path / "empty": "holds no images (--unknown)", photo: "not a folder of photos (--unknown)"}
    for folder, message in wrong.items():
        r = run_cli("evaluate", stripes / "run", stripes / "data", "--unknown", folder)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stdout == ""
    mixed = tmp_path / "mixed"
    shutil.copytree(stripes / "discs", mixed)
    (mixed / "broken.jpg").write_bytes(b"not a photo")
    r = run_cli("evaluate", stripes / "run", stripes / "data", "--unknown", mixed, "--json")
    result = read_json(r.stdout)
    assert result["unknown_n_images"] == len(list((stripes / "discs").iterdir()))
    assert result["unknown_n_skipped"] == 1 and next(iter(result["unknown_skipped"])).endswith("broken.jpg")
    r = run_cli("evaluate", stripes / "run", stripes / "data", "--unknown", mixed)
    assert "(1 unreadable, skipped)" in r.stdout


def test_output_cut_short_by_its_reader_is_not_an_error(stripes):
    command = [sys.executable, "-m", "pawnet", "evaluate", str(stripes / "run"), str(stripes / "data"), "--json"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as it usually is
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as p:
        p.stdout.close()  # as `| head` does once it has its lines
        err = p.stderr.read().decode()
    assert p.returncode == 0 and err == "", err


def test_onnx_gives_the_same_verdicts_and_calibrated_probabilities(stripes, tmp_path):
    onnx = tmp_path / "model.onnx"
    pawnet.export(stripes / "run", onnx, log=lambda *_: None)
    torch_model, onnx_model = pawnet.load(stripes / "run"), pawnet.load(onnx)
    for folder in (stripes / "discs", stripes / "data" / "test_set"):
        a, b = torch_model.predict(folder), onnx_model.predict(folder)
        assert [r["known"] for r in a] == [r["known"] for r in b]
        assert [r["label"] for r in a] == [r["label"] for r in b]
        for ra, rb in zip(a, b):
            assert ra["unknown_score"] == pytest.approx(rb["unknown_score"], abs=1e-4)
            for c in ra["probabilities"]:
                assert ra["probabilities"][c] == pytest.approx(rb["probabilities"][c], abs=1e-4)


def test_a_model_directory_from_before_the_check_still_loads_and_says_so_once(stripes, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(stripes / "run", old)
    config = json.loads((old / "config.json").read_text())
    del config["unknown"], config["calibration"]
    (old / "config.json").write_text(json.dumps(config))
    (old / "unknown.safetensors").unlink()
    r = run_cli("predict", old, stripes / "discs", "--json")
    assert r.returncode == 0, r.stderr
    assert all(row["known"] and row["unknown_score"] is None for row in read_json(r.stdout))
    assert r.stderr.count("trained before pawnet checked for photos of none of its classes") == 1
    r = run_cli("evaluate", old, stripes / "data", "--unknown", stripes / "discs")
    assert r.returncode != 0 and "no unknown-photo check" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["calibration"].update(temperature=-1), "calibration temperature must be a number above 0"),
        (lambda c: c["unknown"].update(threshold="high"), "unknown threshold must be a number"),
    ],
)
def test_a_bad_calibration_or_threshold_in_the_config_is_one_line(stripes, tmp_path, edit, message):
    bad = tmp_path / "bad"
    shutil.copytree(stripes / "run", bad)
    config = json.loads((bad / "config.json").read_text())
    edit(config)
    (bad / "config.json").write_text(json.dumps(config))
    r = run_cli("predict", bad, stripes / "discs")
    assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr


def test_a_missing_unknown_file_is_one_line(stripes, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(stripes / "run", broken)
    (broken / "unknown.safetensors").unlink()
    r = run_cli("predict", broken, stripes / "discs")
    assert r.returncode != 0 and "unknown.safetensors: missing" in r.stderr and "Traceback" not in r.stderr
