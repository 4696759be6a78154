"""The CLI's error contract: user errors are one line and status 2; programming errors keep their traceback."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

import torchspine.cli.list_models
from torchspine.cli.main import build_parser, main
from torchspine.errors import TorchspineError, UsageError


def test_user_errors_are_one_line_with_status_2(tmp_path):
    missing = tmp_path / "nope.safetensors"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchspine.cli.main",
            "predict",
            "--weights",
            str(missing),
            str(tmp_path),
            "--out",
            "o",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"torchspine predict: error: weights file {missing} does not exist"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--experiment", "retinanet_spinenet49_protocl_c"], "did you mean retinanet_spinenet49_protocol_c"),
        (["train", "--experiment", "demo"], "--output-dir is required"),
        (["list", "--plan", "spinenet50"], "unknown model 'spinenet50'"),
        (["profile", "--model", "nothing*"], "no variant matches"),
    ],
    ids=["unknown-experiment", "missing-flag", "unknown-model", "no-match"],
)
def test_known_user_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_experiment_points_to_the_listing_command(capsys):
    assert main(["train", "--experiment", "nope"]) == 2
    assert "torchspine train --list" in capsys.readouterr().err


@pytest.mark.parametrize("error", [TypeError("bug"), KeyError("bug"), AttributeError("bug"), ValueError("bug")])
def test_programming_errors_keep_their_traceback(error, monkeypatch):
    def broken(args):
        raise error

    monkeypatch.setattr(torchspine.cli.list_models, "run", broken)
    with pytest.raises(type(error)):
        main(["list"])


def test_own_errors_share_one_base_and_stay_value_errors():
    from torchspine.config.loader import ConfigError
    from torchspine.convert.infer import ConversionError
    from torchspine.data.coco import CocoFormatError
    from torchspine.data.image_io import ImageError
    from torchspine.modelfile import ModelFileError

    for cls in (ConfigError, ConversionError, CocoFormatError, ImageError, ModelFileError, UsageError):
        assert issubclass(cls, TorchspineError) and issubclass(cls, ValueError), cls


def test_convert_does_not_create_missing_folders(tmp_path, capsys):
    from conftest import OFFICIAL

    out = tmp_path / "missing" / "x.safetensors"
    tpu = OFFICIAL / "tpu_spinenet49_retinanet_tiny"
    assert main(["convert", "--tf-checkpoint", str(tpu), "--act", "swish", "--out", str(out)]) == 2
    assert f"folder {out.parent} does not exist" in capsys.readouterr().err and not out.parent.exists()


def test_list_without_a_match_is_an_error(capsys):
    assert main(["list", "resnet*"]) == 2
    assert "no variant matches 'resnet*'" in capsys.readouterr().err


def _all_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every parser of the command tree (``torchspine``, ``torchspine search start``, ...), found by walking it, so
    a new subcommand is checked without being listed here."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


_PARSERS = list(_all_parsers(build_parser()))


def test_the_walk_finds_nested_subcommands():
    names = {" ".join(path) for path, _ in _PARSERS}
    assert {"train", "eval", "predict", "search start", "search worker", "data make-demo"} <= names


@pytest.mark.parametrize(("path", "parser"), _PARSERS, ids=[" ".join(p) or "torchspine" for p, _ in _PARSERS])
def test_help_is_plain_text_and_every_option_is_explained(path, parser, capsys):
    with pytest.raises(SystemExit):
        main([*path, "--help"])
    out = capsys.readouterr().out
    assert "`" not in out and out == parser.format_help()
    undocumented = [
        a.dest for a in parser._actions if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()
    ]
    assert undocumented == [], undocumented
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):  # each subcommand has its one-line summary
            assert all((c.help or "").strip() for c in action._choices_actions), path


def test_the_experiment_listing_the_error_suggests_lists_them(capsys):
    """The unknown-experiment error names a command; that command, run as written, prints the experiments."""
    from torchspine.config import list_experiments

    assert main(["train", "--experiment", "nope"]) == 2
    suggested = re.search(r"`torchspine ([^`]+)`", capsys.readouterr().err)
    assert suggested, "the error suggests no command"
    assert main(suggested.group(1).split()) == 0
    printed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert printed == list(list_experiments()) and "demo" in printed
