"""Training: `pawnet.train(data, arch=..., epochs=..., out=...)` writes a model directory.

The loop reads top to bottom: find the photos, decode them once, build the network, then for
each epoch shuffle, augment whole batches, step the optimiser, validate, and keep the best weights.
"""

from __future__ import annotations

import csv
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import __version__, augment
from .cache import cached_decode, cpu_count
from .classifier import Classifier, to_tensor
from .atomic import replacing
from .audit import train_test_leaks
from .data import train_val_split
from .errors import UserError
from .images import Preprocessing
from .modeldir import CONFIG, FORMAT_VERSION, WEIGHTS, save_weights, write_json
from .models import EfficientNetLite0, build, loss_fn, probabilities
from .plots import learning_curves
from .report import write_report
from .progress import bar, interactive

METRICS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained by default; each field can be overridden per run."""

    preprocessing: Preprocessing
    augmentation: augment.Augmentation
    epochs: int
    batch_size: int
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    eps: float = 1e-8
    schedule: str = "constant"  # or "onecycle": warm up, then anneal to zero
    label_smoothing: float = 0.0
    # "all" trains every weight on augmented photos; "head" freezes a pretrained body, computes
    # its features once (each photo and its mirror image) and trains only the dense head on them.
    train: str = "all"


RECIPES = {
    # The tutorial: 64x64 photos scaled to [0, 1], its augmentation, Adam with Keras's
    # epsilon (1e-7), batch 32, 25 epochs.
    "seed": Recipe(Preprocessing(size=64), augment.TUTORIAL, epochs=25, batch_size=32, eps=1e-7),
    "small": Recipe(
        Preprocessing(size=96, mean=(124.0, 116.0, 104.0), std=(58.0, 57.0, 57.0)),
        augment.Augmentation(
            zoom=(0.75, 1.15), translate=0.1, rotate_deg=10, hflip=True, brightness=0.25, contrast=0.25, saturation=0.25
        ),
        epochs=100,
        batch_size=64,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=0.05,
        schedule="onecycle",
        label_smoothing=0.1,
    ),
    # Measured on the shared photos: a head on 256 px features beats 224 px (99.1-99.4% against
    # 98.5%) and, within the time budget, fine-tuning the whole network at 224 px (98.8%).
    "efficientnet_lite0": Recipe(
        Preprocessing(size=256, **EfficientNetLite0.pretrained_input),
        augment.Augmentation(hflip=True),
        epochs=60,
        batch_size=64,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1.0,
        label_smoothing=0.1,
        train="head",
    ),
}


def _next_run_dir(base: Path = Path("runs")) -> Path:
    n = 1
    while (base / (f"train{n}" if n > 1 else "train")).exists():
        n += 1
    return base / (f"train{n}" if n > 1 else "train")


def _class_weights(counts: list[int]) -> torch.Tensor | None:
    """Inverse-frequency weights when the classes differ by more than 1.5x, else None."""
    if max(counts) <= 1.5 * min(counts):
        return None
    counts_t = torch.tensor(counts, dtype=torch.float32)
    return counts_t.sum() / (len(counts) * counts_t)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX or AVX512-BF16); elsewhere bf16 is slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _optimizer(recipe: Recipe, params):
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def _as_input(data, start: int, stop: int) -> torch.Tensor:
    """A slice of decoded pixels as a network input batch, or of precomputed features as they are."""
    if isinstance(data, np.ndarray):
        return to_tensor(data[start:stop]).contiguous(memory_format=torch.channels_last)
    return data[start:stop]


def _validate(model, net, inputs, labels, batch_size=256) -> tuple[float, float]:
    """Mean loss and accuracy of `net` (the model, or its head on features), without gradients.

    In float32, as `evaluate` and `predict` run, so the reported accuracy is the saved model's.
    """
    net.eval()
    total_loss, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            y = torch.from_numpy(labels[start : start + batch_size])
            logits = net(_as_input(inputs, start, start + batch_size)).float()
            total_loss += loss_fn(model, logits, y) * len(y)
            correct += (probabilities(model, logits).argmax(1) == y).sum()
    n = max(len(labels), 1)
    return total_loss.item() / n, correct.item() / n


def _features(model, pixels, bf16: bool, desc: str, mirror: bool = False, batch_size: int = 64) -> torch.Tensor:
    """The frozen body's features for every image (or its mirror image), computed once."""
    model.eval()
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in bar(range(0, len(pixels), batch_size), desc=desc, unit="batch", leave=False):
            x = _as_input(pixels, start, start + batch_size)
            out.append(model.features(x.flip(3) if mirror else x).float())
    return torch.cat(out)


