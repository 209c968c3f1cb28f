"""Where a `small` training step spends its time: the current layout against the one before it.

    python benchmarks/step_profile.py [--size 96] [--batch 64] [--steps 20] [--rows 8]

Times whole training steps (forward, backward, AdamW; augmentation apart, as pawnet applies it
to the batch before the step) of each layout on random pixels, then profiles a few steps of each
with torch.profiler and prints the operators that took the most time. Run nothing else on the
machine meanwhile.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from pawnet.architectures import ARCHITECTURES
from pawnet.models import SmallNet, SmallNet2, to_input

from photos import cpu_name

RECIPE = ARCHITECTURES["small"].recipe


def stepper(layout, size: int, batch: int):
    """One training step of `layout` on a fixed batch, as pawnet trains it (channels-last, the
    first layer fitted and frozen)."""
    torch.manual_seed(0)
    prep = RECIPE.preprocessing
    net = layout(2, size, prep.mean, prep.std).to(memory_format=torch.channels_last)
    pixels = np.random.default_rng(0).integers(0, 256, (256, size, size, 3), dtype=np.uint8)
    net.fit_first_layer(pixels)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.05)
    x = to_input(pixels[:batch], torch.device("cpu")).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))

    def step():
        loss = F.cross_entropy(net(x), y, label_smoothing=RECIPE.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=RECIPE.preprocessing.size)
    p.add_argument("--batch", type=int, default=RECIPE.batch_size)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rows", type=int, default=8)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name()}")
    for name, layout in (("before (batch norm and ReLU, then pooling)", SmallNet2), ("now (pooling first)", SmallNet)):
        step = stepper(layout, args.size, args.batch)
        for _ in range(3):
            step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - start) / args.steps
        print(
            f"\n{name}: {seconds * 1000:.0f} ms a step of {args.batch} at {args.size} px, "
            f"{args.batch / seconds:,.0f} training images/s"
        )
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
