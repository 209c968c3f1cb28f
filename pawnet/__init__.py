"""pawnet: train, check and use convolutional networks that tell cats from dogs, or any classes
you have folders of photos for.

    import pawnet
    model = pawnet.train("datasets/cats-vs-dogs", arch="seed", epochs=25, out="runs/seed")
    model = pawnet.resume("runs/seed")                   # after a crash: on from the last epoch
    model.predict("cat_or_dog_1.jpg")
    model.evaluate("datasets/cats-vs-dogs/test_set")
    model = pawnet.load("runs/seed")                     # or an exported "model.onnx"
    heatmap = pawnet.explain(model, "cat_or_dog_1.jpg")   # Grad-CAM, an array over the input
"""

__version__ = "0.1.0"

from .errors import UserError  # noqa: E402
from .predictor import load  # noqa: E402

__all__ = ["Classifier", "UserError", "explain", "export", "load", "resume", "train", "__version__"]


def __getattr__(name):
    # PyTorch is imported on first use of what needs it, so `pawnet.load("model.onnx")` runs
    # where PyTorch is not installed.
    if name in ("train", "resume"):
        from . import training

        return getattr(training, name)
    if name == "explain":
        from .explanations import explain

        return explain
    if name == "export":
        from .onnx_export import export

        return export
    if name == "Classifier":
        from .classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'pawnet' has no attribute {name!r}")
