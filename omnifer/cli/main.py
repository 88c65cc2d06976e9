"""The ``omnifer`` click group, global options and error handling."""

from __future__ import annotations

import logging
import os
import sys

import click

from omnifer import __version__
from omnifer.cli.common import Context
from omnifer.errors import OmniferError


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
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Context(workspace_root=workspace, as_json=as_json, quiet=quiet)


def _register() -> None:
    from omnifer.cli import data, distill, evaluate, index, mine, status, synth, train

    for module in (status, synth, data, train, evaluate, index, mine, distill):
        cli.add_command(module.command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: known errors become one line, everything else a traceback."""
    debug = os.environ.get("OMNIFER_DEBUG", "") not in ("", "0")
    try:
        code = cli.main(args=argv, prog_name="omnifer", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:  # click's form of Ctrl-C
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        if debug:
            raise
        click.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except OmniferError as exc:
        if debug:
            raise
        click.echo(f"error: {exc} (set OMNIFER_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
