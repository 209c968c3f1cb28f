"""Decode once: every file's pixels, decoded in parallel and kept as one uint8 array.

On a CPU, decoding JPEGs costs more than a small network's training step, so a run decodes each
file once and augments tensors afterwards. The array is also saved to a per-user cache folder,
keyed by each file's path, size and modification time and by the preprocessing, so the next run
on the same data starts without decoding at all.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import replacing, write_text
from .images import ImageError, Preprocessing, load_pixels
from .progress import bar

CACHE_VERSION = 1


def cache_dir() -> Path:
    """$PAWNET_CACHE, else $XDG_CACHE_HOME/pawnet, else ~/.cache/pawnet."""
    if os.environ.get("PAWNET_CACHE"):
        return Path(os.environ["PAWNET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pawnet"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class Decoded:
    """`pixels[i]` belongs to `files[ok[i]]`; `errors` maps the index of each unreadable file to why."""

    pixels: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]

    def skipped(self, files) -> dict[str, str]:
        return {str(files[i]): why for i, why in self.errors.items()}


def _key(files: list[Path], prep: Preprocessing) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, prep.to_dict()]).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _decode_one(path: Path, prep: Preprocessing):
    try:
        return load_pixels(path, prep), None
    except ImageError as e:
        return None, str(e)


def decode(files: list, prep: Preprocessing, desc: str = "decoding", workers: int | None = None) -> Decoded:
    """Decode every file (or PIL image) with all cores; Pillow releases the GIL while it decodes
    and resizes, so threads share the work without the start-up cost of processes."""
    pixels = np.empty((len(files), prep.size, prep.size, 3), dtype=np.uint8)
    ok, errors = [], {}
    with ThreadPoolExecutor(workers or cpu_count()) as pool:
        results = pool.map(lambda f: _decode_one(f, prep), files)
        for i, (arr, err) in enumerate(bar(results, total=len(files), desc=desc, leave=False)):
            if err is None:
                pixels[len(ok)] = arr
                ok.append(i)
            else:
                errors[i] = err
    return Decoded(pixels[: len(ok)], np.asarray(ok, dtype=np.int64), errors)


def cached_decode(files: list[Path], prep: Preprocessing, desc: str = "decoding", use_cache: bool = True) -> Decoded:
    """`decode`, read from or written to the disk cache; a cache that cannot be used is ignored."""
    if not use_cache:
        return decode(files, prep, desc)
    folder = cache_dir()
    key = _key(files, prep)
    arr_path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    try:
        meta = json.loads(meta_path.read_text())
        pixels = np.load(arr_path, mmap_mode="r")
        if pixels.shape[0] == len(meta["ok"]):
            errors = {int(i): why for i, why in meta["errors"].items()}
            return Decoded(pixels, np.asarray(meta["ok"], dtype=np.int64), errors)
    except (OSError, ValueError, KeyError):
        pass
    out = decode(files, prep, desc)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with replacing(arr_path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, out.pixels)
        write_text(meta_path, json.dumps({"ok": out.ok.tolist(), "errors": out.errors}))
    except OSError:
        pass  # a read-only or full cache folder only costs the next run its head start
    return out
