"""Files written whole or not at all: a killed process never leaves half a config, cache or report."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

FULL = 64 << 20  # bytes free under which a failed write is put down to a full disk


@contextmanager
def replacing(path: Path, durable: bool = False):
    """Yield a temporary path beside `path`; once the block has written it, one rename puts it in
    place. If the block fails, the temporary file is removed and `path` is left as it was.

    `durable` also flushes the file, then the folder's new entry, to disk (fsync), so that even a
    power cut leaves the old file or the new one: for checkpoints and weights.

    The file gets the mode any new file gets (0666 less the umask): writers that make their own
    temporary files (safetensors does) create them readable by their owner only.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    except Exception as e:
        # Writers in C (PyTorch's zip writer, safetensors) report a full disk in words of their own.
        if _disk_full(e, path.parent):
            raise UserError(f"{path}: not written, the disk is full (the file there before, if any, is kept)") from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _disk_full(error: Exception, folder: Path) -> bool:
    if getattr(error, "errno", None) == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < FULL
    except OSError:
        return False


def _umask() -> int:
    try:  # Linux says it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def remove_leftovers(folder: Path, name: str = "*") -> None:
    """Delete the temporary files that killed processes left of `name` in `folder`; those of
    processes still running are left to them."""
    for tmp in Path(folder).glob(f".{name}.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        pass
    return True


def cannot_make(folder: Path, e: OSError) -> str:
    """Why `folder` could not be made or written into, in a few words: a file in its way, else
    the system's reason."""
    blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    return f"{blocker} is a file" if blocker else (e.strerror or type(e).__name__)


def make_parent(path) -> Path:
    """Make the folder an output file goes into (with its parents) and check that a file can be
    written there, before the work that fills it starts: a folder that cannot be made or written
    is a UserError then, not a crash at the end."""
    if str(path).endswith(("/", os.sep)):
        raise UserError(f"{path}: names a folder; name the file to write")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; name the file to write")
    if path.exists() and not path.is_file():
        raise UserError(f"{path}: not a regular file; name the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path.parent}: cannot make the folder ({cannot_make(path.parent, e)})") from None
    probe = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # the name `replacing` writes
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"{path.parent}: cannot write there ({e.strerror or type(e).__name__})") from None
    return path
