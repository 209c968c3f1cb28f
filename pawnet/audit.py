"""`pawnet data check`: what is wrong with a data set before a model learns it.

Every image is opened and decoded in full; its format is compared with its extension, its mode
and size noted, its bytes hashed (exact duplicates) and its look hashed (near duplicates: a
perceptual hash, `imagehash.phash`, of the image and of its mirror image). Duplicates are sorted
by where they sit: within a class, across classes (conflicting labels), or across the training
and test sets (leakage, which inflates every accuracy measured on that test set).
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import hashlib
import io
import json
import os
import shutil
import time
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import write_text
from .cache import cache_dir, cpu_count, stamp
from .data import MANIFEST, TEST_DIR, TRAIN_DIR, check_folder, has_tutorial_layout, quarantine_folder, read_folder
from .errors import UserError
from .images import MAX_PIXELS, reason, to_rgb
from .progress import bar

# Perceptual hashes (64 bits) this many bits apart or fewer are near duplicates. Chosen from
# distances measured on the shared photos (benchmarks/README.md): a resized, re-encoded copy
# falls well inside this threshold and distinct photos well outside it, leaving room on both sides.
NEAR_DUPLICATE_BITS = 6
TINY, HUGE = 32, 50_000_000
FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".gif": "GIF",
    ".bmp": "BMP",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
AUDIT_VERSION = 3  # raised when what a file's entry holds changes: older entries are not reused


def _phash(img: Image.Image) -> tuple[int, int]:
    import imagehash

    small = to_rgb(img).convert("L").resize((64, 64), Image.LANCZOS)  # 16-bit, alpha, LAB: as training reads them
    h = imagehash.phash(small)
    m = imagehash.phash(small.transpose(Image.FLIP_LEFT_RIGHT))
    return int(str(h), 16), int(str(m), 16)


def inspect_file(path: Path) -> dict:
    """Everything the check needs to know about one file."""
    try:
        raw = path.read_bytes()
    except OSError as e:  # a file we may not read is a finding like any unreadable one
        return {"sha256": None, "bytes": None, "error": reason(e)}
    info = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    if not raw:
        return {**info, "error": "empty file"}
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
        info["error"] = reason(e)[:200]
    return info


def labelled_files(root: Path) -> tuple[list, list[str]]:
    """(path, split, class) for every image, in the layouts `pawnet train` reads; and what was
    left out (empty class folders, pawnet's own folders, names without a label), one line each."""
    splits = (
        [(root / TRAIN_DIR, TRAIN_DIR), (root / TEST_DIR, TEST_DIR)] if has_tutorial_layout(root) else [(root, "data")]
    )
    out, warnings = [], []
    for folder, split in splits:
        found = read_folder(folder)
        out += [(f, split, found.classes[y]) for f, y in zip(found.files, found.labels)]
        out += [(f, split, None) for f in found.unlabelled]
        warnings += found.warnings()
    return out, warnings


class _Memo:
    """Per-file results kept between runs, keyed by path and stamp (`cache.stamp`)."""

    def __init__(self, root: Path):
        key = hashlib.sha256(f"{AUDIT_VERSION}{root.resolve()}".encode()).hexdigest()[:24]
        self.path = cache_dir() / f"audit-{key}.json"
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def get(self, f: Path):
        e = self.entries.get(str(f))
        return e["info"] if e and e["stamp"] == stamp(f) else None

    def put(self, f: Path, info: dict):
        if (signature := stamp(f)) is not None:  # a link to nothing is inspected again each time
            self.entries[str(f)] = {"stamp": signature, "info": info}

    def save(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, json.dumps(self.entries))
        except OSError:
            pass


def _where(group: list[dict]) -> list[str]:
    """Every way copies of one photo sit apart: a copy in the test set of a training photo is a
    leak, and under another label a conflict too; two in one class of one set are redundant."""
    kinds = []
    if len({e["split"] for e in group}) > 1:
        kinds.append("across train/test")
    if len({e["class"] for e in group}) > 1:
        kinds.append("across classes")
    if len({(e["split"], e["class"]) for e in group}) < len(group):
        kinds.append("within a class")
    return sorted(kinds)


def check(data, use_cache: bool = True, near_bits: int = NEAR_DUPLICATE_BITS) -> dict:
    """Audit a data set; returns the summary and the full lists (what `--json` prints)."""
    root = check_folder(data)
    start = time.perf_counter()
    files, warnings = labelled_files(root)
    entries = [{"path": str(f), "split": s, "class": c} for f, s, c in files]
    from_cache = _inspect(entries, _Memo(root) if use_cache else None)
    seconds = time.perf_counter() - start
    findings = _findings(entries, near_bits)
    # `where` is a list for a group of copies and a string for a near pair: `in` asks both the same.
    duplicates = findings["exact_duplicates"] + findings["near_duplicates"]
    total, balance = _class_counts(entries)
    return {
        "data": str(root),
        "n_images": len(entries),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(entries) / seconds, 1) if seconds else None,
        "from_cache": from_cache,
        "classes": total,
        "class_balance": balance,  # largest class / smallest; training weighs classes above 1.5
        "near_duplicate_bits": near_bits,
        "warnings": warnings,
        "summary": {
            "unreadable": len(findings["unreadable"]),
            "extension_mismatch": len(findings["extension_mismatch"]),
            "not_rgb": len(findings["not_rgb"]),
            "tiny": len(findings["tiny"]),
            "huge": len(findings["huge"]),
            "exact_duplicate_groups": len(findings["exact_duplicates"]),
            "near_duplicate_pairs": len(findings["near_duplicates"]),
            "conflicting_labels": sum("across classes" in d["where"] for d in duplicates),
            "train_test_leaks": sum("across train/test" in d["where"] for d in duplicates),
        },
        "findings": findings,
    }


