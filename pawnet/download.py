"""`pawnet data download`: fetch an archive of class folders, resumably, and lay it out for training.

The transfer resumes where it stopped (HTTP Range, only while the server says the file is the
same one) and keeps its partial file on any failure. The archive is checked (sha256), extracted
with every entry kept inside the destination and its size bounded, the photos are laid out in
the tutorial's training_set/ and test_set/ (the archive's own split where it has one), and
unreadable images are moved to the quarantine `pawnet data restore` reads (listed, never deleted).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from .audit import quarantine, quarantine_folder
from .data import TEST_DIR, TRAIN_DIR, has_tutorial_layout
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
# Photos barely compress, so an archive that would expand to more than this many times its size
# (plus a little, for tiny archives) is refused as a decompression bomb before anything is written.
MAX_EXPANSION, EXPANSION_ALLOWANCE = 100, 16 << 20


def fetch(url: str, target: Path, sha256: str | None = None, log=print) -> Path:
    """Download `url` to `target`, resuming `target.part` if an earlier try of the same file left one."""
    partial = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not _transfer(url, partial, log):
            _transfer(url, partial, log)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as e:
        reason = (
            "the connection closed early"
            if isinstance(e, http.client.HTTPException)
            else getattr(e, "reason", None) or e
        )
        raise DownloadError(
            f"{url}: {reason} (the partial download is kept in {partial}; run the command again to resume)"
        ) from None
    _about(partial).unlink(missing_ok=True)
    digest = _sha256(partial)
    if sha256 and digest != sha256.lower():
        bad = partial.with_name(target.name + ".bad")
        partial.replace(bad)
        raise DownloadError(f"{url}: checksum mismatch (expected {sha256}, got {digest}); the file is kept as {bad}")
    partial.replace(target)
    target.with_name(target.name + ".sha256").write_text(f"{digest}  {target.name}\n")
    log(f"downloaded {target} ({target.stat().st_size:,} bytes, sha256 {digest})")
    return target


def _transfer(url: str, partial: Path, log) -> bool:
    """One request, appended to `partial` or written afresh; False when `partial` turned out to
    be of another file (or another version of this one) and was removed.

    A partial file is resumed only when the server agrees it is the same file: `If-Range` carries
    the ETag (or Last-Modified) it had when the partial file was begun, and the answer's
    Content-Range must start where the partial file ends. A 416 means "nothing left" only when
    its Content-Range gives the partial file's own length.
    """
    have = partial.stat().st_size if partial.exists() else 0
    about = _about(partial)
    try:
        known = json.loads(about.read_text()) if have and about.exists() else {}
    except (OSError, ValueError):
        known = {}
    if known.get("url", url) != url:
        return _discard(partial, "it is of another URL", log)
    headers = {"Range": f"bytes={have}-"} if have else {}
    if have and _if_range(known):
        headers["If-Range"] = _if_range(known)
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            if _content_range(e.headers.get("Content-Range"))[1] == have:
                return True
            return _discard(partial, "the server's file is shorter", log)
        raise
    with response:
        start, total = _content_range(response.headers.get("Content-Range"))
        if have and response.status == 206:
            if start != have:
                return _discard(partial, f"the server answered from byte {start}", log)
            now = _versions(response.headers)
            if any(known.get(k) and now[k] and known[k] != now[k] for k in now):  # a server that ignores If-Range
                return _discard(partial, "the file changed on the server since", log)
            log(f"resuming {partial.name} at {have:,} bytes")
        else:
            have = 0  # the whole file: the server ignored Range, or the file changed since
            about.write_text(json.dumps({"url": url, **_versions(response.headers)}))
        length = response.headers.get("Content-Length")
        if total is None and length is not None:
            total = int(length) + have
        # read1 hands over what has arrived, so a connection cut mid-chunk loses nothing written.
        read = getattr(response, "read1", response.read)
        with (
            open(partial, "ab" if have else "wb") as out,
            bar(total=total, initial=have, desc=partial.name, unit="B", unit_scale=True) as progress,
        ):
            while chunk := read(CHUNK):
                out.write(chunk)
                progress.update(len(chunk))
        if total is not None and partial.stat().st_size < total:
            raise DownloadError(
                f"{url}: the connection closed at {partial.stat().st_size:,} of {total:,} bytes "
                "(run the command again to resume)"
            )
    return True


def _about(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


def _discard(partial: Path, why: str, log) -> bool:
    log(f"starting {partial.name} again: {why}")
    partial.unlink()
    _about(partial).unlink(missing_ok=True)
    return False


def _versions(headers) -> dict:
    """What tells this version of the file from another (saved beside the partial file)."""
    return {"etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}


def _if_range(versions: dict) -> str | None:
    etag = versions.get("etag")  # a weak ETag is not allowed in If-Range
    return etag if etag and not etag.startswith("W/") else versions.get("last_modified")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, whole length) of "bytes 100-199/1000" or "bytes */1000"; None where not said."""
    try:
        span, whole = value.split()[1].split("/")
        return (None if span == "*" else int(span.split("-")[0])), (None if whole == "*" else int(whole))
    except (AttributeError, IndexError, ValueError):
        return None, None


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
                # zipfile stops each entry at its stated size, so the sum bounds what is written.
                _check_expansion(archive, sum(i.file_size for i in zf.infolist()), dest)
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                unsafe = [m.name for m in members if not _safe_member(m.name) or m.issym() or m.islnk()]
                if unsafe:
                    raise UserError(
                        f"{archive}: refused, entry {unsafe[0]!r} would be written outside {dest} or is a link"
                    )
                _check_expansion(archive, sum(m.size for m in members), dest)
                tf.extractall(dest, filter="data")
        else:
            raise UserError(f"{archive}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise UserError(f"{archive}: corrupt archive ({e})") from None
    return dest


def _check_expansion(archive: Path, size: int, dest: Path) -> None:
    packed = archive.stat().st_size
    if size > MAX_EXPANSION * packed + EXPANSION_ALLOWANCE:
        raise UserError(
            f"{archive}: refused, it would expand to {size / 1e6:,.0f} MB from {packed / 1e6:,.1f} MB, "
            f"more than {MAX_EXPANSION} times its size: photos do not compress like that (a decompression bomb?)"
        )
    free = shutil.disk_usage(archive.parent).free
    if size > free:
        raise UserError(
            f"{archive}: it expands to {size / 1e6:,.0f} MB and {dest.parent} has {free / 1e6:,.0f} MB free"
        )


def _class_root(folder: Path) -> Path:
    """The folder whose subfolders are the classes: the shallowest one in the tutorial's layout
    (training_set/ and test_set/, each of class folders) or with two or more subfolders holding
    images."""
    candidates = [folder] + sorted((d for d in folder.rglob("*") if d.is_dir()), key=lambda d: (len(d.parts), d))
    for d in candidates:
        if has_tutorial_layout(d):
            return d
        with_images = [
            s for s in d.iterdir() if s.is_dir() and any(is_image_file(f) for f in s.rglob("*") if f.is_file())
        ]
        if len(with_images) >= 2:
            return d
    raise UserError(f"{folder}: no class folders found in the archive")


def _archive_name(url: str) -> str:
    """The archive's file name in `url` ("download" where the URL names none: http://host/),
    with an extension, since the data folder beside it takes the name without one."""
    name = PurePosixPath(unquote(urlparse(url).path)).name
    name = name if name.split(".")[0] else "download"
    return name if "." in name else name + ".archive"


def download(
    dest="datasets", source: str = "petimages", sha256: str | None = None, split: float = 0.2, seed: int = 0, log=print
) -> Path:
    """Fetch, verify, extract, split and quarantine unreadable files; returns the data folder
    (DEST/NAME with training_set/ and test_set/)."""
    if not 0 < split < 1:
        raise UserError("--split must be between 0 and 1")
    known = SOURCES.get(source)
    url = known["url"] if known else source
    if urlparse(url).scheme not in ("http", "https", "file"):
        raise UserError(f"{source!r} is neither a known source ({', '.join(SOURCES)}) nor a URL")
    sha256 = sha256 or (known or {}).get("sha256")
    dest = Path(dest)
    name = _archive_name(url)
    out = dest / name.split(".")[0]
    if out.exists():
        raise UserError(f"{out}: already exists; remove it to lay the data out again")
    archive = fetch(url, dest / name, sha256, log)
    unpacked = extract(archive, dest / f"{out.name}.extracted")
    classes_root = _class_root(unpacked)
    if has_tutorial_layout(classes_root):
        log(f"{archive.name} has its own {TRAIN_DIR}/ and {TEST_DIR}/: kept as they are (--split is not used)")
        sets = [(classes_root / TRAIN_DIR, TRAIN_DIR), (classes_root / TEST_DIR, TEST_DIR)]
    else:
        sets = [(classes_root, None)]

    rng = random.Random(seed)
    unreadable, counts = [], {}
    prep = Preprocessing(size=32)
    for folder, kept_split in sets:
        for class_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
            label = class_dir.name.lower()
            files = sorted(f for f in class_dir.rglob("*") if f.is_file())
            good, bad = _readable(files, f"checking {label}", prep)
            if kept_split:
                parts = [kept_split] * len(good)
            else:
                rng.shuffle(good)
                n_test = round(len(good) * split)
                parts = [TEST_DIR] * n_test + [TRAIN_DIR] * (len(good) - n_test)
            # Paths below the class folder are kept: indoor/1.jpg and outdoor/1.jpg are two photos.
            for f, part in zip(good, parts):
                _place(f, out / part / label / f.relative_to(class_dir))
            for f, why in bad:
                unreadable.append((_place(f, out / (kept_split or TRAIN_DIR) / label / f.relative_to(class_dir)), why))
            tally = counts.setdefault(label, {TRAIN_DIR: 0, TEST_DIR: 0})
            for part in parts:
                tally[part] += 1
    # Laid out first and then moved aside like any --fix, so that one manifest format, one
    # journal and `pawnet data restore` serve both.
    moved = quarantine(out, unreadable)
    if moved:
        log(f"{len(moved)} unreadable files moved to {quarantine_folder(out)} (listed in its manifest.json)")
    shutil.rmtree(unpacked, ignore_errors=True)
    log(f"{out}: " + "; ".join(f"{c} {n[TRAIN_DIR]} training + {n[TEST_DIR]} test" for c, n in counts.items()))
    return out


def _readable(files: list[Path], desc: str, prep: Preprocessing) -> tuple[list[Path], list[tuple[Path, str]]]:
    """`files` split into those that decode and (file, reason) for those that do not."""
    good, bad = [], []
    for f in bar(files, desc=desc, unit="img"):
        try:
            load_pixels(f, prep)
            good.append(f)
        except ImageError as e:
            bad.append((f, str(e)))
    return good, bad


def _place(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dst)
    return dst
