"""A model is a directory: config.json (everything but the weights) and model.safetensors.

Loading never unpickles anything: the weights are safetensors, the rest is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .atomic import replacing, write_text
from .errors import UserError
from .images import Preprocessing
from .models import ARCHITECTURES, build

CONFIG, WEIGHTS = "config.json", "model.safetensors"
# Raised when a change would make older pawnets misread a model directory.
FORMAT_VERSION = 1


def write_json(path: Path, data) -> None:
    """Write JSON atomically, so a killed process never leaves half a file."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def save_weights(model: torch.nn.Module | dict, path: Path) -> None:
    """Save a network's weights, or a state dict, as safetensors."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with replacing(path, durable=True) as tmp:
        save_file(state, str(tmp))


def read_config(path) -> dict:
    folder = Path(path)
    if not folder.exists():
        raise UserError(f"{folder}: no such model directory")
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise UserError(f"{folder}: not a pawnet model directory (needs {CONFIG} and {WEIGHTS})")
    try:
        config = json.loads((folder / CONFIG).read_text())
        fmt = int(config.get("format_version", 0))
        arch, classes = config["arch"], config["classes"]
        Preprocessing.from_dict(config["preprocessing"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{folder / CONFIG}: not a valid pawnet config ({type(e).__name__}: {e})") from None
    if fmt > FORMAT_VERSION:
        raise UserError(
            f"{folder}: made by a newer pawnet ({config.get('pawnet_version', '?')}, format {fmt}); "
            f"this is pawnet {__version__}: upgrade with pip install -U pawnet"
        )
    if arch not in ARCHITECTURES:
        raise UserError(f"{folder}: unknown architecture {arch!r} (this pawnet knows {', '.join(ARCHITECTURES)})")
    if not isinstance(classes, list) or len(classes) < 2:
        raise UserError(f"{folder / CONFIG}: 'classes' must list at least two class names")
    return config


def load_model(path) -> tuple[torch.nn.Module, dict]:
    """The network and config of a model directory.

    A directory whose config says `"weights": "head"` stores only the dense head: its body is the
    pretrained one from the weights package, which training left untouched. That keeps the
    default model shipped with pawnet to a few kilobytes.
    """
    folder = Path(path)
    config = read_config(folder)
    prep = Preprocessing.from_dict(config["preprocessing"])
    head_only = config.get("weights") == "head"
    model = build(config["arch"], len(config["classes"]), prep.size, prep.mean, prep.std, pretrained=head_only)
    try:
        state = load_file(str(folder / WEIGHTS))
        if head_only:
            if not state or not all(k.startswith("head.") for k in state):
                raise RuntimeError("a head-only model must hold head.* tensors alone")
            state = {**model.state_dict(), **state}
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{folder / WEIGHTS}: weights do not fit the config ({first})") from None
    return model.eval(), config
