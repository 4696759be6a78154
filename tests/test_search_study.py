"""The search's trial store, controller and workers, driven in-process with a synthetic runner (no training).

Every test builds its own journal store in ``tmp_path``; the runner and searcher stand-ins are in
``search_helpers.py``.
"""

from __future__ import annotations

import multiprocessing
import random
import re
import shutil
import socket
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from search_helpers import ScriptedSearcher, SyntheticRunner, synthetic_reward
from torchspine.cli.main import main
from torchspine.search import study as st
from torchspine.search.controller import ArchCodec, Controller, ControllerLock, ControllerSettings
from torchspine.search.proxy import TrialOutcome, TrialTask
from torchspine.search.reward import ResourceAwareReward
from torchspine.search.searchers import Proposal
from torchspine.search.space import SearchSpace, arch_key, arch_string, spec_rows
from torchspine.search.worker import Worker, WorkerSettings
from torchspine.specs import blocks_from_rows

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace.tiny()


def _meta(tmp_path: Path, **changes: object) -> st.SearchMeta:
    fields = {
        "space": SPACE.to_dict(),
        "space_fingerprint": SPACE.fingerprint(),
        "experiment": "demo",
        "overrides": ("train.max_steps=2",),
        "config_hash": "0" * 40,
        "searcher": "scripted",
        "searcher_options": {},
        "output_dir": str(tmp_path),
    }
    fields.update(changes)
    return st.SearchMeta(**fields)  # type: ignore[arg-type]


def _distinct(n: int, seed: int = 0) -> list[list[int]]:
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        d = SPACE.random(rng)
        key = arch_key(SPACE.decode(d))
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


class Rig:
    """A journal store, a study, a controller with a scripted searcher and one in-process worker."""

    def __init__(
        self,
        tmp_path: Path,
        script: list[list[int]],
        runner: SyntheticRunner,
        space: SearchSpace = SPACE,
        reward: ResourceAwareReward | None = None,
        **settings: object,
    ) -> None:
        self.tmp = tmp_path
        self.codec = ArchCodec(decode=space.decode, key=arch_key, text=arch_string, rows=spec_rows)
        self.url = f"journal:{tmp_path / 'journal.log'}"
        self.storage = st.open_storage(self.url)
        self.reward = reward
        self.meta = _meta(
            tmp_path,
            space=space.to_dict(),
            space_fingerprint=space.fingerprint(),
            reward={} if reward is None else reward.to_dict(),
        )
        self.study = st.create_or_join_study(self.storage, "s", self.meta)
        self.script = script
        self.runner = runner
        opts = {"max_trials": 4, "queue_depth": 1, "poll_interval": 0.1, **settings}
        self.settings = ControllerSettings(**opts)  # type: ignore[arg-type]
        self.controller = self.new_controller()
        self.worker = Worker(self.storage, "s", self.meta, runner, tmp_path, WorkerSettings(heartbeat_interval=0.2))

    def new_controller(self) -> Controller:
        c = Controller(
            self.study, ScriptedSearcher(self.script), self.codec, Proposal, self.tmp, self.settings, reward=self.reward
        )
        c.resume()
        return c

    def run(self, max_steps: int = 200) -> None:
        for _ in range(max_steps):
            if self.controller.step().done:
                return
            self.worker.step()
        raise AssertionError("the search did not finish")

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False)


# ------------------------------------------------------------------------------------------------ storage URLs


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("runs/journal.log", "journal"),
        ("journal:runs/j.log", "journal"),
        ("journal:///abs/j.log", "journal"),
        ("postgresql://u:p@localhost:5432/db", "postgresql"),
        ("postgres://u@host/db", "postgresql"),
        ("postgresql+psycopg://u@host/db", "postgresql"),
        ("sqlite:///x.db", "sqlite"),
    ],
    ids=["path", "journal", "journal-abs", "postgresql", "postgres-alias", "postgresql-driver", "sqlite"],
)
def test_parse_storage_url(url: str, kind: str) -> None:
    assert st.parse_storage_url(url).kind == kind


def test_unknown_scheme_lists_the_accepted_forms() -> None:
    with pytest.raises(st.SearchStoreError, match=r"unknown scheme 'mysql'.*journal:PATH.*postgresql://.*sqlite"):
        st.parse_storage_url("mysql://u:secret@h/db")
    with pytest.raises(st.SearchStoreError) as err:
        st.parse_storage_url("redis://u:secret@h/db")
    assert "secret" not in str(err.value)


