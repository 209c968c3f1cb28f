"""Whether a photo shows one of a model's classes at all: the unknown-photo check.

The score of a photo is how far its vector lies outside the space the training photos' vectors
span: each vector is scaled to length 1, and the score is the length of what is left of it once
its part along the training vectors' `dims` principal directions is taken away. The vectors are
the network's features (`embed`, what its last layer reads), or for a network with an ImageNet
body its ImageNet logits (`classifier.py`). Photos of the classes are well described by those
directions; a photo of anything else leaves more behind. (Among the scores measured on the shared
photos this one separated photos of neither cats nor dogs best, and needs the least stored:
benchmarks/README.md.) The threshold is the score that a chosen share of the validation photos stays
under, so nothing but the user's own photos is needed.

Where the vectors are ImageNet logits, a class can also stand for a whole group of ImageNet classes
(`imagenet.widened`: "dog" for photos of many breeds): a photo the body sees as one of the group's
classes scores no higher than the threshold. Training photos of a few dozen breeds do not span every
breed, and a Kerry blue terrier is still a dog.

Torch-free: an ONNX model's check runs on the same numbers (they are in its graph).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

KEEP = 0.995  # the share of validation photos the threshold keeps known
DIMS = 32


@dataclass
class UnknownCheck:
    mean: np.ndarray  # (D,) of the unit-length training vectors
    basis: np.ndarray  # (D, dims): their principal directions
    threshold: float
    also_known: np.ndarray | None = None  # (D,) bool: vectors whose largest entry is one of these are known

    @classmethod
    def fit(cls, train: np.ndarray, val: np.ndarray, keep: float = KEEP, dims: int = DIMS) -> UnknownCheck:
        """Fitted on the training photos' vectors, its threshold on the validation photos'."""
        centred = _unit(train)
        mean = centred.mean(0)
        centred -= mean
        dims = max(1, min(dims, len(centred) - 1, centred.shape[1] // 4))
        # The principal directions from the D x D scatter matrix, not an SVD of the vectors
        # themselves, whose N x D factor would hold another copy of a large data set's vectors.
        basis = np.linalg.eigh((centred.T @ centred).astype(np.float64))[1][:, ::-1][:, :dims]
        check = cls(mean.astype(np.float32), np.ascontiguousarray(basis, dtype=np.float32), 0.0)
        check.threshold = float(np.quantile(check.scores(val), keep))
        return check

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Higher is less like the training photos; above `threshold` is unknown."""
        centred = _unit(vectors) - self.mean
        left = centred - (centred @ self.basis) @ self.basis.T
        scores = np.linalg.norm(left, axis=1)
        if self.also_known is None:
            return scores
        grouped = self.also_known[np.asarray(vectors).argmax(1)]
        return np.where(grouped, np.minimum(scores, self.threshold), scores)

    def known(self, vectors: np.ndarray) -> np.ndarray:
        return self.scores(vectors) <= self.threshold

    def tensors(self) -> dict[str, np.ndarray]:
        also = {} if self.also_known is None else {"unknown.also_known": self.also_known.astype(np.uint8)}
        return {"unknown.mean": self.mean, "unknown.basis": self.basis, **also}

    @classmethod
    def load(cls, path: Path, threshold: float) -> UnknownCheck:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            t = load_file(str(path))
            also = t["unknown.also_known"].astype(bool) if "unknown.also_known" in t else None
            if also is not None and also.shape != t["unknown.mean"].shape:
                raise ValueError(f"unknown.also_known has shape {also.shape}, the vectors {t['unknown.mean'].shape}")
            return cls(t["unknown.mean"], t["unknown.basis"], float(threshold), also)
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            raise UserError(f"{path}: not a readable unknown-photo check ({str(e).splitlines()[0][:200]})") from None


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """The chance that a photo of none of the classes scores above one of the classes (ties half)."""
    both = np.concatenate([known_scores, unknown_scores])
    ranks = _ranks(both)
    n_in, n_out = len(known_scores), len(unknown_scores)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their mean rank."""
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return ranks
