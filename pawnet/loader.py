"""`pawnet.load(path)`: any model pawnet can run, whatever file it is in.

A model directory written by `pawnet train` loads as a `Classifier` (PyTorch); an exported
`.onnx` file as an `OnnxClassifier`, which runs on onnxruntime without importing PyTorch; no
path at all, or the name `default`, is the cats-vs-dogs model shipped with pawnet.
"""

from __future__ import annotations

from pathlib import Path

from .rundir import RunDir

DEFAULT_MODEL = Path(__file__).with_name("default_model")
# The name that stands for DEFAULT_MODEL wherever a command takes a MODEL; a file or folder of
# that name where pawnet runs comes first (it is what the user named).
DEFAULT_NAME = "default"


def resolve(path) -> Path:
    """The path of the model `path` names: the shipped one for None or `default`."""
    if path is None or (str(path) == DEFAULT_NAME and not Path(path).exists()):
        return DEFAULT_MODEL
    return Path(path)


def is_model(path) -> bool:
    path = resolve(path)
    return path.suffix == ".onnx" or RunDir(path).config.is_file()


def load(path=None):
    """Load a model: a directory written by `pawnet train`, an exported `.onnx` file, or with no
    path (or "default") the cats-vs-dogs model shipped with pawnet."""
    path = resolve(path)
    if path.suffix == ".onnx":
        from .onnx_model import OnnxClassifier

        return OnnxClassifier.load(path)
    from .classifier import Classifier

    return Classifier.load(path)
