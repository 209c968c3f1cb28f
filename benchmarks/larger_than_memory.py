"""One epoch on 200,000 synthetic 64 px photos: peak memory stays flat while the pixels do not.

    python benchmarks/larger_than_memory.py [--images 200000] [--workdir DIR]

Writes the photos (two classes of noisy stripes, JPEG) to a temporary folder, trains the seed
network on them for one epoch with a cold disk cache, and prints the peak resident memory of
`pawnet train`, its training speed, and the size of the decoded pixels it read from the cache
(2.3 GiB at 200,000 photos): with the cache memory-mapped and its pages handed back as training
reads on, resident memory does not grow with the data set. Target: peak RSS under 1.5 GB.
Needs about 3 GB of free disk; everything is removed afterwards.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from memory import peak_rss_of

SIZE = 64


def make_photo(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    stripes = (np.arange(SIZE) // rng.integers(3, 8)) % 2 * 120
    img = (stripes[:, None] if "horizontal" in path.parts[-2] else stripes[None, :]) + np.zeros((SIZE, SIZE))
    img = img[..., None] + rng.integers(0, 135, (SIZE, SIZE, 3))
    Image.fromarray(img.astype(np.uint8)).save(path, quality=90)


def make_photos(root: Path, n_train: int, n_test: int) -> None:
    jobs = []
    for split, n in (("training_set", n_train), ("test_set", n_test)):
        for cls in ("horizontal", "vertical"):
            (root / split / cls).mkdir(parents=True)
            jobs += [(root / split / cls / f"{i}.jpg", len(jobs) + i) for i in range(n // 2)]
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(lambda job: make_photo(*job), jobs))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200_000, help="training photos (a test set of 2,000 is added)")
    p.add_argument("--workdir", type=Path, help="where to write the photos and the cache (default: a temporary folder)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        make_photos(tmp / "photos", args.images, 2_000)
        print(f"{args.images:,} + 2,000 photo files made in {time.perf_counter() - t:.0f} s")
        env = {**os.environ, "PAWNET_CACHE": str(tmp / "cache")}
        cmd = [sys.executable, "-m", "pawnet", "train", str(tmp / "photos"), "--epochs", "1", "--out", str(tmp / "run")]
        wall, mb = peak_rss_of(cmd, env)
        with open(tmp / "run" / "metrics.csv") as fh:
            epoch = next(csv.DictReader(fh))
        pixels = sum(f.stat().st_size for f in (tmp / "cache").glob("*.pixels"))
        print(f"decoded pixels in the cache   {pixels / 2**30:.2f} GiB")
        print(f"peak RSS of pawnet train      {mb:,.0f} MB   (target < 1,500 MB)")
        print(
            f"training                      {args.images / float(epoch['seconds']):,.0f} images/s "
            f"(epoch {float(epoch['seconds']):.0f} s, validation included; val_acc {float(epoch['val_acc']):.3f})"
        )
        print(f"whole command                 {wall:.0f} s (decoding, one epoch, report)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
