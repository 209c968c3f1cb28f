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


def _grid(maps, columns: int):
    """Feature maps (C, H, W) tiled into one image, each map scaled to its own range."""
    import numpy as np

    c, h, w = maps.shape
    rows = -(-c // columns)
    out = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan)
    for i, m in enumerate(maps):
        lo, hi = float(m.min()), float(m.max())
        r, col = divmod(i, columns)
        out[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = (m - lo) / (hi - lo) if hi > lo else 0
    return out


def gradcam_figure(pixels, heatmap, title: str, path: Path) -> None:
    """The photo as the network sees it, and the same photo under its Grad-CAM heatmap."""
    plt = _pyplot()
    fig, (ax_photo, ax_cam) = plt.subplots(1, 2, figsize=(8, 4.4))
    ax_photo.imshow(pixels)
    ax_photo.set_title("the photo, as the network sees it", fontsize=10)
    ax_cam.imshow(pixels)
    ax_cam.imshow(heatmap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax_cam.set_title("where it looked (Grad-CAM)", fontsize=10)
    for ax in (ax_photo, ax_cam):
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def seed_steps_figure(steps: dict, classes: list[str], path: Path) -> None:
    """The tutorial's four steps drawn for one photo, in the tutorial's words."""
    import numpy as np

    plt = _pyplot()
    fig = plt.figure(figsize=(16, 9))
    grid = fig.add_gridspec(2, 5, height_ratios=[1, 1])
    p = float(steps["output"][0])
    panels = [
        (grid[0, 0], steps["input"], "Input image\n(64x64 RGB, scaled to [0, 1])", None),
        (
            grid[0, 1],
            _detectors(steps["detectors"]),
            "Step 1: the 32 learned feature detectors\n(3x3 filters of the first layer)",
            None,
        ),
        (grid[0, 2], _grid(steps["conv1"], 8), "Step 1: feature maps\n(input * detector, then ReLU)", "magma"),
        (grid[0, 3], _grid(steps["pool1"], 8), "Step 2: max pooling 2x2\n(strongest response per window)", "magma"),
        (
            grid[0, 4],
            _grid(steps["conv2"], 8),
            "Steps 1 + 2 again: second convolution\n(feature maps of feature maps, ReLU)",
            "magma",
        ),
        (grid[1, 0], _grid(steps["pool2"], 8), "Second max pooling\n(32 maps of 14x14 at 64 px)", "magma"),
    ]
    for spec, image, title, cmap in panels:
        ax = fig.add_subplot(spec)
        ax.imshow(image, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    ax = fig.add_subplot(grid[1, 1:3])
    flat = steps["flatten"]
    ax.imshow(flat[None, :], aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_title(f"Step 3: flattening: the pooled maps as one vector of {flat.size:,} numbers", fontsize=9)
    ax.set_yticks([])
    ax = fig.add_subplot(grid[1, 3])
    dense = steps["dense"]
    ax.bar(np.arange(dense.size), dense, width=1.0, color="tab:blue")
    ax.set_title(f"Step 4: full connection\n({dense.size} hidden neurons after ReLU)", fontsize=9)
    ax = fig.add_subplot(grid[1, 4])
    ax.barh(classes, [1 - p, p], color=["tab:orange", "tab:green"])
    ax.set_xlim(0, 1)
    k = int(p > 0.5)  # as argmax: the sigmoid gives the second class's probability; the label is the likelier class
    ax.set_title(f"Output: sigmoid\n{classes[k]} with probability {max(p, 1 - p):.2f}", fontsize=9)
    fig.suptitle("How the network sees this photo: the tutorial's four steps with this model's weights")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _detectors(weights):
    """First-layer filters (32, 3, 3, 3) as small RGB tiles on a grid."""
    import numpy as np

    n = weights.shape[0]
    cols = 8
    rows = -(-n // cols)
    tile = np.ones((rows * 4 - 1, cols * 4 - 1, 3))
    for i, w in enumerate(weights):
        w = w.transpose(1, 2, 0)
        w = (w - w.min()) / (w.max() - w.min() + 1e-12)
        r, c = divmod(i, cols)
        tile[r * 4 : r * 4 + 3, c * 4 : c * 4 + 3] = w
    return tile


def block_steps_figure(steps: dict, classes: list[str], path: Path) -> None:
    """For deep networks: the input, the first and last blocks' feature maps, and the output."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.6), gridspec_kw={"width_ratios": [1, 1.4, 1.4, 1]})
    axes[0].imshow(steps["input"])
    axes[0].set_title("Input image", fontsize=9)
    axes[1].imshow(_grid(steps["first"][:32], 8), cmap="magma", interpolation="nearest")
    axes[1].set_title("Step 1, first block: feature maps of the first convolution", fontsize=9)
    axes[2].imshow(_grid(steps["last"][:32], 8), cmap="magma", interpolation="nearest")
    axes[2].set_title(
        f"Steps 1-2, last block ({steps['last_name']}):\nthe first 32 of {steps['last'].shape[0]} maps", fontsize=9
    )
    for ax in axes[:3]:
        ax.axis("off")
    axes[3].barh(classes, steps["output"], color="tab:green")
    axes[3].set_xlim(0, 1)
    axes[3].set_title("Steps 3-4: pooled, then the dense layer's softmax", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def checks_figure(probs, labels, scores, threshold, out, title: str = "") -> None:
    """Left: the reliability diagram, the top label's confidence against how often it is right
    (a calibrated model's bars sit on the diagonal). Right, where the model has the unknown-photo
    check: the histogram of unknown scores and the threshold above which a photo is unknown.
    `out` is a path or a binary file."""
    from .calibration import ece, reliability

    plt = _pyplot()
    panels = 2 if scores is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    rows = reliability(probs, labels)
    ax.bar(
        [r["low"] for r in rows],
        [r["accuracy"] for r in rows],
        width=1 / 15,
        align="edge",
        alpha=0.7,
        edgecolor="black",
        label="accuracy in the bin",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.plot(
        [r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o", color="C3", ms=4, label="mean confidence"
    )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence of the top label",
        ylabel="accuracy",
        title=f"reliability (ECE {ece(probs, labels):.4f})",
    )
    ax.legend(loc="upper left", fontsize=8)
    if scores is not None:
        ax = axes[0][1]
        ax.hist(scores, bins=40, color="C0", alpha=0.8)
        ax.axvline(threshold, color="C3", lw=2, label=f"threshold {threshold:.3f}")
        ax.set(
            xlabel="unknown score (higher: less like the training photos)",
            ylabel="photos",
            title=f"unknown scores ({(scores > threshold).mean():.1%} above)",
        )
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100, format="png")
    plt.close(fig)