def test_unreachable_database_names_the_url_without_password() -> None:
    pytest.importorskip("psycopg")
    with socket.socket() as s:  # a local port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://searcher:hunter2@127.0.0.1:{port}/search"
    with pytest.raises(st.SearchStoreError) as err:
        st.open_storage(url)
    message = str(err.value)
    assert message.startswith("cannot open the trial store")
    assert f"127.0.0.1:{port}/search" in message and "searcher:***@" in message
    assert "hunter2" not in message


def test_sqlite_refuses_several_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(st.SearchStoreError, match=r"SQLite serves one process only.*journal"):
        st.open_storage(url, processes=3)
    st.open_storage(url, processes=1)  # one process is fine


def test_cli_sqlite_with_two_workers_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    args = ["search", "start", "--experiment", "demo", "--storage", url, "--max-trials", "2"]
    assert main([*args, "--output-dir", str(tmp_path / "run"), "--workers", "2"]) == 2
    assert "SQLite serves one process only, but 3 processes" in capsys.readouterr().err
    assert main(["search", "worker", "--storage", url, "--study", "x"]) == 2
    assert "a second process (a worker joining)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ study metadata


def test_joining_a_study_of_another_search_is_an_error(tmp_path: Path) -> None:
    storage = st.open_storage(str(tmp_path / "journal.log"))
    st.create_or_join_study(storage, "s", _meta(tmp_path))
    st.create_or_join_study(storage, "s", _meta(tmp_path))  # the same search joins fine
    other = SearchSpace.paper()
    with pytest.raises(st.SearchStoreError, match=r"different search \(space_fingerprint: .*overrides"):
        st.create_or_join_study(
            storage,
            "s",
            _meta(tmp_path, space=other.to_dict(), space_fingerprint=other.fingerprint(), overrides=("a.b=1",)),
        )
    _, meta = st.join_study(storage, "s")
    assert meta == _meta(tmp_path)
    with pytest.raises(st.SearchStoreError, match=r"no study 'nope'.*studies: s"):
        st.join_study(storage, "nope")


def test_joining_a_foreign_study_or_another_proxy_config_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"journal:{tmp_path / 'j.log'}"
    storage = st.open_storage(url)
    optuna.create_study(storage=storage, study_name="plain")  # an ordinary Optuna study, not a search
    with pytest.raises(st.SearchStoreError, match="'plain' was not created by `torchspine search start`"):
        st.join_study(storage, "plain")
    # A worker whose torchspine resolves the proxy config differently from the study's record refuses to join.
    st.create_or_join_study(storage, "s", _meta(tmp_path))  # config_hash "000..." matches no real config
    assert main(["search", "worker", "--storage", url, "--study", "s", "--device", "cpu"]) == 2
    assert "resolves the proxy config 'demo'" in capsys.readouterr().err


def test_proxy_config_hash_follows_the_overrides() -> None:
    a = st.proxy_config_hash("demo", ["train.max_steps=2"])
    assert a == st.proxy_config_hash("demo", ["train.max_steps=2"])
    assert a != st.proxy_config_hash("demo", ["train.max_steps=3"])


# ------------------------------------------------------------------------------------------- controller + worker


def test_search_runs_every_trial_once_and_feeds_each_result_once(tmp_path: Path) -> None:
    script = _distinct(4)
    rig = Rig(tmp_path, script, SyntheticRunner())
    rig.run()
    trials = rig.trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert rig.runner.calls == [0, 1, 2, 3]
    fed = rig.controller.searcher.fed
    assert [d for d, _ in fed] == [tuple(d) for d in script]
    assert [r for _, r in fed] == pytest.approx([synthetic_reward(SPACE.decode(d)) for d in script])
    assert rig.controller.updates == 2
    assert rig.study.user_attrs[st.FINISHED_KEY] is True
    record = st.trial_record(trials[0])
    assert record["blocks"] == spec_rows(SPACE.decode(script[0]))
    assert record["arch"] == arch_string(SPACE.decode(script[0])) and record["macs"] == len(SPACE.decode(script[0]))


def test_duplicate_of_a_complete_architecture_reuses_its_reward(tmp_path: Path) -> None:
    a, b = _distinct(2)
    rig = Rig(tmp_path, [a, b, a], SyntheticRunner(), max_trials=3)
    rig.run()
    assert rig.runner.calls == [0, 1]  # the repeat of `a` is not retrained
    dup = rig.trials()[2]
    assert dup.state == TrialState.COMPLETE and dup.user_attrs["duplicate_of"] == 0
    assert dup.value == rig.trials()[0].value
    assert [d for d, _ in rig.controller.searcher.fed] == [tuple(a), tuple(b), tuple(a)]


