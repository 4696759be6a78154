"""The search's trial store: an Optuna study used as a passive, shared ledger of architectures and rewards.

The controller is not an Optuna sampler. It enqueues the architectures its searcher proposes as WAITING trials
(their decisions, spec rows and sampling log-probabilities in the trial's user attributes), workers on any
machine claim them atomically and write the reward back, and `optuna-dashboard STORAGE` shows the search live.

Storage URLs (`open_storage`):

* ``PATH`` or ``journal:PATH``: ``JournalStorage(JournalFileBackend(PATH))``, an append-only operation log on a
  plain file with a lock file beside it. The default: safe for many processes on one machine and on NFS, no
  server needed.
* ``postgresql://user:password@host:port/db``: ``RDBStorage``; claims use ``SELECT ... FOR UPDATE``. For clusters.
* ``sqlite:///PATH``: a single process only. SQLite has no ``SELECT ... FOR UPDATE``, answers concurrent writers
  with "database is locked" and does not work over NFS (Optuna FAQ), so a second process on one file is refused.

Study user attributes (``torchspine_search``) record what the trials mean: the search space and its fingerprint,
the proxy experiment, its overrides and a hash of the resolved proxy config, the searcher and the torchspine
version. Whoever joins a study (a worker, a restarted controller, ``search status``) checks them, so trials of
two different searches can never be mixed in one study.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from torchspine import __version__
from torchspine.errors import TorchspineError

META_KEY = "torchspine_search"
META_FORMAT = 1
FINISHED_KEY = "finished"
MAX_TRIALS_KEY = "max_trials"
ACCEPTED_FORMS = (
    "PATH or journal:PATH (an Optuna journal file; the default, safe for many processes and NFS), "
    "postgresql://USER:PASSWORD@HOST:PORT/DB (clusters), sqlite:///PATH (one process only)"
)


def transient_store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of a store that is briefly unreachable (database restart, NFS hiccup): worth retrying."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import DBAPIError

    return (OSError, StorageInternalError, DBAPIError)


MAX_STORE_ERRORS = 10  # consecutive transient errors before a controller or worker gives up


class SearchStoreError(TorchspineError, ValueError):
    """A storage URL, study or trial store that cannot be used as asked; the message says what to do instead."""


@dataclass(frozen=True)
class StorageUrl:
    """A parsed storage URL.

    Attributes:
        kind: ``"journal"``, ``"postgresql"`` or ``"sqlite"``.
        target: the journal file path, or the SQLAlchemy URL.
    """

    kind: str
    target: str

    @property
    def single_process(self) -> bool:
        """Whether only one process may use the store (SQLite)."""
        return self.kind == "sqlite"


def redact(url: str) -> str:
    """`url` with the password of ``scheme://user:password@host`` replaced by ``***`` (for error messages)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def parse_storage_url(url: str) -> StorageUrl:
    """Classify a storage URL (see the module docstring). Unknown schemes raise `SearchStoreError`."""
    if not url:
        raise SearchStoreError(f"empty storage URL; expected {ACCEPTED_FORMS}")
    if url.startswith("journal:"):
        path = url[len("journal:") :]
        if path.startswith("//"):  # journal:///abs/path
            path = path[2:]
        if not path:
            raise SearchStoreError(f"storage {url!r}: journal: needs a file path, e.g. journal:search/journal.log")
        return StorageUrl("journal", path)
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if scheme is None:
        return StorageUrl("journal", url)  # a plain path
    name = scheme.group(1).lower()
    if name.startswith("postgresql+"):
        return StorageUrl("postgresql", url)  # the user chose the driver
    if name in ("postgresql", "postgres"):
        # SQLAlchemy dropped the "postgres://" alias (the usual spelling of libpq URLs), and its default driver for
        # "postgresql://" is psycopg2 up to 2.0 and psycopg 3 from 2.1: name whichever is installed.
        return StorageUrl("postgresql", f"postgresql+{_postgres_driver()}" + url[len(name) :])
    if name == "sqlite":
        return StorageUrl("sqlite", url)
    raise SearchStoreError(f"storage {redact(url)!r}: unknown scheme {name!r}; accepted forms: {ACCEPTED_FORMS}")


def _postgres_driver() -> str:
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return driver
    return "psycopg"  # not installed: open_storage says how to install it


