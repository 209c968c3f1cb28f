"""A trained model, ready to use: `pawnet.load(path).predict(...)` and `.evaluate(folder)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .modeldir import load_model
from .models import probabilities
from .predictor import Predictor


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) pixels to the float (N, 3, H, W) batch networks take.

    The permuted view is already channels-last in memory, the layout the convolutions run
    fastest in on a CPU, so no copy is made beyond the conversion to float.
    """
    if not pixels.flags.writeable or not pixels.flags.c_contiguous:  # a memory-mapped cache is read-only
        pixels = np.array(pixels)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float()


class Classifier(Predictor):
    """A PyTorch model with its classes and preprocessing, as read from a model directory."""

    def __init__(self, model: torch.nn.Module, config: dict, path: Path | None = None):
        super().__init__(config, path)
        self.model = model.eval().to(memory_format=torch.channels_last)

    @classmethod
    def load(cls, path) -> "Classifier":
        model, config = load_model(path)
        return cls(model, config, Path(path))

    def probabilities(self, pixels: np.ndarray, tta: bool = False, batch_size: int = 256) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for start in range(0, len(pixels), batch_size):
                x = to_tensor(pixels[start : start + batch_size])
                p = probabilities(self.model, self.model(x))
                if tta:
                    p = (p + probabilities(self.model, self.model(x.flip(3)))) / 2
                out.append(p)
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)

    def write_report(self, result, outcome, path) -> None:
        from .report import write_report

        write_report(self, result, outcome, path)
