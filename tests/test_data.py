"""The three data layouts, and the mistakes a user can make with them."""

import shutil

import pytest

from pawnet.data import collect_images, read_folder, train_val_split
from pawnet.errors import UserError

from conftest import make_dataset


def test_class_folders_sorted_into_index_order(tmp_path):
    data = make_dataset(tmp_path / "d", classes=("zebra", "ant", "moth"), n=5)
    found = read_folder(data)
    assert found.classes == ["ant", "moth", "zebra"]
    assert len(found) == 15
    assert all(found.classes[y] == f.parent.name for f, y in zip(found.files, found.labels))


def test_tutorial_layout_trains_on_training_set_and_validates_on_test_set(tmp_path):
    data = make_dataset(tmp_path / "d", layout="tutorial", n=8)
    train, val, source = train_val_split(data)
    assert all("training_set" in str(f) for f in train.files)
    assert all("test_set" in str(f) for f in val.files)
    assert (len(train), len(val)) == (12, 4) and "test_set" in source


def test_flat_kaggle_names(tmp_path):
    data = make_dataset(tmp_path / "d", classes=("dog", "cat"), n=4, layout="flat")
    (data / "readme.png").write_bytes(b"")  # no label in its name
    found = read_folder(data)
    assert found.classes == ["cat", "dog"]
    assert sorted(found.counts().values()) == [4, 4]
    assert [p.name for p in found.unlabelled] == ["readme.png"]


def test_held_out_split_is_stratified_and_seeded(dataset):
    a_train, a_val, _ = train_val_split(dataset, seed=3)
    b_train, b_val, _ = train_val_split(dataset, seed=3)
    assert a_val.files == b_val.files
    assert a_val.counts() == {"horizontal": 5, "vertical": 5}
    assert not set(a_train.files) & set(a_val.files)


