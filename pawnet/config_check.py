"""The one check of a model's config, for model directories and ONNX files alike.

A config is read from a file a user may have edited or been sent, so every value the code
relies on is checked here, once, before anything is built from it: a bad value is one line
naming the file, never a KeyError, an IndexError or gigabytes allocated for a network that the
weights then do not fit. No PyTorch here: an ONNX model loads without it.
"""

from __future__ import annotations

from .errors import UserError

MIN_SIZE, MAX_SIZE = 16, 1024  # the side of the square input, in pixels
RESIZE_METHODS = ("squash", "crop")


def validate_config(config, where) -> dict:
    """`config` as read from `where` (a file or a folder, for the message); raises UserError on
    the first value the rest of pawnet could not use."""
    if not isinstance(config, dict):
        raise UserError(f"{where}: not a valid pawnet config (not a JSON object)")
    arch = config.get("arch")
    if not isinstance(arch, str) or not arch:
        raise UserError(f"{where}: no 'arch' (the name of the network's architecture) in the config")
    if "classes" not in config:
        raise UserError(f"{where}: no 'classes' (the class names, in the network's output order) in the config")
    classes = config["classes"]
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise UserError(f"{where}: 'classes' must list at least two distinct class names, not {_short(classes)}")
    revision = config.get("network_revision", 1)
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise UserError(f"{where}: network_revision must be a whole number, not {_short(revision)}")
    _check_preprocessing(config.get("preprocessing"), where)
    _check_number(config, "calibration", "temperature", where, positive=True)
    _check_number(config, "unknown", "threshold", where)
    return config


def _check_number(config: dict, section: str, key: str, where, positive: bool = False) -> None:
    """`config[section][key]` a number (above 0 with `positive`), where the section is there at all."""
    if section not in config:
        return
    value = config[section].get(key) if isinstance(config[section], dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
        rule = "a number above 0" if positive else "a number"
        raise UserError(f"{where}: {section} {key} must be {rule}, not {_short(value)}")


def _check_preprocessing(prep, where) -> None:
    if not isinstance(prep, dict):
        raise UserError(f"{where}: no 'preprocessing' (image size, resize method, mean, std) in the config")
    size = prep.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(
            f"{where}: preprocessing size must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}, "
            f"not {_short(size)}"
        )
    if prep.get("resize", "squash") not in RESIZE_METHODS:
        raise UserError(f"{where}: preprocessing resize must be one of {', '.join(RESIZE_METHODS)}")
    for name, default, smallest in (("mean", (0, 0, 0), None), ("std", (255, 255, 255), 0)):
        values = prep.get(name, default)
        if (
            not isinstance(values, (list, tuple))
            or len(values) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            or (smallest is not None and min(values) <= smallest)
        ):
            rule = "three numbers above 0" if smallest is not None else "three numbers"
            raise UserError(f"{where}: preprocessing {name} must be {rule} (one per colour), not {_short(values)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
