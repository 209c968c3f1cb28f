"""Figures a person would rather look at than read."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    # Imported on first use: matplotlib costs a prediction's cold start more than the prediction.
    import matplotlib

    matplotlib.use("Agg")  # files only: training runs on machines without a display
    import matplotlib.pyplot as plt

    return plt


def learning_curves(rows: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, training against validation, side by side."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, name in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in rows], "o-", ms=3, label="training")
        ax.plot(epochs, [r[f"val_{key}"] for r in rows], "o-", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
