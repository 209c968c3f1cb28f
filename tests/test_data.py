"""The three data layouts, and the mistakes a user can make with them."""

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
    with pytest.raises(UserError, match="disc"):
        train_val_split(data, val)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "no images found"),
        (lambda root: make_dataset(root, classes=("only",), n=3), "only one class"),
        (lambda root: (root.parent.mkdir(exist_ok=True), root.write_text("x")), "not a folder"),
    ],
    ids=["missing", "empty", "one-class", "a-file"],
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
