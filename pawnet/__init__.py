"""pawnet: train, check and use convolutional networks that tell cats from dogs, or any classes
you have folders of photos for.

    import pawnet
    model = pawnet.train("datasets/cats-vs-dogs", arch="seed", epochs=25, out="runs/seed")
    model = pawnet.resume("runs/seed")                   # after a crash: on from the last epoch
    model.predict("cat_or_dog_1.jpg")
    model.evaluate("datasets/cats-vs-dogs/test_set")
    model = pawnet.load("runs/seed")                     # onnxruntime where installed; or "model.onnx"
    heatmap = pawnet.explain(model, "cat_or_dog_1.jpg")   # Grad-CAM, an array over the input
    suspects = pawnet.check_labels("datasets/cats-vs-dogs")["label_issues"]  # labels that look wrong

The modules, each importing only those before it (tests/test_structure.py keeps it so):
errors, version, config_check, atomic, rundir, progress, images, data, cache, augment, devices,
distributed, audit, download (photos, data sets and run folders); models, architectures,
settings, modeldir, metrics (networks); plots, explanations, report (what a model shows);
predictor, onnx_model, classifier (trained models); training; onnx_export, engine (onnxruntime
or PyTorch for a model directory), loader, server (the uses of a trained model); labels (the
label check of `pawnet data check --labels`, which runs a pretrained network); cli (the command
line).
"""

from .errors import UserError
from .loader import load
from .version import __version__

__all__ = ["Classifier", "UserError", "check_labels", "explain", "export", "load", "resume", "train", "__version__"]


def explain(model, image, class_name: str | None = None, layer: str | None = None):
    """Grad-CAM heatmap, (size, size) in [0, 1], for an image path, PIL image or uint8 array.

    `model` is a model from `load` or `train`, or a model directory's path.
    """
    from .images import load_pixels
    from .predictor import Predictor

    clf = model if isinstance(model, Predictor) else load(model)
    return clf.grad_cam(load_pixels(image, clf.preprocessing), class_name, layer).heatmap


def __getattr__(name):
    # PyTorch is imported on first use of what needs it, so `pawnet.load("model.onnx")` runs
    # where PyTorch is not installed.
    if name in ("train", "resume"):
        from . import training

        return getattr(training, name)
    if name == "export":
        from .onnx_export import export

        return export
    if name == "check_labels":
        from .labels import check_labels

        return check_labels
    if name == "Classifier":
        from .classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'pawnet' has no attribute {name!r}")