def open_storage(url: str, *, processes: int = 1) -> BaseStorage:
    """Open the trial store at `url`.

    Args:
        url: a storage URL (see the module docstring).
        processes: how many processes will use the store at once (controller + workers); more than one is refused
            for SQLite.

    Raises:
        SearchStoreError: unknown scheme, SQLite with several processes, or a database that cannot be reached.
    """
    parsed = parse_storage_url(url)
    if parsed.single_process and processes > 1:
        raise SearchStoreError(sqlite_refusal(url, processes))
    if parsed.kind == "journal":
        path = Path(parsed.target)
        if not path.parent.exists():
            raise SearchStoreError(f"storage {url!r}: directory {path.parent} does not exist")
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        return RDBStorage(parsed.target, engine_kwargs=_engine_kwargs(parsed))
    except ModuleNotFoundError as err:
        raise SearchStoreError(
            f"storage {redact(url)!r} needs a PostgreSQL driver ({err.name!r} is missing): "
            "pip install 'torchspine[postgres]'"
        ) from None
    except Exception as err:  # SQLAlchemy's OperationalError and friends: name the URL, hide the password
        detail = redact(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        raise SearchStoreError(f"cannot open the trial store {redact(url)!r}: {detail}") from None


def sqlite_refusal(url: str, processes: int | None = None) -> str:
    """The error message for SQLite used by more than one process."""
    who = f"{processes} processes" if processes else "a second process (a worker joining)"
    return (
        f"storage {url!r}: SQLite serves one process only, but {who} would use it. SQLite cannot claim trials "
        "atomically (no SELECT ... FOR UPDATE), answers concurrent writers with 'database is locked' and breaks "
        "on NFS. Use a journal file (--storage journal:PATH, the default; fine for many processes and NFS) or "
        "PostgreSQL (--storage postgresql://...), or run `search start --workers 1` for a one-process SQLite run."
    )


def _engine_kwargs(parsed: StorageUrl) -> dict[str, Any]:
    if parsed.kind == "postgresql":
        # Fail fast on an unreachable server instead of the driver's default (often minutes); pre-ping survives a
        # server restart during a week-long search.
        return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    return {"connect_args": {"timeout": 30.0}}


# ----------------------------------------------------------------------------------------------- study metadata


@dataclass(frozen=True)
class SearchMeta:
    """What a study's trials mean; recorded when the study is created and checked on every join.

    Attributes:
        space: ``SearchSpace.to_dict()``.
        space_fingerprint: ``SearchSpace.fingerprint()``.
        experiment: the proxy experiment's registered name.
        overrides: ``--set`` overrides applied to it.
        config_hash: sha1 of the resolved proxy config (catches different torchspine code on two machines).
        searcher: the searcher's name.
        searcher_options: options given to ``create_searcher``.
        output_dir: the controller's run directory (workers put trial directories under it by default).
        reward: ``ResourceAwareReward.to_dict()`` when the searcher is fed a resource-aware reward; empty for the
            plain AP.
        torchspine_version: the version that created the study.
    """

    space: Mapping[str, Any]
    space_fingerprint: str
    experiment: str
    overrides: tuple[str, ...]
    config_hash: str
    searcher: str
    searcher_options: Mapping[str, Any]
    output_dir: str
    reward: Mapping[str, Any] = field(default_factory=dict)
    torchspine_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["overrides"] = list(self.overrides)
        data["space"] = dict(self.space)
        data["searcher_options"] = dict(self.searcher_options)
        data["reward"] = dict(self.reward)
        data["format"] = META_FORMAT
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], study: str) -> SearchMeta:
        try:
            return cls(
                space=data["space"],
                space_fingerprint=data["space_fingerprint"],
                experiment=data["experiment"],
                overrides=tuple(data["overrides"]),
                config_hash=data["config_hash"],
                searcher=data["searcher"],
                searcher_options=data.get("searcher_options", {}),
                output_dir=data["output_dir"],
                reward=data.get("reward", {}),
                torchspine_version=data["torchspine_version"],
            )
        except (KeyError, TypeError) as err:
            raise SearchStoreError(f"study {study!r}: unreadable {META_KEY} attribute ({err!r})") from None


def proxy_config_hash(experiment: str, overrides: Sequence[str]) -> str:
    """sha1 of the resolved proxy config (`torchspine.config.dump_config`); raises ``ConfigError`` when invalid."""
    from torchspine.config import load_config
    from torchspine.config.loader import dump_config

    return hashlib.sha1(dump_config(load_config(experiment, (), tuple(overrides))).encode()).hexdigest()


