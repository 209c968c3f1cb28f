"""Finding labelled photos in the three layouts pawnet accepts.

- class folders: DATA/cats/*.jpg, DATA/dogs/*.jpg (nested folders inside a class are fine);
- the tutorial's layout: DATA/training_set/<class>/... and DATA/test_set/<class>/...;
- a flat folder of Kaggle-style names: DATA/cat.12.jpg, DATA/dog.7.jpg (the label is the prefix).

Class names are sorted, and a class's index is its position in that order everywhere.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .images import is_image_file

TRAIN_DIR, TEST_DIR = "training_set", "test_set"
_KAGGLE_NAME = re.compile(r"^([A-Za-z][A-Za-z_ -]*?)[._-]\d")


@dataclass
class Labelled:
    """Files with their class indices, in a fixed (sorted) order."""

    files: list[Path]
    labels: list[int]
    classes: list[str]
    unlabelled: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for y in self.labels:
            out[self.classes[y]] += 1
        return out

    def subset(self, indices) -> Labelled:
        return Labelled([self.files[i] for i in indices], [self.labels[i] for i in indices], self.classes)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def _check_folder(path) -> Path:
    folder = Path(path)
    if not folder.exists():
        raise UserError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    return folder


def read_folder(path, classes: list[str] | None = None) -> Labelled:
    """The labelled images in one folder: class subfolders, or flat Kaggle-style names.

    With `classes` (a model's), labels index into that list, and a class the model does not
    know is an error; without, the classes are the sorted names found, and at least two are needed.
    """
    folder = _check_folder(path)
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    by_class: dict[str, list[Path]] = {}
    unlabelled: list[Path] = []
    for d in class_dirs:
        files = _images_under(d)
        if files:
            by_class[d.name] = files
    if not by_class:
        for f in sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p)):
            m = _KAGGLE_NAME.match(f.name)
            if m:
                by_class.setdefault(m.group(1).lower(), []).append(f)
            else:
                unlabelled.append(f)
    if not by_class:
        raise UserError(f"{folder}: no images found (expected one subfolder per class, or names like cat.12.jpg)")

    found = sorted(by_class)
    if classes is None:
        if len(found) < 2:
            raise UserError(f"{folder}: only one class ({found[0]}) found; a classifier needs at least two")
        classes = found
    else:
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise UserError(
                f"{folder}: class {', '.join(unknown)} is not one of the model's classes ({', '.join(classes)})"
            )
    files, labels = [], []
    for name in found:
        files += by_class[name]
        labels += [classes.index(name)] * len(by_class[name])
    return Labelled(files, labels, list(classes), unlabelled)


def has_tutorial_layout(path) -> bool:
    folder = Path(path)
    return (folder / TRAIN_DIR).is_dir() and (folder / TEST_DIR).is_dir()


def evaluation_folder(path) -> Path:
    """The labelled folder to measure a model on: test_set/ for the tutorial's layout."""
    folder = _check_folder(path)
    return folder / TEST_DIR if has_tutorial_layout(folder) else folder


def train_val_split(data, val=None, val_fraction: float = 0.2, seed: int = 0) -> tuple[Labelled, Labelled, str]:
    """The training and validation sets for `pawnet train DATA [--val DIR]`, and how they were chosen.

    Validation comes from `--val`, else from the tutorial's test_set/, else from a stratified,
    seeded `val_fraction` of DATA itself.
    """
    folder = _check_folder(data)
    if has_tutorial_layout(folder) and val is None:
        train = read_folder(folder / TRAIN_DIR)
        return train, read_folder(folder / TEST_DIR, train.classes), f"{TRAIN_DIR}/ and {TEST_DIR}/"
    train = read_folder(folder / TRAIN_DIR if has_tutorial_layout(folder) else folder)
    if val is not None:
        return train, read_folder(val, train.classes), "--val folder"
    rng = random.Random(seed)
    train_idx, val_idx = [], []
    for c in range(len(train.classes)):
        idx = [i for i, y in enumerate(train.labels) if y == c]
        rng.shuffle(idx)
        n_val = max(1, round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val_idx += idx[:n_val]
        train_idx += idx[n_val:]
    if not val_idx:
        raise UserError(f"{folder}: too few images to hold any out for validation; pass --val DIR")
    return (
        train.subset(sorted(train_idx)),
        train.subset(sorted(val_idx)),
        f"{round(val_fraction * 100)}% of DATA held out",
    )


def collect_images(paths) -> list[Path]:
    """Files and folders (searched recursively for images) as one list, for `predict`.

    A named file is kept whatever its name or whether it exists: reading it reports why it failed.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        out += _images_under(p) if p.is_dir() else [p]
    return out