def _train_epoch(model, net, inputs, labels, recipe, optimizer, scheduler, weights, generator, bf16, desc) -> tuple[float, float]:
    """One pass over the training set in shuffled batches; returns mean loss and accuracy.

    Pixels are augmented a whole batch at a time; precomputed features are used as they are.
    Loss and accuracy stay on the tensor side until the end of the epoch, so no step waits for
    the host (except to refresh the progress bar on a terminal).
    """
    net.train()
    n = len(labels)
    start = time.perf_counter()
    order = torch.randperm(n, generator=generator).numpy()
    total_loss, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
    progress = bar(range(0, n, recipe.batch_size), desc=desc, unit="batch", leave=False)
    for step, i in enumerate(progress):
        idx = np.sort(order[i : i + recipe.batch_size])
        if isinstance(inputs, np.ndarray):
            x = recipe.augmentation(to_tensor(inputs[idx]), generator).contiguous(memory_format=torch.channels_last)
        else:
            x = inputs[idx]
        y = torch.from_numpy(labels[idx])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x).float()
        loss = loss_fn(model, logits, y, weights, recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            total_loss += loss.detach() * len(y)
            correct += (probabilities(model, logits).argmax(1) == y).sum()
        if interactive() and step % 10 == 0:
            seen = min(i + recipe.batch_size, n)
            progress.set_postfix(
                loss=f"{total_loss.item() / seen:.3f}",
                acc=f"{correct.item() / seen:.3f}",
                img_s=f"{seen / (time.perf_counter() - start):.0f}",
            )
    return total_loss.item() / n, correct.item() / n


def train(
    data,
    *,
    val=None,
    arch: str = "seed",
    epochs: int | None = None,
    batch_size: int | None = None,
    img_size: int | None = None,
    seed: int = 0,
    out=None,
    precision: str = "auto",
    use_cache: bool = True,
    log=print,
) -> Classifier:
    """Train `arch` on the photos in `data` and return the best epoch's model, saved in `out`.

    `data` is a folder of class folders, the tutorial's training_set/ + test_set/, or a flat
    folder of Kaggle-style names; validation comes from `val`, test_set/, or a held-out 20%.
    `precision` "auto" trains in bfloat16 autocast where the CPU has it in hardware (measured on
    the seed recipe: 1.4x faster, the same accuracy), else in float32.
    """
    if arch not in RECIPES:
        raise UserError(f"unknown architecture {arch!r}; choose one of: {', '.join(RECIPES)}")
    recipe = RECIPES[arch]
    recipe = replace(
        recipe,
        epochs=recipe.epochs if epochs is None else epochs,
        batch_size=recipe.batch_size if batch_size is None else batch_size,
        preprocessing=replace(recipe.preprocessing, size=recipe.preprocessing.size if img_size is None else img_size),
    )
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")
    bf16 = precision == "bf16" or (precision == "auto" and native_bf16())
    if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.preprocessing.size < 16:
        raise UserError("--epochs and --batch-size must be at least 1, and --img-size at least 16")
    out = Path(out) if out else _next_run_dir()
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: already holds files; choose another --out, or remove it first")

    # 1. The photos, and which of them validate.
    train_set, val_set, val_source = train_val_split(data, val, seed=seed)
    classes = train_set.classes
    if arch == "seed" and len(classes) != 2:
        raise UserError(f"the seed network is the tutorial's two-class one, and DATA has {len(classes)} classes; use --arch small")
    prep = recipe.preprocessing
    log(f"data: {len(train_set)} training images, {len(val_set)} validation images ({val_source}); classes: {', '.join(classes)}")
    leaks = train_test_leaks(train_set.files, val_set.files)
    if leaks:
        log(
            f"warning: {len(leaks)} validation images are byte-identical to training images (such as {leaks[0][0]} and "
            f"{leaks[0][1]}), so validation accuracy will read high; `pawnet data check DATA --fix` moves the copies aside"
        )

    # 2. Decode every photo once; epochs then only read uint8 arrays.
    t0 = time.perf_counter()
    train_dec = cached_decode(train_set.files, prep, desc="decoding training images", use_cache=use_cache)
    val_dec = cached_decode(val_set.files, prep, desc="decoding validation images", use_cache=use_cache)
    skipped = {**train_dec.skipped(train_set.files), **val_dec.skipped(val_set.files)}
    for path, why in skipped.items():
        log(f"skipped {path}: {why}")
    if len(train_dec.ok) == 0 or len(val_dec.ok) == 0:
        raise UserError("no readable images left to train or validate on")
    train_y = np.asarray(train_set.labels, dtype=np.int64)[train_dec.ok]
    val_y = np.asarray(val_set.labels, dtype=np.int64)[val_dec.ok]
    decode_seconds = time.perf_counter() - t0
    log(f"decoded in {decode_seconds:.1f}s" + (f"; {len(skipped)} unreadable files skipped" if skipped else ""))
    counts = np.bincount(train_y, minlength=len(classes)).tolist()
    if min(counts) == 0:
        empty = [c for c, n in zip(classes, counts) if n == 0]
        raise UserError(f"class {', '.join(empty)} has no readable training images")
    weights = _class_weights(counts)

    # 3. The network and its optimiser, seeded so that a CPU run repeats exactly.
    torch.manual_seed(seed)
    torch.set_num_threads(cpu_count())
    model = build(arch, len(classes), prep.size, prep.mean, prep.std, pretrained=True)
    model = model.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(seed)
    if recipe.train == "head":
        # The body is frozen, so its features never change: compute them once, mirror images
        # included, and let every epoch train the head on them in a fraction of a second.
        t_features = time.perf_counter()
        net = model.head
        train_inputs = torch.cat(
            [_features(model, train_dec.pixels, bf16, "features"), _features(model, train_dec.pixels, bf16, "mirrored features", mirror=True)]
        )
        train_y = np.concatenate([train_y, train_y])
        val_inputs = _features(model, val_dec.pixels, False, "validation features")
        log(f"features of the frozen {arch} body computed in {time.perf_counter() - t_features:.1f}s")
    else:
        net, train_inputs, val_inputs = model, train_dec.pixels, val_dec.pixels
    optimizer = _optimizer(recipe, net.parameters())
    steps_per_epoch = -(-len(train_y) // recipe.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.15)
        if recipe.schedule == "onecycle"
        else None
    )

    config = {
        "format_version": FORMAT_VERSION,
        "pawnet_version": __version__,
        "torch_version": torch.__version__,
        "arch": arch,
        "classes": classes,
        "preprocessing": prep.to_dict(),
        "augmentation": recipe.augmentation.to_dict(),
        "training": {
            "epochs": recipe.epochs,
            "batch_size": recipe.batch_size,
            "optimizer": recipe.optimizer,
            "lr": recipe.lr,
            "weight_decay": recipe.weight_decay,
            "eps": recipe.eps,
            "schedule": recipe.schedule,
            "label_smoothing": recipe.label_smoothing,
            "train": recipe.train,
            "seed": seed,
            "precision": "bf16" if bf16 else "fp32",
            "class_weights": None if weights is None else [round(w, 4) for w in weights.tolist()],
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {platform.processor()}".strip(),
        },
        "data": {
            "train": str(Path(data)),
            "validation": val_source,
            "train_counts": dict(zip(classes, counts)),
            "val_counts": dict(zip(classes, np.bincount(val_y, minlength=len(classes)).tolist())),
            "skipped": skipped,
            "leakage": {"exact_duplicates": len(leaks), "pairs": leaks[:20]},
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG, config)

    # 4. Epochs: shuffle, augment each batch as a whole, step; then validate and keep the best.
    rows: list[dict] = []
    best = None
    n = len(train_y)
    start = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        t_epoch = time.perf_counter()
        train_loss, train_acc = _train_epoch(
            model, net, train_inputs, train_y, recipe, optimizer, scheduler, weights, generator, bf16, f"epoch {epoch}/{recipe.epochs}"
        )
        train_seconds = time.perf_counter() - t_epoch
        val_loss, val_acc = _validate(model, net, val_inputs, val_y)
        row = {
            "epoch": epoch,
            "train_loss": round(train_loss, 5),
            "train_acc": round(train_acc, 5),
            "val_loss": round(val_loss, 5),
            "val_acc": round(val_acc, 5),
            "lr": round(optimizer.param_groups[0]["lr"], 8),
            "seconds": round(time.perf_counter() - t_epoch, 2),
        }
        rows.append(row)
        improved = best is None or val_acc > best["val_acc"]
        if improved:
            best = row
            save_weights(model, out / WEIGHTS)
        _write_metrics(out / "metrics.csv", rows)
        remaining = (time.perf_counter() - start) / epoch * (recipe.epochs - epoch)
        log(
            f"epoch {epoch:>3}/{recipe.epochs}  loss {row['train_loss']:.4f}  acc {row['train_acc']:.4f}  "
            f"val_loss {val_loss:.4f}  val_acc {val_acc:.4f}  {n / train_seconds:,.0f} img/s  "
            f"{row['seconds']:.1f}s  ETA {remaining:.0f}s" + ("  *" if improved else "")
        )

    total = time.perf_counter() - t0
    config["metrics"] = {
        "best_epoch": best["epoch"],
        "val_accuracy": best["val_acc"],
        "val_loss": best["val_loss"],
        "final_val_accuracy": rows[-1]["val_acc"],
        "final_val_loss": rows[-1]["val_loss"],
        "decode_seconds": round(decode_seconds, 2),
        "seconds": round(total, 2),
    }
    write_json(out / CONFIG, config)
    learning_curves(rows, out / "curves.png", title=f"{arch} on {Path(data).name}")
    log(
        f"best epoch {best['epoch']}: val_acc {best['val_acc']:.4f}; final val_acc {rows[-1]['val_acc']:.4f}; "
        f"{total:.0f}s; model saved to {out}"
    )
    clf = Classifier.load(out)
    result, outcome = clf.evaluate_set(val_set)
    write_report(clf, {"data": f"validation set ({val_source})", **result}, outcome, out / "report.html")
    return clf


def _write_metrics(path: Path, rows: list[dict]) -> None:
    with replacing(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
