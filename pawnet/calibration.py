"""Probabilities that mean what they say: temperature scaling, and measuring how far they are off.

A network's probabilities are often over- or under-confident (label smoothing, for one, keeps them
low by construction). Temperature scaling divides the logits by one number T, fitted on the
validation photos to minimise their log loss: the label of every photo stays the same, and the
probabilities move toward how often such a label is right. Torch-free, as the predictor is.
"""

from __future__ import annotations

import numpy as np

BINS = 15


def softmax(logits: np.ndarray, binary: bool) -> np.ndarray:
    """Class probabilities from logits: a sigmoid unit (two classes) or a softmax."""
    logits = np.asarray(logits, dtype=np.float64)
    if binary:
        p = 1 / (1 + np.exp(-logits[:, 0]))
        return np.stack([1 - p, p], 1)
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())


def calibrated_temperature(logits: np.ndarray, labels: np.ndarray, binary: bool) -> float:
    """`fit_temperature`'s T where it lowers the validation photos' ECE, else 1 (no scaling):
    fitted to a few photos, a temperature can fit their noise and leave the probabilities worse."""
    t = fit_temperature(logits, labels, binary)
    return t if ece(softmax(logits / t, binary), labels) <= ece(softmax(logits, binary), labels) else 1.0


def fit_temperature(logits: np.ndarray, labels: np.ndarray, binary: bool) -> float:
    """The T that minimises the log loss of softmax(logits / T), but no smaller than the T that
    makes the mean confidence (n + 1) / (n + 2): n validation photos all labelled right do not show
    that the model is never wrong (Laplace's rule of succession), and their log loss alone would
    keep falling as T shrinks, every probability toward 1. Searches over log T, which the loss is
    smooth and (for one scalar) unimodal in, and the mean confidence falls with."""
    labels = np.asarray(labels)
    lo, hi = np.log(0.05), np.log(20.0)
    golden = (np.sqrt(5) - 1) / 2
    for _ in range(60):  # the interval shrinks to 1e-12 of its width
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if log_loss(softmax(logits / np.exp(a), binary), labels) < log_loss(
            softmax(logits / np.exp(b), binary), labels
        ):
            hi = b
        else:
            lo = a
    fitted = (lo + hi) / 2
    most = (len(labels) + 1) / (len(labels) + 2)
    if softmax(logits / np.exp(fitted), binary).max(1).mean() <= most:
        return float(np.exp(fitted))
    lo, hi = fitted, np.log(20.0)
    for _ in range(60):
        middle = (lo + hi) / 2
        lo, hi = (middle, hi) if softmax(logits / np.exp(middle), binary).max(1).mean() > most else (lo, middle)
    return float(np.exp(hi))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """The top label's confidence against how often it is right, in `bins` equal-width bins of
    confidence (the empty ones left out)."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == np.asarray(labels)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "n": int(inside.sum()),
                    "confidence": float(confidence[inside].mean()),
                    "accuracy": float(correct[inside].mean()),
                }
            )
    return rows


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error of the top label: the gap between confidence and accuracy in
    each bin, weighted by the share of photos in it."""
    n = max(len(labels), 1)
    return float(sum(r["n"] / n * abs(r["confidence"] - r["accuracy"]) for r in reliability(probs, labels, bins)))
