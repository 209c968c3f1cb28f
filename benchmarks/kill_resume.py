"""kill -9 trials on the real photos: a training run killed at several moments, then resumed.

    python benchmarks/kill_resume.py [DATA] [--after 1.5 7 19 33]

Trains the seed recipe once without interruption, then for each delay starts the same run with a
cold cache, kills it with SIGKILL after that many seconds, runs `pawnet train --resume` (or, if
the kill came before the run wrote anything, the same `pawnet train` again), and compares:
metrics.csv rows (without the timing column), best weights byte for byte, and the final weights
in the checkpoint. On a CPU every trial should end equal to the uninterrupted run.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from photos import DEFAULT_DATA, missing


def pawnet(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pawnet", *map(str, args)], env=env, capture_output=True, text=True)


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def final_weights(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    p.add_argument("--after", type=float, nargs="+", default=[1.5, 7, 19, 33], help="seconds before each kill")
    args = p.parse_args()
    if missing(args.data):
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "PAWNET_CACHE": str(tmp / "cache")}
        reference = tmp / "reference"
        pawnet("train", args.data, "--out", reference, env=env).check_returncode()
        reference_weights = final_weights(reference)
        print(f"{'killed after':>12}  {'left':<24} {'rows equal':<11} {'best equal':<11} {'final equal':<11} resumed")
        failures = 0
        for after in args.after:
            run = tmp / f"killed{after}"
            cold = {**env, "PAWNET_CACHE": str(tmp / f"cache{after}")}  # so that early kills land in decoding
            child = subprocess.Popen(
                [sys.executable, "-m", "pawnet", "train", str(args.data), "--out", str(run)],
                env=cold,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(after)
            child.send_signal(signal.SIGKILL)
            child.wait()
            if (run / "config.json").exists():
                left = f"{len(rows(run)) if (run / 'metrics.csv').exists() else 0} epochs" + (
                    "" if (run / "checkpoint.pt").exists() else ", no checkpoint"
                )
                resumed = pawnet("train", "--resume", run, env=cold)
            else:  # killed before it wrote anything (while starting up): nothing to resume, start again
                left = "nothing"
                resumed = pawnet("train", args.data, "--out", run, env=cold)
            same_rows = rows(run) == rows(reference)
            same_best = (run / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
            resumed_weights = final_weights(run)
            same_final = all(torch.equal(resumed_weights[k], v) for k, v in reference_weights.items())
            failures += resumed.returncode != 0 or not (same_rows and same_best and same_final)
            first = next((line for line in resumed.stdout.splitlines() if line.startswith("resuming")), "started again")
            print(f"{after:>11g}s  {left:<24} {same_rows!s:<11} {same_best!s:<11} {same_final!s:<11} {first}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
