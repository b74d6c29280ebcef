import io
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from digits.cli import main


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: object) -> tuple[int, str, str]:
    """Run `digits ARGS...` in this process; return (exit code, stdout, stderr).

    Plain StringIO buffers rather than capsys: Prefect's log handler keeps the stream it
    first saw, and capsys closes its streams at the end of each test.
    """
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "argv", ["digits", *map(str, args)])
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as done:
        main()
    return done.value.code, out.getvalue(), err.getvalue()


@pytest.fixture
def cli(monkeypatch):
    """`cli(*args)`: run_cli within this test's monkeypatch."""
    return lambda *args: run_cli(monkeypatch, *args)
