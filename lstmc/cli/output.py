"""What the command line prints: results on stdout, details and progress on stderr.

--quiet and --verbose are flags in the click context's `meta`, shared by the whole context
chain, so they work before the verb and after it alike.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

import click


def _meta() -> dict:
    ctx = click.get_current_context(silent=True)
    return ctx.meta if ctx is not None else {}


def _quiet() -> bool:
    return bool(_meta().get("lstmc.quiet"))


def _verbose() -> bool:
    return bool(_meta().get("lstmc.verbose"))


def say(text: str) -> None:
    """A result line on stdout (suppressed by --quiet)."""
    if not _quiet():
        click.echo(text)


def note(text: str) -> None:
    """A detail on stderr, with --verbose only."""
    if _verbose():
        click.echo(text, err=True)


@contextlib.contextmanager
def progress(message: str):
    """A spinner on stderr while a long step runs, on a terminal only; with --verbose the step
    and its time are logged instead (also when piped)."""
    start = time.perf_counter()
    stop = threading.Event()
    spinner = None
    if _verbose():
        click.echo(f"{message}...", err=True)
    elif not _quiet() and sys.stderr.isatty():

        def spin() -> None:
            if stop.wait(0.3):  # fast steps (a cache hit) never show a spinner
                return
            frames = "|/-\\"
            i = 0
            while True:
                elapsed = time.perf_counter() - start
                sys.stderr.write(f"\r{frames[i % 4]} {message}... {elapsed:.0f} s")
                sys.stderr.flush()
                i += 1
                if stop.wait(0.1):
                    return

        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
    try:
        yield
    finally:
        if spinner is not None:
            stop.set()
            spinner.join()
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        note(f"{message}: {time.perf_counter() - start:.2f} s")


def error_line(exc: BaseException) -> str:
    """One line (or one message) for stderr: `file:line:col: error: ...` for spec errors."""
    from lstmc.errors import SpecError

    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, SpecError) and exc.location is not None:
        return text
    text = text.removeprefix("error: ")
    return f"lstmc: error: {text}"
