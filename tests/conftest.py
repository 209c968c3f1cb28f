"""Images and data sets made at test time; the real photos are read in place from ../shared."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pawnet.rundir import RunDir

# The one place the tests name where the real photos are: beside the checkout, as in CI.
SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"
needs_shared_photos = pytest.mark.skipif(
    not SHARED_PHOTOS.is_dir(), reason=f"the shared photos are not at {SHARED_PHOTOS}"
)

# Run as `python -c BLOCK_TORCH ARGS...`: pawnet's command line in a process where importing
# PyTorch fails, checking at the end that nothing imported it.
BLOCK_TORCH = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("PyTorch is blocked in this process")
sys.meta_path.insert(0, Block())
from pawnet.cli import main
rc = main(sys.argv[1:])
assert "torch" not in sys.modules
raise SystemExit(rc)
"""


def pytest_configure(config):
    # The tests, and the commands they start, decode into a cache of their own, never the user's.
    os.environ["PAWNET_CACHE"] = tempfile.mkdtemp(prefix="pawnet-test-cache-")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.pop("PAWNET_CACHE", ""), ignore_errors=True)


def pattern(kind: str, size: int = 48, seed: int = 0) -> np.ndarray:
    """A noisy image a small CNN learns to tell apart in seconds: horizontal or vertical
    stripes, or a bright disc, with random colours and phase."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    period = rng.uniform(6, 10)
    phase = rng.uniform(0, period)
    if kind == "horizontal":
        mask = ((yy + phase) % period) < period / 2
    elif kind == "vertical":
        mask = ((xx + phase) % period) < period / 2
    else:
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (size * 0.25) ** 2
    fg, bg = rng.uniform(150, 255, 3), rng.uniform(0, 100, 3)
    img = np.where(mask[..., None], fg, bg) + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_dataset(
    root: Path, classes=("horizontal", "vertical"), n: int = 24, layout: str = "folders", size: int = 48
) -> Path:
    """A labelled data set on disk in one of the three layouts pawnet reads."""
    for c_i, cls in enumerate(classes):
        for i in range(n):
            img = Image.fromarray(pattern(cls, size, seed=1000 * c_i + i))
            if layout == "folders":
                path = root / cls / f"{i}.png"
            elif layout == "tutorial":
                split = "test_set" if i % 4 == 0 else "training_set"
                path = root / split / cls / f"{i}.png"
            elif layout == "flat":
                path = root / f"{cls}.{i}.png"
            else:
                raise ValueError(layout)
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path)
    return root


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height pixels; Pillow reads the size without decoding."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    ihdr = raw[12:29]  # type + data
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(raw)


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A seed network trained briefly on stripes, shared by the tests that only read a model."""
    import pawnet

    root = tmp_path_factory.mktemp("model")
    data = make_dataset(root / "data", layout="tutorial", n=32)
    pawnet.train(data, epochs=3, img_size=32, out=root / "run", log=lambda *_: None)
    return root / "run"


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """`python -m pawnet ARGS` as a user would run it, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "pawnet", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def read_json(text: str):
    return json.loads(text)


SIZE, PATCH = 64, 16


def patch_image(colour: str, seed: int):
    """Grey noise with one coloured square somewhere: the square's colour is the class."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 180, (SIZE, SIZE, 1)).repeat(3, 2).astype(np.uint8)
    y, x = rng.integers(0, SIZE - PATCH, 2)
    img[y : y + PATCH, x : x + PATCH] = (230, 20, 20) if colour == "red" else (20, 20, 230)
    return img, (y, x)


@pytest.fixture(scope="session")
def patch_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("patches")
    for colour in ("red", "blue"):
        (root / "data" / colour).mkdir(parents=True)
        for i in range(100):
            Image.fromarray(patch_image(colour, 10_000 * (colour == "red") + i)[0]).save(
                root / "data" / colour / f"{i}.png"
            )
    import pawnet

    return pawnet.train(root / "data", epochs=8, out=root / "run", log=lambda *_: None)


# A short run on a small tutorial-layout data set, shared by the resume, device and torchrun tests.
TRAIN = ["--epochs", "4", "--img-size", "32", "--batch-size", "16"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("runs") / "data", layout="tutorial", n=40, size=32)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run, to compare interrupted and distributed runs with."""
    out = tmp_path_factory.mktemp("reference") / "run"
    r = run_cli("train", data, *TRAIN, "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def final_weights(run: Path) -> dict:
    return torch.load(RunDir(run).checkpoint, weights_only=True)["model"]


@pytest.fixture
def unreadable(monkeypatch):
    """`unreadable(path)` makes opening `path` in this process fail as a file of mode 000 fails for
    a user who is not root (the tests run as root, who may read it): PermissionError."""
    import builtins
    import io

    denied: set[str] = set()
    real_open = io.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) in denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(builtins, "open", guarded_open)

    def deny(path: Path) -> Path:
        path.chmod(0)
        denied.add(os.path.abspath(path))
        return path

    return deny


NOT_PETS = SHARED_PHOTOS.parent / "not-pets"
# Photos of not-pets/ that show no cat or dog anywhere, as their names say.
CLEARLY_NOT_PETS = ("airliner.jpg", "banana.jpg", "cab.jpg", "volcano.jpg", "espresso_maker.jpg", "tractor.jpg")


def planted_pets(root: Path, n: int = 150, flips: int = 5, not_pets: int = 6) -> tuple[Path, dict[Path, str | None]]:
    """A copy of the first `n` training photos of each class, `flips` of each moved into the
    other class and `not_pets` photos of neither dropped into the class folders; returns the
    folder and {planted photo: its true class, or None}."""
    planted: dict[Path, str | None] = {}
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for f in sorted((SHARED_PHOTOS / "training_set" / cls).iterdir())[:n]:
            shutil.copy(f, root / cls / f.name)
    for cls, other in (("cats", "dogs"), ("dogs", "cats")):
        for f in sorted((root / cls).iterdir())[-flips:]:
            os.rename(f, root / other / f.name)
            planted[root / other / f.name] = cls
    for i, name in enumerate(CLEARLY_NOT_PETS[:not_pets]):
        target = root / ("cats", "dogs")[i % 2] / name
        shutil.copy(NOT_PETS / name, target)
        planted[target] = None
    return root, planted
