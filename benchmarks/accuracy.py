"""Accuracy of each architecture on the shared photos, with and without test-time augmentation.

    python benchmarks/accuracy.py [DATA] [--arch seed small efficientnet_lite0] [--seeds 0 1 2]

Trains each architecture with its default recipe (train on training_set/, validate on test_set/),
then evaluates the saved (best-epoch) model on test_set/ plainly and with --tta. Prints a table:
architecture, image size, epochs, wall time, test_set accuracy with and without TTA, the final
epoch's validation accuracy, and time-to-accuracy: the seconds into the run (decoding included)
at which validation accuracy first reached 90% and 92%. Run nothing else on the machine
meanwhile: two jobs on 2 cores slow each other several times over.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import pawnet

from photos import DEFAULT_DATA, missing

TARGETS = (0.90, 0.92)


def time_to(run: Path, decode_seconds: float) -> list[float | None]:
    """For each target, the seconds into the run at which validation accuracy first reached it."""
    elapsed, reached = decode_seconds, [None] * len(TARGETS)
    with open(run / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            elapsed += float(row["seconds"])
            for i, target in enumerate(TARGETS):
                if reached[i] is None and float(row["val_acc"]) >= target:
                    reached[i] = elapsed
    return reached


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    p.add_argument("--arch", nargs="+", default=["seed", "small", "efficientnet_lite0"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    args = p.parse_args()
    if missing(args.data):
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            for seed in args.seeds:
                run = Path(tmp) / f"{arch}-{seed}"
                start = time.perf_counter()
                clf = pawnet.train(args.data, arch=arch, seed=seed, out=run, log=lambda *_: None)
                wall = time.perf_counter() - start
                plain = clf.evaluate(args.data)["accuracy"]
                tta = clf.evaluate(args.data, tta=True)["accuracy"]
                metrics = clf.config["metrics"]
                reached = time_to(run, metrics["decode_seconds"])
                size, epochs = clf.preprocessing.size, clf.config["training"]["epochs"]
                rows.append((arch, seed, size, epochs, wall, plain, tta, metrics["final_val_accuracy"], *reached))
                print(f"{arch} seed {seed}: {plain:.4f} ({tta:.4f} with TTA) in {wall:.0f} s", flush=True)
    to = "".join(f"{f'to {t:.0%} s':>10}" for t in TARGETS)
    print(
        f"\n{'architecture':<20}{'seed':>5}{'size':>6}{'epochs':>8}{'wall s':>9}"
        f"{'test acc':>10}{'with TTA':>10}{'final':>8}{to}"
    )
    for arch, seed, size, epochs, wall, plain, tta, final, *reached in rows:
        times = "".join(f"{'never' if t is None else f'{t:.0f}':>10}" for t in reached)
        print(f"{arch:<20}{seed:>5}{size:>6}{epochs:>8}{wall:>9.0f}{plain:>10.4f}{tta:>10.4f}{final:>8.4f}{times}")
    for arch in args.arch:
        mine = [r for r in rows if r[0] == arch]
        if len(mine) > 1:
            plain, tta = [r[5] for r in mine], [r[6] for r in mine]
            print(
                f"{arch}: mean {statistics.mean(plain):.4f} ± {statistics.stdev(plain):.4f}, "
                f"with TTA {statistics.mean(tta):.4f} ± {statistics.stdev(tta):.4f} over {len(mine)} seeds"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
