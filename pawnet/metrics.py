"""Classification metrics from predicted and true class indices."""

from __future__ import annotations

import numpy as np


def summary(y_true, y_pred, classes: list[str]) -> dict:
    """Accuracy, the confusion matrix (rows: true class, columns: predicted) and per-class
    precision, recall, F1 and support."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    k = len(classes)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    per_class = {}
    for i, name in enumerate(classes):
        tp, predicted, support = cm[i, i], cm[:, i].sum(), cm[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(float(precision), 4),
            "recall": round(float(recall), 4),
            "f1": round(float(f1), 4),
            "support": int(support),
        }
    return {
        "accuracy": float(np.trace(cm) / cm.sum()) if cm.sum() else 0.0,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
