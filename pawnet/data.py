"""Finding labelled photos in the three layouts pawnet accepts.

- class folders: DATA/cats/*.jpg, DATA/dogs/*.jpg (nested folders inside a class are fine);
- the tutorial's layout: DATA/training_set/<class>/... and DATA/test_set/<class>/...;
- a flat folder of Kaggle-style names: DATA/cat.12.jpg, DATA/dog.7.jpg (LABEL.NUMBER.ext; the
  label is the prefix; other names are ignored, and said to be).

Class names are sorted, and a class's index is its position in that order everywhere. Folders
pawnet wrote itself (a run folder, a quarantine) are never read as photos, and every folder or
file left out is named in `Labelled.warnings()`.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .images import is_image_file
from .rundir import RunDir

TRAIN_DIR, TEST_DIR = "training_set", "test_set"
# Kaggle's names, LABEL.NUMBER.ext: cat.12.jpg. Names like big_8000.jpg are not labels.
_KAGGLE_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\.\d+\.[A-Za-z0-9]+$")
MANIFEST = "manifest.json"


def quarantine_folder(root: Path) -> Path:
    """Where `pawnet data check --fix` moves files of DATA aside: DATA.quarantine, beside it."""
    return root.parent / f"{root.name}.quarantine"


def pawnets_own(folder: Path) -> str | None:
    """What pawnet wrote `folder` as, where it did: its images are not photos to learn from."""
    if RunDir.is_run(folder):
        return "a pawnet run folder"
    if folder.name.endswith(".quarantine") and (folder / MANIFEST).is_file():
        return "a quarantine folder of pawnet data check"
    return None


@dataclass
class Labelled:
    """Files with their class indices, in a fixed (sorted) order."""

    files: list[Path]
    labels: list[int]
    classes: list[str]
    unlabelled: list[Path] = field(default_factory=list)  # flat layout: images whose names carry no label
    left_out: dict[Path, str] = field(default_factory=dict)  # folders not read, and why

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in self.classes}
        for y in self.labels:
            out[self.classes[y]] += 1
        return out

    def subset(self, indices, notes: bool = False) -> Labelled:
        """The files at `indices`; with `notes`, what was left out too (for one subset only)."""
        files, labels = [self.files[i] for i in indices], [self.labels[i] for i in indices]
        if notes:
            return Labelled(files, labels, self.classes, self.unlabelled, self.left_out)
        return Labelled(files, labels, self.classes)

    def warnings(self) -> list[str]:
        """One line for each folder left out and for the images whose names carry no label."""
        lines = [f"{folder}: {why}" for folder, why in self.left_out.items()]
        if self.unlabelled:
            n, first = len(self.unlabelled), self.unlabelled[0]
            these = (
                f"{n} images in {first.parent} ignored: their names are" if n > 1 else f"{first} ignored: its name is"
            )
            lines.append(
                f"{these} not LABEL.NUMBER.ext like cat.12.jpg" + (f" (such as {first.name})" if n > 1 else "")
            )
        return lines


def _images_under(folder: Path, left_out: dict | None = None) -> list[Path]:
    """Image files anywhere under `folder`, except in folders pawnet wrote (noted in `left_out`)."""
    found = []
    for top, dirs, files in os.walk(folder):
        top = Path(top)
        for d in sorted(dirs):
            why = pawnets_own(top / d)
            if why:
                dirs.remove(d)
                if left_out is not None:
                    left_out[top / d] = f"{why}; its files are not read as photos"
        found += [top / f for f in files if _listed(top / f)]
    return sorted(found)


def _listed(path: Path) -> bool:
    """An image file, or a link by an image's name to nothing (or to itself): kept, so that reading
    it says why it failed rather than it vanishing unsaid."""
    return is_image_file(path) and (path.is_file() or path.is_symlink())


def check_folder(path, what: str = "folder") -> Path:
    folder = Path(path)
    if not folder.exists():
        raise UserError(f"{folder}: no such {what}")
    if not folder.is_dir():
        raise UserError(f"{folder}: not a {what}")
    return folder


def read_folder(path, classes: list[str] | None = None, whose: str = "the model's") -> Labelled:
    """The labelled images in one folder: class subfolders, or flat Kaggle-style names.

    With `classes` (`whose` classes: a model's, or the training photos'), labels index into that
    list, and a class not in it is an error; without, the classes are the sorted names found, and
    at least two are needed.
    """
    folder = check_folder(path)
    by_class, left_out, empty = _class_folders(folder)
    unlabelled: list[Path] = []
    if not by_class:
        by_class, unlabelled = _flat_names(folder)
        empty = []
    found = sorted(by_class)
    if classes is None:
        if len(found) < 2 and found[0] in (TRAIN_DIR, TEST_DIR):
            other = TEST_DIR if found[0] == TRAIN_DIR else TRAIN_DIR
            raise UserError(
                f"{folder}: holds {found[0]}/ but no {other}/; the tutorial's layout needs both "
                f"(or give {folder / found[0]} as DATA, and a fifth of it validates)"
            )
        if len(found) < 2:
            also = f" ({', '.join(d.name for d in empty)} holds no images)" if empty else ""
            raise UserError(f"{folder}: only one class ({found[0]}) found{also}; a classifier needs at least two")
        classes = found
    else:
        unknown = [c for c in found if c not in classes]
        if set(unknown) & {TRAIN_DIR, TEST_DIR}:
            raise UserError(f"{folder}: holds the tutorial's layout; give {folder / TEST_DIR} to validate on")
        if unknown:
            raise UserError(
                f"{folder}: class {', '.join(unknown)} is not one of {whose} classes ({', '.join(classes)})"
            )
    for d in empty:
        left_out[d] = f"holds no images, so it is not a class (the classes are {', '.join(found)})"
    files, labels = [], []
    for name in found:
        files += by_class[name]
        labels += [classes.index(name)] * len(by_class[name])
    return Labelled(files, labels, list(classes), unlabelled, left_out)


def _class_folders(folder: Path) -> tuple[dict[str, list[Path]], dict[Path, str], list[Path]]:
    """The images of each class folder, the folders pawnet wrote (left out, and why), and the
    folders without images."""
    by_class: dict[str, list[Path]] = {}
    left_out: dict[Path, str] = {}
    empty: list[Path] = []
    for d in sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")):
        why = pawnets_own(d)
        if why:
            left_out[d] = f"{why}; its files are not read as photos"
            continue
        files = _images_under(d, left_out)
        if files:
            by_class[d.name] = files
        else:
            empty.append(d)
    loose = sorted(f for f in folder.iterdir() if _listed(f))
    if by_class and loose:
        n = len(loose)
        left_out[loose[0] if n == 1 else folder] = (
            "in no class folder, so not read"
            if n == 1
            else f"{n} images here (such as {loose[0].name}) are in no class folder, so they are not read"
        )
    return by_class, left_out, empty


def _flat_names(folder: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """A flat folder's images by the label in their names (cat.12.jpg), and those without one."""
    by_class: dict[str, list[Path]] = {}
    unlabelled: list[Path] = []
    for f in sorted(p for p in folder.iterdir() if _listed(p)):
        m = _KAGGLE_NAME.match(f.name)
        if m:
            by_class.setdefault(m.group(1).lower(), []).append(f)
        else:
            unlabelled.append(f)
    if not by_class:
        if unlabelled:
            raise UserError(
                f"{folder}: {len(unlabelled)} images, but no class subfolders and none named like cat.12.jpg "
                f"(LABEL.NUMBER.ext; such as {unlabelled[0].name})"
            )
        raise UserError(f"{folder}: no images found (expected one subfolder per class, or names like cat.12.jpg)")
    return by_class, unlabelled


