"""The `cloudtrain` executable: help and version straight from text, every other call through `cli`.

Importing typer and building the command tree takes about three times as long as Python's own start, so
`cloudtrain`, `cloudtrain --help`, `cloudtrain --version` and `cloudtrain COMMAND --help` print the text typer
would (`help_text`, rendered ahead for every command by scripts/render-help and kept equal to typer's by a
test) when the terminal is wide enough for that text to be the one typer would render. Only `os` and `sys`
are imported on that path: even `shutil` or `typing` would add a third to it. Anything else, or a command the
text does not have yet, goes through typer as usual.
"""

from __future__ import annotations

import os
import sys

from cloudtrain.cli.output import OUTPUT_ERRNOS, finish_output


def main() -> None:
    args = sys.argv[1:]
    if (not args or args[-1] in ("--help", "--version")) and "_CLOUDTRAIN_COMPLETE" not in os.environ:
        from cloudtrain.cli.help_text import HELP

        text = HELP.get(tuple(args) or ("--help",))
        if text is not None and _terminal_columns() >= 80:
            # As typer: --help is an answer (stdout, 0); no arguments at all is a usage mistake (stderr, 2).
            _print(text, err=not args)
            sys.exit(2 if not args else 0)
    try:
        answered = _finished_status(args)
        finish_output()
    except BrokenPipeError:
        finish_output()
        sys.exit(0)
    except SystemExit as e:  # rich exits 1 on EPIPE; a reader that has what it wanted (`| head`) is no error
        if isinstance(e.__context__, BrokenPipeError):
            sys.exit(0)
        raise
    except OSError as e:
        if e.errno not in OUTPUT_ERRNOS:
            raise
        finish_output()
        sys.stderr.write(f"error: cannot write the output: {e.strerror}\n")
        sys.exit(2)
    if answered:
        sys.exit(0)
    from cloudtrain.cli.app import main as cli_main

    cli_main()


def _finished_status(args: list[str]) -> bool:
    """`cloudtrain status JOB [--json]` of a finished job, answered from the job store without typer (a third
    of the start-up) or boto3: a CI job polling a finished job costs next to nothing. A finished job never
    changes, on any backend.

    Anything else, or anything unexpected (no record, a job still running, an unreadable store), is left
    to the full command, which answers it (or reports the error) as always.
    """
    rest = [a for a in args[1:] if a != "--json"]
    if args[:1] != ["status"] or len(rest) != 1 or rest[0].startswith("-"):
        return False
    from cloudtrain import api

    info = api.finished_status(rest[0])
    if info is None or info.kind != "job":  # a sweep: its trials are read live
        return False
    from cloudtrain.cli import render

    if "--json" in args:
        render.print_json(info.to_json())
    else:
        render.job_detail(info, api.metrics_note(info))
        render.next_steps(info)
    return True


def _terminal_columns() -> int:
    """`shutil.get_terminal_size().columns`, which click caps at 80 (less 2) for help, without importing shutil."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _print(text: str, *, err: bool) -> None:
    stream = sys.stderr if err else sys.stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:  # `cloudtrain --help | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