def create_or_join_study(storage: BaseStorage, name: str, meta: SearchMeta) -> optuna.Study:
    """The study `name`, created with `meta` or joined after checking that it was created with the same search.

    Raises:
        SearchStoreError: the study exists but records a different space, proxy config, searcher or run directory.
    """
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
    recorded = study.user_attrs.get(META_KEY)
    if recorded is None:
        study.set_user_attr(META_KEY, meta.to_json())
        return study
    check_meta(name, SearchMeta.from_json(recorded, name), meta, controller=True)
    return study


def join_study(storage: BaseStorage, name: str) -> tuple[optuna.Study, SearchMeta]:
    """An existing search study and its metadata (for workers and read-only tools).

    Raises:
        SearchStoreError: no such study, or a study not created by ``torchspine search start``.
    """
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise SearchStoreError(
            f"no study {name!r} in this store (studies: {', '.join(names) or 'none'}); "
            "create it with `torchspine search start`"
        ) from None
    recorded = study.user_attrs.get(META_KEY)
    if recorded is None:
        raise SearchStoreError(f"study {name!r} was not created by `torchspine search start` (no {META_KEY} attr)")
    return study, SearchMeta.from_json(recorded, name)


def check_meta(study: str, recorded: SearchMeta, current: SearchMeta, *, controller: bool) -> None:
    """Raise `SearchStoreError` naming every field where `current` differs from what the study recorded."""
    fields = ["space_fingerprint", "experiment", "overrides", "config_hash"]
    if controller:
        fields += ["searcher", "searcher_options", "reward", "output_dir"]
    diffs = [
        f"{f}: study has {getattr(recorded, f)!r}, this run has {getattr(current, f)!r}"
        for f in fields
        if _canon(getattr(recorded, f)) != _canon(getattr(current, f))
    ]
    if diffs:
        raise SearchStoreError(
            f"study {study!r} was created by a different search ({'; '.join(diffs)}). Use a new --study name, "
            "or the same space, experiment, --set overrides, searcher, reward and --output-dir (and the same "
            f"torchspine code: the study was created by torchspine {recorded.torchspine_version})."
        )


def _canon(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_canon(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _canon(v)) for k, v in value.items()))
    return value


# ------------------------------------------------------------------------------------------------ trial records


def failure_of(trial: FrozenTrial) -> str:
    """Why a FAIL trial failed (``"diverged"``, ``"infra"``, ``"stale"``); ``""`` for every other state.

    The state is authoritative: a worker finishing while the controller marks it stale may leave a ``failure``
    attribute on a COMPLETE trial, which is ignored. A FAIL without a reason counts as an infrastructure failure.
    """
    if trial.state != TrialState.FAIL:
        return ""
    return str(trial.user_attrs.get("failure") or "infra")


def reward_of(trial: FrozenTrial) -> float | None:
    """A trial's reward: the value (AP) of a COMPLETE trial, 0.0 for a diverged one, else None.

    With a resource-aware reward the controller feeds the searcher ``ResourceAwareReward(value, macs)`` instead.
    """
    if trial.state == TrialState.COMPLETE:
        return float(trial.value) if trial.value is not None else None
    if failure_of(trial) == "diverged":
        return 0.0
    return None


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """The plain record of one trial that ``search status/export/report`` read (JSON-able, no Optuna types)."""
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name,
        "reward": reward_of(trial),
        "searcher": attrs.get("searcher"),
        "policy_version": attrs.get("policy_version"),
        "decisions": list(attrs.get("decisions", [])),
        "blocks": attrs.get("blocks", []),
        "arch": attrs.get("arch", ""),
        "arch_key": attrs.get("arch_key", ""),
        "macs": attrs.get("macs"),
        "params": attrs.get("params"),
        "failure": failure_of(trial),
        "reason": attrs.get("reason", ""),
        "started": _iso(trial.datetime_start),
        "finished": _iso(trial.datetime_complete),
        "duplicate_of": attrs.get("duplicate_of"),
        "retry_of": attrs.get("retry_of"),
        "attempt": attrs.get("attempt", 0),
        "worker": attrs.get("worker"),
        "train_seconds": attrs.get("train_seconds"),
    }


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """Records of every trial of `study`, by trial number."""
    return [trial_record(t) for t in study.get_trials(deepcopy=False)]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
