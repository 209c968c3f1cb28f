"""How the process's CPU memory is allocated: freed blocks kept for reuse (glibc's `mallopt`)."""

from __future__ import annotations

import ctypes
import os
import sys


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Have glibc's malloc keep freed blocks of up to `limit` bytes for reuse rather than return
    them to the kernel; True where it took effect (Linux with glibc).

    PyTorch on a CPU allocates each activation anew. By default glibc maps every block over 32 MB
    fresh from the kernel and unmaps it when freed, so every batch pays again for the kernel
    zeroing its pages (docs/training.md has the figures). The cost: a process keeps the memory of
    its largest batch until it exits. PAWNET_KEEP_FREED_MEMORY=0 leaves glibc's defaults.
    """
    if not sys.platform.startswith("linux") or os.environ.get("PAWNET_KEEP_FREED_MEMORY") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # libc's, already loaded: no library search at start-up
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, limit))
