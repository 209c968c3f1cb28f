"""`pawnet data check` on a copy of real photos with planted faults: each is found, nothing else."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

import pawnet
from pawnet import audit

from conftest import SHARED_PHOTOS, needs_shared_photos, run_cli

pytestmark = needs_shared_photos


def _pick(split, cls, n, skip=0):
    return sorted((SHARED_PHOTOS / split / cls).iterdir())[skip : skip + n]


@pytest.fixture
def planted(tmp_path):
    root = tmp_path / "pets"
    for split, n in (("training_set", 8), ("test_set", 4)):
        for cls in ("cats", "dogs"):
            (root / split / cls).mkdir(parents=True)
            for f in _pick(split, cls, n):
                shutil.copy(f, root / split / cls / f.name)
    tc, td = root / "training_set" / "cats", root / "training_set" / "dogs"
    cats, dogs = sorted(tc.iterdir()), sorted(td.iterdir())
    spare = _pick("training_set", "cats", 2, skip=50)
    faults = {
        "truncated": tc / "truncated.jpg",
        "text": td / "notes.jpg",
        "png_named_jpg": tc / "really_png.jpg",
        "exact": tc / "copy_of_first.jpg",
        "near": td / "smaller_reencoded.jpg",
        "mirror": tc / "mirrored.jpg",
        "leak": root / "test_set" / "dogs" / "leaked.jpg",
    }
    faults["truncated"].write_bytes(spare[0].read_bytes()[: spare[0].stat().st_size // 2])
    faults["text"].write_text("this is not a photo")
    Image.open(spare[1]).save(faults["png_named_jpg"], format="PNG")
    shutil.copy(cats[0], faults["exact"])
    img = Image.open(dogs[0])
    img.resize((img.width * 7 // 10, img.height * 7 // 10)).save(faults["near"], quality=70)
    ImageOps.mirror(Image.open(cats[1])).save(faults["mirror"], quality=95)
    shutil.copy(dogs[1], faults["leak"])
    sources = {"exact": cats[0], "near": dogs[0], "mirror": cats[1], "leak": dogs[1]}
    return root, faults, sources


def test_every_planted_fault_is_found_and_nothing_else(planted):
    root, faults, sources = planted
    report = audit.check(root, use_cache=False)
    f = report["findings"]
    unreadable = {u["path"] for u in f["unreadable"]}
    assert unreadable == {str(faults["truncated"]), str(faults["text"])}
    assert [m["path"] for m in f["extension_mismatch"]] == [str(faults["png_named_jpg"])]
    exact = {frozenset(g["files"]): g["where"] for g in f["exact_duplicates"]}
    assert exact == {
        frozenset({str(sources["exact"]), str(faults["exact"])}): ["within a class"],
        frozenset({str(sources["leak"]), str(faults["leak"])}): ["across train/test"],
    }
    near = {frozenset(p["files"]): p for p in f["near_duplicates"]}
    assert set(near) == {
        frozenset({str(sources["near"]), str(faults["near"])}),
        frozenset({str(sources["mirror"]), str(faults["mirror"])}),
    }
    assert near[frozenset({str(sources["near"]), str(faults["near"])})]["kind"] == "similar"
    # A mirror image is reported as a near duplicate: flip augmentation makes the two the same photo to training.
    assert near[frozenset({str(sources["mirror"]), str(faults["mirror"])})]["kind"] == "mirror image"
    assert report["summary"]["train_test_leaks"] == 1 and report["summary"]["conflicting_labels"] == 0
    # readable images only, as training counts them: the truncated cat and the text file are not
    assert report["classes"]["training_set"] == {"cats": 8 + 3, "dogs": 8 + 1}
    assert report["classes"]["test_set"] == {"cats": 4, "dogs": 4 + 1}
    assert report["class_balance"] == round(15 / 14, 2)  # cats 11 + 4, dogs 9 + 5


def test_fix_moves_copies_aside_and_restore_puts_them_back(planted):
    root, faults, sources = planted
    before = sorted(p for p in root.rglob("*") if p.is_file())
    result = run_cli("data", "check", root, "--fix", "--json")
    assert result.returncode == 0, result.stderr
    moved = {m["from"] for m in json.loads(result.stdout)["moved"]}
    # Unreadable files go; of each identical pair one copy goes, and a leak leaves the training set.
    assert moved == {str(faults["truncated"]), str(faults["text"]), str(faults["exact"]), str(sources["leak"])}
    assert all(not p.exists() for p in map(type(root), moved))
    assert (audit.quarantine_folder(root) / "manifest.json").exists()
    assert audit.check(root, use_cache=False)["summary"]["exact_duplicate_groups"] == 0
    result = run_cli("data", "restore", root)
    assert result.returncode == 0, result.stderr
    assert sorted(p for p in root.rglob("*") if p.is_file()) == before


def test_second_check_reads_the_cache(planted):
    root, _, _ = planted
    first = audit.check(root)
    second = audit.check(root)
    assert first["from_cache"] == 0 and second["from_cache"] == second["n_images"]
    assert first["summary"] == second["summary"]


def test_training_warns_about_leakage(planted, tmp_path):
    root, faults, _ = planted
    for f in (faults["truncated"], faults["text"]):
        f.unlink()
    messages = []
    clf = pawnet.train(root, epochs=1, img_size=32, out=tmp_path / "run", log=messages.append)
    assert any("1 validation images are byte-identical" in m for m in messages)
    assert clf.config["data"]["leakage"]["exact_duplicates"] == 1
    assert "Leakage check: 1 validation images" in (tmp_path / "run" / "report.html").read_text()


def test_missing_folder_exits_2(tmp_path):
    result = run_cli("data", "check", tmp_path / "nope")
    assert result.returncode == 2 and "no such folder" in result.stderr


def test_16_bit_photos_are_compared_as_training_reads_them(tmp_path):
    # Pillow's convert("L") clips 16-bit values at 255: every such photo hashed as a white square,
    # so all of them were near duplicates of one another, across classes too.
    root = tmp_path / "grey"
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for f in _pick("training_set", cls, 3):
            grey = np.asarray(Image.open(f).convert("L")).astype(np.uint16) * 257
            Image.fromarray(grey).save(root / cls / f"{f.stem}.png")
    report = audit.check(root, use_cache=False)
    assert report["findings"]["near_duplicates"] == [] and report["findings"]["unreadable"] == []
