"""Where a run's numbers go: one JSON line per record (for scripts) and TensorBoard scalars (for people).

Both sinks get the same records, so the JSONL file and the TensorBoard curves cannot disagree. Records are
appended as whole lines. Checkpoints come only every so often, so after a crash (``kill -9``, OOM killer,
pre-emption) the file holds records of steps past the newest checkpoint, which the resumed run repeats and logs
again, and a write cut short by a full disk or power loss can leave a torn last line. On resume, `rewind_jsonl`
removes both (atomically), so the file of a run that crashed and resumed reads like that of a run that never
stopped; TensorBoard is opened with ``purge_step`` to the same effect on its curves (``<run>/tensorboard``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class MetricsLog:
    """Appends records to a JSONL file and, optionally, to TensorBoard.

    Args:
        jsonl: the metrics file, appended to.
        tensorboard_dir: event-file folder, or None for no TensorBoard output.
        purge_step: on resume, the step the run continues from (TensorBoard drops later points written before).
    """

    def __init__(self, jsonl: Path, tensorboard_dir: Path | None = None, purge_step: int | None = None) -> None:
        self.jsonl = Path(jsonl)
        self._writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when asked for

            self._writer = SummaryWriter(str(tensorboard_dir), purge_step=purge_step)

    def write(self, step: int, record: Mapping[str, Any]) -> None:
        """One record at `step`: a JSON line, and a TensorBoard scalar for each finite number in it.

        Keys name the curve (``loss``, ``bbox/AP``); ``step`` and ``epoch`` are coordinates, not curves.
        """
        line = json.dumps({"step": step, **record})
        with self.jsonl.open("a") as f:
            f.write(line + "\n")
        if self._writer is None:
            return
        for key, value in record.items():
            if key in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                tag = key if "/" in key else f"train/{key}"
                self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file; torn lines (a run killed while writing them) are skipped with a warning."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s:%d: skipping a torn line (a run was killed while writing it)", path, number)
    return records


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
