"""pawnet: train, check and use convolutional networks that tell cats from dogs, or any classes
you have folders of photos for.

    import pawnet
    model = pawnet.train("datasets/cats-vs-dogs", arch="seed", epochs=25, out="runs/seed")
    model.predict("cat_or_dog_1.jpg")
    model.evaluate("datasets/cats-vs-dogs/test_set")
    model = pawnet.load("runs/seed")
    heatmap = pawnet.explain(model, "cat_or_dog_1.jpg")   # Grad-CAM, an array over the input
"""

__version__ = "0.1.0"

from .classifier import Classifier, load  # noqa: E402
from .errors import UserError  # noqa: E402
from .explain import explain  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["Classifier", "UserError", "explain", "load", "train", "__version__"]
