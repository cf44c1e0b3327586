"""One command-line definition: the ``curate`` entry point and ``python -m pipeline.cli`` accept the same
flags, and every subcommand that builds a config takes the same config flags."""

import argparse

import pytest

from flows import cli as entry
from pipeline import cli
from pipeline.config import build_config


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_curate_and_pipeline_cli_accept_the_same_flags():
    ours, theirs = _subcommands(cli.build_parser()[0]), _subcommands(entry.build_parser())
    assert set(theirs) == set(ours) | {"backfill"}
    for name, parser in ours.items():
        assert _flags(theirs[name]) == _flags(parser), name


def test_every_subcommand_that_builds_a_config_takes_every_config_flag():
    probe = argparse.ArgumentParser()
    cli.config_args(probe)
    config_flags = _flags(probe) - {"-h", "--help"}
    subs = _subcommands(entry.build_parser())
    for name in ("run", "config", "backfill"):
        assert config_flags <= _flags(subs[name]), name


@pytest.mark.parametrize("flag", ["--threshold-on=score_expected", "--no-audio", "--threshold=4.5", "--limit=3"])
def test_backfill_hands_each_shortcut_on(flag):
    args = entry.build_parser().parse_args(["backfill", "--source-root", "r", "--output-root", "o", flag])
    given = {k: v for k, v in cli.shortcuts(args).items() if v is not None}
    assert len(given) == 1
    run = entry.build_parser().parse_args(["run", "--output", "o", flag])
    assert cli.shortcuts(run) == cli.shortcuts(args)
    # The flow builds the config from the overrides it is handed: the same config `curate run` builds.
    built = build_config("local", overrides=entry.flow_overrides(args))
    assert built == cli._build(run)
