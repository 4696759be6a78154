"""Keep freed memory in the process on Linux/glibc, so CPU training does not pay the kernel for every activation.

glibc's ``malloc`` serves large blocks (above ``M_MMAP_THRESHOLD``, at most 32 MiB by its dynamic rule) with fresh
``mmap`` calls and returns them with ``munmap`` when freed, and trims the heap top back to the kernel. A training
step allocates and frees the same activation tensors every step, and at the demo's size the stem activations
(e.g. 8 x 64 x 128 x 128 floats = 32 MiB) sit right at that threshold, so every step maps, zero-fills and unmaps
them again. Measured on the 2-core demo run: 14 s of 49 s were kernel time (5.7 M minor page faults in 50 steps);
with the settings below, 1.4 s and 0.3 M faults, and 1.3x the images per second. Peak memory is unchanged (freed
blocks are reused, not returned); the process keeps its high-water mark until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # <malloc.h>


_MMAP_THRESHOLD, _TRIM_THRESHOLD, _TOP_PAD = 1 << 30, 1 << 30, 1 << 28


def malloc_env() -> dict[str, str]:
    """The environment variables that give a child process `keep_freed_memory`'s default settings (glibc reads
    them at start-up; for processes that are not Python, or not ours)."""
    return {
        "MALLOC_MMAP_THRESHOLD_": str(_MMAP_THRESHOLD),
        "MALLOC_TRIM_THRESHOLD_": str(_TRIM_THRESHOLD),
        "MALLOC_TOP_PAD_": str(_TOP_PAD),
    }


def keep_freed_memory(
    mmap_threshold: int = _MMAP_THRESHOLD, trim_threshold: int = _TRIM_THRESHOLD, top_pad: int = _TOP_PAD
) -> bool:
    """Tell glibc to serve blocks below `mmap_threshold` from the heap and not to trim it; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    ok = all(
        mallopt(option, value) == 1
        for option, value in (
            (_M_MMAP_THRESHOLD, mmap_threshold),
            (_M_TRIM_THRESHOLD, trim_threshold),
            (_M_TOP_PAD, top_pad),
        )
    )
    logger.debug("glibc mallopt (mmap/trim thresholds, top pad): %s", "set" if ok else "refused")
    return ok
