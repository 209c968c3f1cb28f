"""Training: `pawnet.train(data, arch=..., epochs=..., out=...)` writes a model directory.

The loop reads top to bottom: find the photos, decode them once, build the network, then for
each epoch shuffle, augment whole batches, step the optimiser, validate, keep the best weights
and checkpoint the run, so that `pawnet.resume(run_dir)` can continue it after a crash. The same
code runs on a CPU, a GPU, or several processes started by torchrun.
"""

from __future__ import annotations

import csv
import json
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from . import __version__, augment, checkpoint, devices, distributed, progress
from .atomic import remove_leftovers, replacing
from .audit import train_test_leaks
from .cache import cached_decode, cpu_count
from .classifier import Classifier
from .data import train_val_split
from .errors import UserError
from .images import Preprocessing
from .modeldir import CONFIG, FORMAT_VERSION, WEIGHTS, save_weights, write_json
from .models import EfficientNetLite0, build, loss_fn, probabilities
from .plots import learning_curves
from .progress import bar, interactive
from .report import write_report

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


def _given(value, default):
    return default if value is None else value


def _optimizer(recipe: Recipe, params):
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def _to_device(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, 3) pixels to a float (N, 3, H, W) batch on `device`, channels-last.

    The bytes travel as uint8 (a quarter of float32's size) from pinned memory without waiting,
    and become floats on the device.
    """
    x = torch.from_numpy(np.ascontiguousarray(pixels))
    if device.type == "cuda":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    return x.contiguous(memory_format=torch.channels_last)


def _as_input(data, rows, device) -> torch.Tensor:
    """Rows of decoded pixels as a network input batch, or of precomputed features as they are."""
    if isinstance(data, torch.Tensor):
        return data[rows]
    return _to_device(data[rows], device)


def _validate(model, net, inputs, labels, device, group, batch_size=256) -> tuple[float, float]:
    """Mean loss and accuracy of `net` (the model, or its head on features), without gradients.

    In float32, as `evaluate` and `predict` run, so the reported accuracy is the saved model's.
    Each process takes its part of the validation set; the sums are added up across processes.
    """
    net.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    mine = group.part(len(labels))
    with torch.inference_mode():
        for start in range(mine.start, mine.stop, batch_size):
            rows = slice(start, min(start + batch_size, mine.stop))
            y = torch.from_numpy(labels[rows]).to(device)
            logits = net(_as_input(inputs, rows, device)).float()
            total_loss += loss_fn(model, logits, y) * len(y)
            correct += (probabilities(model, logits).argmax(1) == y).sum()
    total_loss, correct = group.sum(total_loss, correct)
    n = max(len(labels), 1)
    return total_loss.item() / n, correct.item() / n


def _features(model, pixels, prec, device, group, desc: str, mirror: bool = False, batch_size: int = 64) -> torch.Tensor:
    """The frozen body's features for every image (or its mirror image), computed once; each
    process computes its part and all of them receive the whole."""
    model.eval()
    mine = group.part(len(pixels))
    out = [torch.zeros((0, model.head[-1].in_features), device=device)]  # so that an empty part has the width too
    with torch.no_grad(), prec.autocast(device):
        for start in bar(range(mine.start, mine.stop, batch_size), desc=desc, unit="batch", leave=False):
            x = _as_input(pixels, slice(start, min(start + batch_size, mine.stop)), device)
            out.append(model.features(x.flip(3) if mirror else x).float())
    return group.gather_rows(torch.cat(out), len(pixels))


def _train_epoch(model, net, inputs, labels, recipe, optimizer, scheduler, scaler, weights, generator, prec, device, group, desc) -> tuple[float, float]:
    """One pass over the training set in shuffled batches; returns mean loss and accuracy.

    Pixels are augmented a whole batch at a time; precomputed features are used as they are.
    Loss and accuracy stay on the tensor side until the end of the epoch, so no step waits for
    the host (except to refresh the progress bar on a terminal).
    """
    net.train()
    n = len(labels)
    start = time.perf_counter()
    order = torch.randperm(n, generator=generator).numpy()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    progress = bar(range(0, n, recipe.batch_size), desc=desc, unit="batch", leave=False)
    for step, i in enumerate(progress):
        batch = np.sort(order[i : i + recipe.batch_size])
        if len(batch) < group.world:
            continue  # too small a remainder to give every process a part
        part = group.part(len(batch))
        idx = batch[part]
        y = torch.from_numpy(labels[idx]).to(device, non_blocking=True)
        x = _as_input(inputs, idx, device)
        if not isinstance(inputs, torch.Tensor):  # pixels, not precomputed features
            x = recipe.augmentation(x, generator, draw=len(batch), rows=part).contiguous(memory_format=torch.channels_last)
        with prec.autocast(device):
            logits = net(x).float()
        loss = loss_fn(model, logits, y, weights, recipe.label_smoothing)
        # DDP averages the processes' gradients; weighing each part by its share of the global
        # batch makes that average the gradient of the global batch's mean loss.
        share = len(idx) * group.world / len(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss * share if group.active else loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            total_loss += loss.detach() * len(y)
            correct += (probabilities(model, logits).argmax(1) == y).sum()
        if interactive() and step % 10 == 0:
            seen = min(i + recipe.batch_size, n) / group.world
            progress.set_postfix(
                loss=f"{total_loss.item() / seen:.3f}",
                acc=f"{correct.item() / seen:.3f}",
                img_s=f"{seen * group.world / (time.perf_counter() - start):.0f}",
            )
    total_loss, correct = group.sum(total_loss, correct)
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
    device: str = "auto",
    use_cache: bool = True,
    log=print,
) -> Classifier:
    """Train `arch` on the photos in `data` and return the best epoch's model, saved in `out`.

    `data` is a folder of class folders, the tutorial's training_set/ + test_set/, or a flat
    folder of Kaggle-style names; validation comes from `val`, test_set/, or a held-out 20%.
    `batch_size` is the global batch: under torchrun each process takes its part of it.
    `device` and `precision` are described in `pawnet.devices`.
    """
    if arch not in RECIPES:
        raise UserError(f"unknown architecture {arch!r}; choose one of: {', '.join(RECIPES)}")
    out = Path(out) if out else _next_run_dir()
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: already holds files; choose another --out, remove it, or continue it with --resume")
    settings = {
        "data": str(data), "val": None if val is None else str(val), "arch": arch, "epochs": epochs,
        "batch_size": batch_size, "img_size": img_size, "seed": seed, "precision": precision, "use_cache": use_cache,
    }  # fmt: skip
    return _run(settings, out, device, log, resume=False)


def resume(run_dir, *, device: str = "auto", log=print) -> Classifier:
    """Continue a run that was interrupted (even by kill -9) to the epochs it was asked for,
    with its settings, from its last checkpoint; a finished run is returned as it is."""
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / CONFIG).read_text())
    except (OSError, ValueError):
        config = None
    if isinstance(config, dict) and "metrics" in config:
        log(f"{run_dir}: finished already (best epoch {config['metrics']['best_epoch']}); nothing to resume")
        return Classifier.load(run_dir)
    if not isinstance(config, dict) or not isinstance(config.get("run"), dict) or "data" not in config["run"]:
        raise UserError(f"{run_dir}: not a pawnet training run (no {CONFIG} with the run's settings) to resume")
    return _run(config["run"], run_dir, device, log, resume=True)


def _run(settings: dict, out: Path, device_name: str, log, resume: bool) -> Classifier:
    group = distributed.from_environment()
    device = devices.pick(device_name, group.local_rank)
    distributed.start(group, device)
    if not group.leader:
        log = lambda *_: None  # noqa: E731
        progress.silence()
    try:
        return _train(settings, out, device, group, log, resume)
    finally:
        distributed.stop(group)


def _train(settings: dict, out: Path, device: torch.device, group: distributed.Group, log, resume: bool) -> Classifier:
    arch, seed, data = settings["arch"], settings["seed"], settings["data"]
    recipe = RECIPES[arch]
    recipe = replace(
        recipe,
        epochs=_given(settings["epochs"], recipe.epochs),
        batch_size=_given(settings["batch_size"], recipe.batch_size),
        preprocessing=replace(recipe.preprocessing, size=_given(settings["img_size"], recipe.preprocessing.size)),
    )
    if min(recipe.epochs, recipe.batch_size) < 1 or recipe.preprocessing.size < 16:
        raise UserError("--epochs and --batch-size must be at least 1, and --img-size at least 16")
    prec = devices.precision(settings["precision"], device)
    # 1. The photos, and which of them validate.
    train_set, val_set, val_source = train_val_split(data, settings["val"], seed=seed)
    classes = train_set.classes
    if arch == "seed" and len(classes) != 2:
        raise UserError(f"the seed network is the tutorial's two-class one, and DATA has {len(classes)} classes; use --arch small")
    prep = recipe.preprocessing
    log(f"data: {len(train_set)} training images, {len(val_set)} validation images ({val_source}); classes: {', '.join(classes)}")
    if group.leader:
        out.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out)
        if not resume:  # the settings before anything slow, so that a run killed from here on can be resumed
            write_json(out / CONFIG, {"format_version": FORMAT_VERSION, "pawnet_version": __version__, "run": settings})
    group.barrier()
    leaks = train_test_leaks(train_set.files, val_set.files) if group.leader else []
    if leaks:
        log(
            f"warning: {len(leaks)} validation images are byte-identical to training images (such as {leaks[0][0]} and "
            f"{leaks[0][1]}), so validation accuracy will read high; `pawnet data check DATA --fix` moves the copies aside"
        )

    # 2. Decode every photo once (the first process fills the cache, the others read it);
    # epochs then only read uint8 arrays.
    t0 = time.perf_counter()
    for turn in ("leader", "others"):
        if (turn == "leader") == group.leader:
            train_dec = cached_decode(train_set.files, prep, desc="decoding training images", use_cache=settings["use_cache"])
            val_dec = cached_decode(val_set.files, prep, desc="decoding validation images", use_cache=settings["use_cache"])
        group.barrier()
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
    if device.type == "cpu":  # processes sharing a machine share its cores
        torch.set_num_threads(max(1, cpu_count() // group.local_world))
    model = build(arch, len(classes), prep.size, prep.mean, prep.std, pretrained=True)
    model = model.to(device, memory_format=torch.channels_last)
    if weights is not None:
        weights = weights.to(device)
    generator = torch.Generator().manual_seed(seed)
    if recipe.train == "head":
        # The body is frozen, so its features never change: compute them once, mirror images
        # included, and let every epoch train the head on them in a fraction of a second.
        t_features = time.perf_counter()
        net = model.head
        train_inputs = torch.cat(
            [
                _features(model, train_dec.pixels, prec, device, group, "features"),
                _features(model, train_dec.pixels, prec, device, group, "mirrored features", mirror=True),
            ]
        )
        train_y = np.concatenate([train_y, train_y])
        val_inputs = _features(model, val_dec.pixels, devices.Precision("fp32", None), device, group, "validation features")
        log(f"features of the frozen {arch} body computed in {time.perf_counter() - t_features:.1f}s")
    else:
        net, train_inputs, val_inputs = model, train_dec.pixels, val_dec.pixels
    stepped = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None) if group.active else net
    optimizer = _optimizer(recipe, net.parameters())
    steps_per_epoch = -(-len(train_y) // recipe.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.15)
        if recipe.schedule == "onecycle"
        else None
    )
    scaler = torch.amp.GradScaler(device.type, enabled=prec.scaled)

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
            "precision": prec.name,
            "class_weights": None if weights is None else [round(w, 4) for w in weights.tolist()],
            "device": device.type,
            "processes": group.world,
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {platform.processor()}".strip(),
        },
        "data": {
            "train": data,
            "validation": val_source,
            "train_counts": dict(zip(classes, counts)),
            "val_counts": dict(zip(classes, np.bincount(val_y, minlength=len(classes)).tolist())),
            "skipped": skipped,
            "leakage": {"exact_duplicates": len(leaks), "pairs": leaks[:20]},
        },
        "run": settings,
    }

    # The last checkpoint, when continuing a run: it is the truth, and the files derived from it
    # (best weights, metrics.csv) are written again from it.
    rows: list[dict] = []
    best, best_state = None, None
    state = checkpoint.load(out) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        checkpoint.restore_random_state(state["random"], generator)
        rows, best, best_state = state["rows"], state["best"], state["best_model"]
        log(f"resuming {out} after epoch {state['epoch']} of {recipe.epochs}")
    elif resume:
        log(f"resuming {out} from the start: it stopped before its first epoch ended")
    if group.leader:
        write_json(out / CONFIG, config)
        if state is not None:
            save_weights(best_state, out / WEIGHTS)
            _write_metrics(out / "metrics.csv", rows)

    # 4. Epochs: shuffle, augment each batch as a whole, step; validate, keep the best, checkpoint.
    n = len(train_y)
    start, first = time.perf_counter(), len(rows) + 1
    for epoch in range(first, recipe.epochs + 1):
        t_epoch = time.perf_counter()
        train_loss, train_acc = _train_epoch(
            model, stepped, train_inputs, train_y, recipe, optimizer, scheduler, scaler, weights, generator, prec, device, group,
            f"epoch {epoch}/{recipe.epochs}",
        )  # fmt: skip
        train_seconds = time.perf_counter() - t_epoch
        val_loss, val_acc = _validate(model, net, val_inputs, val_y, device, group)
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
            best, best_state = row, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if group.leader:
            checkpoint.save(out, {
                "epoch": epoch, "rows": rows, "best": best, "best_model": best_state,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else {},
                "scaler": scaler.state_dict(), "random": checkpoint.random_state(generator),
            })  # fmt: skip
            if improved:
                save_weights(best_state, out / WEIGHTS)
            _write_metrics(out / "metrics.csv", rows)
        remaining = (time.perf_counter() - start) / (epoch - first + 1) * (recipe.epochs - epoch)
        log(
            f"epoch {epoch:>3}/{recipe.epochs}  loss {row['train_loss']:.4f}  acc {row['train_acc']:.4f}  "
            f"val_loss {val_loss:.4f}  val_acc {val_acc:.4f}  {n / train_seconds:,.0f} img/s  "
            f"{row['seconds']:.1f}s  ETA {remaining:.0f}s" + ("  *" if improved else "")
        )

    total = time.perf_counter() - t0
    if group.leader:
        config["metrics"] = {
            "best_epoch": best["epoch"],
            "val_accuracy": best["val_acc"],
            "val_loss": best["val_loss"],
            "final_val_accuracy": rows[-1]["val_acc"],
            "final_val_loss": rows[-1]["val_loss"],
            "epochs": len(rows),
            "decode_seconds": round(decode_seconds, 2),
            "seconds": round(total, 2),
            **({"resumed_after_epoch": first - 1} if resume else {}),
        }
        learning_curves(rows, out / "curves.png", title=f"{arch} on {Path(data).name}")
        clf = Classifier.load(out)
        clf.config = config
        result, outcome = clf.evaluate_set(val_set)
        write_report(clf, {"data": f"validation set ({val_source})", **result}, outcome, out / "report.html")
        write_json(out / CONFIG, config)  # last: a config with metrics marks the run finished
        log(
            f"best epoch {best['epoch']}: val_acc {best['val_acc']:.4f}; final val_acc {rows[-1]['val_acc']:.4f}; "
            f"{total:.0f}s; model saved to {out}"
        )
    group.barrier()
    return Classifier.load(out)


def _write_metrics(path: Path, rows: list[dict]) -> None:
    with replacing(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
