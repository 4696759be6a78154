"""Where a run's numbers go: one JSON line per record (for scripts) and TensorBoard scalars (for people).

Both sinks get the same records, so the JSONL file and the TensorBoard curves cannot disagree. The JSONL file is
appended to with whole lines, flushed at once: a run killed mid-write leaves at most one torn line, which the
resumed run terminates (so its own records start on a fresh line) and `read_jsonl` skips. TensorBoard is written
under ``<run>/tensorboard``; a resumed run opens it with ``purge_step`` so the steps it repeats after its last
checkpoint replace the old points instead of doubling them.
"""

from __future__ import annotations

import json
import logging
import math
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
        if self.jsonl.is_file() and self.jsonl.stat().st_size > 0:
            with self.jsonl.open("rb+") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":  # a torn line from a killed run: end it so it stays one bad line
                    f.write(b"\n")
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
