"""The recipe search behind `small`'s defaults: variants of the network and its recipe, 3 seeds each.

    python benchmarks/small_recipes.py [DATA] [--only NAME ...] [--seeds 0 1 2] [--workers N]
    python benchmarks/small_recipes.py --cpu-cost [--only NAME ...]

Each variant trains on training_set/ and is scored on test_set/ after every epoch (best, final, and
the final epoch with test-time flipping), as `pawnet train` would, with pawnet's augmentation,
optimiser and schedule. On a GPU the whole table takes minutes (workers share the GPU); on a CPU,
hours. Since accuracy hardly depends on the device but time does, `--cpu-cost` times a few training
steps of each variant on this machine's CPU and prints the minutes its epochs would take here.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pawnet.architectures import ARCHITECTURES
from pawnet.augment import Augmentation
from pawnet.cache import decode
from pawnet.data import train_val_split
from pawnet.images import Preprocessing
from pawnet.models import Rescale, SmallNet1, _conv_bn_relu

from photos import DEFAULT_DATA, missing

MEAN, STD = (124.0, 116.0, 104.0), (58.0, 57.0, 57.0)
SMALL = ARCHITECTURES["small"].recipe
AUGMENT = {
    "small": SMALL.augmentation,
    "strong": Augmentation(
        zoom=(0.6, 1.2), translate=0.15, rotate_deg=15, hflip=True, brightness=0.3, contrast=0.3, saturation=0.3
    ),
    "geometry": Augmentation(zoom=(0.75, 1.15), translate=0.1, rotate_deg=10, hflip=True),
    "light": Augmentation(zoom=(0.85, 1.1), translate=0.05, hflip=True),
}
# Networks: the widths of four (or five) blocks, each a convolution and 2x2 max pooling, and how
# many more convolutions follow the pooling in each block. "first" is the first `small` layout.
NETWORKS = {
    "first": None,
    "w32": dict(widths=(32, 64, 128, 256), extra=(0, 1, 1, 1)),
    "w24": dict(widths=(24, 48, 96, 192), extra=(0, 1, 1, 1)),  # small's layout now
    "w24x5": dict(widths=(24, 48, 96, 192, 384), extra=(0, 0, 1, 1, 1)),
    "w32-deeper": dict(widths=(32, 64, 128, 256), extra=(0, 1, 2, 2)),
}
BASE = dict(net="w32", sizes=[[64, 32]], lr=SMALL.lr, wd=SMALL.weight_decay, bs=SMALL.batch_size, ls=0.1, aug="small")
# (name, changes to BASE); sizes is [[image size, epochs], ...], more than one pair for progressive resizing.
VARIANTS = [
    ("first-64x20", dict(net="first", sizes=[[64, 20]])),
    ("w32-64x32", {}),
    ("w32-64x32-lr6e-3", dict(lr=6e-3)),
    ("w32-64x32-lr1.5e-3", dict(lr=1.5e-3)),
    ("w32-64x32-wd0.2", dict(wd=0.2)),
    ("w32-64x32-ls0", dict(ls=0.0)),
    ("w32-64x32-bs32", dict(bs=32)),
    ("w32-64x32-strong", dict(aug="strong")),
    ("w32-64x32-geometry", dict(aug="geometry")),
    ("w32-64x32-light", dict(aug="light")),
    ("w32-64x24+80x8", dict(sizes=[[64, 24], [80, 8]])),
    ("w32-80x24", dict(sizes=[[80, 24]])),
    ("w32-deeper-64x28", dict(net="w32-deeper", sizes=[[64, 28]])),
    ("w24-64x50", dict(net="w24", sizes=[[64, 50]])),
    ("w24-64x40", dict(net="w24", sizes=[[64, 40]])),
    ("w24-96x70", dict(net="w24", sizes=[[96, 70]])),
    ("w24-64x40+96x8", dict(net="w24", sizes=[[64, 40], [96, 8]])),
    ("w24-80x28", dict(net="w24", sizes=[[80, 28]])),
    ("w24-96x20", dict(net="w24", sizes=[[96, 20]])),
    ("w24x5-64x40", dict(net="w24x5", sizes=[[64, 40]])),
    ("w24x5-64x30+96x10", dict(net="w24x5", sizes=[[64, 30], [96, 10]])),
    ("w32-64x64", dict(sizes=[[64, 64]])),
    ("w32-96x56", dict(sizes=[[96, 56]])),
    ("w24-96x84", dict(net="w24", sizes=[[96, 84]])),
    ("w24x5-96x76", dict(net="w24x5", sizes=[[96, 76]])),
    ("first-96x100", dict(net="first", sizes=[[96, 100]])),
]


class Variant(nn.Module):
    def __init__(self, widths, extra, n_classes=2):
        super().__init__()
        layers, c_in = [], 3
        for w, n in zip(widths, extra):
            layers += _conv_bn_relu(c_in, w) + [nn.MaxPool2d(2)]
            for _ in range(n):
                layers += _conv_bn_relu(w, w)
            c_in = w
        self.rescale = Rescale(MEAN, STD)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.3), nn.Linear(c_in, n_classes))

    def forward(self, x):
        return self.classifier(self.features(self.rescale(x)).mean((2, 3)))


def network(name: str) -> nn.Module:
    return SmallNet1(mean=MEAN, std=STD) if NETWORKS[name] is None else Variant(**NETWORKS[name])


def train(cfg: dict, seed: int, pixels: dict, labels: dict, device) -> dict:
    """One variant, one seed: test_set accuracy after every epoch, plain and with flipping."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = network(cfg["net"]).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"])
    n, bs = len(labels["train"]), cfg["bs"]
    total = sum(epochs for _, epochs in cfg["sizes"]) * -(-n // bs)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg["lr"], total_steps=total, pct_start=0.15)
    augment = AUGMENT[cfg["aug"]]
    test = pixels[("test", cfg["sizes"][-1][0])]
    plain, flipped = [], []
    for size, epochs in cfg["sizes"]:
        images = pixels[("train", size)]
        for _ in range(epochs):
            model.train()
            order = torch.randperm(n, generator=generator).to(device)
            for i in range(0, n, bs):
                rows = order[i : i + bs]
                x = augment(images[rows].float(), generator).contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(model(x), labels["train"][rows], label_smoothing=cfg["ls"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            model.eval()
            with torch.inference_mode():
                x = test.float().contiguous(memory_format=torch.channels_last)
                p, p_flip = model(x).softmax(1), model(x.flip(3)).softmax(1)
            plain.append((p.argmax(1) == labels["test"]).float().mean().item())
            flipped.append(((p + p_flip).argmax(1) == labels["test"]).float().mean().item())
    return dict(accuracy=plain, with_flip=flipped)


def worker(jobs, results, arrays: str):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    saved = np.load(arrays, allow_pickle=True).item()
    pixels = {k: torch.from_numpy(v).to(device).permute(0, 3, 1, 2) for k, v in saved["pixels"].items()}
    labels = {k: torch.from_numpy(v).to(device) for k, v in saved["labels"].items()}
    while (job := jobs.get()) is not None:
        name, cfg, seed = job
        start = time.perf_counter()
        result = train(cfg, seed, pixels, labels, device)
        results.put(dict(name=name, seed=seed, seconds=time.perf_counter() - start, **result))


def cpu_cost(variants) -> None:
    """Seconds per epoch of 2,000 photos on this CPU (training steps alone, no validation), from 8
    timed steps after 3 warm-up steps."""
    print(f"{'variant':<24}{'s/epoch':>24}{'minutes':>10}")
    for name, cfg in variants:
        per_epoch = []
        for size, _ in cfg["sizes"]:
            model = network(cfg["net"]).to(memory_format=torch.channels_last)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            x0, y = torch.rand(cfg["bs"], 3, size, size) * 255, torch.randint(0, 2, (cfg["bs"],))
            for i in range(11):
                if i == 3:
                    start = time.perf_counter()
                x = AUGMENT[cfg["aug"]](x0).contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            per_epoch.append((time.perf_counter() - start) / 8 * 2000 / cfg["bs"])
        minutes = sum(s * epochs for s, (_, epochs) in zip(per_epoch, cfg["sizes"])) / 60
        print(f"{name:<24}{' + '.join(f'{s:.1f}' for s in per_epoch):>24}{minutes:>10.1f}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    p.add_argument("--only", nargs="+", help="the variants to run (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=torch.cuda.device_count() and 12 or 1)
    p.add_argument("--cpu-cost", action="store_true", help="time each variant's epochs on this CPU instead")
    p.add_argument("--out", type=Path, help="also write each run's per-epoch accuracies here (JSON lines)")
    args = p.parse_args()
    variants = [(name, {**BASE, **change}) for name, change in VARIANTS if not args.only or name in args.only]
    if args.cpu_cost:
        cpu_cost(variants)
        return 0
    if missing(args.data):
        return 2
    train_set, test_set, _ = train_val_split(args.data)
    sizes = sorted({size for _, cfg in variants for size, _ in cfg["sizes"]})
    pixels = {}
    for size in sizes:
        prep = Preprocessing(size=size)
        pixels[("train", size)] = decode(train_set.files, prep, desc=f"decoding training photos at {size} px").pixels
        pixels[("test", size)] = decode(test_set.files, prep, desc=f"decoding test photos at {size} px").pixels
    labels = {"train": np.asarray(train_set.labels), "test": np.asarray(test_set.labels)}
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        arrays = str(Path(tmp) / "arrays.npy")
        np.save(arrays, {"pixels": pixels, "labels": labels}, allow_pickle=True)
        ctx = mp.get_context("spawn")
        jobs, results = ctx.Queue(), ctx.Queue()
        for name, cfg in variants:
            for seed in args.seeds:
                jobs.put((name, cfg, seed))
        for _ in range(args.workers):
            jobs.put(None)
        workers = [ctx.Process(target=worker, args=(jobs, results, arrays), daemon=True) for _ in range(args.workers)]
        for w in workers:
            w.start()
        for _ in range(len(variants) * len(args.seeds)):
            r = results.get()
            runs.setdefault(r["name"], []).append(r)
            acc = r["accuracy"]
            print(f"{r['name']:<24} seed {r['seed']}: best {max(acc):.3f}, final {acc[-1]:.3f} ({r['seconds']:.0f} s)")
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print(f"\n{'variant':<24}{'best':>8}{'final':>8}{'flip':>8}{'lowest best':>13}   (means over seeds)")
    for name, _ in variants:
        rs = runs[name]
        best, final = [max(r["accuracy"]) for r in rs], [r["accuracy"][-1] for r in rs]
        flip = [r["with_flip"][-1] for r in rs]
        mean = statistics.mean
        print(f"{name:<24}{mean(best):>8.3f}{mean(final):>8.3f}{mean(flip):>8.3f}{min(best):>13.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
