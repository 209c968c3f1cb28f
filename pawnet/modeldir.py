"""Reading a model directory: config.json (everything but the weights) and model.safetensors.

Loading never unpickles anything: the weights are safetensors, the rest is JSON.
"""

from __future__ import annotations

import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .architectures import ARCHITECTURES, build
from .errors import UserError
from .images import Preprocessing
from .rundir import FORMAT_VERSION, RunDir
from .version import __version__


def read_config(path) -> dict:
    folder = RunDir(path)
    if not folder.path.exists():
        raise UserError(f"{folder.path}: no such model directory")
    if not folder.config.is_file() or not folder.weights.is_file():
        raise UserError(f"{folder.path}: not a pawnet model directory (needs {RunDir.CONFIG} and {RunDir.WEIGHTS})")
    try:
        config = json.loads(folder.config.read_text())
        fmt = int(config.get("format_version", 0))
        arch, classes = config["arch"], config["classes"]
        Preprocessing.from_dict(config["preprocessing"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{folder.config}: not a valid pawnet config ({type(e).__name__}: {e})") from None
    if fmt > FORMAT_VERSION:
        raise UserError(
            f"{folder.path}: made by a newer pawnet ({config.get('pawnet_version', '?')}, format {fmt}); "
            f"this is pawnet {__version__}: upgrade with pip install -U pawnet"
        )
    if arch not in ARCHITECTURES:
        raise UserError(f"{folder.path}: unknown architecture {arch!r} (this pawnet knows {', '.join(ARCHITECTURES)})")
    if not isinstance(classes, list) or len(classes) < 2:
        raise UserError(f"{folder.config}: 'classes' must list at least two class names")
    if ARCHITECTURES[arch].two_classes_only and len(classes) != 2:
        raise UserError(
            f"{folder.config}: the {arch} network tells two classes apart, and 'classes' lists {len(classes)}"
        )
    return config


def load_model(path) -> tuple[torch.nn.Module, dict]:
    """The network and config of a model directory.

    A directory whose config says `"weights": "head"` stores only the dense head: its body is the
    pretrained one its architecture names, which training left untouched. That keeps the
    default model shipped with pawnet to a few kilobytes.
    """
    folder = RunDir(path)
    config = read_config(folder.path)
    prep = Preprocessing.from_dict(config["preprocessing"])
    head_only = config.get("weights") == "head"
    model = build(config["arch"], len(config["classes"]), prep, pretrained=head_only)
    try:
        state = load_file(str(folder.weights))
        if head_only:
            if not state or not all(k.startswith("head.") for k in state):
                raise RuntimeError("a head-only model must hold head.* tensors alone")
            state = {**model.state_dict(), **state}
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{folder.weights}: weights do not fit the config ({first})") from None
    return model.eval(), config
