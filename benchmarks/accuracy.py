"""Accuracy of each architecture on the shared photos, with and without test-time augmentation.

    python benchmarks/accuracy.py [DATA] [--arch seed small efficientnet_lite0] [--seeds 0 1 2]

Trains each architecture with its default recipe (train on training_set/, validate on test_set/),
then evaluates the saved (best-epoch) model on test_set/ plainly and with --tta. Prints a table:
architecture, image size, epochs, wall time, test_set accuracy with and without TTA. Run nothing
else on the machine meanwhile: two jobs on 2 cores slow each other several times over.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pawnet

from photos import DEFAULT_DATA, missing


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
                start = time.perf_counter()
                clf = pawnet.train(
                    args.data, arch=arch, seed=seed, out=Path(tmp) / f"{arch}-{seed}", log=lambda *_: None
                )
                wall = time.perf_counter() - start
                plain = clf.evaluate(args.data)["accuracy"]
                tta = clf.evaluate(args.data, tta=True)["accuracy"]
                rows.append((arch, seed, clf.preprocessing.size, clf.config["training"]["epochs"], wall, plain, tta))
                print(f"{arch} seed {seed}: {plain:.4f} ({tta:.4f} with TTA) in {wall:.0f} s", flush=True)
    print(f"\n{'architecture':<20}{'seed':>5}{'size':>6}{'epochs':>8}{'wall s':>9}{'test acc':>10}{'with TTA':>10}")
    for arch, seed, size, epochs, wall, plain, tta in rows:
        print(f"{arch:<20}{seed:>5}{size:>6}{epochs:>8}{wall:>9.0f}{plain:>10.4f}{tta:>10.4f}")
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