def test_resource_aware_reward_is_fed_for_trials_and_their_duplicates(tmp_path: Path) -> None:
    a, b = _distinct(2)
    # SyntheticRunner reports macs = number of blocks (7 in the tiny space): at a budget of 14 and w = -1 the
    # searcher's reward is twice the AP.
    rig = Rig(tmp_path, [a, b, a], SyntheticRunner(), max_trials=3, reward=ResourceAwareReward(14.0, -1.0))
    rig.run()
    dup = rig.trials()[2]
    assert dup.user_attrs["duplicate_of"] == 0 and dup.user_attrs["macs"] == rig.trials()[0].user_attrs["macs"]
    aps = [synthetic_reward(SPACE.decode(d)) for d in (a, b, a)]
    assert [r for _, r in rig.controller.searcher.fed] == pytest.approx([2 * ap for ap in aps])
    assert [t.value for t in rig.trials()] == pytest.approx(aps)  # the study keeps the AP


def test_joining_with_another_reward_is_an_error(tmp_path: Path) -> None:
    storage = st.open_storage(f"journal:{tmp_path / 'j.log'}")
    st.create_or_join_study(storage, "s", _meta(tmp_path))
    with pytest.raises(
        st.SearchStoreError, match=re.escape("reward: study has {}, this run has {'target_macs': 1000000.0")
    ):
        st.create_or_join_study(storage, "s", _meta(tmp_path, reward=ResourceAwareReward(1e6).to_dict()))


def test_infrastructure_failure_is_retried_in_the_same_directory_and_never_fed(tmp_path: Path) -> None:
    script = _distinct(3)
    rig = Rig(tmp_path, script, SyntheticRunner(fail_infra_every=2), max_trials=3)
    rig.run()
    trials = rig.trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [st.failure_of(t) for t in failed] == ["infra"] * 3  # trials 0, 2, 4 (even roots) fail once each
    assert "synthetic infrastructure failure" in failed[0].user_attrs["traceback"]
    retries = {t.user_attrs["retry_of"]: t for t in trials if t.user_attrs.get("retry_of") is not None}
    assert sorted(retries) == [f.number for f in failed]
    for number, retry in retries.items():
        assert retry.state == TrialState.COMPLETE and retry.user_attrs["root"] == number
        assert retry.user_attrs["decisions"] == trials[number].user_attrs["decisions"]
    # Three architectures, three results fed: the failures are not.
    assert sorted(d for d, _ in rig.controller.searcher.fed) == sorted(tuple(d) for d in script)


def test_retries_are_bounded_then_abandoned(tmp_path: Path) -> None:
    (a,) = _distinct(1)
    rig = Rig(tmp_path, [a], SyntheticRunner(fail_infra_every=1), max_trials=1, max_abandoned_in_a_row=1)
    # The runner's marker makes the retry succeed; remove it before each attempt so every attempt fails.
    runner = rig.runner

    def always_fail(task: TrialTask) -> object:
        (Path(task.output_dir) / "attempted").unlink(missing_ok=True)
        return runner(task)

    rig.worker.runner = always_fail
    with pytest.raises(RuntimeError, match="failed 3 times for infrastructure reasons"):
        rig.run()
    assert [t.user_attrs["attempt"] for t in rig.trials()] == [0, 1, 2]
    assert rig.controller.searcher.fed == []


def test_restart_does_not_count_old_abandoned_trials_as_abandoned_in_a_row(tmp_path: Path) -> None:
    script = _distinct(5)
    rig = Rig(tmp_path, script, SyntheticRunner(), max_trials=2, max_retries=0, max_abandoned_in_a_row=2)
    runner = rig.runner

    def fail_even(task: TrialTask) -> object:
        if task.number % 2 == 0:
            raise RuntimeError(f"synthetic infrastructure failure of trial {task.number}")
        return runner(task)

    rig.worker.runner = fail_even
    rig.run()  # 0 abandoned, 1 complete, 2 abandoned, 3 complete: never two abandoned in a row
    assert [t.state for t in rig.trials()] == [TrialState.FAIL, TrialState.COMPLETE] * 2
    rig.settings = ControllerSettings(
        max_trials=3, queue_depth=1, poll_interval=0.1, max_retries=0, max_abandoned_in_a_row=2
    )
    rig.controller = rig.new_controller()  # restarted with a larger budget
    rig.worker.runner = runner
    rig.run()
    assert rig.controller.step().abandoned == 2
    assert [t.state for t in rig.trials()][-1] == TrialState.COMPLETE


