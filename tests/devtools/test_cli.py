"""The runner is dev tooling beside the product: importing it loads neither Django nor the
product package, so it never needs Django to be configured."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devtools.cli import main
from devtools.common import ROOT


def test_the_runner_imports_neither_django_nor_the_product() -> None:
    """``python -m devtools``'s modules import without Django or ``openplatform``."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import sys, devtools.cli, devtools.supervisor, devtools.embedded\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'openplatform'}))"
    )
    result = subprocess.run(  # noqa: S603  # our own argv, no shell
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        check=True, timeout=30,
    )  # fmt: skip
    assert result.stdout == "[]\n"


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command names the known ones and exits 2."""
    assert main(["nope"]) == 2
    assert capsys.readouterr().err == "unknown command 'nope'; one of: up, test, manage, bench\n"


def test_help_prints_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """``help`` prints the commands and exits 0."""
    assert main(["help"]) == 0
    assert "``up [--port N]``" in capsys.readouterr().out
