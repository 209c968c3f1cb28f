"""`pawnet data check`: what is wrong with a data set before a model learns it.

Every image is opened and decoded in full; its format is compared with its extension, its mode
and size noted, its bytes hashed (exact duplicates) and its look hashed (near duplicates: a
perceptual hash, `imagehash.phash`, of the image and of its mirror image). Duplicates are sorted
by where they sit: within a class, across classes (conflicting labels), or across the training
and test sets (leakage, which inflates every accuracy measured on that test set).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import write_text
from .cache import cache_dir, cpu_count
from .data import TEST_DIR, TRAIN_DIR, has_tutorial_layout, read_folder
from .errors import UserError
from .images import MAX_PIXELS
from .progress import bar

# Perceptual hashes (64 bits) this many bits apart or fewer are near duplicates. Measured on the
# shared photos: a resized, re-encoded copy is 0-2 bits from its original; distinct photos are
# more than 10 apart, so 6 leaves room on both sides.
NEAR_DUPLICATE_BITS = 6
TINY, HUGE = 32, 50_000_000
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".gif": "GIF", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
AUDIT_VERSION = 1


def _phash(img: Image.Image) -> tuple[int, int]:
    import imagehash

    small = img.convert("L").resize((64, 64), Image.LANCZOS)
    h = imagehash.phash(small)
    m = imagehash.phash(small.transpose(Image.FLIP_LEFT_RIGHT))
    return int(str(h), 16), int(str(m), 16)


def inspect_file(path: Path) -> dict:
    """Everything the check needs to know about one file."""
    raw = path.read_bytes()
    info = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            info.update(format=img.format, mode=img.mode, width=img.size[0], height=img.size[1])
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise ValueError("over the decompression-bomb limit")
            if img.format == "JPEG":
                img.draft("RGB", (256, 256))  # every byte is still decoded, at a fraction of the cost
            img.load()
            info["phash"], info["phash_mirror"] = _phash(img)
    except Exception as e:  # any decoder failure is a finding about the file, not a crash
        info["error"] = (str(e).splitlines() or [type(e).__name__])[0][:200]
    return info


def _files(root: Path):
    """(path, split, class) for every image, in the layouts `pawnet train` reads."""
    splits = [(root / TRAIN_DIR, TRAIN_DIR), (root / TEST_DIR, TEST_DIR)] if has_tutorial_layout(root) else [(root, "data")]
    out = []
    for folder, split in splits:
        found = read_folder(folder)
        out += [(f, split, found.classes[y]) for f, y in zip(found.files, found.labels)]
        out += [(f, split, None) for f in found.unlabelled]
    return out


class _Memo:
    """Per-file results kept between runs, keyed by path, size and modification time."""

    def __init__(self, root: Path):
        key = hashlib.sha256(f"{AUDIT_VERSION}{root.resolve()}".encode()).hexdigest()[:24]
        self.path = cache_dir() / f"audit-{key}.json"
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def get(self, f: Path):
        st = f.stat()
        e = self.entries.get(str(f))
        return e["info"] if e and e["stamp"] == [st.st_size, st.st_mtime_ns] else None

    def put(self, f: Path, info: dict):
        st = f.stat()
        self.entries[str(f)] = {"stamp": [st.st_size, st.st_mtime_ns], "info": info}

    def save(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, json.dumps(self.entries))
        except OSError:
            pass


def _where(a: dict, b: dict) -> str:
    if a["split"] != b["split"]:
        return "across train/test"
    if a["class"] != b["class"]:
        return "across classes"
    return "within a class"


def check(data, use_cache: bool = True, near_bits: int = NEAR_DUPLICATE_BITS) -> dict:
    """Audit a data set; returns the summary and the full lists (what `--json` prints)."""
    root = Path(data)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    start = time.perf_counter()
    entries = [{"path": str(f), "split": s, "class": c} for f, s, c in _files(root)]
    memo = _Memo(root) if use_cache else None
    todo = []
    for e in entries:
        cached = memo.get(Path(e["path"])) if memo else None
        if cached:
            e.update(cached)
        else:
            todo.append(e)
    with ThreadPoolExecutor(cpu_count()) as pool:
        for e, info in zip(todo, bar(pool.map(lambda e: inspect_file(Path(e["path"])), todo), total=len(todo), desc="checking")):
            e.update(info)
            if memo:
                memo.put(Path(e["path"]), info)
    if memo:
        memo.save()
    seconds = time.perf_counter() - start

    readable = [e for e in entries if "error" not in e]
    findings = {
        "unreadable": [{"path": e["path"], "why": e["error"]} for e in entries if "error" in e],
        "unlabelled": [e["path"] for e in entries if e["class"] is None],
        "extension_mismatch": [
            {"path": e["path"], "format": e["format"]}
            for e in readable
            if FORMATS.get(Path(e["path"]).suffix.lower()) not in (None, e["format"])
        ],
        "modes": dict(Counter(e["mode"] for e in readable)),
        "not_rgb": [{"path": e["path"], "mode": e["mode"]} for e in readable if e["mode"] != "RGB"],
        "tiny": [e["path"] for e in readable if min(e["width"], e["height"]) < TINY],
        "huge": [e["path"] for e in readable if e["width"] * e["height"] > HUGE],
    }

    by_hash = defaultdict(list)
    for e in entries:
        by_hash[e["sha256"]].append(e)
    exact = []
    for group in by_hash.values():
        if len(group) > 1:
            kinds = sorted({_where(group[0], other) for other in group[1:]})
            exact.append({"files": [g["path"] for g in group], "where": kinds})
    findings["exact_duplicates"] = exact
    findings["near_duplicates"] = _near_duplicates(readable, near_bits)

    counts = defaultdict(Counter)
    for e in entries:
        if e["class"] is not None:
            counts[e["split"]][e["class"]] += 1
    total = {split: dict(sorted(c.items())) for split, c in counts.items()}
    per_class = Counter()
    for c in counts.values():
        per_class.update(c)
    balance = round(max(per_class.values()) / min(per_class.values()), 2) if per_class else None
    leaks = [d for d in exact if "across train/test" in d["where"]] + [d for d in findings["near_duplicates"] if d["where"] == "across train/test"]
    return {
        "data": str(root),
        "n_images": len(entries),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(entries) / seconds, 1) if seconds else None,
        "from_cache": len(entries) - len(todo),
        "classes": total,
        "class_balance": balance,  # largest class / smallest; training weighs classes above 1.5
        "near_duplicate_bits": near_bits,
        "summary": {
            "unreadable": len(findings["unreadable"]),
            "extension_mismatch": len(findings["extension_mismatch"]),
            "not_rgb": len(findings["not_rgb"]),
            "tiny": len(findings["tiny"]),
            "huge": len(findings["huge"]),
            "exact_duplicate_groups": len(exact),
            "near_duplicate_pairs": len(findings["near_duplicates"]),
            "conflicting_labels": sum("across classes" in d["where"] for d in exact)
            + sum(d["where"] == "across classes" for d in findings["near_duplicates"]),
            "train_test_leaks": len(leaks),
        },
        "findings": findings,
    }


def _near_duplicates(entries: list[dict], bits: int) -> list[dict]:
    """Pairs whose perceptual hashes (or one's and the other's mirror image's) differ in at most
    `bits` bits, leaving out byte-identical pairs, which are exact duplicates already."""
    if len(entries) < 2:
        return []
    h = np.array([e["phash"] for e in entries], dtype=np.uint64)
    m = np.array([e["phash_mirror"] for e in entries], dtype=np.uint64)
    pairs = []
    for start in range(0, len(h), 512):  # blocks keep memory at 512 x N
        block = slice(start, start + 512)
        for kind, other in (("similar", h), ("mirror image", m)):
            dist = np.bitwise_count(h[block, None] ^ other[None, :])
            for row, j in zip(*np.nonzero(dist <= bits)):
                a, b = entries[start + row], entries[j]
                if start + row < j and a["sha256"] != b["sha256"]:
                    pairs.append({"files": [a["path"], b["path"]], "kind": kind, "bits": int(dist[row, j]), "where": _where(a, b)})
    unique = {}
    for p in pairs:  # a pair found both as similar and as mirror image is reported once, as similar
        unique.setdefault(tuple(sorted(p["files"])), p)
    return list(unique.values())


def train_test_leaks(train_files, val_files) -> list[list[str]]:
    """Validation files whose bytes also appear in the training set: [validation, training] pairs."""

    def digest(f):
        return hashlib.sha256(Path(f).read_bytes()).hexdigest()

    with ThreadPoolExecutor(cpu_count()) as pool:
        train = dict(zip(pool.map(digest, train_files), map(str, train_files)))
        return [[str(v), train[d]] for v, d in zip(val_files, pool.map(digest, val_files)) if d in train]


def quarantine_folder(root: Path) -> Path:
    return root.parent / f"{root.name}.quarantine"


def fix(report: dict) -> list[dict]:
    """Move unreadable files and redundant exact copies aside, with a manifest `restore` undoes.

    Of each group of identical files one stays: a test-set copy when there is one (the test set
    stays as it was, training loses the leak); groups whose copies carry different labels leave
    entirely, since no one knows which label is right.
    """
    root = Path(report["data"])
    moves = [(u["path"], "unreadable: " + u["why"]) for u in report["findings"]["unreadable"]]
    for group in report["findings"]["exact_duplicates"]:
        files = sorted(group["files"], key=lambda p: (f"/{TEST_DIR}/" not in p, p))
        redundant = files if "across classes" in group["where"] else files[1:]
        moves += [(f, "conflicting labels" if "across classes" in group["where"] else f"copy of {files[0]}") for f in redundant]
    qroot = quarantine_folder(root)
    manifest_path = qroot / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else []
    done = []
    for path, why in dict(moves).items():
        src = Path(path)
        if not src.exists():
            continue
        dst = qroot / src.resolve().relative_to(root.resolve())
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), dst)
        done.append({"from": str(src), "to": str(dst), "why": why})
    if done:
        manifest += done
        write_text(manifest_path, json.dumps(manifest, indent=2))
    return done


def restore(data) -> list[dict]:
    """Put back every file `fix` moved aside for DATA."""
    root = Path(data)
    manifest_path = quarantine_folder(root) / "manifest.json"
    if not manifest_path.exists():
        raise UserError(f"{root}: nothing to restore (no {manifest_path})")
    manifest = json.loads(manifest_path.read_text())
    restored = []
    for entry in manifest:
        src, dst = Path(entry["to"]), Path(entry["from"])
        if src.exists() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), dst)
            restored.append(entry)
    left = [e for e in manifest if e not in restored]
    if left:
        manifest_path.write_text(json.dumps(left, indent=2))
    else:
        manifest_path.unlink()
    return restored
