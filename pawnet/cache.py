"""Decode once: every file's pixels, decoded in parallel into one uint8 array.

On a CPU, decoding JPEGs costs more than a small network's training step, so a run decodes each
file once and augments tensors afterwards. The array is written to a per-user cache folder,
keyed by each file's path and stamp (`stamp`) and by the preprocessing, so the next run on the
same data starts without decoding at all.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import remove_leftovers, replacing, write_text
from .images import ImageError, Preprocessing, load_pixels
from .progress import bar

CACHE_VERSION = 2


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


def stamp(path: Path) -> list[int] | None:
    """What changes when a file's content does, or None where it cannot be stat'ed (gone since it
    was listed, a link to nothing or to itself: reading it says why). Size and modification time
    alone do not: a tool that rewrites a photo at the same size and puts its mtime back (rsync, a
    tag editor, tar) would be served the old pixels. The status-change time moves on any rewrite
    and cannot be set back, and the inode changes when a file is replaced; both come with the same
    stat call, where hashing every file would cost a cached run most of what decoding costs."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _key(files: list[Path], prep: Preprocessing) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, prep.to_dict()]).encode())
    for f in files:
        h.update(f"{os.path.realpath(f)}\0{stamp(f)}\n".encode())  # realpath: a link loop is no error
    return h.hexdigest()[:32]


def _decode_one(path: Path, prep: Preprocessing):
    try:
        return load_pixels(path, prep), None
    except ImageError as e:
        return None, str(e)


def decoded_chunks(files: list, prep: Preprocessing, desc: str = "reading", workers: int | None = None, chunk=1024):
    """Yield (first index, results) for consecutive chunks of files (or PIL images), decoded on
    all cores, one chunk ahead of the caller: while it works on this chunk (a network predicting
    on it, or a cache file being written), Pillow decodes the next.

    Pillow releases the GIL while it decodes and resizes, so threads share the work without the
    start-up cost of processes; submitting a chunk at a time keeps memory flat for any file count.
    """
    with ThreadPoolExecutor(workers or cpu_count()) as pool, bar(total=len(files), desc=desc, leave=False) as progress:

        def submit(first: int) -> list:
            return [pool.submit(_decode_one, f, prep) for f in files[first : first + chunk]]

        def collect(futures: list) -> list:
            results = []
            for future in futures:  # a photo at a time: a chunk can be a thousand photos long
                results.append(future.result())
                progress.update()
            return results

        ahead = submit(0)
        for first in range(0, len(files), chunk):
            current, ahead = ahead, submit(first + chunk)
            yield first, collect(current)


def decode(files: list, prep: Preprocessing, desc: str = "decoding", workers: int | None = None, sink=None) -> Decoded:
    """Decode every file (or PIL image) into one uint8 array (N, size, size, 3).

    With `sink` (an open binary file) the rows are written there as they come instead of being
    kept, so a data set larger than memory can be decoded; `pixels` is then empty.
    """
    shape = (prep.size, prep.size, 3)
    pixels = np.empty((0 if sink else len(files), *shape), dtype=np.uint8)
    ok, errors = [], {}
    for first, results in decoded_chunks(files, prep, desc, workers):
        rows = []
        for i, (arr, err) in enumerate(results, start=first):
            if err is None:
                rows.append(arr)
                ok.append(i)
            else:
                errors[i] = err
        if sink is not None:
            for arr in rows:
                sink.write(arr.tobytes())
        elif rows:
            pixels[len(ok) - len(rows) : len(ok)] = rows
    return Decoded(pixels if sink else pixels[: len(ok)], np.asarray(ok, dtype=np.int64), errors)


class MappedPixels:
    """The cache file's pixels as an array-like (indexing, slicing, `len`, `shape`), read through
    a memory map.

    Pages a process has read count towards its resident memory until it lets go of them, and on
    a page fault Linux maps the neighbouring cached pages too (64 KB around it), so a random row
    can cost far more than its own bytes. The mapping therefore counts each row read as its size
    plus that much, and every `RELEASE_BYTES` hands its pages back to the page cache: resident
    memory stays bounded however much larger than RAM the data set is.
    """

    RELEASE_BYTES = 128 << 20
    FAULT_AROUND = 64 << 10

    def __init__(self, path: Path, n: int, shape: tuple[int, ...]):
        self.shape = (n, *shape)
        self.dtype = np.dtype(np.uint8)
        self._read = 0
        with open(path, "rb") as fh:
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if n else None
        self._array = np.frombuffer(self._map, np.uint8).reshape(self.shape) if n else np.empty(self.shape, np.uint8)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        out = np.array(self._array[key])
        rows = out.shape[0] if out.ndim == len(self.shape) else 1
        self._read += out.nbytes + rows * self.FAULT_AROUND
        if self._read > self.RELEASE_BYTES and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)
            self._read = 0
        return out


def cached_decode(files: list[Path], prep: Preprocessing, desc: str = "decoding", use_cache: bool = True) -> Decoded:
    """`decode`, read from or written to the disk cache; a cache that cannot be used is ignored.

    The cache holds raw rows of pixels, written as they are decoded and read back through a
    memory map (`MappedPixels`), so neither step holds the whole data set in memory.
    """
    if not use_cache:
        return decode(files, prep, desc)
    folder = cache_dir()
    key = _key(files, prep)
    rows_path, meta_path = folder / f"{key}.pixels", folder / f"{key}.json"
    shape = (prep.size, prep.size, 3)
    try:
        meta = json.loads(meta_path.read_text())
        n = len(meta["ok"])
        if rows_path.stat().st_size == n * int(np.prod(shape)):
            errors = {int(i): why for i, why in meta["errors"].items()}
            return Decoded(MappedPixels(rows_path, n, shape), np.asarray(meta["ok"], dtype=np.int64), errors)
    except (OSError, ValueError, KeyError):
        pass
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_leftovers(folder)  # all of them: once the data changes, no run asks for an old key again
        with replacing(rows_path) as tmp, open(tmp, "wb") as fh:
            out = decode(files, prep, desc, sink=fh)
        write_text(meta_path, json.dumps({"ok": out.ok.tolist(), "errors": out.errors}))
        return Decoded(MappedPixels(rows_path, len(out.ok), shape), out.ok, out.errors)
    except OSError:
        return decode(files, prep, desc)  # a read-only or full cache folder only costs speed
