"""The command line: `smokeflow --help` and `python -m smokeflow --help` list the commands that exist."""

import subprocess
import sys

from smokeflow.cli import available_commands, build_parser


def test_help_lists_available_commands():
    out = subprocess.run([sys.executable, "-m", "smokeflow", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "usage: smokeflow" in out
    for name in available_commands():
        assert name in out


def test_parser_offers_exactly_the_existing_commands():
    parser = build_parser()
    sub = [a for a in parser._actions if a.dest == "command"][0]
    assert set(sub.choices) == set(available_commands())
