"""A run folder: every file `pawnet train` (and `pawnet export`) writes, named here and written here.

    config.json        the run's settings from its start, so a killed run can resume; then the
                       model card (architecture, classes, preprocessing, recipe, data summary);
                       at the end the results too, which mark the run finished
    model.safetensors  the best epoch's weights
    unknown.safetensors  what the unknown-photo check measures against (`unknown.py`)
    metrics.csv        one row per epoch
    checkpoint.pt      the run's state after its last finished epoch, for --resume
    curves.png         loss and accuracy per epoch
    report.html        the validation results, top losses included
    model.onnx         written by `pawnet export` (model.int8.onnx with --quantize)
    int8_ranges.json   the range of each layer's values on the model's own photos, where a model
                       has it (the shipped one does): int8 then needs no photos (onnxruntime's
                       calibration cache, written by scripts/train_default_model.py)
    .lock              locked (flock) by the process that trains into the folder, for as long as
                       it runs: a second run into the same folder is refused; the lock dies with
                       its process, so a killed run leaves none behind

Every write replaces its file whole (temporary file, then rename), so a run killed at any
moment leaves each file as it was or as it became. PyTorch is imported only by the writes that
need it: reading a folder's config stays cheap for an ONNX-only installation.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
from pathlib import Path

from .atomic import cannot_make, remove_leftovers, replacing, write_text
from .errors import UserError
from .version import __version__

# Raised when a change would make older pawnets misread a model directory.
FORMAT_VERSION = 1
CHECKPOINT_FORMAT = 1
METRICS_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


DEFAULT_MODEL = Path(__file__).with_name("default_model")
# The name that stands for DEFAULT_MODEL wherever a command takes a MODEL; a file or folder of
# that name where pawnet runs comes first (it is what the user named).
DEFAULT_NAME = "default"


def resolve(path) -> Path:
    """The path of the model `path` names: the shipped one for None or `default`."""
    if path is None or (str(path) == DEFAULT_NAME and not Path(path).exists()):
        return DEFAULT_MODEL
    return Path(path)


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


class RunDir:
    CONFIG = "config.json"
    WEIGHTS = "model.safetensors"
    CHECKPOINT = "checkpoint.pt"
    LOCK = ".lock"

    def __init__(self, path):
        self.path = Path(path)
        self.config = self.path / self.CONFIG
        self.weights = self.path / self.WEIGHTS
        self.unknown = self.path / "unknown.safetensors"
        self.int8_ranges = self.path / "int8_ranges.json"
        self.metrics = self.path / "metrics.csv"
        self.checkpoint = self.path / self.CHECKPOINT
        self.curves = self.path / "curves.png"
        self.report = self.path / "report.html"
        self.lock_file = self.path / self.LOCK
        self._lock_fd: int | None = None
        # What `discard` may take away: only a folder this process made, only a run it began.
        self.made = False
        self.begun = False

    @classmethod
    def is_run(cls, path) -> bool:
        """Whether `path` is a folder `pawnet train` wrote: a model (config and weights), or a run
        under way (a checkpoint)."""
        folder = cls(path)
        return (folder.config.is_file() and folder.weights.is_file()) or folder.checkpoint.is_file()

    def onnx(self, quantized: bool = False) -> Path:
        return self.path / ("model.int8.onnx" if quantized else "model.onnx")

    def holds_files(self) -> bool:
        return self.path.exists() and any(p.name != self.LOCK for p in self.path.iterdir())

    def lock(self) -> None:
        """Claim the folder for this process until `unlock` or its end (even by kill -9): a second
        process that tries is refused with a UserError naming the first."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(
                f"{self.path}: another pawnet run (process {owner}) is writing into this folder; "
                "wait for it to end, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def refuse_if_in_use(self) -> None:
        """A UserError naming the process that holds the folder's lock, if one does."""
        if self.lock_file.exists():
            self.lock()
            self.unlock()

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor releases the flock
            self._lock_fd = None

    def create(self) -> None:
        """Make the folder, claim it for this process (`lock`), and clear the temporary files of
        a process killed while writing."""
        self.made = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock()
        except OSError as e:
            raise UserError(
                f"{self.path}: cannot write a run there ({cannot_make(self.path, e)}); choose another --out"
            ) from None
        remove_leftovers(self.path)

    def discard(self) -> None:
        """Undo `create` and `write_settings`, for a new run refused before it trained anything:
        the same command can then be given again."""
        if not self.begun:
            return
        # All of it while the lock is held, so a second run into the folder waits for it to go.
        self.config.unlink(missing_ok=True)
        self.lock_file.unlink(missing_ok=True)
        if self.made:
            with contextlib.suppress(OSError):
                self.path.rmdir()
        self.unlock()

    @property
    def locked(self) -> bool:
        """Whether this process holds the folder's lock."""
        return self._lock_fd is not None

    def read_config(self) -> dict | None:
        """config.json as written, or None where it is missing or unreadable."""
        try:
            config = json.loads(self.config.read_text())
        except (OSError, ValueError):
            return None
        return config if isinstance(config, dict) else None

    def write_settings(self, settings: dict) -> None:
        """The run's settings alone: written before anything slow, so that a run killed from
        then on can be resumed."""
        self.write_config({"format_version": FORMAT_VERSION, "pawnet_version": __version__, "run": settings})
        self.begun = True

    def write_config(self, config: dict) -> None:
        write_json(self.config, config)

    def save_weights(self, state: dict) -> None:
        """A state dict as safetensors, flushed to disk before it replaces the last one."""
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        with replacing(self.weights, durable=True) as tmp:
            save_file(state, str(tmp))

    def save_unknown(self, tensors: dict) -> None:
        """The unknown-photo check's arrays (numpy) as safetensors."""
        from safetensors.numpy import save_file

        with replacing(self.unknown, durable=True) as tmp:
            save_file(tensors, str(tmp))

    def write_metrics(self, rows: list[dict]) -> None:
        with replacing(self.metrics) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def save_checkpoint(self, state: dict) -> None:
        """The run's state (tensors and plain values only), flushed to disk before it replaces
        the last one: a killed run loses at most the epoch it was in."""
        import torch

        with replacing(self.checkpoint, durable=True) as tmp:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)

    def checkpoint_bytes(self) -> bytes:
        """The checkpoint file as it is on disk; empty where there is none."""
        return self.checkpoint.read_bytes() if self.checkpoint.exists() else b""

    def load_checkpoint(self, data: bytes | None = None) -> dict | None:
        """The last checkpoint, or None where the run ended before its first epoch; from `data`,
        the file's bytes, where given (as the first process read them and shared them).

        Read with `weights_only=True`, which refuses to unpickle code.
        """
        import io

        import torch

        if data is None:
            data = self.checkpoint_bytes()
        if not data:
            return None
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for damaged or foreign files
            raise UserError(
                f"{self.checkpoint}: unreadable checkpoint ({type(e).__name__}); train again into a new --out"
            ) from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise UserError(
                f"{self.checkpoint}: checkpoint format {state.get('format')} is not this pawnet's ({CHECKPOINT_FORMAT})"
            )
        return state