def has_tutorial_layout(path) -> bool:
    folder = Path(path)
    return (folder / TRAIN_DIR).is_dir() and (folder / TEST_DIR).is_dir()


def evaluation_folder(path) -> Path:
    """The labelled folder to measure a model on: test_set/ for the tutorial's layout."""
    folder = check_folder(path)
    return folder / TEST_DIR if has_tutorial_layout(folder) else folder


def train_val_split(data, val=None, val_fraction: float = 0.2, seed: int = 0) -> tuple[Labelled, Labelled, str]:
    """The training and validation sets for `pawnet train DATA [--val DIR]`, and how they were chosen.

    Validation comes from `--val`, else from the tutorial's test_set/, else from a stratified,
    seeded `val_fraction` of DATA itself.
    """
    folder = check_folder(data)
    if has_tutorial_layout(folder) and val is None:
        train = read_folder(folder / TRAIN_DIR)
        for d in sorted(folder.iterdir()):
            if d.is_dir() and d.name not in (TRAIN_DIR, TEST_DIR) and not d.name.startswith(".") and not pawnets_own(d):
                train.left_out[d] = f"not read: beside {TRAIN_DIR}/ and {TEST_DIR}/, only those two are"
        return train, _validation(folder / TEST_DIR, train.classes), f"{TRAIN_DIR}/ and {TEST_DIR}/"
    train = read_folder(folder / TRAIN_DIR if has_tutorial_layout(folder) else folder)
    if val is not None:
        return train, _validation(val, train.classes), "--val folder"
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
        train.subset(sorted(train_idx), notes=True),
        train.subset(sorted(val_idx)),
        f"{round(val_fraction * 100)}% of DATA held out",
    )


def _validation(folder, classes: list[str]) -> Labelled:
    val = read_folder(folder, classes, "the training")
    missing = [c for c, n in val.counts().items() if n == 0]
    if missing:
        val.left_out[Path(folder)] = f"holds no photos of {', '.join(missing)}, so validation measures nothing of them"
    return val


def photo_folder(path, option: str) -> list[Path]:
    """The images under a folder given with `option` (such as --unknown), before any work
    starts: a missing folder, a file, or a folder with no images is one line."""
    folder = check_folder(path, f"folder of photos ({option})")
    files = _images_under(folder)
    if not files:
        raise UserError(f"{folder}: holds no images ({option})")
    return files


def collect_images(paths) -> list[Path]:
    """Files and folders (searched recursively for images) as one list, for `predict`.

    A named file is kept whatever its name or whether it exists: reading it reports why it failed.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        out += _images_under(p) if p.is_dir() else [p]
    return out
