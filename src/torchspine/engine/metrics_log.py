"""Keeping a run's ``metrics.jsonl`` consistent with its checkpoints across crashes and resumes.

The hooks append one JSON record per line (``{"step": ..., ...}``) as training goes, while checkpoints are written
only every so often. After a crash (``kill -9``, OOM killer, pre-emption) the file therefore holds records of steps
past the newest checkpoint, which the resumed run repeats and logs again; appending to it would leave every such
step twice, with two different ``images_per_s`` and, for any reader that plots or sums the file, two points per
step. A write cut short by a full disk or a power loss can also leave a last line without its end, which would
swallow the first record appended after it. `rewind_jsonl` is called once when a run resumes and removes both, so
that the file of a run that crashed and resumed reads like the file of a run that never stopped.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

__all__ = ["rewind_jsonl"]

logger = logging.getLogger(__name__)


def rewind_jsonl(path: str | os.PathLike, step: int) -> int:
    """Drop the records of steps after `step`, and any torn or unparseable line, from a JSON-lines metrics file.

    Records without a ``step`` are kept. The file is replaced atomically (temporary file, ``fsync``, rename), so a
    crash during the rewind leaves the old or the new file, never a shortened one. A missing file is left missing.

    Args:
        path: the metrics file.
        step: the step the run resumes from; records of this step and earlier were logged before its checkpoint
            was written, so they stay.

    Returns:
        The number of lines removed.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    kept: list[bytes] = []
    later = unreadable = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # a torn last line (UnicodeDecodeError and JSONDecodeError both derive from ValueError)
            unreadable += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            later += 1
            continue
        kept.append(line)
    # A record that parses but lost its newline is complete; rewriting adds the newline the next append needs.
    if not later and not unreadable and (not data or data.endswith(b"\n")):
        return 0
    tmp = path.with_name(f".{path.name}.tmp")  # one writer per run folder (the main process), so a fixed name
    with open(tmp, "wb") as f:
        f.write(b"".join(line + b"\n" for line in kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    logger.info(
        "%s: rewound to step %d (removed %d records of later steps and %d unreadable lines)",
        path,
        step,
        later,
        unreadable,
    )
    return later + unreadable
