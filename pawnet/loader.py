"""`pawnet.load(path)`: any model pawnet can run, whatever file it is in.

A model directory written by `pawnet train` predicts through onnxruntime where it can (`engine.py`:
several times PyTorch's speed on a CPU) and loads as a PyTorch `Classifier` where it cannot or
`engine="torch"` says so; an exported `.onnx` file loads as an `OnnxClassifier`. Neither
onnxruntime path imports PyTorch. No path at all, or the name `default`, is the cats-vs-dogs
model shipped with pawnet.
"""

from __future__ import annotations

from .rundir import DEFAULT_MODEL, DEFAULT_NAME, RunDir, resolve

__all__ = ["DEFAULT_MODEL", "DEFAULT_NAME", "is_model", "load", "resolve"]


def is_model(path) -> bool:
    path = resolve(path)
    return path.suffix == ".onnx" or RunDir(path).config.is_file()


def load(path=None, engine: str | None = None, log=None):
    """Load a model: a directory written by `pawnet train`, an exported `.onnx` file, or with no
    path (or "default") the cats-vs-dogs model shipped with pawnet.

    `engine` (for a model directory): "auto" (onnxruntime on a CPU where it is installed, PyTorch
    elsewhere), "onnxruntime" or "torch"; None reads $PAWNET_ENGINE, else "auto". `log` is told
    of the one-time export for onnxruntime (default: standard error)."""
    from .engine import chosen, compiled

    path = resolve(path)
    if path.suffix == ".onnx":
        from .onnx_model import OnnxClassifier

        return OnnxClassifier.load(path)
    model = compiled(path, chosen(engine), log)
    if model is not None:
        return model
    from .classifier import Classifier

    return Classifier.load(path)
