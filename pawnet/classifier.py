"""A trained PyTorch model, ready to use: `pawnet.load(path).predict(...)`, `.evaluate(folder)`, `.explain(image)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .modeldir import load_model
from .models import probabilities, to_input
from .predictor import Predictor


class Classifier(Predictor):
    """A PyTorch model with its classes and preprocessing, as read from a model directory."""

    explainable = True

    def __init__(self, model: torch.nn.Module, config: dict, path: Path | None = None):
        super().__init__(config, path)
        self.model = model.eval().to(memory_format=torch.channels_last)

    @classmethod
    def load(cls, path) -> Classifier:
        model, config = load_model(path)
        return cls(model, config, Path(path))

    def probabilities(self, pixels: np.ndarray, tta: bool = False, batch_size: int = 256) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(pixels), batch_size):
                x = to_input(pixels[start : start + batch_size])
                p = probabilities(self.model, self.model(x))
                if tta:
                    p = (p + probabilities(self.model, self.model(x.flip(3)))) / 2
                out.append(p)
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)

    def grad_cam(self, pixels: np.ndarray, class_name: str | None = None, layer: str | None = None):
        from .explanations import grad_cam

        return grad_cam(self, pixels, class_name, layer)
