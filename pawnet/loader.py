"""`pawnet.load(path)`: any model pawnet can run, whatever file it is in.

A model directory written by `pawnet train` loads as a `Classifier` (PyTorch); an exported
`.onnx` file as an `OnnxClassifier`, which runs on onnxruntime without importing PyTorch; no
path at all is the cats-vs-dogs model shipped with pawnet.
"""

from __future__ import annotations

from pathlib import Path

from .rundir import RunDir

DEFAULT_MODEL = Path(__file__).with_name("default_model")


def is_model(path) -> bool:
    path = Path(path)
    return path.suffix == ".onnx" or RunDir(path).config.is_file()


def load(path=None):
    """Load a model: a directory written by `pawnet train`, an exported `.onnx` file, or with no
    path the cats-vs-dogs model shipped with pawnet."""
    if path is None:
        path = DEFAULT_MODEL
    if str(path).endswith(".onnx"):
        from .onnx_model import OnnxClassifier

        return OnnxClassifier.load(path)
    from .classifier import Classifier

    return Classifier.load(path)
