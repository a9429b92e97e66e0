"""`evdlm` with no arguments: every verb with one example, on stdout, exit 0 (not argparse's error)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evdlm.cli import build_parser, main

VERBS = ("validate", "run", "demo", "replay", "schema", "bench")


def test_no_arguments_lists_every_verb_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = captured.out
    assert out.startswith("usage: evdlm")
    for verb in VERBS:
        # The verb's line, then its example on the next one.
        lines = out.splitlines()
        at = next(index for index, line in enumerate(lines) if line.split()[:1] == [verb])
        assert lines[at + 1].strip().startswith(f"evdlm {verb}"), lines[at + 1]
    assert "error: " not in out  # not argparse's "the following arguments are required"


def test_no_arguments_from_the_shell() -> None:
    result = subprocess.run([sys.executable, "-m", "evdlm"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "evdlm validate site_configs/" in result.stdout


def test_a_bad_verb_is_still_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_every_verb_has_an_example() -> None:
    # The overview takes each verb's first example from its --help epilog.
    parser = build_parser()
    (verbs,) = [a for a in parser._actions if a.dest == "verb"]
    assert verbs.choices is not None
    for verb, sub in dict(verbs.choices).items():
        assert "evdlm " + verb in (sub.epilog or ""), verb
