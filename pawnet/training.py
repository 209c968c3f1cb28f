"""Training: `pawnet.train(data, arch=..., epochs=..., out=...)` writes a run folder.

`_train` reads top to bottom as the run's phases: settle the settings, find the photos, open the
run folder, decode every photo once, build the network and its optimiser, pick up a checkpoint
when resuming, run the epochs (shuffle, augment whole batches, step, validate, keep the best,
checkpoint), and finish (curves, report, results). The phases share one `Run`. The same code
runs on a CPU, a GPU, or several processes started by torchrun.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from . import devices, distributed, models, progress
from .architectures import ARCHITECTURES, Recipe, build
from .audit import label_note, train_test_leaks
from .cache import cached_decode, cpu_count
from .classifier import Classifier
from .data import Labelled, train_val_split
from .errors import Interrupted, UserError
from .plots import learning_curves
from .progress import bar, count, interactive
from .report import write_report
from .rundir import FORMAT_VERSION, RunDir
from .settings import RunSettings
from .version import __version__


@dataclass
class Run:
    """What the phases of one run share: its settings and, as the phases fill them in, its photos,
    network and history."""

    settings: RunSettings
    recipe: Recipe
    folder: RunDir
    device: torch.device
    group: distributed.Group
    precision: devices.Precision
    log: Callable[[str], None]
    resuming: bool
    started: float = 0.0
    # The photos.
    train_set: Labelled | None = None
    val_set: Labelled | None = None
    val_source: str = ""
    leaks: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    decode_seconds: float = 0.0
    counts: list[int] = field(default_factory=list)
    val_y: np.ndarray | None = None
    # The network, what it trains on, and what steps it.
    model: torch.nn.Module | None = None
    net: torch.nn.Module | None = None  # what trains: the whole model, or its head on frozen features
    stepped: torch.nn.Module | None = None  # `net`, wrapped for DistributedDataParallel under torchrun
    batchnorm: str | None = None  # across processes: "synchronised", "per-process", or None
    train_inputs: object = None  # decoded pixels, or precomputed features
    train_y: np.ndarray | None = None
    val_inputs: object = None
    class_weights: torch.Tensor | None = None
    generator: torch.Generator | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: object = None
    scaler: torch.amp.GradScaler | None = None
    # config.json's model card, and the history: a row per epoch, the best epoch's row and weights.
    card: dict = field(default_factory=dict)
    first_epoch: int = 1  # the first this process runs: after a resume, the one after the checkpoint's
    rows: list[dict] = field(default_factory=list)
    best: dict | None = None
    best_state: dict | None = None

    @property
    def classes(self) -> list[str]:
        return self.train_set.classes


def train(data, *, out=None, device: str = "auto", log=print, **settings) -> Classifier:
    """Train on the photos in `data` and return the best epoch's model, saved in `out`.

    `data` is a folder of class folders, the tutorial's training_set/ + test_set/, or a flat
    folder of Kaggle-style names; validation comes from `val`, test_set/, or a held-out 20%.
    `settings` are those of `RunSettings`: `val`, `arch` (default "seed"), `epochs`, `batch_size`
    (the global batch: under torchrun each process takes its part of it), `img_size`, `seed`,
    `precision`, `use_cache` and `finetune`. `device` and `precision` are described in `pawnet.devices`.
    """
    run_settings = RunSettings(data=data, **settings)
    folder = RunDir(out) if out else _next_run_dir()
    if folder.path.exists() and not folder.path.is_dir():
        raise UserError(f"{folder.path}: is a file; --out names the folder to write the run into")
    _refuse_inside_data(folder, run_settings)
    if distributed.from_environment().leader:  # the others would see the leader's own lock
        folder.refuse_if_in_use()
    if folder.holds_files():
        raise UserError(
            f"{folder.path}: already holds files; choose another --out, remove it, or continue it with --resume"
        )
    return _run(run_settings, folder, device, log)


def resume(run_dir, *, device: str = "auto", log=print) -> Classifier | None:
    """Continue a run that was interrupted (even by kill -9) to the epochs it was asked for,
    with its settings, from its last checkpoint; a finished run is returned as it is (under
    torchrun, by the first process: the others return None)."""
    folder = RunDir(run_dir)
    if distributed.from_environment().leader:  # the others would see the leader's own lock
        folder.refuse_if_in_use()
    return _run(None, folder, device, log)


def _settings_to_resume(folder: RunDir, group: distributed.Group, log) -> RunSettings | None:
    """The settings of the run to continue, from its config.json as the first process reads it
    (only its machine need hold the run folder); None where the run finished already."""
    config = json.loads(group.shared(lambda: json.dumps(folder.read_config()).encode()))
    if isinstance(config, dict) and "metrics" in config:
        log(f"{folder.path}: finished already (best epoch {config['metrics']['best_epoch']}); nothing to resume")
        return None
    if not isinstance(config, dict) or not isinstance(config.get("run"), dict) or "data" not in config["run"]:
        raise UserError(
            f"{folder.path}: not a pawnet training run (no {RunDir.CONFIG} with the run's settings) to resume"
        )
    return RunSettings.from_dict(config["run"])


def _refuse_inside_data(folder: RunDir, settings: RunSettings) -> None:
    """A run folder inside DATA (or --val) would be read as photos by the next run on it."""
    out = folder.path.resolve()
    for name, given in (("DATA", settings.data), ("--val", settings.val)):
        if given is not None and out.is_relative_to(Path(given).resolve()):
            raise UserError(
                f"{folder.path}: the run folder would be inside {name} ({given}), where its files would be "
                "taken for photos; choose an --out outside it"
            )


def _next_run_dir(base: Path = Path("runs")) -> RunDir:
    n = 1
    while (base / (f"train{n}" if n > 1 else "train")).exists():
        n += 1
    return RunDir(base / (f"train{n}" if n > 1 else "train"))


def _run(settings: RunSettings | None, folder: RunDir, device_name: str, log) -> Classifier | None:
    """Train with `settings`, or with None continue the run in `folder`."""
    group = distributed.from_environment()
    device = devices.pick(device_name, group.local_rank)
    distributed.start(group, device)
    if not group.leader:
        log = lambda *_: None  # noqa: E731
        progress.silence()
    try:
        resuming = settings is None
        if resuming:
            settings = _settings_to_resume(folder, group, log)
            if settings is None:
                return Classifier.load(folder.path) if group.leader else None
        return _train(settings, folder, device, group, log, resuming)
    finally:
        distributed.stop(group)


def _train(settings: RunSettings, folder: RunDir, device, group, log, resume: bool) -> Classifier:
    run = Run(
        settings, settings.recipe(), folder, device, group, devices.precision(settings.precision, device), log, resume
    )
    try:
        _find_photos(run)
        _open_folder(run)
        _decode(run)
        _check_leaks(run)
        _build_network(run)
        _restore(run, _model_card(run))
        _epochs(run)
        return _finish(run)
    except UserError:
        # Refused before it trained anything (its photos could not be read, say): nothing of it is
        # kept, so that the same command, once the photos are mended, is not refused.
        if run.folder.locked and not run.folder.checkpoint.exists():
            run.folder.discard()
        raise
    except KeyboardInterrupt:
        if run.folder.locked and run.folder.config.is_file():  # this process's run, and it can be resumed
            raise Interrupted(f"continue with pawnet train --resume {run.folder.path}") from None
        raise
    finally:
        run.folder.unlock()


def _find_photos(run: Run) -> None:
    """Which photos train and which validate, and that the architecture can take their classes."""
    s = run.settings
    run.train_set, run.val_set, run.val_source = train_val_split(s.data, s.val, seed=s.seed)
    if ARCHITECTURES[s.arch].two_classes_only and len(run.classes) != 2:
        raise UserError(
            f"the {s.arch} network is the tutorial's two-class one, "
            f"and DATA has {len(run.classes)} classes; use --arch small"
        )
    for line in run.train_set.warnings() + run.val_set.warnings():
        run.log(f"warning: {line}")
    if note := label_note(s.data, run.train_set.files):
        run.log(note)
    run.log(
        f"data: {count(len(run.train_set), 'training image')}, {count(len(run.val_set), 'validation image')} "
        f"({run.val_source}); classes: {', '.join(run.classes)}"
    )


def _open_folder(run: Run) -> None:
    """The run folder exists from here on (only once the data is accepted), claimed by this run
    (a second run into it is refused), its settings written before anything slow so that a run
    killed from now on can be resumed."""
    if run.group.leader:
        run.folder.create()
        if not run.resuming and run.folder.holds_files():  # another run got here first, and ended
            raise UserError(f"{run.folder.path}: already holds files; choose another --out, or remove it")
        if not run.resuming:
            run.folder.write_settings(run.settings.to_dict())
    run.group.barrier()


def _check_leaks(run: Run) -> None:
    """Validation photos byte-identical to training photos, among those that could be read."""
    if not run.group.leader:
        return
    train, val = ([f for f in s.files if str(f) not in run.skipped] for s in (run.train_set, run.val_set))
    run.leaks = train_test_leaks(train, val)
    if run.leaks:
        run.log(
            f"warning: {len(run.leaks)} validation images are byte-identical to training images (such as "
            f"{run.leaks[0][0]} and {run.leaks[0][1]}), so validation accuracy will read high; "
            "`pawnet data check DATA --fix` moves the copies aside"
        )


def _decode(run: Run) -> None:
    """Every photo decoded once (the first process fills the cache, the others read it); epochs
    then only read uint8 arrays."""
    run.started = time.perf_counter()
    prep, use_cache = run.recipe.preprocessing, run.settings.use_cache
    for turn in ("leader", "others"):
        if (turn == "leader") == run.group.leader:
            train_dec = cached_decode(run.train_set.files, prep, desc="decoding training images", use_cache=use_cache)
            val_dec = cached_decode(run.val_set.files, prep, desc="decoding validation images", use_cache=use_cache)
        run.group.barrier()
    run.skipped = {**train_dec.skipped(run.train_set.files), **val_dec.skipped(run.val_set.files)}
    for path, why in run.skipped.items():
        run.log(f"skipped {path}: {why}")
    if len(train_dec.ok) == 0 or len(val_dec.ok) == 0:
        raise UserError("no readable images left to train or validate on")
    run.train_y = np.asarray(run.train_set.labels, dtype=np.int64)[train_dec.ok]
    run.val_y = np.asarray(run.val_set.labels, dtype=np.int64)[val_dec.ok]
    run.train_inputs, run.val_inputs = train_dec.pixels, val_dec.pixels
    run.decode_seconds = time.perf_counter() - run.started
    run.log(
        f"decoded in {run.decode_seconds:.1f}s"
        + (
            f"; {count(len(run.skipped), 'unreadable file')} skipped: "
            f"{count(len(run.train_y), 'training image')} and {count(len(run.val_y), 'validation image')} left"
            if run.skipped
            else ""
        )
    )
    run.counts = np.bincount(run.train_y, minlength=len(run.classes)).tolist()
    if min(run.counts) == 0:
        empty = [c for c, n in zip(run.classes, run.counts) if n == 0]
        raise UserError(f"class {', '.join(empty)} has no readable training images")
    run.class_weights = _class_weights(run.counts)


def _class_weights(counts: list[int]) -> torch.Tensor | None:
    """Inverse-frequency weights when the classes differ by more than 1.5x, else None."""
    if max(counts) <= 1.5 * min(counts):
        return None
    counts_t = torch.tensor(counts, dtype=torch.float32)
    return counts_t.sum() / (len(counts) * counts_t)


def _build_network(run: Run) -> None:
    """The network and its optimiser, seeded so that a CPU run repeats exactly on the same machine."""
    recipe, device = run.recipe, run.device
    torch.manual_seed(run.settings.seed)
    if device.type == "cpu":  # processes sharing a machine share its cores
        torch.set_num_threads(max(1, cpu_count() // run.group.local_world))
    run.model = build(run.settings.arch, len(run.classes), recipe.preprocessing, pretrained=True, revision=_layout(run))
    run.model = run.model.to(device, memory_format=torch.channels_last)
    if run.class_weights is not None:
        run.class_weights = run.class_weights.to(device)
    run.generator = torch.Generator().manual_seed(run.settings.seed)
    if hasattr(run.model, "fit_first_layer"):
        run.model.fit_first_layer(run.train_inputs)
    run.net = run.model
    if recipe.train == "head":
        _freeze_body(run)
    run.batchnorm = _batchnorm(run)
    run.stepped = run.net
    if run.group.active:
        run.stepped = DistributedDataParallel(run.net, device_ids=[device.index] if device.type == "cuda" else None)
    run.optimizer = _optimizer(recipe, [p for p in run.net.parameters() if p.requires_grad])
    run.scheduler = None
    if recipe.schedule == "onecycle":
        steps_per_epoch = -(-len(run.train_y) // recipe.batch_size)
        run.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            run.optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.15
        )
    run.scaler = torch.amp.GradScaler(device.type, enabled=run.precision.scaled)


def _layout(run: Run) -> int | None:
    """A run being continued keeps the network layout it began with, so a newer pawnet with
    another layout still finishes it (None: the newest, as for a run stopped before its model
    card was written)."""
    return (run.folder.read_config() or {}).get("network_revision") if run.resuming else None


def _batchnorm(run: Run) -> str | None:
    """How batch norm computes its batch statistics across processes: "synchronised" over the
    global batch (SyncBatchNorm, on GPUs: PyTorch's runs on GPUs only), else "per-process", each
    over its part; None for one process or a network without batch norm. Nothing here draws
    random numbers."""
    if not run.group.active or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in run.net.modules()):
        return None
    if run.device.type != "cuda":
        return "per-process"
    torch.nn.SyncBatchNorm.convert_sync_batchnorm(run.net)  # in place: the layers inside are replaced
    return "synchronised"


def _freeze_body(run: Run) -> None:
    """The body is frozen, so its features never change: compute them once, mirror images
    included, and let every epoch train the head on them in a fraction of a second."""
    started = time.perf_counter()
    pixels = run.train_inputs
    run.net = run.model.head
    body = run.model.fused()  # the same features, twice as fast: batch norm folded into the convolutions
    run.train_inputs = torch.cat(
        [
            _features(run, body, pixels, run.precision, "features"),
            _features(run, body, pixels, run.precision, "mirrored features", mirror=True),
        ]
    )
    run.train_y = np.concatenate([run.train_y, run.train_y])
    run.val_inputs = _features(run, body, run.val_inputs, devices.Precision("fp32", None), "validation features")
    run.log(f"features of the frozen {run.settings.arch} body computed in {time.perf_counter() - started:.1f}s")


def _features(run: Run, body, pixels, prec, desc: str, mirror: bool = False) -> torch.Tensor:
    """The frozen body's features for every image (or its mirror image), computed once; each
    process computes its part and all of them receive the whole."""
    device = run.device
    batch_size = models.inference_batch(run.recipe.preprocessing.size) if device.type == "cpu" else 64
    mine = run.group.part(len(pixels))
    # Filled in place, for the reason `predictor.join_batches` gives.
    out = torch.empty((mine.stop - mine.start, run.model.head[-1].in_features), device=device)
    with torch.no_grad(), prec.autocast(device):
        for start in bar(range(mine.start, mine.stop, batch_size), desc=desc, unit="batch", leave=False):
            x = _as_input(pixels, slice(start, min(start + batch_size, mine.stop)), device)
            out[start - mine.start : start - mine.start + len(x)] = body.embed(x.flip(3) if mirror else x).float()
    return run.group.gather_rows(out, len(pixels))


def _optimizer(recipe: Recipe, params):
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, eps=recipe.eps, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def _model_card(run: Run) -> dict:
    """config.json without the results: what the model is, how it was trained, and on what."""
    recipe = run.recipe
    return {
        "format_version": FORMAT_VERSION,
        "pawnet_version": __version__,
        "torch_version": torch.__version__,
        "arch": run.settings.arch,
        "network_revision": getattr(run.model, "revision", 1),
        "classes": run.classes,
        "preprocessing": recipe.preprocessing.to_dict(),
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
            "seed": run.settings.seed,
            "precision": run.precision.name,
            "class_weights": None if run.class_weights is None else [round(w, 4) for w in run.class_weights.tolist()],
            "device": run.device.type,
            "processes": run.group.world,
            "batchnorm": run.batchnorm,
            "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {platform.processor()}".strip(),
        },
        "data": {
            "train": run.settings.data,
            "validation": run.val_source,
            "train_counts": dict(zip(run.classes, run.counts)),
            "val_counts": dict(zip(run.classes, np.bincount(run.val_y, minlength=len(run.classes)).tolist())),
            "skipped": run.skipped,
            "leakage": {"exact_duplicates": len(run.leaks), "pairs": run.leaks[:20]},
        },
        "run": run.settings.to_dict(),
    }


def _restore(run: Run, card: dict) -> None:
    """When continuing a run, its last checkpoint: it is the truth, and the files derived from it
    (best weights, metrics.csv) are written again from it. Then the model card."""
    state = run.folder.load_checkpoint(run.group.shared(run.folder.checkpoint_bytes)) if run.resuming else None
    if state is not None:
        try:
            run.model.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError):  # a run begun by an earlier pawnet: another layout, or other weights trained
            raise UserError(
                f"{run.folder.path}: its checkpoint does not fit this pawnet's {run.settings.arch} network "
                "(the run was started by a version that built or trained it otherwise), so it cannot be continued; "
                "train a new run"
            ) from None
        if run.scheduler is not None:
            run.scheduler.load_state_dict(state["scheduler"])
        run.scaler.load_state_dict(state["scaler"])
        _restore_random_state(state["random"], run.generator)
        run.rows, run.best, run.best_state = state["rows"], state["best"], state["best_model"]
        run.log(f"resuming {run.folder.path} after epoch {state['epoch']} of {run.recipe.epochs}")
    elif run.resuming:
        run.log(f"resuming {run.folder.path} from the start: it stopped before its first epoch ended")
    if run.resuming and run.group.leader:
        _say_if_data_changed(run, (run.folder.read_config() or {}).get("data", {}), card["data"])
    run.card = card
    if run.group.leader:
        run.folder.write_config(card)
        if state is not None:
            run.folder.save_weights(run.best_state)
            run.folder.write_metrics(run.rows)


def _say_if_data_changed(run: Run, then: dict, now: dict) -> None:
    counts = ("train_counts", "val_counts")
    if then and [then.get(k) for k in counts] != [now[k] for k in counts]:
        run.log(
            f"warning: the photos have changed since the run began (training {then.get('train_counts')}, validation "
            f"{then.get('val_counts')} then; {now['train_counts']} and {now['val_counts']} now): it goes on with those "
            "there now, so epochs before and after are not measured on the same photos"
        )


def _random_state(generator: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def _restore_random_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _epochs(run: Run) -> None:
    """Each epoch: shuffle, augment each batch as a whole, step; validate, keep the best, checkpoint."""
    epochs, n = run.recipe.epochs, len(run.train_y)
    start = time.perf_counter()
    first = run.first_epoch = len(run.rows) + 1
    for epoch in range(first, epochs + 1):
        t_epoch = time.perf_counter()
        train_loss, train_acc = _train_epoch(run, f"epoch {epoch}/{epochs}")
        train_seconds = time.perf_counter() - t_epoch
        val_loss, val_acc = _validate(run)
        row = {
            "epoch": epoch,
            "train_loss": round(train_loss, 5),
            "train_acc": round(train_acc, 5),
            "val_loss": round(val_loss, 5),
            "val_acc": round(val_acc, 5),
            "lr": round(run.optimizer.param_groups[0]["lr"], 8),
            "seconds": round(time.perf_counter() - t_epoch, 2),
        }
        improved = _keep(run, row)
        remaining = (time.perf_counter() - start) / (epoch - first + 1) * (epochs - epoch)
        run.log(
            f"epoch {epoch:>3}/{epochs}  loss {row['train_loss']:.4f}  acc {row['train_acc']:.4f}  "
            f"val_loss {val_loss:.4f}  val_acc {val_acc:.4f}  {n / train_seconds:,.0f} img/s  "
            f"{row['seconds']:.1f}s  ETA {remaining:.0f}s" + ("  *" if improved else "")
        )


def _train_epoch(run: Run, desc: str) -> tuple[float, float]:
    """One pass over the training set in shuffled batches; returns mean loss and accuracy.

    Pixels are augmented a whole batch at a time; precomputed features are used as they are.
    Loss and accuracy stay on the tensor side until the end of the epoch, so no step waits for
    the host (except to refresh the progress bar on a terminal).
    """
    recipe, device, group, labels = run.recipe, run.device, run.group, run.train_y
    run.stepped.train()
    n = len(labels)
    start = time.perf_counter()
    order = torch.randperm(n, generator=run.generator).numpy()
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
        logits, loss = _step(run, _as_input(run.train_inputs, idx, device), y, len(batch), part)
        with torch.no_grad():
            total_loss += loss.detach() * len(y)
            correct += (models.probabilities(run.model, logits).argmax(1) == y).sum()
        if interactive() and step % 10 == 0:
            seen = min(i + recipe.batch_size, n) / group.world
            progress.set_postfix(
                loss=f"{total_loss.item() / seen:.3f}",
                acc=f"{correct.item() / seen:.3f}",
                img_s=f"{seen * group.world / (time.perf_counter() - start):.0f}",
            )
    total_loss, correct = group.sum(total_loss, correct)
    return total_loss.item() / n, correct.item() / n


def _step(run: Run, x: torch.Tensor, y: torch.Tensor, batch: int, part: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on this process's `part` of a global batch of `batch` images."""
    recipe, group = run.recipe, run.group
    if not isinstance(run.train_inputs, torch.Tensor):  # pixels, not precomputed features
        x = recipe.augmentation(x, run.generator, draw=batch, rows=part).contiguous(memory_format=torch.channels_last)
    with run.precision.autocast(run.device):
        logits = run.stepped(x).float()
    loss = models.loss_fn(run.model, logits, y, run.class_weights, recipe.label_smoothing)
    # DDP averages the processes' gradients; weighing each part by its share of the global
    # batch makes that average the gradient of the global batch's mean loss.
    share = len(y) * group.world / batch
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss * share if group.active else loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.scheduler is not None:
        run.scheduler.step()
    return logits, loss


def _as_input(data, rows, device) -> torch.Tensor:
    """Rows of decoded pixels as a network input batch, or of precomputed features as they are."""
    if isinstance(data, torch.Tensor):
        return data[rows]
    return models.to_input(data[rows], device)


def _validate(run: Run, batch_size: int = 64) -> tuple[float, float]:
    """Mean loss and accuracy of the network (the model, or its head on features), without gradients.

    In float32, as `evaluate` and `predict` run, so the reported accuracy is the saved model's.
    Batches of 64 stay in a CPU's caches: a quarter faster than 256 for `small`.
    Each process takes its part of the validation set; the sums are added up across processes.
    """
    device, labels = run.device, run.val_y
    run.net.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    mine = run.group.part(len(labels))
    with torch.inference_mode():
        for start in range(mine.start, mine.stop, batch_size):
            rows = slice(start, min(start + batch_size, mine.stop))
            y = torch.from_numpy(labels[rows]).to(device)
            logits = run.net(_as_input(run.val_inputs, rows, device)).float()
            total_loss += models.loss_fn(run.model, logits, y) * len(y)
            correct += (models.probabilities(run.model, logits).argmax(1) == y).sum()
    total_loss, correct = run.group.sum(total_loss, correct)
    n = max(len(labels), 1)
    return total_loss.item() / n, correct.item() / n


def _keep(run: Run, row: dict) -> bool:
    """Add the epoch's row; keep its weights if it is the best so far; checkpoint the run.
    Returns whether the epoch improved on the best."""
    run.rows.append(row)
    improved = run.best is None or row["val_acc"] > run.best["val_acc"]
    if improved:
        run.best = row
        run.best_state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
    if run.group.leader:
        run.folder.save_checkpoint(
            {
                "epoch": row["epoch"],
                "rows": run.rows,
                "best": run.best,
                "best_model": run.best_state,
                "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict() if run.scheduler else {},
                "scaler": run.scaler.state_dict(),
                "random": _random_state(run.generator),
            }
        )
        if improved:
            run.folder.save_weights(run.best_state)
        run.folder.write_metrics(run.rows)
    return improved


def _fit_checks(run: Run, clf: Classifier) -> dict:
    """Temperature scaling and the unknown-photo check, fitted to the finished model: on the
    frozen body's features where only a head trained (mirror images included), else on the
    network's vectors of the photos as they are, unaugmented."""
    if isinstance(run.train_inputs, torch.Tensor):
        train, val = run.train_inputs.cpu().numpy(), run.val_inputs.cpu().numpy()
    else:
        train, val = clf.vectors(run.train_inputs), clf.vectors(run.val_inputs)
    return clf.fit_checks(train, run.train_y, val, run.val_y)


def _finish(run: Run) -> Classifier:
    """The results into config.json (last: a config with results marks the run finished), the
    learning curves and the report on the validation set. Under torchrun the other processes,
    whose machines need not hold the run folder, return the best weights from memory."""
    total = time.perf_counter() - run.started
    best, last, folder = run.best, run.rows[-1], run.folder
    config = run.card
    config["metrics"] = {
        "best_epoch": best["epoch"],
        "val_accuracy": best["val_acc"],
        "val_loss": best["val_loss"],
        "final_val_accuracy": last["val_acc"],
        "final_val_loss": last["val_loss"],
        "epochs": len(run.rows),
        "decode_seconds": round(run.decode_seconds, 2),
        "seconds": round(total, 2),
        **({"resumed_after_epoch": run.first_epoch - 1} if run.resuming else {}),
    }
    if run.group.leader:
        learning_curves(run.rows, folder.curves, title=f"{run.settings.arch} on {Path(run.settings.data).name}")
        clf = Classifier.load(folder.path)
        config.update(_fit_checks(run, clf))
        folder.save_unknown(clf.check.tensors())
        clf.config = config
        result, outcome = clf.evaluate_set(run.val_set)
        write_report(clf, {"data": f"validation set ({run.val_source})", **result}, outcome, folder.report)
        folder.write_config(config)
        run.log(
            f"best epoch {best['epoch']}: val_acc {best['val_acc']:.4f}; final val_acc {last['val_acc']:.4f}; "
            f"{total:.0f}s; model saved to {folder.path}"
        )
        calibrated = config["calibration"]
        run.log(
            (
                f"calibrated: temperature {calibrated['temperature']:.3f}, validation ECE "
                f"{calibrated['val_ece_before']:.4f} -> {calibrated['val_ece_after']:.4f}"
                if calibrated["temperature"] != 1
                else f"not calibrated: a temperature fitted to {len(run.val_y)} validation photos raised their ECE"
            )
            + f"; unknown-photo check: {config['unknown']['val_known']:.1%} of validation photos known"
        )
    run.group.barrier()
    if run.group.leader:
        return Classifier.load(folder.path)
    run.model.load_state_dict(run.best_state)
    return Classifier(run.model, config, folder.path)
