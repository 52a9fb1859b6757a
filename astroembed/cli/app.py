"""The ``astroembed`` Typer app: global options, the error handler and ``main``.

Each command lives in its own module of this package and registers on :data:`app`; every
command parses its arguments, makes exactly one call to the public API (through the
``astroembed`` module, so tests can replace it) and renders what it returned. Problems the user
can fix arrive as ``AstroembedError`` and leave as one line on stderr and a non-zero exit code
(1, or 2 for usage errors).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from astroembed import __version__
from astroembed.errors import AstroembedError, InterruptedRun

app = typer.Typer(
    name="astroembed",
    help="Foundation-model embeddings for survey catalogs: cross-match Legacy Survey images "
    "with DESI spectra, embed them with ONNX encoders, probe and search.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
log = logging.getLogger("astroembed")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn every failure into one line on stderr (at most one hint line) and an exit code:
    AstroembedError its own, an interruption 130, anything unforeseen 1."""
    import click

    try:
        yield
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise  # typer.Exit and usage errors: Click already prints and exits as they say
    except InterruptedRun as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except AstroembedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        # Commands whose outputs are written atomically keep nothing of an interrupted run.
        name = getattr(exc, "signal_name", "SIGINT")
        typer.echo(f"interrupted ({name}) before any output was complete; nothing was kept.",
                   err=True)
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # The reader of stdout left (`astroembed info ... | head`): not an error of ours.
        # Exit as a tool killed by SIGPIPE would, without Python's report at shutdown.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(141) from None
    except Exception as exc:  # a bug, or a system failure no check foresaw
        log.debug("unexpected error", exc_info=True)
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        typer.echo("hint: run again with -vv for the traceback; if it looks like a bug in "
                   "astroembed, please report it with that output.", err=True)
        raise typer.Exit(1) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"astroembed {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True,
                                         help="More detail on stderr (-vv for debug).")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet",
                                        help="Only errors on stderr; no progress.")] = False,
) -> None:
    """astroembed: survey catalogs in, catalogs with embeddings out."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.captureWarnings(True)
    log.setLevel(level)


def _flags_show_no_type() -> None:
    """Options that take no value (``--json``, ``--force``, ``-v``, ``--help``) show no type
    in ``--help``: Typer prints ``<bool>`` (``<int>`` for a counter) after them, which reads
    as if they wanted an argument. Options that take a value keep ``<int>``, ``<path>`` etc."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "flags_show_no_type", False):
        return

    def display_type_rich(self: TyperOption, ctx) -> str | None:
        if self.is_flag or self.count:
            return None
        return shown(self, ctx)

    display_type_rich.flags_show_no_type = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def _reflow_help(typer_app: typer.Typer) -> None:
    """Join the wrapped lines of each command's docstring paragraphs: Typer's rich help keeps
    single line breaks, which would otherwise break every line twice in an 80-column terminal."""
    import inspect

    for info in typer_app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if doc:
            paragraphs = inspect.cleandoc(doc).split("\n\n")
            info.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)


#: One module per command; each registers on `app` when imported, in the order `--help` lists.
COMMANDS = ("simulate", "inspect", "crossmatch", "info", "head", "convert", "embed", "probe", "predict",
            "search", "train", "export", "import_model", "run", "doctor")


def _register_commands() -> None:
    """Import every command module (they import this one for `app`, so not at the top)."""
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"astroembed.cli.{name}")


_register_commands()
_reflow_help(app)
_flags_show_no_type()


def _terminate_like_interrupt() -> None:
    """SIGTERM (a batch system's cancel, ``kill``) unwinds like Ctrl-C, so the same cleanup
    runs and the same message says what was kept."""
    import signal

    from astroembed.errors import Interrupted

    def handler(signum, frame):
        raise Interrupted("SIGTERM")

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    """Console-script entry point."""
    _terminate_like_interrupt()
    try:
        app()
    except KeyboardInterrupt as exc:  # between commands' own handling, e.g. at start-up
        typer.echo(f"interrupted ({getattr(exc, 'signal_name', 'SIGINT')}).", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
