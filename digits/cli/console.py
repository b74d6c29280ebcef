"""The `digits` console script around the Typer app (digits/cli/app.py): one-line errors with
the exit codes of digits.errors, tracebacks behind `--debug`, SIGTERM handled as Ctrl-C,
and an exit that skips the interpreter's slow teardown."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from typer.exceptions import TyperException

# Importing this module imports digits/cli/__init__.py first, which puts every command on
# `app` before main can run.
from digits.cli.app import app
from digits.environment import default_environment
from digits.errors import EXIT_ABORTED, DigitsError, environment_fault


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`timeout`, `kill`, a service manager) raises KeyboardInterrupt, as Ctrl-C
    does: the command unwinds (staging folders removed, the local API stopped) and exits
    130 instead of dying mid-write or, inside a C call, working on. Prefect's flow engine
    puts its own handler in front while a flow runs; it hands the signal back to this one."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (a test calling main() elsewhere)
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    """Run `digits` with one-line errors and the documented exit codes."""
    default_environment()
    debug = "--debug" in sys.argv[1:]
    try:
        with sigterm_as_interrupt():
            code = app(standalone_mode=False)  # returns typer.Exit's code
    except TyperException as error:  # bad flag or value: usage and message, exit 2
        error.show()
        sys.exit(error.exit_code)
    except DigitsError as error:
        if debug:
            raise
        typer.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(EXIT_ABORTED)
    except Exception as error:  # a bug: say where, keep the traceback behind --debug
        if debug:
            raise
        # Permission denied, read-only, disk full: the machine's, not a bug (exit 7).
        fault = environment_fault(error) if isinstance(error, OSError) else None
        if fault is not None:
            typer.echo(f"error: {fault}", err=True)
            sys.exit(fault.exit_code)
        typer.echo(
            f"unexpected error: {type(error).__name__}: {error} "
            "(rerun with --debug for the traceback; Prefect logs are in the flow run)",
            err=True,
        )
        sys.exit(DigitsError.exit_code)
    if code == EXIT_ABORTED:  # Typer turns a KeyboardInterrupt inside a command into Exit(130)
        typer.echo("aborted", err=True)
    sys.exit(code or 0)


def entry() -> None:
    """The console script: main(), then exit without the interpreter's teardown.

    After the last line is printed, TensorFlow's teardown alone takes a second or more here;
    by then the local Prefect API is stopped and every log and event sent (flows/api.py), so
    skipping it loses nothing. Tests call main() itself.
    """
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    if not isinstance(code, int):  # as the interpreter treats sys.exit("message")
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)
