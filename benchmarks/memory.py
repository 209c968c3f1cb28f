"""Peak memory while training the seed network on 25,000 photos at 64 px.

    python benchmarks/memory.py [DATA] [--images 25000] [--epochs 1]

The 25,000 files are hard links (copies where links fail) to the shared photos, made in a
temporary folder at run time and removed afterwards; each link is a separate file to pawnet.
Prints the peak resident memory of `pawnet train` on them, without and then with the disk cache.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from photos import DEFAULT_DATA, missing


def make_images(source: Path, dest: Path, n: int) -> None:
    photos = sorted(source.rglob("*.jpg"))
    for i, photo in zip(range(n), itertools.cycle(photos)):
        target = dest / photo.parent.name / f"{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(photo, target)
        except OSError:
            shutil.copyfile(photo, target)


def peak_rss_of(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS in MB of a command, run as the only child of a fresh helper."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], env=env, check=True, capture_output=True, text=True
    ).stdout
    wall, kb = out.split()
    return float(wall), int(kb) / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    p.add_argument("--images", type=int, default=25_000)
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()
    if missing(args.data):
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        make_images(args.data, tmp / "photos", args.images)
        print(f"{args.images} photo files made in {time.perf_counter() - t:.1f} s")
        env = {**os.environ, "PAWNET_CACHE": str(tmp / "cache")}
        for n, label in enumerate(("first run (decodes, writes the cache)", "second run (memory-mapped cache)")):
            cmd = [
                sys.executable,
                "-m",
                "pawnet",
                "train",
                str(tmp / "photos"),
                "--epochs",
                str(args.epochs),
                "--out",
                str(tmp / f"run{n}"),
            ]
            wall, mb = peak_rss_of(cmd, env)
            print(f"{label:<40} peak RSS {mb:7.0f} MB   wall {wall:6.1f} s")
    print(f"(the pixels alone: {args.images * 64 * 64 * 3 / 2**20:.0f} MB of uint8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
