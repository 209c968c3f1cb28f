"""The label check (`pawnet data check DATA --labels`) on planted errors: recall, precision, time.

    python benchmarks/label_check.py [DATA] [--not-pets DIR] [--seeds 0 1 2]

For each seed, a temporary copy of DATA's training_set/ and test_set/ gets 2% of each class's
photos moved into the other class (same split) and 20 photos of neither class, from
../shared/datasets/not-pets, dropped into class folders. The check runs cold (no cached vectors;
the ONNX body is exported once, at the first seed, and timed apart) and again with its cache.
Prints the recall of the planted photos among the findings and the precision of the findings,
counting as correct, besides the planted photos, those in JUDGED_WRONG (found on the unmodified
photos and judged, by looking, truly mislabelled or out of place) that planting left as they were.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from photos import DEFAULT_DATA, missing

NOT_PETS = DEFAULT_DATA.parent / "not-pets"
SPLITS = ("training_set", "test_set")
FLIP_SHARE = 0.02
N_NOT_PETS = 20
# Photos of not-pets/ that show a cat or a dog after all (among the 40 the check finds most
# pet-like, looked at one by one): filed under that class they are not errors, so none is planted.
PETS_AMONG_NOT_PETS = {"ear.jpg", "shower_curtain.jpg", "wild_boar.jpg"}
# Found by the check on the unmodified shared photos and judged, by looking, truly wrong.
JUDGED_WRONG = {
    "test_set/cats/cat.4085.jpg",  # a beagle
    "test_set/dogs/dog.4334.jpg",  # a woman holding a white cat
    "test_set/dogs/dog.4367.jpg",  # the Yahoo! Mail logo
    "test_set/cats/cat.4338.jpg",  # a shelter's lobby and phone number
}


def choose(photos: dict[str, list[str]], pool: list[str], seed: int) -> tuple[list, list]:
    """Which photos to plant, as relative paths: (photo, class it moves to) for each flip, and
    (not-pet, split, class) for each photo of neither class."""
    rng = random.Random(seed)
    classes = sorted(photos)
    flips = []
    for c in classes:
        others = [o for o in classes if o != c]
        picked = rng.sample(sorted(photos[c]), round(FLIP_SHARE * len(photos[c])))
        flips += [(p, rng.choice(others)) for p in picked]
    drops = [(p, rng.choice(SPLITS), rng.choice(classes)) for p in rng.sample(sorted(pool), N_NOT_PETS)]
    return flips, drops


def plant(data: Path, not_pets: Path, dest: Path, seed: int) -> dict[str, str]:
    """A copy of DATA with planted errors in `dest`; returns {path in dest: what was planted}."""
    photos: dict[str, list[str]] = {}
    for split in SPLITS:
        for cls in sorted(p.name for p in (data / split).iterdir() if p.is_dir()):
            shutil.copytree(data / split / cls, dest / split / cls)  # copies: links would change the originals' ctime
            photos.setdefault(cls, []).extend(f"{split}/{cls}/{f.name}" for f in (data / split / cls).iterdir())
    pool = [p.name for p in not_pets.glob("*.jpg") if p.name not in PETS_AMONG_NOT_PETS]
    flips, drops = choose(photos, pool, seed)
    planted = {}
    for rel, new_class in flips:
        split, _, name = rel.split("/")
        target = dest / split / new_class / name
        os.rename(dest / rel, target)
        planted[str(target)] = f"flipped from {rel}"
    for name, split, cls in drops:
        target = dest / split / cls / name
        shutil.copyfile(not_pets / name, target)
        planted[str(target)] = "not a pet"
    return planted


def score(issues: list[dict], planted: dict[str, str], dest: Path) -> dict:
    found = {i["path"] for i in issues}
    moved = {v.removeprefix("flipped from ") for v in planted.values()}
    judged = {str(dest / p) for p in JUDGED_WRONG if p not in moved}
    hits = found & set(planted)
    return {
        "planted": len(planted),
        "found": len(found),
        "recall": len(hits) / len(planted),
        "precision_planted_only": len(hits) / max(len(found), 1),
        "precision": len(found & (set(planted) | judged)) / max(len(found), 1),
        "missed": sorted(planted[p] if "flipped" in planted[p] else Path(p).name for p in set(planted) - found),
        "unexplained": sorted(os.path.relpath(p, dest) for p in found - set(planted) - judged),
    }


def run(data: Path, not_pets: Path, seed: int) -> None:
    from pawnet import labels

    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "planted"
        planted = plant(data, not_pets, dest, seed)
        started, cpu = time.perf_counter(), time.process_time()
        cold = labels.check_labels(dest)
        cold_seconds, cold_cpu = time.perf_counter() - started, time.process_time() - cpu
        cached = labels.check_labels(dest)
        s = score(cold["label_issues"], planted, dest)
        assert cached["label_issues"] == cold["label_issues"]
        print(
            f"seed {seed}: {cold['n_checked']} photos, {s['planted']} planted, {s['found']} found; "
            f"recall {s['recall']:.1%}, precision {s['precision']:.1%} "
            f"(planted only {s['precision_planted_only']:.1%}); "
            f"cold {cold_seconds:.1f} s ({cold['vector_seconds']:.1f} s of it the vectors; {cold_cpu:.0f} s of CPU), "
            f"cached {cached['seconds']:.1f} s ({cold['engine']})"
        )
        print(f"  missed: {', '.join(s['missed']) or 'none'}")
        print(f"  found, neither planted nor judged wrong: {', '.join(s['unexplained']) or 'none'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    p.add_argument("--not-pets", type=Path, default=NOT_PETS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    if missing(args.data) or missing(args.not_pets):
        return 2
    with tempfile.TemporaryDirectory() as cache:
        os.environ["PAWNET_CACHE"] = cache  # cold: no vectors, no exported body
        from pawnet import labels

        started = time.perf_counter()
        labels.body_path()
        print(f"ONNX body exported in {time.perf_counter() - started:.1f} s (once per machine)")
        for seed in args.seeds:
            run(args.data, args.not_pets, seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
