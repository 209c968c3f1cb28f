"""Training speed: pawnet against the usual PyTorch loop, one after the other, same network and recipe.

The usual loop is written as most tutorials write it: a Dataset that opens and resizes each photo
with PIL in __getitem__, augments it image by image, and a DataLoader with 2 workers.

    python benchmarks/train_speed.py [DATA] [--epochs 6]
    python benchmarks/train_speed.py [DATA] --small [--small-args "--img-size 128 --epochs 100"]

Prints both wall times (the first epoch's decoding included; pawnet's disk cache is off), the
ratio, and pawnet's steady-state training images/s. With --small, the usual loop's wall time is
the yardstick for the whole `pawnet train DATA --arch small` command instead (disk cache off, in a
process of its own, right after the loop): its wall time, best validation accuracy, and how many
times the usual loop's 6 epochs it took (the target is at most 10).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import pawnet
from pawnet.data import train_val_split

from photos import DEFAULT_DATA, missing


class PhotoFolder(Dataset):
    """Open, resize and augment one photo per call, as the usual tutorial code does."""

    def __init__(self, files, labels, augment: bool):
        self.files, self.labels, self.augment = files, labels, augment

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = Image.open(self.files[i]).convert("RGB").resize((64, 64), Image.BILINEAR)
        if self.augment:  # Keras's shear 0.2 degrees, x/y zoom in [0.8, 1.2], horizontal flip
            zx, zy = random.uniform(0.8, 1.2), random.uniform(0.8, 1.2)
            shear = math.radians(random.uniform(-0.2, 0.2))
            c = 32.0
            a, b, d = zx, -math.sin(shear) * zx, math.cos(shear) * zy
            img = img.transform((64, 64), Image.AFFINE, (a, b, c - a * c - b * c, 0, d, c - d * c), Image.BILINEAR)
            if random.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return x, torch.tensor(float(self.labels[i]))


class TutorialNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 32, 3), nn.Conv2d(32, 32, 3)
        self.dense, self.output = nn.Linear(32 * 14 * 14, 128), nn.Linear(128, 1)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.output(F.relu(self.dense(x.flatten(1))))


def usual_loop(data: Path, epochs: int) -> float:
    train, val, _ = train_val_split(data)
    train_loader = DataLoader(PhotoFolder(train.files, train.labels, True), batch_size=32, shuffle=True, num_workers=2)
    val_loader = DataLoader(PhotoFolder(val.files, val.labels, False), batch_size=32, num_workers=2)
    torch.manual_seed(0)
    model = TutorialNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        correct = 0
        for x, y in train_loader:
            optimizer.zero_grad()
            logits = model(x)[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits, y)
            loss.backward()
            optimizer.step()
            correct += ((logits > 0).float() == y).sum().item()
        model.eval()
        val_correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                val_correct += ((model(x)[:, 0] > 0).float() == y).sum().item()
        print(
            f"  usual loop epoch {epoch + 1}: train acc {correct / len(train):.3f}, "
            f"val acc {val_correct / len(val):.3f}",
            flush=True,
        )
    return time.perf_counter() - start


def pawnet_run(data: Path, epochs: int) -> tuple[float, float]:
    lines: list[str] = []

    def log(msg):
        lines.append(msg)
        print("  " + msg, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pawnet.train(data, arch="seed", epochs=epochs, out=Path(tmp) / "run", use_cache=False, log=log)
        wall = time.perf_counter() - start
    rates = [float(m.group(1).replace(",", "")) for line in lines if (m := re.search(r"([\d,]+) img/s", line))]
    return wall, statistics.median(rates[1:]) if len(rates) > 1 else rates[0]


def small_command(data: Path, extra: list[str], keep: Path | None) -> tuple[float, dict]:
    """Wall time and metrics of the whole `pawnet train --arch small` command, as a user runs it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = keep or Path(tmp) / "small"
        cmd = [sys.executable, "-m", "pawnet", "train", str(data), "--arch", "small", "--no-cache", "--out", str(out)]
        start = time.perf_counter()
        subprocess.run(cmd + extra, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        return wall, json.loads((out / "config.json").read_text())["metrics"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--small", action="store_true", help="time the whole small command against the usual loop")
    p.add_argument("--small-args", default="", help="more options for the small command, quoted")
    p.add_argument("--small-out", type=Path, help="keep the small command's model directory here")
    args = p.parse_args()
    if missing(args.data):
        return 2
    if args.small:
        print(f"torch {torch.__version__}; the usual loop ({args.epochs} epochs of the seed network), then small")
        usual_wall = usual_loop(args.data, args.epochs)
        small_wall, metrics = small_command(args.data, shlex.split(args.small_args), args.small_out)
        print()
        print(f"usual PyTorch loop   {usual_wall:7.1f} s  ({args.epochs} epochs of the seed network)")
        print(f"pawnet train --arch small {args.small_args}".rstrip())
        best, final = metrics["val_accuracy"], metrics["final_val_accuracy"]
        print(f"                     {small_wall:7.1f} s  best val_acc {best:.4f}, final {final:.4f}")
        print(f"ratio                {small_wall / usual_wall:7.2f} x the usual loop (target: at most 10)")
        return 0
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{args.epochs} epochs of the seed recipe on {args.data}"
    )
    print("pawnet:")
    pawnet_wall, steady = pawnet_run(args.data, args.epochs)
    print("usual PyTorch loop:")
    usual_wall = usual_loop(args.data, args.epochs)
    print()
    print(f"usual PyTorch loop   {usual_wall:7.1f} s")
    print(f"pawnet               {pawnet_wall:7.1f} s   (decoding included, disk cache off)")
    print(f"ratio                {usual_wall / pawnet_wall:7.2f} x")
    print(f"pawnet steady-state  {steady:7.0f} training images/s (median of epochs 2-{args.epochs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