def test_diverged_trial_is_fed_with_reward_zero(tmp_path: Path) -> None:
    script = _distinct(2)
    rig = Rig(tmp_path, script, SyntheticRunner(diverge_every=2), max_trials=2)
    rig.run()
    first = rig.trials()[0]
    assert first.state == TrialState.FAIL and st.failure_of(first) == "diverged"
    assert first.user_attrs["reason"].startswith("loss is nan") and st.reward_of(first) == 0.0
    assert rig.controller.searcher.fed[0] == (tuple(script[0]), 0.0)
    assert len(rig.controller.searcher.fed) == 2


def test_an_outcome_the_worker_cannot_record_fails_the_trial(tmp_path: Path) -> None:
    (a,) = _distinct(1)
    rig = Rig(tmp_path, [a], SyntheticRunner(), max_trials=1)
    rig.controller.step()

    def bad_status(task: TrialTask) -> object:
        return TrialOutcome("finished", 0.5, "", {}, 1.0, 1, 0.0)

    rig.worker.runner = bad_status
    assert rig.worker.step()  # recorded, not raised: the worker stays to run other trials
    (trial,) = rig.trials()
    assert trial.state == TrialState.FAIL and st.failure_of(trial) == "infra"
    assert "status 'finished'" in trial.user_attrs["reason"]


def test_stale_running_trial_is_failed_and_retried(tmp_path: Path) -> None:
    (a,) = _distinct(1)
    rig = Rig(tmp_path, [a], SyntheticRunner(), max_trials=1, stale_after=60.0)
    rig.controller.step()
    claimed = rig.worker.claim()  # a worker claims it and dies at once: no heartbeat is ever written
    assert claimed is not None and claimed.state == TrialState.RUNNING
    rig.controller.step()
    assert rig.trials()[0].state == TrialState.RUNNING  # within the grace period nothing happens
    start = claimed.datetime_start.timestamp()
    rig.controller.clock = lambda: start + 61.0
    rig.controller.step()
    first, retry = rig.trials()
    assert first.state == TrialState.FAIL and st.failure_of(first) == "stale"
    assert "no heartbeat for 61 s" in first.user_attrs["reason"]
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == 0


def test_worker_heartbeats_while_the_trial_runs(tmp_path: Path) -> None:
    (a,) = _distinct(1)
    rig = Rig(tmp_path, [a], SyntheticRunner(), max_trials=1)
    rig.controller.step()
    beats: list[float] = []

    def slow(task: TrialTask) -> object:
        # Wait for two heartbeats written by the worker's thread, then finish.
        deadline = time.monotonic() + 60
        while len(beats) < 2:
            beat = rig.study.get_trials()[task.number].user_attrs["heartbeat"]
            if not beats or beat != beats[-1]:
                beats.append(beat)
            assert time.monotonic() < deadline, "no heartbeat within 60 s"
            time.sleep(0.05)
        return rig.runner(task)

    rig.worker.runner = slow
    assert rig.worker.step()
    assert beats[1] > beats[0]
    assert rig.trials()[0].state == TrialState.COMPLETE


def test_controller_restart_replays_proposals_after_its_checkpoint(tmp_path: Path) -> None:
    script = _distinct(6)
    rig = Rig(tmp_path, script, SyntheticRunner(), max_trials=6, queue_depth=2)
    rig.controller.step()  # enqueues 0, 1; checkpoint counts 2 proposals
    saved = tmp_path / "saved.pt"
    shutil.copy(rig.controller.checkpoint_path, saved)
    rig.worker.step()
    rig.worker.step()
    rig.controller.step()  # feeds 0, 1 (one update), enqueues 2, 3 -- then "crashes": its checkpoint is lost
    before = rig.controller.searcher.state_dict()
    shutil.copy(saved, rig.controller.checkpoint_path)
    rig.controller = rig.new_controller()
    assert rig.controller.proposals == 4  # proposals 2, 3 were replayed, not proposed again
    assert rig.controller.searcher.index == 4
    rig.controller.step()  # results 0, 1 were not in the old checkpoint: fed now, once
    assert rig.controller.searcher.state_dict() == before
    rig.run()
    trials = rig.trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert [d for d, _ in rig.controller.searcher.fed] == [tuple(d) for d in script]


