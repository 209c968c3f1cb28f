"""How well a model tells photos of its classes from photos of anything else, by several scores.

    python benchmarks/unknown_photos.py [MODEL] [--shared ../shared/datasets]

For MODEL (default: the shipped cats-vs-dogs model; one with an ImageNet body) the vectors its
last layer reads are computed
for the training photos (and their mirror images), test_set/, other-source/ and not-pets/. Each
score is fitted on the training vectors, its threshold set so that 99.5% of test_set stays known
(as training sets it on the validation photos), and then: the share of not-pets called unknown,
the share of other-source kept known, and the AUROC of test_set against not-pets. Last, the cost
of the check: `outputs` on test_set with the check and without it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import pawnet
from pawnet.cache import cached_decode
from pawnet.calibration import softmax
from pawnet.data import collect_images, read_folder
from pawnet.unknown import KEEP, UnknownCheck, auroc

from photos import cpu_name

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def mahalanobis(train, labels, shrink=0.1):
    """Class-conditional Mahalanobis distance on unit-length vectors, one shared covariance."""
    x = unit(train)
    means = np.stack([x[labels == c].mean(0) for c in np.unique(labels)])
    centred = x - means[labels]
    cov = centred.T @ centred / len(x)
    cov = (1 - shrink) * cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
    precision = np.linalg.inv(cov)
    return lambda v: np.min([np.einsum("nd,de,ne->n", unit(v) - m, precision, unit(v) - m) for m in means], 0)


def nearest(train):
    """1 - cosine similarity to the nearest training vector."""
    x = unit(train)
    return lambda v: 1 - (unit(v) @ x.T).max(1)


def _scores(model, train_vectors, labels, val_vectors) -> dict:
    """The scores compared: pawnet's check as the model has it, and the alternatives measured beside it."""

    def logits(v):  # a sigmoid unit's logit z is the softmax of (0, z)
        z = model.fast.classify(torch.from_numpy(v)).detach().numpy()
        return np.concatenate([np.zeros_like(z), z], 1) if z.shape[1] == 1 else z

    def own(v):
        t = torch.from_numpy(v)
        return model.check.scores(model._checked(t, model._imagenet(t)))

    scores = {
        f"the model's own check ({model.config['unknown']['space']})": own,
        "residual, features, 32 directions": UnknownCheck.fit(train_vectors, val_vectors).scores,
        "residual, features, 64 directions": UnknownCheck.fit(train_vectors, val_vectors, dims=64).scores,
        "Mahalanobis, unit-length features": mahalanobis(train_vectors, labels),
        "nearest training photo, features": nearest(train_vectors),
        "energy (-logsumexp of the logits)": lambda v: -np.logaddexp.reduce(logits(v), axis=1),
        "1 - top probability": lambda v: 1 - softmax(logits(v) / model.temperature, False).max(1),
    }
    imagenet = getattr(model.fast, "imagenet", None)
    if imagenet is not None:
        w, b = imagenet.weight.detach().numpy(), imagenet.bias.detach().numpy()
        on_logits = UnknownCheck.fit(train_vectors @ w.T + b, val_vectors @ w.T + b)
        scores["residual, ImageNet logits, 32 directions"] = lambda v: on_logits.scores(v @ w.T + b)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--shared", type=Path, default=SHARED)
    args = ap.parse_args()
    model = pawnet.load(args.model, engine="torch")  # the vectors come from the PyTorch network
    pets = args.shared / "cats-vs-dogs"
    train = read_folder(pets / "training_set", classes=model.classes)
    sets = {
        "test_set": read_folder(pets / "test_set", classes=model.classes).files,
        "other-source": read_folder(args.shared / "other-source", classes=model.classes).files,
        "not-pets": collect_images([args.shared / "not-pets"]),
    }
    prep = model.preprocessing
    pixels = {name: cached_decode(files, prep, desc=name).pixels for name, files in sets.items()}
    train_pixels = cached_decode(train.files, prep, desc="training").pixels
    train_vectors = np.concatenate([model.vectors(train_pixels), model.vectors(train_pixels, mirror=True)])
    labels = np.concatenate([train.labels, train.labels])
    vectors = {name: model.vectors(p) for name, p in pixels.items()}
    scores = _scores(model, train_vectors, labels, vectors["test_set"])
    print(f"{model}; {cpu_name()}")
    print("| score | not-pets unknown | other-source known | AUROC test_set vs not-pets |")
    print("| --- | --- | --- | --- |")
    for name, score in scores.items():
        s = {k: score(v) for k, v in vectors.items()}
        # The model's own threshold for its own check: a photo of a widened class's group scores
        # exactly that threshold, which a quantile taken again would fall below.
        threshold = model.threshold if name.startswith("the model's own") else np.quantile(s["test_set"], KEEP)
        print(
            f"| {name} | {(s['not-pets'] > threshold).mean():.3f} | {(s['other-source'] <= threshold).mean():.3f} "
            f"| {auroc(s['test_set'], s['not-pets']):.4f} |"
        )
    # The check's cost: its score, and the ImageNet name of what a photo looks like.
    check, imagenet = model.check, getattr(model.fast, "imagenet", None)
    timings = {}
    for label, on in (("without the check", False), ("with the check", True)):
        model.check = check if on else None
        object.__setattr__(model.fast, "imagenet", imagenet if on else None)
        start = time.perf_counter()
        model.outputs(pixels["test_set"])
        timings[label] = time.perf_counter() - start
    print(
        "outputs on test_set: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + f" ({timings['with the check'] / timings['without the check'] - 1:+.1%})"
    )


if __name__ == "__main__":
    with torch.inference_mode():
        main()