def test_val_folder_must_share_the_classes(tmp_path):
    data = make_dataset(tmp_path / "d", n=4)
    val = make_dataset(tmp_path / "v", classes=("horizontal", "disc"), n=2)
    with pytest.raises(UserError, match=r"class disc is not one of the training classes \(horizontal, vertical\)"):
        train_val_split(data, val)
    _, one_class, _ = train_val_split(data, make_dataset(tmp_path / "h", classes=("horizontal",), n=2))
    assert one_class.warnings() == [
        f"{tmp_path / 'h'}: holds no photos of vertical, so validation measures nothing of them"
    ]
    tutorial = make_dataset(tmp_path / "t", n=4, layout="tutorial")
    with pytest.raises(UserError, match=f"holds the tutorial's layout; give {tutorial / 'test_set'} to validate on"):
        train_val_split(data, tutorial)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "no images found"),
        (lambda root: make_dataset(root, classes=("only",), n=3), "only one class"),
        (lambda root: (root.parent.mkdir(exist_ok=True), root.write_text("x")), "not a folder"),
        (lambda root: make_dataset(root / "training_set", n=2), "holds training_set/ but no test_set/"),
    ],
    ids=["missing", "empty", "one-class", "a-file", "training-set-alone"],
)
def test_bad_data_folders_are_one_line_errors(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(UserError, match=message) as e:
        read_folder(root)
    assert "\n" not in str(e.value)


def test_collect_images_walks_folders_and_keeps_named_files(tmp_path):
    data = make_dataset(tmp_path / "d", n=2)
    named = tmp_path / "notes.txt"
    assert len(collect_images([data, named])) == 5
    assert collect_images([named]) == [named]


def test_an_empty_class_folder_is_named_not_dropped_silently(tmp_path):
    data = make_dataset(tmp_path / "d", n=3)
    (data / "birds").mkdir()
    found = read_folder(data)
    assert found.classes == ["horizontal", "vertical"]
    assert any(str(data / "birds") in w and "no images" in w for w in found.warnings())


def test_photos_beside_the_class_folders_and_folders_beside_the_tutorial_layout_are_named(tmp_path):
    data = make_dataset(tmp_path / "d", n=2)
    for name in ("stray.png", "dog.5000.png"):
        shutil.copy(data / "vertical" / "0.png", data / name)
    assert any("2 images here (such as dog.5000.png) are in no class folder" in w for w in read_folder(data).warnings())
    tutorial = make_dataset(tmp_path / "t", n=4, layout="tutorial")
    make_dataset(tutorial / "extra", n=1)
    train, _, _ = train_val_split(tutorial)
    assert any(str(tutorial / "extra") in w and "not read" in w for w in train.warnings()), train.warnings()


def test_flat_layout_reads_label_dot_number_names_only_and_says_what_it_ignored(tmp_path):
    data = make_dataset(tmp_path / "d", classes=("cat", "dog"), n=3, layout="flat")
    for name in ("big_8000.png", "strip_1.png", "cat_7.png"):
        shutil.copy(data / "cat.0.png", data / name)
    found = read_folder(data)
    assert found.classes == ["cat", "dog"]
    assert sorted(p.name for p in found.unlabelled) == ["big_8000.png", "cat_7.png", "strip_1.png"]
    assert any("3 images" in w and "LABEL.NUMBER" in w for w in found.warnings()), found.warnings()


def test_a_flat_folder_without_label_dot_number_names_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("big_8000.png", "big_8001.png", "strip_1.png", "strip_2.png"):
        (tmp_path / "d" / name).write_bytes(b"")
    with pytest.raises(UserError, match="none named like cat.12.jpg") as e:
        read_folder(tmp_path / "d")
    assert "4 images" in str(e.value)


def test_run_and_quarantine_folders_inside_data_are_not_read(tmp_path):
    data = make_dataset(tmp_path / "d", n=3)
    run = data / "horizontal" / "run"
    run.mkdir()
    for name in ("config.json", "model.safetensors"):
        (run / name).write_text("{}")
    shutil.copy(data / "vertical" / "0.png", run / "curves.png")
    halfway = data / "vertical" / "killed"  # a run killed after its first epoch: a checkpoint alone
    halfway.mkdir()
    (halfway / "checkpoint.pt").write_bytes(b"")
    shutil.copy(data / "vertical" / "0.png", halfway / "photo.png")
    quarantine = data / "horizontal.quarantine"
    quarantine.mkdir()
    (quarantine / "manifest.json").write_text("[]")
    shutil.copy(data / "vertical" / "0.png", quarantine / "moved.png")
    found = read_folder(data)
    assert found.classes == ["horizontal", "vertical"]
    assert len(found) == 6
    warnings = " ".join(found.warnings())
    assert str(run) in warnings and str(halfway) in warnings and str(quarantine) in warnings
    assert collect_images([data]) == found.files


def test_out_inside_data_is_refused_before_anything_is_written(tmp_path):
    import pawnet

    data = make_dataset(tmp_path / "d", n=3)
    with pytest.raises(UserError, match="inside DATA"):
        pawnet.train(data, epochs=1, out=data / "horizontal" / "run", log=lambda *_: None)
    assert not (data / "horizontal" / "run").exists()


def _data_check(data, capsys) -> tuple[int, str]:
    from pawnet.cli import main

    status = main(["data", "check", str(data), "--no-cache"])
    return status, capsys.readouterr().out


def test_data_check_names_an_empty_class_folder(tmp_path, capsys):
    data = make_dataset(tmp_path / "d", n=3)
    (data / "birds").mkdir()
    status, out = _data_check(data, capsys)
    assert status == 0
    assert (
        f"warning: {data / 'birds'}: holds no images, so it is not a class (the classes are horizontal, vertical)"
        in out
    )


def test_data_check_lists_a_file_it_may_not_read_as_unreadable(tmp_path, capsys, unreadable):
    data = make_dataset(tmp_path / "d", n=3)
    locked = unreadable(data / "horizontal" / "0.png")
    status, out = _data_check(data, capsys)
    assert status == 0
    assert f"unreadable  {locked}: permission denied" in out


@pytest.mark.parametrize("layout, name", [("folders", "horizontal/gone.png"), ("flat", "horizontal.99.png")])
def test_data_check_lists_links_to_nothing_as_unreadable(tmp_path, capsys, layout, name):
    data = make_dataset(tmp_path / "d", n=3, layout=layout)
    (data / name).symlink_to(tmp_path / "moved-away.png")
    (data / name).with_name("loop.png" if layout == "folders" else "vertical.98.png").symlink_to(
        "loop.png" if layout == "folders" else "vertical.98.png"
    )
    for _ in range(2):  # the second time with the first one's results kept
        status, out = _data_check(data, capsys)
        assert status == 0
        assert f"unreadable  {data / name}: a link to {tmp_path / 'moved-away.png'}, which is not there" in out
        assert out.count("unreadable  ") == 2


def test_empty_and_unreadable_files_are_not_duplicates_of_each_other(tmp_path, capsys):
    from pawnet import audit

    data = make_dataset(tmp_path / "d", layout="tutorial", n=4)
    (data / "training_set" / "horizontal" / "empty.png").write_bytes(b"")
    (data / "test_set" / "horizontal" / "empty.png").write_bytes(b"")
    for split in ("training_set", "test_set"):
        (data / split / "vertical" / "notes.png").write_text("not a photo")
    report = audit.check(data, use_cache=False)
    assert report["summary"]["unreadable"] == 4
    assert report["summary"]["exact_duplicate_groups"] == 0 and report["summary"]["train_test_leaks"] == 0
    status, out = _data_check(data, capsys)
    assert "unreadable  " + str(data / "test_set" / "vertical" / "notes.png") + ": not an image Pillow can read" in out
    assert "BytesIO" not in out


def test_a_file_of_mode_000_is_unreadable_for_a_user_who_may_not_read_it():
    """The real PermissionError: as a user other than root (root reads mode 000), as `nobody`
    through setpriv when the tests run as root."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    as_user = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root, and no setpriv to run as another user")
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    root = Path(tempfile.mkdtemp(prefix="pawnet-mode-000-"))
    try:
        root.chmod(0o777)
        data = make_dataset(root / "d", layout="tutorial", n=8)
        for d in [data, *data.rglob("*")]:
            d.chmod(0o755 if d.is_dir() else 0o644)
        locked = data / "training_set" / "vertical" / "1.png"
        locked.chmod(0)
        env = {**os.environ, "PAWNET_CACHE": str(root / "cache"), "PYTHONPATH": str(Path(__file__).parents[1])}

        def pawnet(*args):
            command = [*as_user, sys.executable, "-m", "pawnet", *map(str, args)]
            return subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=300)

        if as_user and pawnet("--version").returncode != 0:
            pytest.skip(f"user nobody cannot run this checkout's Python ({sys.executable}): a folder above is private")

        r = pawnet("data", "check", data)
        assert r.returncode == 0, r.stderr
        assert f"unreadable  {locked}: permission denied" in r.stdout
        r = pawnet("train", data, "--epochs", "1", "--img-size", "32", "--out", root / "run")
        assert r.returncode == 0, r.stderr
        assert f"skipped {locked}: permission denied" in r.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)
