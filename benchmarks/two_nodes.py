"""Two machines simulated on one against one process: the same run's metrics per epoch, side by side.

    python benchmarks/two_nodes.py [DATA] [--epochs 4] [--batch-size 15] [--img-size 32]

Trains once as one process, then as two `torchrun` launchers meeting by c10d rendezvous on
127.0.0.1, each in a folder of its own (tests/nodes.py), in float32; prints each epoch's
metrics from both and their differences, the largest weight differences, and which folders the
nodes wrote. Without DATA it makes a small synthetic data set (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_dataset  # noqa: E402
from nodes import start_nodes  # noqa: E402

KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def largest_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", type=Path)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=15)
    p.add_argument("--img-size", type=int, default=32)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data or make_dataset(tmp / "data", layout="tutorial", n=40, size=32)
        settings = ["--epochs", args.epochs, "--batch-size", args.batch_size, "--img-size", args.img_size]
        settings = [*map(str, settings), "--precision", "fp32"]
        one = tmp / "one"
        subprocess.run([sys.executable, "-m", "pawnet", "train", str(data), *settings, "--out", str(one)], check=True)
        launchers = start_nodes(tmp, data, ["data", *settings, "--out", "run"])
        if [launcher.wait() for launcher in launchers] != [0, 0]:
            print((tmp / "node0.log").read_text()[-3000:], file=sys.stderr)
            return 1
        two = tmp / "node0" / "run"
        print(f"{'epoch':>5}  " + "  ".join(f"{k + ' 1 / 2 nodes / diff':>34}" for k in KEYS))
        for a, b in zip(rows(one), rows(two), strict=True):
            cells = [f"{float(a[k]):>10.5f} {float(b[k]):>10.5f} {float(b[k]) - float(a[k]):>+12.1e}" for k in KEYS]
            print(f"{a['epoch']:>5}  " + "  ".join(f"{c:>34}" for c in cells))
        best = largest_difference(load_file(one / "model.safetensors"), load_file(two / "model.safetensors"))
        last = [torch.load(r / "checkpoint.pt", weights_only=True)["model"] for r in (one, two)]
        print(f"largest weight difference: best epoch {best:.1e}, last epoch {largest_difference(*last):.1e}")
        for node in (0, 1):
            wrote = sorted(p.name for p in (tmp / f"node{node}").iterdir() if p.name != "data")
            print(f"node {node} wrote: {', '.join(wrote) or 'nothing'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
