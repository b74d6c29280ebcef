import io
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from flows.cli import main


@pytest.fixture
def cli(monkeypatch):
    """Run `digits ARGS...` in this process; return (exit code, stdout, stderr).

    Plain StringIO buffers rather than capsys: Prefect's log handler keeps the stream it
    first saw, and capsys closes its streams at the end of each test.
    """

    def invoke(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "argv", ["digits", *map(str, args)])
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as done:
            main()
        return done.value.code, out.getvalue(), err.getvalue()

    return invoke
