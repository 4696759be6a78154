"""Test helper: every ``torchrun`` worker reports the files it writes under ``TORCHSPINE_AUDIT_DIR``.

Python imports ``sitecustomize`` at start-up from the path, so putting this folder first on ``PYTHONPATH`` audits
the unmodified ``torchspine train`` command. A `sys.addaudithook` hook sees every ``open`` for writing, rename,
replace and delete made through Python (``torch.save``, ``Path.write_text``, ``os.replace``) and prints one line
``WRITE-AUDIT rank=<RANK> <event> <path>`` to stderr. Processes without ``RANK`` (the launcher itself) are not
audited. Writes from native code that bypasses Python's I/O (the safetensors export) are not seen.
"""

from __future__ import annotations

import os
import sys

_ROOT = os.environ.get("TORCHSPINE_AUDIT_DIR")
_RANK = os.environ.get("RANK")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _inside(path: object) -> bool:
    if not isinstance(path, str | bytes | os.PathLike):
        return False  # a file descriptor
    resolved = os.path.abspath(os.fsdecode(path))
    return resolved == _ROOT or resolved.startswith(_ROOT + os.sep)


def _writing(mode: object, flags: object) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _hook(event: str, args: tuple) -> None:
    writes = (event == "open" and _writing(args[1], args[2])) or event in ("os.rename", "os.remove", "os.truncate")
    if not (writes and _inside(args[0])):
        return
    path = args[0]
    sys.stderr.write(f"WRITE-AUDIT rank={_RANK} {event} {os.fsdecode(path)}\n")
    sys.stderr.flush()


if _ROOT and _RANK is not None:
    _ROOT = os.path.abspath(_ROOT)
    sys.addaudithook(_hook)
