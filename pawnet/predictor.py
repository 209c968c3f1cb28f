"""What every trained model offers, whatever runs it: `predict(...)` and `evaluate(folder)`.

This module needs no PyTorch: an exported ONNX model predicts through it with onnxruntime alone.
Subclasses supply `outputs(pixels)`: calibrated class probabilities, and for models fitted with
the unknown-photo check (`unknown.py`) each photo's unknown score and, where the network's body
is an ImageNet one, the ImageNet class it looks like most.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import calibration, imagenet, metrics
from .atomic import make_parent
from .cache import cached_decode, decoded_chunks
from .data import Labelled, collect_images, evaluation_folder, photo_folder, read_folder
from .errors import UserError
from .images import Preprocessing
from .unknown import auroc


@dataclass
class Outputs:
    """What a model says of a batch of photos; `scores` and `looks_like` are None where the
    model cannot say."""

    probabilities: np.ndarray  # (N, n_classes), calibrated
    scores: np.ndarray | None = None  # (N,) unknown scores: higher is less like the classes
    looks_like: np.ndarray | None = None  # (N,) ImageNet class indices

    def __getitem__(self, rows) -> Outputs:
        return Outputs(*(None if a is None else a[rows] for a in self._arrays()))

    def _arrays(self) -> tuple:
        return self.probabilities, self.scores, self.looks_like

    @classmethod
    def join(cls, parts, n: int, n_classes: int) -> Outputs:
        """The outputs of consecutive batches of `n` photos in all, as one."""
        columns = join_batches((part._arrays() for part in parts), n)
        return cls(*columns) if columns else cls(np.zeros((0, n_classes), np.float32))


def join_batches(batches, n: int) -> tuple | None:
    """Consecutive batches' columns (tuples of arrays, None where there is none) of `n` rows in
    all, each column as one array; None when there are no batches.

    Each column is written into an array made for all `n` rows at the first batch: small
    per-batch arrays kept between each batch's large passing buffers split the heap, so those
    buffers were never reused and memory grew with every photo (3.5 GB for 200,000).
    """
    whole, start = None, 0
    for columns in batches:
        if whole is None:
            whole = tuple(None if c is None else np.empty((n, *c.shape[1:]), c.dtype) for c in columns)
        rows = slice(start, start + len(columns[0]))
        for array, part in zip(whole, columns):
            if array is not None:
                array[rows] = part
        start = rows.stop
    return whole


class Predictor:
    """A model's classes and preprocessing, and the prediction and evaluation built on them."""

    # Whether the model can say where it looked (Grad-CAM): that follows gradients through PyTorch.
    explainable = False

    def __init__(self, config: dict, path: Path | None = None):
        self.config = config
        self.path = path
        self.classes: list[str] = list(config["classes"])
        self.preprocessing = Preprocessing.from_dict(config["preprocessing"])
        self.temperature = float(config.get("calibration", {}).get("temperature", 1.0))
        # None for a model trained before the check existed: every photo is then one of its classes.
        self.threshold: float | None = config["unknown"]["threshold"] if "unknown" in config else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config['arch']}, classes={self.classes}, path={str(self.path)!r})"

    def outputs(self, pixels: np.ndarray, tta: bool = False) -> Outputs:
        """What the model says of uint8 pixels from `load_pixels`; with `tta`, averaged with what
        it says of their mirror images."""
        raise NotImplementedError

    def probabilities(self, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
        """Calibrated class probabilities (N, n_classes)."""
        return self.outputs(pixels, tta).probabilities

    def grad_cam(self, pixels: np.ndarray, class_name: str | None = None, layer: str | None = None):
        """Where the network looked for its label of uint8 pixels (a `GradCam`); models that are
        `explainable` only."""
        raise UserError(
            f"{type(self).__name__} cannot explain (Grad-CAM follows gradients through PyTorch); "
            "use the model directory"
        )

    def predict(self, inputs, tta: bool = False, all_known: bool = False) -> list[dict]:
        """Label and probabilities for image files, folders of them, PIL images or uint8 arrays.

        Returns one dict per image: `path`, `label` (None for a photo of none of the classes),
        `probability` (of that label), `probabilities` (class name to probability), `known`,
        `unknown_score` and, where the model can tell, `looks_like`; or `path` and `error` for a
        file that could not be read. With `all_known`, every photo gets one of the classes.
        """
        if isinstance(inputs, (str, Path, Image.Image, np.ndarray)):
            inputs = [inputs]
        paths = collect_images([i for i in inputs if isinstance(i, (str, Path))])
        images = [i for i in inputs if not isinstance(i, (str, Path))]
        names = [str(p) for p in paths] + [f"<image {n}>" for n in range(len(images))]
        results = [{"path": name} for name in names]
        for first, chunk in decoded_chunks(paths + images, self.preprocessing, chunk=64):
            read = [(i, pixels) for i, (pixels, _) in enumerate(chunk, start=first) if pixels is not None]
            for i, (_, error) in enumerate(chunk, start=first):
                if error is not None:
                    results[i]["error"] = error
            if read:
                out = self.outputs(np.stack([pixels for _, pixels in read]), tta)
                for row, (i, _) in enumerate(read):
                    results[i] = self.labelled(names[i], out[row], all_known)
        return results

    @property
    def checks_unknown(self) -> bool:
        """Whether the model was fitted with the unknown-photo check (models trained before it
        existed were not)."""
        return self.threshold is not None

    def known(self, out: Outputs) -> np.ndarray:
        """Which photos show one of the classes."""
        if out.scores is None or self.threshold is None:
            return np.ones(len(out.probabilities), bool)
        return out.scores <= self.threshold

    def labelled(self, name: str, out: Outputs, all_known: bool = False) -> dict:
        """One image's entry in `predict`'s answer, from what the model said of it (a row of
        `outputs`: arrays of length 1 or scalars)."""
        p = np.asarray(out.probabilities).reshape(-1)
        k = int(p.argmax())
        score = None if out.scores is None else float(np.asarray(out.scores).reshape(-1)[0])
        known = all_known or bool(np.all(self.known(out)))
        entry = {
            "path": name,
            "label": self.classes[k] if known else None,
            "probability": round(float(p[k]), 6) if known else None,
            "probabilities": {c: round(float(v), 6) for c, v in zip(self.classes, p)},
            "known": bool(known),
            "unknown_score": None if score is None else round(score, 6),
        }
        if out.looks_like is not None:
            entry["looks_like"] = imagenet.name(int(np.asarray(out.looks_like).reshape(-1)[0]))
        return entry

    def evaluate(self, folder, tta: bool = False, report=None, use_cache: bool = True, unknown=None) -> dict:
        """Accuracy, loss, calibration error, per-class precision/recall/F1 and the confusion
        matrix on a labelled folder (any layout `pawnet train` takes; for the tutorial's layout,
        its test_set/). With `report`, also writes that HTML report of the results, top losses
        included; without `use_cache`, every photo is decoded again rather than read from the
        decode cache. With `unknown`, a folder of photos of none of the classes, also how well the
        unknown-photo check tells those from the folder's."""
        if report is not None and not self.explainable:
            raise UserError(f"{type(self).__name__} cannot write reports (they need Grad-CAM); use the model directory")
        if unknown is not None and not self.checks_unknown:
            raise UserError(
                f"{self.path}: this model has no unknown-photo check (trained before pawnet had one); retrain it"
            )
        unknown_files = None if unknown is None else photo_folder(unknown, "--unknown")
        if report is not None:
            make_parent(report)
        where = evaluation_folder(folder)
        result, outcome = self.evaluate_set(read_folder(where, classes=self.classes), tta, use_cache)
        result = {"data": str(where), **result}
        if unknown is not None:
            result.update(self._against_unknown(outcome, Path(unknown), unknown_files, tta, use_cache))
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
        out = self.outputs(decoded.pixels, tta)
        probs = out.probabilities
        losses = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1))
        known = self.known(out)
        result = {
            "n_images": int(len(labels)),
            "n_skipped": len(decoded.errors),
            "skipped": decoded.skipped(data.files),
            "classes": self.classes,
            "loss": float(losses.mean()),
            "log_loss": float(losses.mean()),
            "ece": calibration.ece(probs, labels),
            "temperature": self.temperature,
            "tta": tta,
            "checks_unknown": self.checks_unknown,
            "known_share": float(known.mean()),
            "accuracy_known": float((probs.argmax(1) == labels)[known].mean()) if known.any() else None,
        }
        result.update(metrics.summary(labels, probs.argmax(1), self.classes))
        outcome = Outcome([data.files[i] for i in decoded.ok], decoded.pixels, labels, probs, losses, out.scores)
        return result, outcome

    def _against_unknown(self, outcome: Outcome, folder: Path, files: list[Path], tta: bool, use_cache: bool) -> dict:
        """`evaluate --unknown`: the check on photos of none of the classes, beside the labelled ones."""
        if outcome.scores is None:  # an ONNX file whose config names a check its graph lacks
            raise UserError(f"{self.path}: its network gives no unknown-photo score; export it again")
        decoded = cached_decode(files, self.preprocessing, desc="reading unknown photos", use_cache=use_cache)
        if len(decoded.ok) == 0:
            raise UserError(f"{folder}: holds no readable images (--unknown)")
        scores = self.outputs(decoded.pixels, tta).scores
        return {
            "unknown_data": str(folder),
            "unknown_n_images": int(len(scores)),
            "unknown_n_skipped": len(decoded.errors),
            "unknown_skipped": decoded.skipped(files),
            "unknown_auroc": auroc(outcome.scores, scores),
            "unknown_called_unknown": float((scores > self.threshold).mean()),
            "data_called_unknown": float((outcome.scores > self.threshold).mean()),
        }


@dataclass
class Outcome:
    """Per-image results of an evaluation: files, pixels, true labels, probabilities, losses, unknown scores."""

    files: list[Path]
    pixels: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    losses: np.ndarray
    scores: np.ndarray | None = None  # unknown scores, where the model has the check
