"""Prediction speed: `pawnet predict DIR --json` as a whole command on each engine, against the
usual PyTorch loop on the same photos, one after the other; with each one's accuracy.

    python benchmarks/predict_speed.py [--model DIR] [DATA] [--other-source DIR]

The usual loop is what a tutorial writes: the network in eval mode, float32, each photo opened
and resized to 256 x 256 by Pillow, batches of 32, softmax, one line printed per photo. Every row
is a separate process timed from start to end (interpreter, imports and model loading included).
pawnet's engine "auto" is onnxruntime on a CPU (for a model holding int8 ranges, as the shipped
one does: int8, and float32 for the photos int8 is unsure of); "onnxruntime" is float32 alone.
Their one-time exports are made before the timing, as is an int8 file (`pawnet export --quantize
--calibrate DATA/training_set`: onnxruntime's static quantization, its ranges from 256 of the
training photos), which runs every photo in int8.
Default model: the shipped one. Accuracy is on DATA's test_set/ (and on --other-source, default
../shared/datasets/other-source where it exists), counting each photo's most probable class; the
last columns count the photos whose label and whose known/unknown verdict differ from float32's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from photos import DEFAULT_DATA, missing

OTHER_SOURCE = DEFAULT_DATA.parent / "other-source"
ENGINES = [
    ("--engine=onnxruntime", "pawnet predict --json --engine onnxruntime"),
    ("--engine=auto", "pawnet predict --json (int8, unsure: fp32)"),
    ("--engine=torch", "pawnet predict --json --engine torch"),
]


def usual_loop(model_dir: str, folder: str) -> None:
    """The usual PyTorch prediction loop, printing `path label probability` per photo."""
    import numpy as np
    import torch
    from PIL import Image

    from pawnet.classifier import Classifier

    model = Classifier.load(model_dir).model.eval()  # the network as trained: a plain nn.Module
    classes = json.loads((Path(model_dir) / "config.json").read_text())["classes"]
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with torch.no_grad():
        for start in range(0, len(files), 32):
            batch = files[start : start + 32]
            pixels = [torch.from_numpy(np.asarray(_resized(Image, f))) for f in batch]
            x = torch.stack(pixels).permute(0, 3, 1, 2).float()
            p = torch.softmax(model(x), 1)
            for f, row in zip(batch, p):
                print(f, classes[int(row.argmax())], f"{float(row.max()):.3f}")


def _resized(image_module, path: Path):
    with image_module.open(path) as img:
        return img.convert("RGB").resize((256, 256), image_module.BILINEAR)


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def accuracy_of_lines(text: str) -> float:
    rows = [line.split() for line in text.splitlines() if line.strip()]
    return sum(Path(r[0]).parent.name == r[1] for r in rows) / len(rows)


def answers(text: str) -> dict[str, tuple[str, bool]]:
    """Each photo's most probable class and verdict (known or not), from `predict --json`."""
    return {r["path"]: (max(r["probabilities"], key=r["probabilities"].get), r["known"]) for r in json.loads(text)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", default="pawnet/default_model")
    p.add_argument("--other-source", type=Path, default=OTHER_SOURCE)
    p.add_argument("--usual-loop", nargs=2, metavar=("MODEL", "FOLDER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.usual_loop:
        usual_loop(*args.usual_loop)
        return 0
    if missing(args.data):
        return 2
    folders = [args.data / "test_set"] + ([args.other_source] if args.other_source.is_dir() else [])
    pawnet = [sys.executable, "-m", "pawnet", "predict", args.model]
    # The one-time export for onnxruntime, and an int8 export, outside the timings.
    subprocess.run(pawnet + [str(next((folders[0] / "cats").iterdir()))], check=True, capture_output=True)
    int8 = Path(tempfile.mkdtemp()) / "model.int8.onnx"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pawnet",
            "export",
            args.model,
            "--quantize",
            "--calibrate",
            str(args.data / "training_set"),
        ]
        + ["--out", str(int8)],
        check=True,
        capture_output=True,
    )
    runs = [(pawnet, flag, label) for flag, label in ENGINES]
    runs.append(
        ([sys.executable, "-m", "pawnet", "predict", str(int8)], "--json", "pawnet predict model.int8.onnx --json")
    )
    print(
        f"{'folder':<14}{'what runs':<44}{'seconds':>8}{'images/s':>10}{'accuracy':>10}{'x usual':>9}"
        f"{'labels, verdicts not as fp32':>30}"
    )
    for folder in folders:
        usual, out = timed([sys.executable, __file__, "--usual-loop", args.model, str(folder)])
        n = len(out.splitlines())
        print(
            f"{folder.name:<14}{'usual PyTorch loop (fp32, batches of 32)':<44}{usual:8.1f}{n / usual:10.1f}"
            f"{accuracy_of_lines(out):10.4f}"
        )
        float32 = None
        for command, flag, label in runs:
            seconds, out = timed(command + [str(folder), "--json", flag])
            got = answers(out)
            float32 = float32 or (got if flag == "--engine=onnxruntime" else None)
            accuracy = sum(Path(path).parent.name == label for path, (label, _) in got.items()) / len(got)
            differ = "" if float32 is None else sum(got[p][0] != float32[p][0] for p in got)
            verdicts = "" if float32 is None else sum(got[p][1] != float32[p][1] for p in got)
            print(
                f"{'':<14}{label:<44}{seconds:8.1f}{len(got) / seconds:10.1f}{accuracy:10.4f}"
                f"{usual / seconds:9.2f}{differ:>24}{verdicts:>6}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
