"""Reading a model directory: config.json (everything but the weights) and model.safetensors.

Loading never unpickles anything: the weights are safetensors, the rest is JSON.
"""

from __future__ import annotations

import json

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .architectures import ARCHITECTURES, build
from .config_check import validate_config
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
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{folder.config}: not a valid pawnet config ({type(e).__name__}: {e})") from None
    fmt = config.get("format_version", 0) if isinstance(config, dict) else 0
    if isinstance(fmt, int) and fmt > FORMAT_VERSION:  # a newer pawnet's config may differ in any way
        raise UserError(
            f"{folder.path}: made by a newer pawnet ({config.get('pawnet_version', '?')}, format {fmt}); "
            f"this is pawnet {__version__}: upgrade with pip install -U pawnet"
        )
    validate_config(config, folder.config)
    arch, classes = config["arch"], config["classes"]
    if arch not in ARCHITECTURES:
        raise UserError(f"{folder.path}: unknown architecture {arch!r} (this pawnet knows {', '.join(ARCHITECTURES)})")
    newest, revision = getattr(ARCHITECTURES[arch].network, "revision", 1), _revision(config)
    if not 1 <= revision <= newest:
        raise UserError(
            f"{folder.config}: network_revision {revision} of {arch} is not one this pawnet knows "
            f"(1 to {newest}); a newer pawnet may read it: pip install -U pawnet"
        )
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
    _check_shapes(folder, config, prep, head_only)
    # A body frozen in training is the pretrained one, so its ImageNet classifier still fits it.
    frozen = head_only or (isinstance(config.get("training"), dict) and config["training"].get("train") == "head")
    model = build(config["arch"], len(config["classes"]), prep, pretrained=frozen, revision=_revision(config))
    try:
        state = load_file(str(folder.weights))
        if head_only:
            state = {**model.state_dict(), **state}
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise _misfit(folder, e) from None
    return model.eval(), config


def _check_shapes(folder: RunDir, config: dict, prep: Preprocessing, head_only: bool) -> None:
    """Refuse weights that do not fit the config before the network is built: built on PyTorch's
    meta device, it has every shape and no memory, so a config claiming a huge input size costs
    nothing to refuse."""
    with torch.device("meta"):
        network = build(config["arch"], len(config["classes"]), prep, revision=_revision(config))
        shapes = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    try:
        with safe_open(str(folder.weights), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (a safe_open handle is not a dict)
    except (SafetensorError, OSError) as e:
        raise _misfit(folder, e) from None
    if head_only and (not stored or not all(k.startswith("head.") for k in stored)):
        raise _misfit(folder, RuntimeError("a head-only model must hold head.* tensors alone"))
    expected = {k: v for k, v in shapes.items() if k in stored} if head_only else shapes
    for name in sorted(set(expected) | set(stored)):
        if name not in stored:
            raise _misfit(folder, RuntimeError(f"{name} is missing from the file"))
        if name not in expected:
            raise _misfit(folder, RuntimeError(f"{name} is in the file, not in a {config['arch']} network"))
        if expected[name] != stored[name]:
            raise _misfit(folder, RuntimeError(f"{name}: {stored[name]} stored, {expected[name]} for this config"))


def _revision(config: dict) -> int:
    """Which layout of its architecture the network has: models from before layouts were numbered
    have the first."""
    return config.get("network_revision", 1)


def _misfit(folder: RunDir, e: Exception) -> UserError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return UserError(f"{folder.weights}: weights do not fit the config ({first})")
