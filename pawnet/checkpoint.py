"""The state of a run after each epoch, so a killed run loses at most the epoch it was in.

One file, `checkpoint.pt`, replaced whole (temporary file, fsync, rename): the network, the
optimiser, the schedule, the gradient scaler, the random generators, the epoch and the metrics so
far. It holds only tensors and plain values, and is read with `torch.load(weights_only=True)`,
which refuses to unpickle code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import replacing
from .errors import UserError

CHECKPOINT = "checkpoint.pt"
FORMAT = 1


def save(folder: Path, state: dict) -> None:
    with replacing(Path(folder) / CHECKPOINT, durable=True) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load(folder: Path) -> dict | None:
    """The last checkpoint in `folder`, or None where the run ended before its first epoch."""
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or foreign files
        raise UserError(f"{path}: unreadable checkpoint ({type(e).__name__}); train again into a new --out") from None
    if state.get("format") != FORMAT:
        raise UserError(f"{path}: checkpoint format {state.get('format')} is not this pawnet's ({FORMAT})")
    return state


def random_state(generator: torch.Generator) -> dict:
    return {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def restore_random_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
