"""``torchspine search``: SpineNet's scale-permutation architecture search on an Optuna trial store.

* ``start``: the controller (proposes, queues, learns); ``--workers K`` also runs K local workers.
* ``worker``: claims and trains queued trials; start one per GPU, on any machine that reaches the store.
* ``status``, ``export``, ``report``: progress, the best architectures as spec files, pictures.

The trials live in an Optuna study, so ``optuna-dashboard STORAGE`` (``pip install 'torchspine[dashboard]'``)
shows the search live: the reward is the trial value, and ``arch``, ``macs``, ``params``, ``searcher`` and
``policy_version`` are user attributes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchspine.engine.signals import GracefulExit
from torchspine.errors import UsageError

logger = logging.getLogger(__name__)

DEFAULT_STUDY = "spinenet-search"
DEFAULT_UPDATE_BATCH = 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="architecture search: controller, workers, status, export, report")
    p.description = "SpineNet's scale-permutation architecture search on an Optuna trial store."
    cmds = p.add_subparsers(dest="search_command", required=True, metavar="SUBCOMMAND")

    s = cmds.add_parser("start", help="run the controller (and --workers K local workers)")
    s.add_argument("--experiment", required=True, help="proxy experiment, e.g. search_demo, search_proxy_spinenet49")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="override of the proxy experiment, e.g. --set train.max_steps=100 (recorded in the study)",
    )
    s.add_argument("--searcher", default="ppo", help="ppo | evolution | random")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="searcher option (JSON value)")
    s.add_argument(
        "--update-batch", type=int, default=None, help=f"PPO: results per update (default {DEFAULT_UPDATE_BATCH})"
    )
    s.add_argument(
        "--space",
        help="search space: paper (default), tiny, vertex_spinenet, or a JSON/YAML file of SearchSpace fields",
    )
    s.add_argument(
        "--seed-arch",
        action="append",
        default=[],
        metavar="VARIANT_OR_FILE",
        help="architecture proposed first, e.g. spinenet49 or a spec file (repeatable)",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of the searcher (default 0)")
    s.add_argument(
        "--target-macs",
        type=float,
        default=None,
        help="feed the searcher the resource-aware reward AP * (MACs / TARGET)^W (MnasNet) instead of the AP",
    )
    s.add_argument("--macs-exponent", type=float, default=-0.07, help="W of --target-macs (default -0.07)")
    s.add_argument("--max-trials", type=int, required=True, help="finished trials after which the search stops")
    s.add_argument("--output-dir", type=Path, required=True, help="run folder: checkpoint, lock, trials/")
    s.add_argument("--workers", type=int, default=0, help="local worker processes to start (default 0)")
    s.add_argument("--queue", type=int, default=None, help="WAITING+RUNNING target (default: workers + update batch)")
    _common(s, storage_required=False)
    _worker_flags(s)
    s.add_argument("--stale-after", type=float, default=600.0, help="seconds without heartbeat before a retry")
    s.add_argument(
        "--max-retries", type=int, default=2, help="retries of a trial lost to an infrastructure failure (default 2)"
    )
    s.set_defaults(run=run_start)

    w = cmds.add_parser("worker", help="claim and train queued trials (any machine)")
    _common(w)
    _worker_flags(w)
    w.add_argument("--max-trials", type=int, default=None, help="exit after this many trials")
    w.add_argument("--output-dir", type=Path, default=None, help="run folder for trials/ (default: the controller's)")
    w.add_argument("--exit-when-idle", action="store_true", help="exit when no trial is waiting")
    w.set_defaults(run=run_worker)

    st = cmds.add_parser("status", help="trials done/running/failed, best reward, throughput, ETA")
    _common(st)
    st.add_argument("--json", action="store_true", help="print the trial records as JSON")
    st.set_defaults(run=run_status)

    e = cmds.add_parser("export", help="the best architectures as spec files")
    _common(e)
    e.add_argument("--top", type=int, default=5, help="how many of the best architectures (default 5)")
    e.add_argument("--out", type=Path, required=True, help="folder for the spec files")
    e.set_defaults(run=run_export)

    r = cmds.add_parser("report", help="pictures: reward per trial, the best architecture")
    _common(r)
    r.add_argument("--out", type=Path, required=True, help="folder for the pictures, trials.csv and summary.json")
    r.set_defaults(run=run_report)


def _common(p: argparse.ArgumentParser, storage_required: bool = True) -> None:
    p.add_argument(
        "--storage",
        required=storage_required,
        help="journal:PATH or PATH (default for start: OUTPUT_DIR/journal.log), postgresql://..., sqlite:///PATH",
    )
    p.add_argument("--study", default=DEFAULT_STUDY, help=f"study name in the store (default {DEFAULT_STUDY})")


def _worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--runner", default=None, help="trial runner module:function (default: the proxy task)")
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between worker heartbeats")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between polls of the store")


# ----------------------------------------------------------------------------------------------------------- start


def run_start(args: argparse.Namespace) -> int:
    from torchspine.search import study as st

    if args.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {args.workers}")
    output_dir = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"journal:{output_dir / 'journal.log'}"
    parsed = st.parse_storage_url(url)
    inline = parsed.single_process
    if inline and args.workers != 1:
        raise st.SearchStoreError(
            st.sqlite_refusal(url, 1 + args.workers)
            if args.workers > 1
            else (
                f"storage {url!r}: with SQLite the controller runs the trials itself; pass --workers 1 (SQLite serves "
                "one process only, so no `search worker` can join)"
            )
        )
    from torchspine.search.controller import ArchCodec, Controller, ControllerLock, ControllerSettings
    from torchspine.search.searchers import Proposal, create_searcher
    from torchspine.search.space import arch_key, arch_string, spec_rows

    space = _load_space(args.space)
    options = _parse_options(args.option)
    update_batch = args.update_batch or int(options.get("update_batch", DEFAULT_UPDATE_BATCH))
    if args.searcher == "ppo":
        options.setdefault("update_batch", update_batch)
    seeds = []
    for name in args.seed_arch:
        try:
            seeds.append(space.encode(_seed_blocks(name, space)))
        except ValueError as err:
            raise UsageError(f"--seed-arch {name}: not in the search space ({err})") from None
    from torchspine.search.reward import ResourceAwareReward

    try:
        reward = None if args.target_macs is None else ResourceAwareReward(args.target_macs, args.macs_exponent)
    except ValueError as err:
        raise UsageError(f"--target-macs/--macs-exponent: {err}") from None
    meta = st.SearchMeta(
        space=space.to_dict(),
        space_fingerprint=space.fingerprint(),
        experiment=args.experiment,
        overrides=tuple(args.overrides),
        config_hash=st.proxy_config_hash(args.experiment, args.overrides),
        searcher=args.searcher,
        searcher_options={**options, "seed": args.seed, "seeds": [list(s) for s in seeds]},
        output_dir=str(output_dir),
        reward={} if reward is None else reward.to_dict(),
    )
    try:
        searcher = create_searcher(args.searcher, space, seed=args.seed, seeds=seeds, **options)
    except (TypeError, ValueError) as err:  # an unknown --option name or a bad value
        raise UsageError(f"--searcher {args.searcher} --option ...: {err}") from None
    codec = ArchCodec(decode=space.decode, key=arch_key, text=arch_string, rows=spec_rows)
    queue = args.queue or max(1, args.workers) + (update_batch if args.searcher == "ppo" else 1)
    try:
        settings = ControllerSettings(
            max_trials=args.max_trials,
            queue_depth=queue,
            max_retries=args.max_retries,
            stale_after=args.stale_after,
            poll_interval=args.poll,
        )
    except ValueError as err:
        raise UsageError(f"--max-trials/--queue/--max-retries/--stale-after/--poll: {err}") from None
    with ControllerLock(output_dir):
        storage = st.open_storage(url, processes=1)
        study = st.create_or_join_study(storage, args.study, meta)
        controller = Controller(study, searcher, codec, Proposal, output_dir, settings, reward=reward)
        controller.resume()
        logger.info("controller for study %r on %s; run folder %s", args.study, st.redact(url), output_dir)
        between_polls = None
        if inline:
            between_polls = _inline_worker(args, storage, meta, output_dir).step
        children: list[subprocess.Popen] = []
        if not inline and not args.workers:
            logger.info(
                "no local workers; on each GPU/machine run: torchspine search worker --storage %s --study %s",
                st.redact(url),
                args.study,
            )
        done = False
        try:  # spawned inside: a failure to start the second worker must still stop the first
            for i in range(0 if inline else args.workers):
                children.append(_spawn_worker(args, url, output_dir, i))
            with GracefulExit() as stop:
                done = controller.run(lambda: stop.should_stop, between_polls).done
        finally:
            _stop_children(children, graceful=done)
    return 0 if done else 130


SPACE_PRESETS = ("paper", "tiny", "vertex_spinenet")


def _load_space(name: str | None) -> Any:
    from torchspine.search.space import SearchSpace

    if name is None:
        return SearchSpace.paper()
    if name in SPACE_PRESETS:
        return getattr(SearchSpace, name)()
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"--space {name!r}: neither a preset ({', '.join(SPACE_PRESETS)}) nor a file")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: cannot parse the search space ({err})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of SearchSpace fields")
    return SearchSpace.from_dict(data)


def _parse_options(items: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--option {item!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def _seed_blocks(name: str, space: Any) -> tuple[Any, ...]:
    """Block specs of a seed architecture: a registered variant or a spec file."""
    from torchspine.registry import VARIANTS
    from torchspine.specs import load_cfg

    if name in VARIANTS:
        blocks = VARIANTS[name].cfg.blocks
    elif Path(name).is_file():
        blocks = load_cfg(name).blocks
    else:
        raise UsageError(f"--seed-arch {name!r}: neither a registered model (torchspine list) nor a spec file")
    # Model Garden's 16th SpineNet row is a level-2 output that the default models prune; a space without level-2
    # outputs cannot encode it, and dropping it changes nothing that is built.
    levels = set(space.output_levels)
    return tuple(b for b in blocks if not (b.is_output and b.level not in levels))


def _spawn_worker(args: argparse.Namespace, url: str, output_dir: Path, index: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torchspine.cli.main", "search", "worker", "--storage", url, "--study", args.study]
    cmd += ["--output-dir", str(output_dir), "--heartbeat", str(args.heartbeat), "--poll", str(args.poll)]
    device = args.device
    if device is None:
        import torch

        gpus = torch.cuda.device_count()
        device = f"cuda:{index % gpus}" if gpus > 1 else None  # one GPU each, round robin
    if device:
        cmd += ["--device", device]
    if args.runner:
        cmd += ["--runner", args.runner]
    return subprocess.Popen(cmd)


def _stop_children(children: list[subprocess.Popen], graceful: bool) -> None:
    # Finished search: workers see the study's `finished` flag and leave by themselves. Interrupted: SIGTERM lets
    # each finish its trial; a second signal (SIGINT -> KeyboardInterrupt) records the trial as an infrastructure
    # failure so a later run retries it; SIGKILL is the last resort (the trial then goes stale and is retried).
    steps = [(None, 60.0)] if graceful else []
    steps += [(signal.SIGTERM, 20.0), (signal.SIGINT, 10.0), (signal.SIGKILL, 10.0)]
    for sig, timeout in steps:
        alive = [c for c in children if c.poll() is None]
        if not alive:
            return
        for c in alive:
            if sig is not None:
                c.send_signal(sig)
        for c in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.wait(timeout=timeout)


def _inline_worker(args: argparse.Namespace, storage: Any, meta: Any, output_dir: Path) -> Any:
    from torchspine.search.worker import Worker, WorkerSettings

    settings = WorkerSettings(
        device=_device(args.device), heartbeat_interval=args.heartbeat, poll_interval=args.poll, exit_when_idle=True
    )
    return Worker(storage, args.study, meta, _runner(args.runner), output_dir, settings)


# ---------------------------------------------------------------------------------------------------------- worker


def run_worker(args: argparse.Namespace) -> int:
    import os

    from torchspine.search import study as st
    from torchspine.search.worker import Worker, WorkerSettings

    if st.parse_storage_url(args.storage).single_process:
        raise st.SearchStoreError(st.sqlite_refusal(args.storage))
    group = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a torchrun job: rank 0 talks to the store, all ranks train
        import torch.distributed as dist

        from torchspine.engine.distributed import init_distributed
        from torchspine.search import torchrun

        info = init_distributed(_device(args.device).split(":")[0])
        group = dist.new_group(backend="gloo")
        if info.rank != 0:
            from torchspine.search.proxy import TrialTask

            torchrun.follow(_runner(args.runner), TrialTask, group)
            return 0
    storage = st.open_storage(args.storage)
    _, meta = st.join_study(storage, args.study)
    local = st.proxy_config_hash(meta.experiment, meta.overrides)
    if local != meta.config_hash:
        raise st.SearchStoreError(
            f"study {args.study!r}: this machine resolves the proxy config {meta.experiment!r} {list(meta.overrides)} "
            f"differently (hash {local[:12]} vs the study's {meta.config_hash[:12]}); install the same torchspine "
            f"version as the controller ({meta.torchspine_version})"
        )
    settings = WorkerSettings(
        device=_device(args.device),
        max_trials=args.max_trials,
        heartbeat_interval=args.heartbeat,
        poll_interval=args.poll,
        exit_when_idle=args.exit_when_idle,
    )
    worker = Worker(storage, args.study, meta, _runner(args.runner), args.output_dir or meta.output_dir, settings)
    with GracefulExit() as stop:
        if group is not None:
            torchrun.lead(worker, lambda: stop.should_stop, group)
        else:
            worker.run(lambda: stop.should_stop)
    return 0


def _device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _runner(spec: str | None) -> Any:
    from torchspine.search.worker import DEFAULT_RUNNER, load_runner

    return load_runner(spec or DEFAULT_RUNNER)


# -------------------------------------------------------------------------------------------- status/export/report


def _records(args: argparse.Namespace) -> tuple[list[dict[str, Any]], Any]:
    from torchspine.search import study as st

    storage = st.open_storage(args.storage)
    study, _ = st.join_study(storage, args.study)
    return st.trial_records(study), study


def run_status(args: argparse.Namespace) -> int:
    from torchspine.search.study import MAX_TRIALS_KEY
    from torchspine.search.summary import format_summary, summarize

    records, study = _records(args)
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    summary = summarize(records, study.user_attrs.get(MAX_TRIALS_KEY))
    print(format_summary(summary, args.study, bar=sys.stdout.isatty()))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from torchspine.search.summary import top_architectures, write_specs

    records, _ = _records(args)
    best = top_architectures(records, args.top)
    if not best:
        raise UsageError(f"study {args.study!r} has no COMPLETE trial yet; nothing to export")
    for path, r in zip(write_specs(best, args.out, args.study), best, strict=True):
        print(f"{path}  reward {r['reward']:.4f}  trial {r['number']}  {r.get('arch', '')}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from torchspine.search.report import write_report

    records, _ = _records(args)
    for path in write_report(records, args.out):
        print(path)
    return 0