def _inspect(entries: list[dict], memo: _Memo | None) -> int:
    """Add each file's facts (`inspect_file`) to its entry, on all cores, from the memo where it
    has them; returns how many came from the memo."""
    todo = []
    for e in entries:
        cached = memo.get(Path(e["path"])) if memo else None
        if cached:
            e.update(cached)
        else:
            todo.append(e)
    with ThreadPoolExecutor(cpu_count()) as pool:
        inspected = pool.map(lambda e: inspect_file(Path(e["path"])), todo)
        for e, info in zip(todo, bar(inspected, total=len(todo), desc="checking")):
            e.update(info)
            if memo:
                memo.put(Path(e["path"]), info)
    if memo:
        memo.save()
    return len(entries) - len(todo)


def _findings(entries: list[dict], near_bits: int) -> dict:
    readable = [e for e in entries if "error" not in e]
    by_hash = defaultdict(list)
    for e in readable:  # unreadable files (two empty ones, say) are not copies of a photo
        by_hash[e["sha256"]].append(e)
    return {
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
        "exact_duplicates": [
            {"files": [g["path"] for g in group], "where": _where(group)}
            for group in by_hash.values()
            if len(group) > 1
        ],
        "near_duplicates": _near_duplicates(readable, near_bits),
    }


def _class_counts(entries: list[dict]) -> tuple[dict, float | None]:
    """Readable images per class in each split (what training would use), and the largest class's
    count over the smallest's."""
    counts = defaultdict(Counter)
    for e in entries:
        if e["class"] is not None and "error" not in e:
            counts[e["split"]][e["class"]] += 1
    per_class = Counter()
    for c in counts.values():
        per_class.update(c)
    balance = round(max(per_class.values()) / min(per_class.values()), 2) if per_class else None
    return {split: dict(sorted(c.items())) for split, c in counts.items()}, balance


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
                    pairs.append(
                        {
                            "files": [a["path"], b["path"]],
                            "kind": kind,
                            "bits": int(dist[row, j]),
                            "where": ", ".join(_where([a, b])),
                        }
                    )
    unique = {}
    for p in pairs:  # a pair found both as similar and as mirror image is reported once, as similar
        unique.setdefault(tuple(sorted(p["files"])), p)
    return list(unique.values())


