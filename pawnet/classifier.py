"""A trained model, ready to use: `pawnet.load(path).predict(...)` and `.evaluate(folder)`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import metrics
from .cache import cached_decode, decode
from .data import Labelled, collect_images, evaluation_folder, read_folder
from .errors import UserError
from .images import Preprocessing
from .modeldir import load_model
from .models import probabilities


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) pixels to the float (N, 3, H, W) batch networks take.

    The permuted view is already channels-last in memory, the layout the convolutions run
    fastest in on a CPU, so no copy is made beyond the conversion to float.
    """
    if not pixels.flags.writeable or not pixels.flags.c_contiguous:  # a memory-mapped cache is read-only
        pixels = np.array(pixels)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float()


class Classifier:
    """A model with its classes and preprocessing, as read from a model directory."""

    def __init__(self, model: torch.nn.Module, config: dict, path: Path | None = None):
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.config = config
        self.path = path
        self.classes: list[str] = list(config["classes"])
        self.preprocessing = Preprocessing.from_dict(config["preprocessing"])

    @classmethod
    def load(cls, path) -> "Classifier":
        model, config = load_model(path)
        return cls(model, config, Path(path))

    def __repr__(self) -> str:
        return f"Classifier({self.config['arch']}, classes={self.classes}, path={str(self.path)!r})"

    def probabilities(self, pixels: np.ndarray, tta: bool = False, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, n_classes) for uint8 pixels from `load_pixels`.

        With `tta`, the probabilities of each image and its mirror image are averaged.
        """
        out = []
        with torch.inference_mode():
            for start in range(0, len(pixels), batch_size):
                x = to_tensor(pixels[start : start + batch_size])
                p = probabilities(self.model, self.model(x))
                if tta:
                    p = (p + probabilities(self.model, self.model(x.flip(3)))) / 2
                out.append(p)
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)

    def predict(self, inputs, tta: bool = False) -> list[dict]:
        """Label and probabilities for image files, folders of them, PIL images or uint8 arrays.

        Returns one dict per image: `path`, `label`, `probability` (of that label) and
        `probabilities` (class name to probability); or `path` and `error` for a file that
        could not be read.
        """
        if isinstance(inputs, (str, Path, Image.Image, np.ndarray)):
            inputs = [inputs]
        paths = collect_images([i for i in inputs if isinstance(i, (str, Path))])
        images = [i for i in inputs if not isinstance(i, (str, Path))]
        names = [str(p) for p in paths] + [f"<image {n}>" for n in range(len(images))]
        decoded = decode(paths + images, self.preprocessing, desc="reading")
        results = [{"path": name, "error": decoded.errors.get(i)} for i, name in enumerate(names)]
        for i, p in zip(decoded.ok, self.probabilities(decoded.pixels, tta)):
            k = int(p.argmax())
            results[i] = {
                "path": names[i],
                "label": self.classes[k],
                "probability": round(float(p[k]), 6),
                "probabilities": {c: round(float(v), 6) for c, v in zip(self.classes, p)},
            }
        return results

    def evaluate(self, folder, tta: bool = False, report=None) -> dict:
        """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix on a labelled
        folder (any layout `pawnet train` takes; for the tutorial's layout, its test_set/).
        With `report`, also writes that HTML report of the results, top losses included."""
        where = evaluation_folder(folder)
        result, outcome = self.evaluate_set(read_folder(where, classes=self.classes), tta)
        result = {"data": str(where), **result}
        if report is not None:
            from .report import write_report

            write_report(self, result, outcome, report)
        return result

    def evaluate_set(self, data: Labelled, tta: bool = False) -> tuple[dict, "Outcome"]:
        """`evaluate` on labelled files, and each readable file's outcome (for reports)."""
        decoded = cached_decode(data.files, self.preprocessing, desc="reading")
        if len(decoded.ok) == 0:
            raise UserError(f"none of the {len(data)} images could be read")
        labels = np.asarray(data.labels)[decoded.ok]
        probs = self.probabilities(decoded.pixels, tta)
        losses = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1))
        result = {
            "n_images": int(len(labels)),
            "n_skipped": len(decoded.errors),
            "skipped": decoded.skipped(data.files),
            "classes": self.classes,
            "loss": float(losses.mean()),
            "tta": tta,
        }
        result.update(metrics.summary(labels, probs.argmax(1), self.classes))
        outcome = Outcome([data.files[i] for i in decoded.ok], decoded.pixels, labels, probs, losses)
        return result, outcome


@dataclass
class Outcome:
    """Per-image results of an evaluation: files, pixels, true labels, probabilities, losses."""

    files: list[Path]
    pixels: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    losses: np.ndarray


def load(path) -> Classifier:
    """Load a model directory written by `pawnet train`."""
    return Classifier.load(path)
