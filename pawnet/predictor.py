"""What every trained model offers, whatever runs it: `predict(...)` and `evaluate(folder)`.

This module needs no PyTorch: an exported ONNX model predicts through it with onnxruntime alone.
Subclasses supply `probabilities(pixels)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import metrics
from .atomic import make_parent
from .cache import cached_decode, decode
from .data import Labelled, collect_images, evaluation_folder, read_folder
from .errors import UserError
from .images import Preprocessing


class Predictor:
    """A model's classes and preprocessing, and the prediction and evaluation built on them."""

    # Whether the model can say where it looked (Grad-CAM): that follows gradients through PyTorch.
    explainable = False

    def __init__(self, config: dict, path: Path | None = None):
        self.config = config
        self.path = path
        self.classes: list[str] = list(config["classes"])
        self.preprocessing = Preprocessing.from_dict(config["preprocessing"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config['arch']}, classes={self.classes}, path={str(self.path)!r})"

    def probabilities(self, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
        """Class probabilities (N, n_classes) for uint8 pixels from `load_pixels`; with `tta`,
        averaged with those of the mirror images."""
        raise NotImplementedError

    def grad_cam(self, pixels: np.ndarray, class_name: str | None = None, layer: str | None = None):
        """Where the network looked for its label of uint8 pixels (a `GradCam`); models that are
        `explainable` only."""
        raise UserError(
            f"{type(self).__name__} cannot explain (Grad-CAM follows gradients through PyTorch); "
            "use the model directory"
        )

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
            results[i] = self.labelled(names[i], p)
        return results

    def labelled(self, name: str, p: np.ndarray) -> dict:
        """One image's entry in `predict`'s answer, from its class probabilities."""
        k = int(p.argmax())
        return {
            "path": name,
            "label": self.classes[k],
            "probability": round(float(p[k]), 6),
            "probabilities": {c: round(float(v), 6) for c, v in zip(self.classes, p)},
        }

    def evaluate(self, folder, tta: bool = False, report=None, use_cache: bool = True) -> dict:
        """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix on a labelled
        folder (any layout `pawnet train` takes; for the tutorial's layout, its test_set/).
        With `report`, also writes that HTML report of the results, top losses included; without
        `use_cache`, every photo is decoded again rather than read from the decode cache."""
        if report is not None and not self.explainable:
            raise UserError(f"{type(self).__name__} cannot write reports (they need Grad-CAM); use the model directory")
        if report is not None:
            make_parent(report)
        where = evaluation_folder(folder)
        result, outcome = self.evaluate_set(read_folder(where, classes=self.classes), tta, use_cache)
        result = {"data": str(where), **result}
        if report is not None:
            from .report import write_report

            write_report(self, result, outcome, report)
        return result

    def evaluate_set(self, data: Labelled, tta: bool = False, use_cache: bool = True) -> tuple[dict, Outcome]:
        """`evaluate` on labelled files, and each readable file's outcome (for reports)."""
        decoded = cached_decode(data.files, self.preprocessing, desc="reading", use_cache=use_cache)
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