def train_test_leaks(train_files, val_files) -> list[list[str]]:
    """Validation files whose bytes also appear in the training set: [validation, training] pairs.

    Files that cannot be read, and empty ones, are no one's copies: they are skipped, not paired.
    """

    def digest(f):
        try:
            raw = Path(f).read_bytes()
        except OSError:
            return None
        return hashlib.sha256(raw).hexdigest() if raw else None

    with ThreadPoolExecutor(cpu_count()) as pool:
        train = dict(zip(pool.map(digest, train_files), map(str, train_files)))
        train.pop(None, None)
        return [[str(v), train[d]] for v, d in zip(val_files, pool.map(digest, val_files)) if d in train]


def label_record(root: Path) -> Path:
    """Where the label check of DATA (`pawnet data check DATA --labels`) keeps its findings,
    beside its cached feature vectors (the same name, .npz)."""
    key = hashlib.sha256(f"labels{Path(root).resolve()}".encode()).hexdigest()[:24]
    return cache_dir() / f"labels-{key}.json"


def label_note(data, train_files) -> str:
    """One line for training: how many training photos the last label check of DATA found
    suspect, or how to run one where none has been; empty where it found none."""
    try:
        issues = json.loads(label_record(Path(data)).read_text())["label_issues"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"note: pawnet data check {data} --labels finds the photos whose label looks wrong, before training"
    training = {os.path.realpath(f) for f in train_files}
    found = [i for i in issues if os.path.realpath(i["path"]) in training]
    if not found:
        return ""
    return (
        f"warning: {len(found)} training photos have a label that looks wrong or show none of the classes "
        f"(such as {found[0]['path']}); pawnet data check {data} --labels --report review.html shows them, "
        "--fix moves them aside"
    )


def fix(report: dict) -> list[dict]:
    """Move unreadable files and redundant exact copies aside, with a manifest `restore` undoes.

    Of each group of identical files one stays: a test-set copy when there is one (the test set
    stays as it was, training loses the leak); groups whose copies carry different labels leave
    entirely, since no one knows which label is right.
    """
    moves = [(u["path"], "unreadable: " + u["why"]) for u in report["findings"]["unreadable"]]
    for group in report["findings"]["exact_duplicates"]:
        files = sorted(group["files"], key=lambda p: (f"/{TEST_DIR}/" not in p, p))
        redundant = files if "across classes" in group["where"] else files[1:]
        moves += [
            (f, "conflicting labels" if "across classes" in group["where"] else f"copy of {files[0]}")
            for f in redundant
        ]
    return quarantine(report["data"], dict(moves).items())


def quarantine(data, moves, details: dict | None = None) -> list[dict]:
    """Move (path, why) files out of DATA into DATA.quarantine/, where `restore` finds them;
    `details` maps a path to more fields for its manifest entry (a label check's findings).

    Journalled: the manifest lists every move before the first starts and marks them done after
    the last, and a move is one rename, so a kill at any point leaves each file either where it
    was or where the manifest says. A quarantined file keeps its path under DATA, with a ~2, ~3
    suffix where an earlier one holds that name. A link is moved as a link, never what it points to.
    """
    root = Path(data)
    qroot = quarantine_folder(root)
    manifest = _read_manifest(qroot)
    taken = {_located(e, root, qroot)[1] for e in manifest}
    new = []
    for path, why in moves:
        src = Path(path)
        if not os.path.lexists(src):
            continue
        dst = _free_name(qroot / _inside(src, root), taken)
        taken.add(dst)
        new.append(
            {
                "from": os.path.relpath(os.path.abspath(src), os.path.abspath(root)),
                "to": dst.relative_to(qroot).as_posix(),
                "why": why,
                **(details or {}).get(path, {}),
                "done": False,
            }
        )
    if not new:
        return []
    _write_manifest(qroot, manifest + new)
    failed = []
    for e in new:
        try:
            _move(root / e["from"], qroot / e["to"])
            e["done"] = True
        except OSError as err:  # one file we may not move is reported; the others still go
            failed.append((root / e["from"], err))
    done = [e for e in new if e["done"]]
    _write_manifest(qroot, manifest + done)
    if failed:
        src, err = failed[0]
        raise UserError(
            f"could not move {len(failed)} of {len(new)} files to {qroot}, first {src}: {err.strerror or err}; "
            f"the other {len(done)} were moved (pawnet data restore {root} puts them back)"
        )
    return [{"from": str(root / e["from"]), "to": str(qroot / e["to"]), "why": e["why"]} for e in done]


def restore(data) -> list[dict]:
    """Put back every file moved aside for DATA (by `fix` or `download`), the latest first.

    Nothing is overwritten: a file whose original path is taken stays in the quarantine, still
    listed, and a UserError after the others are back says which. Entries whose file never left
    (a fix killed before it got there) or is back already (a restore killed midway) are dropped.
    """
    root = Path(data)
    qroot = quarantine_folder(root)
    if not (qroot / MANIFEST).exists():
        raise UserError(f"{root}: nothing to restore (no {qroot / MANIFEST})")
    manifest = _read_manifest(qroot)
    restored, taken, missing = [], [], []
    for e in reversed(manifest):
        original, kept = _located(e, root, qroot)
        if not os.path.lexists(kept):
            if not os.path.lexists(original):
                missing.append(e)
            continue
        if os.path.lexists(original):
            if not _same(original, kept):
                taken.append(e)
                continue
            os.unlink(kept)  # a copy whose source was not yet deleted when a move across disks stopped
        else:
            _move(kept, original)
        restored.append({"from": str(original), "to": str(kept), "why": e.get("why")})
    if taken:
        _write_manifest(qroot, [e for e in manifest if any(e is t for t in taken)])
    else:
        (qroot / MANIFEST).unlink()
    _remove_empty_folders(qroot)
    if taken or missing:
        raise UserError(_not_restored(len(restored), taken, missing, root, qroot))
    return restored


def _not_restored(n_restored: int, taken: list, missing: list, root: Path, qroot: Path) -> str:
    total = n_restored + len(taken) + len(missing)
    message = f"restored {n_restored} of {total} files"
    if taken:
        original, kept = _located(taken[-1], root, qroot)
        its = "its original path is" if len(taken) == 1 else "their original paths are"
        more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
        message += (
            f"; {len(taken)} not restored because {its} taken: {original}{more} "
            f"(kept in {kept}; move the file there aside and run restore again)"
        )
    if missing:
        message += (
            f"; {len(missing)} listed but no longer in {qroot}, "
            f"first {_located(missing[-1], root, qroot)[1]} (dropped from the manifest)"
        )
    return message


def _move(src: Path, dst: Path) -> None:
    """Move a file, or a link as a link; `dst` appears whole or not at all, and is never
    overwritten (callers choose a free one)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        shutil.copy2(src, tmp, follow_symlinks=False)
        os.rename(tmp, dst)
        os.unlink(src)


def _same(a: Path, b: Path) -> bool:
    if a.is_symlink() or b.is_symlink():
        return a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
    return a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)


def _inside(path: Path, root: Path) -> Path:
    """`path` relative to DATA, by its name, not by where a link in it points."""
    rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root)))
    return Path("elsewhere", path.name) if rel.parts[:1] == ("..",) else rel


def _free_name(path: Path, taken: set) -> Path:
    candidate, n = path, 1
    while candidate in taken or os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.stem}~{n}{path.suffix}")
    return candidate


def _located(entry: dict, root: Path, qroot: Path) -> tuple[Path, Path]:
    """(original path, path in the quarantine) of a manifest entry. Entries are relative to DATA
    and to the quarantine; those written before the journal (no "done") hold paths as given,
    and downloads then named the quarantined file "file"."""
    if "done" in entry:
        return root / entry["from"], qroot / entry["to"]
    return Path(entry["from"]), Path(entry.get("to") or entry["file"])


def _read_manifest(qroot: Path) -> list[dict]:
    path = qroot / MANIFEST
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text())
        readable = isinstance(entries, list) and all(
            isinstance(e, dict) and "from" in e and ("to" in e or "file" in e) for e in entries
        )
    except (OSError, ValueError):
        readable = False
    if not readable:
        raise UserError(f"{path}: not a manifest pawnet can read; nothing was moved")
    return entries


def _write_manifest(qroot: Path, entries: list[dict]) -> None:
    qroot.mkdir(parents=True, exist_ok=True)
    write_text(qroot / MANIFEST, json.dumps(entries, indent=2))


def _remove_empty_folders(qroot: Path) -> None:
    for folder, _, _ in os.walk(qroot, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(folder)
