"""A search worker that is a ``torchrun`` job: several processes (GPUs) train each trial together with DDP.

Only rank 0 talks to the trial store: it claims trials, heartbeats and reports exactly as a single-process
`torchspine.search.worker.Worker`. Before each trial it broadcasts the task (trial number, spec rows, experiment,
overrides, output folder) to the other ranks as JSON over a gloo group, and every rank calls the runner with the
same task, so the proxy trainer (``torchspine.engine.run``) trains one model with DDP over all ranks. While no trial
is waiting, rank 0 broadcasts "idle" every poll interval, so the other ranks never sit in a collective long enough
to time out; "exit" ends every rank.

Launch: ``torchrun --nproc-per-node 8 -m torchspine.cli.main search worker --storage URL --study NAME``.

Limitation: a failure on one rank only (e.g. an out-of-memory on one GPU) leaves the other ranks in a DDP
collective until its timeout; the job then dies, its trial goes stale and is retried by another worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from torchspine.specs import blocks_from_rows

logger = logging.getLogger(__name__)


def broadcast_json(message: dict[str, Any] | None, group: Any) -> dict[str, Any]:
    """Send `message` from rank 0 to every rank of `group` (others pass None); returns it on every rank.

    JSON over two tensor broadcasts (length, then bytes) rather than ``broadcast_object_list``, which pickles.
    """
    if dist.get_rank() == 0:
        payload = torch.tensor(list(json.dumps(message).encode()), dtype=torch.uint8)
        size = torch.tensor([payload.numel()], dtype=torch.int64)
    else:
        size = torch.zeros(1, dtype=torch.int64)
    dist.broadcast(size, src=0, group=group)
    if dist.get_rank() != 0:
        payload = torch.empty(int(size.item()), dtype=torch.uint8)
    dist.broadcast(payload, src=0, group=group)
    return json.loads(bytes(payload.tolist()).decode())


def lead(worker: Any, should_stop: Callable[[], bool], group: Any) -> int:
    """Rank 0: the `Worker` loop, announcing each trial to the other ranks first; returns the trials run."""
    original = worker.run_trial

    def announce_and_run(trial: Any) -> None:
        attrs = trial.user_attrs
        root = int(attrs.get("root", trial.number))
        broadcast_json(
            {
                "cmd": "run",
                "number": trial.number,
                "blocks": attrs["blocks"],
                "experiment": worker.meta.experiment,
                "overrides": list(worker.meta.overrides),
                "output_dir": str(worker.run_dir / "trials" / str(root)),
                "device": worker.settings.device,
            },
            group,
        )
        original(trial)

    worker.run_trial = announce_and_run
    try:
        return worker.run(should_stop, on_idle=lambda: broadcast_json({"cmd": "idle"}, group))
    finally:
        broadcast_json({"cmd": "exit"}, group)


def follow(runner: Callable[[Any], Any], make_task: Callable[..., Any], group: Any) -> int:
    """Ranks > 0: run every trial rank 0 announces until it says exit; returns the trials run."""
    ran = 0
    while True:
        message = broadcast_json(None, group)
        if message["cmd"] == "exit":
            return ran
        if message["cmd"] != "run":
            continue
        task = make_task(
            number=int(message["number"]),
            blocks=blocks_from_rows(message["blocks"]),
            experiment=message["experiment"],
            overrides=tuple(message["overrides"]),
            output_dir=Path(message["output_dir"]),
            device=message["device"],
        )
        try:
            runner(task)  # rank 0 records the result; a failure here shows up there as the same error
        except Exception as err:
            logger.error("rank %d: trial %d failed: %s", dist.get_rank(), task.number, err)
        ran += 1
