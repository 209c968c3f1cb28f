"""A trained PyTorch model, ready to use: `pawnet.load(path).predict(...)`, `.evaluate(folder)`, `.explain(image)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import calibration, imagenet
from .errors import UserError
from .modeldir import load_model
from .models import inference_batch, probabilities, to_input
from .predictor import Outputs, Predictor, join_batches
from .rundir import RunDir
from .unknown import KEEP, UnknownCheck


class Classifier(Predictor):
    """A PyTorch model with its classes and preprocessing, as read from a model directory."""

    explainable = True

    def __init__(
        self, model: torch.nn.Module, config: dict, path: Path | None = None, check: UnknownCheck | None = None
    ):
        super().__init__(config, path)
        self.model = model.eval().to(memory_format=torch.channels_last)
        # Predictions run on a copy made for inference where the network has one (EfficientNet's
        # batch norms folded away); Grad-CAM follows the network as it was trained.
        self.fast = model.fused().to(memory_format=torch.channels_last) if hasattr(model, "fused") else self.model
        self.check = check

    @classmethod
    def load(cls, path) -> Classifier:
        model, config = load_model(path)
        check = None
        if "unknown" in config:
            file = RunDir(path).unknown
            if not file.is_file():
                raise UserError(f"{file}: missing (the config names the unknown-photo check it holds)")
            check = UnknownCheck.load(file, config["unknown"]["threshold"])
        clf = cls(model, config, Path(path), check)
        space = config["unknown"].get("space", "features") if check is not None else None
        if space is not None and space != clf.check_space():
            raise UserError(f"{file}: fitted on {space}, which this model does not give")
        return clf

    def vectors(self, pixels: np.ndarray, mirror: bool = False) -> np.ndarray:
        """The vectors the network's last layer reads (`embed`), for every image."""
        with torch.inference_mode():
            batches = ((self.fast.embed(x.flip(3) if mirror else x).float().numpy(),) for x in self._batches(pixels))
            columns = join_batches(batches, len(pixels))
        return columns[0] if columns else np.zeros((0, 0), np.float32)

    def _batches(self, pixels: np.ndarray):
        """The pixels as network inputs, a CPU inference batch at a time."""
        batch_size = inference_batch(self.preprocessing.size)
        for start in range(0, len(pixels), batch_size):
            yield to_input(pixels[start : start + batch_size])

    def outputs(self, pixels: np.ndarray, tta: bool = False) -> Outputs:
        with torch.inference_mode():
            batches = (self._views(x, tta) for x in self._batches(pixels))
            return Outputs.join(batches, len(pixels), len(self.classes))

    def _views(self, x: torch.Tensor, tta: bool) -> Outputs:
        return _mean(self._outputs(x), self._outputs(x.flip(3))) if tta else self._outputs(x)

    def _outputs(self, x: torch.Tensor) -> Outputs:
        v = self.fast.embed(x)
        p = probabilities(self.fast, self.fast.classify(v).float() / self.temperature).numpy()
        imagenet = self._imagenet(v)
        scores = None if self.check is None else self.check.scores(self._checked(v, imagenet))
        looks_like = None if imagenet is None else imagenet.argmax(1).numpy()
        return Outputs(p, scores, looks_like)

    def _imagenet(self, v: torch.Tensor) -> torch.Tensor | None:
        """The ImageNet logits of the body's features, where the body is the pretrained one."""
        imagenet = getattr(self.fast, "imagenet", None)
        return None if imagenet is None else imagenet(v.float())

    def _checked(self, v: torch.Tensor, imagenet: torch.Tensor | None) -> np.ndarray:
        """What the unknown-photo check measures: where the body is an ImageNet one, its ImageNet
        logits (a photo's likeness to 1,000 named things tells a new breed of dog from a sports car
        better than the raw features: benchmarks/README.md); else the features."""
        return (v.float() if imagenet is None else imagenet).numpy()

    def check_space(self) -> str:
        return "imagenet logits" if getattr(self.fast, "imagenet", None) is not None else "features"

    def fit_checks(
        self, train_vectors: np.ndarray, train_labels: np.ndarray, val_vectors: np.ndarray, val_labels: np.ndarray
    ) -> dict:
        """Temperature scaling and the unknown-photo check, fitted to the training and validation
        photos' vectors; returns what config.json records of them."""
        with torch.inference_mode():
            logits = self.fast.classify(torch.from_numpy(np.ascontiguousarray(val_vectors))).float().numpy()
            checked = [self._checked(t, self._imagenet(t)) for t in map(torch.from_numpy, (train_vectors, val_vectors))]
        binary = getattr(self.model, "binary", False)
        before = calibration.softmax(logits, binary)
        temperature = calibration.calibrated_temperature(logits, val_labels, binary)
        after = calibration.softmax(logits / temperature, binary)
        self.check = UnknownCheck.fit(*checked)
        groups = {}
        if self.check_space() == "imagenet logits":
            groups = imagenet.widened(checked[0].argmax(1), train_labels, len(self.classes))
        if groups:
            self.check.also_known = np.zeros(imagenet.N_CLASSES, bool)
            for _, members in groups.values():
                self.check.also_known[members] = True
        self.temperature, self.threshold = temperature, self.check.threshold
        return {
            "calibration": {
                "temperature": round(temperature, 6),
                "bins": calibration.BINS,
                "val_ece_before": round(calibration.ece(before, val_labels), 6),
                "val_ece_after": round(calibration.ece(after, val_labels), 6),
            },
            "unknown": {
                "method": "residual of unit-length vectors outside their top principal directions",
                "dims": int(self.check.basis.shape[1]),
                "threshold": self.check.threshold,
                "keep": KEEP,
                "space": self.check_space(),
                "also_known": {self.classes[c]: group for c, (group, _) in groups.items()},
                "val_known": round(float(self.check.known(checked[1]).mean()), 6),
                "train_vectors": int(len(train_vectors)),
            },
        }

    def grad_cam(self, pixels: np.ndarray, class_name: str | None = None, layer: str | None = None):
        from .explanations import grad_cam

        return grad_cam(self, pixels, class_name, layer)


def _mean(a: Outputs, b: Outputs) -> Outputs:
    """What the model says of a photo and its mirror image, averaged (the ImageNet name is the
    photo's own)."""
    scores = None if a.scores is None else (a.scores + b.scores) / 2
    return Outputs((a.probabilities + b.probabilities) / 2, scores, a.looks_like)
