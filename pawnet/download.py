"""`pawnet data download`: fetch an archive of class folders, resumably, and lay it out for training.

The transfer resumes where it stopped (HTTP Range) and keeps its partial file on any failure.
The archive is checked (sha256), extracted with every entry kept inside the destination,
unreadable images are moved to a quarantine folder (listed, never deleted), and the photos are
split into the tutorial's training_set/ and test_set/.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from .errors import DownloadError, UserError
from .images import ImageError, Preprocessing, is_image_file, load_pixels
from .progress import bar

# Microsoft's release of the Kaggle Dogs vs. Cats photos (PetImages/Cat, PetImages/Dog; about 800 MB).
# No checksum is published for it; the one computed on download is printed and saved beside it.
SOURCES = {
    "petimages": {
        "url": "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip",
        "sha256": None,
    },
}
CHUNK = 1 << 20


def fetch(url: str, target: Path, sha256: str | None = None, log=print) -> Path:
    """Download `url` to `target`, resuming `target.part` if an earlier try left one."""
    partial = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if have and response.status != 206:  # the server ignored Range: start again
                have = 0
            total = response.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            if have:
                log(f"resuming {target.name} at {have:,} bytes")
            with open(partial, "ab" if have else "wb") as out, bar(total=total, initial=have, desc=target.name, unit="B", unit_scale=True) as progress:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    progress.update(len(chunk))
            if total is not None and partial.stat().st_size < total:
                raise DownloadError(f"{url}: the connection closed at {partial.stat().st_size:,} of {total:,} bytes")
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the partial file is whole
            pass
        else:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"{url}: {reason} (the partial download is kept in {partial}; run the command again to resume)") from None
    digest = _sha256(partial)
    if sha256 and digest != sha256.lower():
        bad = partial.with_name(target.name + ".bad")
        partial.replace(bad)
        raise DownloadError(f"{url}: checksum mismatch (expected {sha256}, got {digest}); the file is kept as {bad}")
    partial.replace(target)
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")
    log(f"downloaded {target} ({target.stat().st_size:,} bytes, sha256 {digest})")
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _safe_member(name: str) -> bool:
    p = PurePosixPath(name.replace("\\", "/"))
    return not p.is_absolute() and ".." not in p.parts


def extract(archive: Path, dest: Path) -> Path:
    """Unpack a zip or tar archive into `dest`, refusing any entry that would land outside it."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                unsafe = [n for n in names if not _safe_member(n)]
                if unsafe:
                    raise UserError(f"{archive}: refused, entry {unsafe[0]!r} would be written outside {dest}")
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                unsafe = [m.name for m in members if not _safe_member(m.name) or m.issym() or m.islnk()]
                if unsafe:
                    raise UserError(f"{archive}: refused, entry {unsafe[0]!r} would be written outside {dest} or is a link")
                tf.extractall(dest, filter="data")
        else:
            raise UserError(f"{archive}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise UserError(f"{archive}: corrupt archive ({e})") from None
    return dest


def _class_root(folder: Path) -> Path:
    """The folder whose subfolders are the classes: the shallowest one with two or more
    subfolders holding images."""
    candidates = [folder] + sorted(d for d in folder.rglob("*") if d.is_dir())
    for d in candidates:
        with_images = [s for s in d.iterdir() if s.is_dir() and any(is_image_file(f) for f in s.rglob("*") if f.is_file())]
        if len(with_images) >= 2:
            return d
    raise UserError(f"{folder}: no class folders found in the archive")


def download(dest="datasets", source: str = "petimages", sha256: str | None = None, split: float = 0.2, seed: int = 0, log=print) -> Path:
    """Fetch, verify, extract, quarantine unreadable files and split; returns the data folder
    (DEST/NAME with training_set/ and test_set/)."""
    if not 0 < split < 1:
        raise UserError("--split must be between 0 and 1")
    known = SOURCES.get(source)
    url = known["url"] if known else source
    if urlparse(url).scheme not in ("http", "https", "file"):
        raise UserError(f"{source!r} is neither a known source ({', '.join(SOURCES)}) nor a URL")
    sha256 = sha256 or (known or {}).get("sha256")
    dest = Path(dest)
    archive = fetch(url, dest / Path(urlparse(url).path).name, sha256, log)
    name = archive.name.split(".")[0]
    unpacked = extract(archive, dest / f"{name}.extracted")
    classes_root = _class_root(unpacked)

    quarantine = dest / f"{name}.quarantine"
    out = dest / name
    if out.exists():
        raise UserError(f"{out}: already exists; remove it to lay the data out again")
    rng = random.Random(seed)
    moved, counts = [], {}
    prep = Preprocessing(size=32)
    for class_dir in sorted(d for d in classes_root.iterdir() if d.is_dir()):
        label = class_dir.name.lower()
        files = sorted(f for f in class_dir.rglob("*") if f.is_file())
        good = []
        for f in bar(files, desc=f"checking {label}", unit="img"):
            try:
                load_pixels(f, prep)
                good.append(f)
            except ImageError as e:
                target = quarantine / label / f.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(f), target)
                moved.append({"file": str(target), "from": str(f), "why": str(e)})
        rng.shuffle(good)
        n_test = round(len(good) * split)
        for i, f in enumerate(good):
            part = "test_set" if i < n_test else "training_set"
            target = out / part / label / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), target)
        counts[label] = {"training_set": len(good) - n_test, "test_set": n_test}
    if moved:
        (quarantine / "manifest.json").write_text(json.dumps(moved, indent=2))
        log(f"{len(moved)} unreadable files moved to {quarantine} (listed in its manifest.json)")
    shutil.rmtree(unpacked, ignore_errors=True)
    log(f"{out}: " + "; ".join(f"{c} {n['training_set']} training + {n['test_set']} test" for c, n in counts.items()))
    return out