def test_second_controller_on_the_same_run_is_refused(tmp_path: Path) -> None:
    with ControllerLock(tmp_path), pytest.raises(st.SearchStoreError, match="another controller"):
        ControllerLock(tmp_path).acquire()
    with ControllerLock(tmp_path):  # released on exit
        pass


# ---------------------------------------------------------------------------------------------- claim race


def _race_worker(url: str, run_dir: str, start: multiprocessing.synchronize.Event) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = st.open_storage(url)
    _, meta = st.join_study(storage, "s")
    start.wait(60)
    settings = WorkerSettings(heartbeat_interval=5.0, exit_when_idle=True)
    Worker(storage, "s", meta, SyntheticRunner(), run_dir, settings).run(lambda: False)


def test_concurrent_workers_never_run_a_trial_twice(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'journal.log'}"
    study = st.create_or_join_study(st.open_storage(url), "s", _meta(tmp_path))
    decisions = _distinct(16)
    for i, d in enumerate(decisions):
        blocks = SPACE.decode(d)
        study.enqueue_trial(params={}, user_attrs={"decisions": d, "blocks": spec_rows(blocks), "proposal": i})
    ctx = multiprocessing.get_context("fork")  # no re-import of torch in each racer
    start = ctx.Event()
    procs = [ctx.Process(target=_race_worker, args=(url, str(tmp_path), start)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = [line.split() for line in (tmp_path / "runs.log").read_text().splitlines()]
    numbers = sorted(int(n) for n, _ in runs)
    assert numbers == list(range(16)), "a trial ran twice or not at all"
    assert all(t.state == TrialState.COMPLETE for t in study.get_trials())


# ------------------------------------------------------------------------------------------------------- CLI


def test_cli_status_and_export_read_the_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rig = Rig(tmp_path, _distinct(4), SyntheticRunner(diverge_every=3), max_trials=4)
    rig.run()
    store = ["--storage", rig.url, "--study", "s"]
    assert main(["search", "status", *store]) == 0
    text = capsys.readouterr().out
    rewards = {t.number: t.value for t in rig.trials() if t.state == TrialState.COMPLETE}
    best = max(rewards, key=rewards.__getitem__)
    assert "done 4/4 (2 complete, 2 diverged)" in text  # roots 0 and 3 diverge
    assert "trials/hour" in text
    assert f"best reward {rewards[best]:.4f} (trial {best})" in text
    out = tmp_path / "export"
    assert main(["search", "export", *store, "--top", "2", "--out", str(out)]) == 0
    files = sorted(out.glob("rank*.yaml"))
    assert files[0].name == f"rank1_trial{best}.yaml"
    # The tiny space's outputs are L3-L5, so read the rows alone (load_cfg checks them against P3-P7).
    assert blocks_from_rows(yaml.safe_load(files[0].read_text())["blocks"]) == SPACE.decode(rig.script[best])
    assert len(files) == 2
    capsys.readouterr()
    assert main(["search", "export", *store, "--top", "0", "--out", str(out)]) == 2
    assert "--top must be >= 1, got 0" in capsys.readouterr().err


def test_cli_report_writes_the_pictures(tmp_path: Path) -> None:
    paper = SearchSpace.paper()
    rng = random.Random(0)
    rig = Rig(tmp_path, [paper.random(rng) for _ in range(3)], SyntheticRunner(), max_trials=3, space=paper)
    rig.run()
    report = tmp_path / "report"
    assert main(["search", "report", "--storage", rig.url, "--study", "s", "--out", str(report)]) == 0
    assert (report / "rewards.png").stat().st_size > 0 and (report / "best_architecture.png").stat().st_size > 0


def test_cli_malformed_seed_spec_is_an_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("blocks:\n  - [3, bottleneck, [0], false]\n")
    args = ["search", "start", "--experiment", "demo", "--max-trials", "1", "--output-dir", str(tmp_path / "run")]
    assert main([*args, "--space", "tiny", "--seed-arch", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "input_offsets must be two integers" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--option", "lrr=0.1"], "unknown option(s) 'lrr' (did you mean 'lr'?)"),
        (["--option", "lr=-1"], "invalid option(s) {'lr': -1}"),
        (["--max-trials", "0"], "max_trials must be >= 1"),
        (["--target-macs", "0"], "--target-macs/--macs-exponent: target_macs=0.0 must be a positive number"),
    ],
    ids=["unknown-option", "bad-option-value", "no-trials", "no-budget"],
)
def test_cli_bad_searcher_options_and_settings_are_user_errors(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["search", "start", "--experiment", "search_demo", "--space", "tiny", "--output-dir", str(tmp_path / "r")]
    assert main([*args, "--max-trials", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_sqlite_single_process_search_runs_trials_inline(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'search.db'}"
    args = ["search", "start", "--experiment", "demo", "--storage", url, "--study", "one", "--space", "tiny"]
    args += ["--searcher", "random", "--max-trials", "3", "--output-dir", str(tmp_path), "--workers", "1"]
    assert main([*args, "--runner", "search_helpers:synthetic", "--poll", "0.1"]) == 0
    study, meta = st.join_study(st.open_storage(url), "one")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert meta.searcher == "random" and meta.experiment == "demo"
    assert sorted(int(line.split()[0]) for line in (tmp_path / "runs.log").read_text().splitlines()) == [0, 1, 2]


def test_worker_leaves_after_an_interrupted_trial(tmp_path: Path) -> None:
    from torchspine.search.proxy import TrialInterrupted

    rig = Rig(tmp_path, _distinct(3), SyntheticRunner(), max_trials=3, queue_depth=3)
    rig.controller.step()

    def interrupted(task: TrialTask) -> object:
        raise TrialInterrupted(f"trial {task.number} stopped at step 3 of 10")

    rig.worker.runner = interrupted
    assert rig.worker.run(lambda: False) == 1  # one trial, then it leaves although two are waiting
    first = rig.trials()[0]
    assert first.state == TrialState.FAIL and st.failure_of(first) == "infra"
    assert first.user_attrs["reason"].startswith("TrialInterrupted")
    rig.controller.step()
    assert rig.trials()[-1].user_attrs["retry_of"] == 0


def test_torchrun_lead_runs_the_worker_loop_and_keeps_other_ranks_informed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.distributed as dist

    from torchspine.search import torchrun

    rig = Rig(tmp_path, _distinct(2), SyntheticRunner(), max_trials=2, queue_depth=2)
    rig.controller.step()
    rig.worker = Worker(rig.storage, "s", rig.meta, rig.runner, tmp_path, WorkerSettings(poll_interval=0.01))
    sent: list[str] = []
    original = torchrun.broadcast_json

    def record(message: dict | None, group: object) -> dict:
        sent.append(message["cmd"] if message else "?")
        return original(message, group)

    monkeypatch.setattr(torchrun, "broadcast_json", record)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        # Not finished and nothing left to claim: the lead idles (announcing it) until asked to stop.
        ran = torchrun.lead(rig.worker, lambda: sent.count("idle") >= 2, None)
    finally:
        dist.destroy_process_group()
    assert ran == 2 and rig.runner.calls == [0, 1]
    assert sent == ["run", "run", "idle", "idle", "exit"]


def test_worker_and_controller_ride_out_transient_store_errors(tmp_path: Path) -> None:
    rig = Rig(tmp_path, _distinct(2), SyntheticRunner(), max_trials=2, queue_depth=2)
    rig.worker.settings = WorkerSettings(poll_interval=0.05, exit_when_idle=True)
    rig.controller.step()
    claim, failures = rig.worker.claim, iter([OSError("NFS hiccup"), OSError("NFS hiccup")])

    def flaky_claim() -> object:
        error = next(failures, None)
        if error is not None:
            raise error
        return claim()

    rig.worker.claim = flaky_claim  # type: ignore[method-assign]
    assert rig.worker.run(lambda: False) == 2
    assert all(t.state == TrialState.COMPLETE for t in rig.trials())
    # The controller, with the worker in-line (one trial between polls): its second step fails and is redone.
    (tmp_path / "c").mkdir()
    rig = Rig(tmp_path / "c", _distinct(3), SyntheticRunner(), max_trials=3, queue_depth=1, poll_interval=0.05)
    step, calls = rig.controller.step, []

    def flaky_step() -> object:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("NFS hiccup")
        return step()

    rig.controller.step = flaky_step  # type: ignore[method-assign]
    assert rig.controller.run(lambda: False, between_polls=rig.worker.step).done
    assert len(calls) > 3
    assert [t.state for t in rig.trials()] == [TrialState.COMPLETE] * 3
    assert len(rig.controller.searcher.fed) == 3
