"""Prediction speed: one file with the model loaded, a whole folder, one cold `pawnet predict`,
and the same folder through the exported ONNX model on onnxruntime, with label agreement.

    python benchmarks/predict_speed.py [--model DIR] [DATA]

Without --model, a seed model is trained for one epoch first (speed does not depend on accuracy).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pawnet

from photos import DEFAULT_DATA, missing


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    p.add_argument("--model", type=Path)
    args = p.parse_args()
    if missing(args.data):
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or pawnet.train(args.data, epochs=1, out=Path(tmp) / "seed", log=lambda *_: None).path
        folder = args.data / "test_set"
        photo = sorted((folder / "cats").iterdir())[0]

        clf = pawnet.load(model_dir)
        clf.predict(photo)  # warm-up
        times = []
        for _ in range(100):
            t = time.perf_counter()
            clf.predict(photo)
            times.append(time.perf_counter() - t)
        print(f"predict one file, model loaded   {statistics.median(times) * 1000:7.2f} ms median of 100")

        t = time.perf_counter()
        results = clf.predict(folder)
        wall = time.perf_counter() - t
        print(f"predict a folder ({len(results)} photos)  {len(results) / wall:7.0f} images/s ({wall:.2f} s, no cache)")

        cold = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "pawnet", "predict", str(model_dir), str(photo)], check=True, capture_output=True
            )
            cold.append(time.perf_counter() - t)
        print(f"pawnet predict MODEL photo.jpg   {statistics.median(cold):7.2f} s whole command, median of 3")

        onnx_path = Path(tmp) / "model.onnx"
        pawnet.export(model_dir, onnx_path, log=lambda *_: None)
        onnx_clf = pawnet.load(onnx_path)
        onnx_clf.predict(photo)
        t = time.perf_counter()
        onnx_results = onnx_clf.predict(folder)
        onnx_wall = time.perf_counter() - t
        agree = sum(a["label"] == b["label"] for a, b in zip(results, onnx_results))
        print(
            f"ONNX (onnxruntime) on the folder  {len(onnx_results) / onnx_wall:7.0f} images/s "
            f"against PyTorch's {len(results) / wall:.0f}"
        )
        print(f"ONNX labels equal PyTorch's       {agree} of {len(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
