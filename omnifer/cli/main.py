"""The ``omnifer`` click group, global options and error handling."""

from __future__ import annotations

import logging
import os
import signal
import sys

import click

from omnifer import __version__
from omnifer.cli.common import Context, os_error_line
from omnifer.errors import OmniferError
from omnifer.workspace import Terminated, terminate_like_interrupt


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="omnifer")
@click.option("--workspace", "-w", type=click.Path(file_okay=False), default=None,
              help="Workspace folder where runs are recorded [default: current directory].")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, as_json: bool, verbose: int, quiet: bool):
    """Build facial-expression datasets the omni-supervised way."""
    from omnifer.pipeline import launch

    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    if not launch.is_main():
        level = logging.ERROR  # data-parallel training: one process tells, every one fails loud
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Context(workspace_root=workspace, as_json=as_json, quiet=quiet,
                      argv=tuple(ctx.obj or ()))


def _register() -> None:
    from omnifer.cli import (audit, data, demo, distill, evaluate, index, mine, predict, publish,
                             report, status, synth, train)

    for module in (status, synth, data, train, evaluate, predict, audit, index, mine, distill,
                   publish, report, demo):
        cli.add_command(module.command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: known errors become one line, everything else a traceback.
    SIGTERM is handled like Ctrl-C (the open run is marked failed), exit status 143."""
    debug = os.environ.get("OMNIFER_DEBUG", "") not in ("", "0")
    previous = terminate_like_interrupt()
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        code = cli.main(args=argv, prog_name="omnifer", standalone_mode=False, obj=tuple(argv))
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:  # Abort: click's Ctrl-C
        if debug and isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated):
            click.echo("terminated; run the same command again to resume", err=True)
            sys.exit(143)
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except OmniferError as exc:
        if debug:
            raise
        click.echo(f"error: {exc} (set OMNIFER_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
    except OSError as exc:
        line = os_error_line(exc)
        if debug or line is None:
            raise
        click.echo(f"error: {line} (set OMNIFER_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
