"""Progress for long work: a live bar on a terminal, nothing but the caller's own lines elsewhere."""

import sys

from tqdm import tqdm

_silenced = False


def silence() -> None:
    """No bars from this process (the other processes of a distributed run stay quiet)."""
    global _silenced
    _silenced = True


def interactive() -> bool:
    return sys.stderr.isatty() and not _silenced


def count(n: int, what: str) -> str:
    """`n` things in words: "1 unreadable file", "2 unreadable files"."""
    return f"{n} {what}" + ("" if n == 1 else "s")


def bar(iterable=None, *, total=None, desc="", unit="img", leave=True, **options):
    """A tqdm bar on stderr when it is a terminal; a silent pass-through when it is not,
    so that logs and pipes get the plain per-epoch lines the caller prints instead."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        disable=not interactive(),
        dynamic_ncols=True,
        file=sys.stderr,
        **options,
    )
