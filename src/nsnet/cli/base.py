"""The `nsnet` group: global options, the lazily made client, and docker's error contract.

Every failure ends as one line on stderr and a non-zero exit, never a traceback: docker users
script against "Error response from daemon: ..." and against exit codes (125/126/127 for run).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn, cast

import click

from nsnet.cli.format import FormatError
from nsnet.client import APIError, Client, ClientError

USAGE_EXIT = 125  # docker exits 125 on flag errors, whatever the command

# run, create and exec stop parsing at the image/container: what follows is the command line
# inside the container, flags included.
RUN_SETTINGS: dict[str, Any] = {"allow_interspersed_args": False}


def usage_exit_code(exc: click.UsageError) -> int:
    """docker: 125 for a bad flag, 1 for a wrong argument count or an unknown command."""
    if isinstance(exc, click.exceptions.NoSuchCommand | click.BadArgumentUsage):
        return 1
    if isinstance(exc, click.MissingParameter) and isinstance(exc.param, click.Argument):
        return 1
    return USAGE_EXIT


class CLIExit(Exception):
    """Leave with `code`, after printing `message` (one line) on stderr when there is one."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or "")
        self.code = code
        self.message = message


def fail(message: str, code: int = 1) -> NoReturn:
    raise CLIExit(code, f"Error: {message}")


def daemon_error(exc: APIError) -> str:
    return f"Error response from daemon: {exc.message}"


def error_line(exc: BaseException) -> str:
    """How docker words an error coming out of a command."""
    if isinstance(exc, APIError):
        return daemon_error(exc)
    if isinstance(exc, ClientError | FormatError):
        return f"Error: {exc}"
    return f"Error: {exc}"


def warn(line: str) -> None:
    click.echo(line, err=True)


@dataclass
class State:
    """Per-invocation settings; the client is made on first use so `--help` never connects."""

    host: str | None = None
    debug: bool = False
    _client: Client | None = field(default=None, repr=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.host)
        return self._client


_TRUE = {"1", "t", "true"}
_FALSE = {"0", "f", "false"}


def _flag_tables(command: click.Command) -> tuple[dict[str, tuple[str, str | None]], set[str]]:
    """The command's boolean switches (`--flag` → its on and off spellings) and the options
    that take a value (whose next token must not be read as a flag)."""
    switches: dict[str, tuple[str, str | None]] = {}
    takes_value: set[str] = set()
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        if param.is_flag and not param.count:
            off = param.secondary_opts[0] if param.secondary_opts else None
            for opt in param.opts:
                if opt.startswith("--"):
                    switches[opt] = (opt, off)
        elif not param.is_flag:
            takes_value.update(param.opts)
    return switches, takes_value


def _switch_tokens(name: str, value: str, on: str, off: str | None) -> list[str]:
    """`--name=value` for a switch, as Go's strconv.ParseBool reads the value."""
    text = value.strip().lower()
    if text in _TRUE:
        return [on]
    if text in _FALSE:
        return [off] if off is not None else []
    raise click.UsageError(
        f'invalid argument "{value}" for "{name}" flag: '
        f'strconv.ParseBool: parsing "{value}": invalid syntax'
    )


def rewrite_bool_flags(
    command: click.Command, args: Sequence[str], interspersed: bool = True
) -> list[str]:
    """Turn docker's `--flag=false` spelling into what click understands (`--no-flag`).

    Only tokens before the first positional are touched when the command stops at it (run,
    exec): what follows belongs to the container's command line.
    """
    switches, takes_value = _flag_tables(command)
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            if name in switches:
                out.extend(_switch_tokens(name, value, *switches[name]))
            else:
                out.append(arg)
        elif arg.startswith("-") and arg != "-":
            out.append(arg)
            if arg in takes_value and i + 1 < len(args):
                out.append(args[i + 1])
                i += 1
        else:
            if not interspersed:
                out.extend(args[i:])
                break
            out.append(arg)
        i += 1
    return out


class DockerCommand(click.Command):
    """A command that also accepts docker's `--bool-flag=false` spelling."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rewritten = rewrite_bool_flags(self, args, ctx.allow_interspersed_args)
        return super().parse_args(ctx, rewritten)


class NsnetGroup(click.Group):
    """Group whose commands are DockerCommands and whose `main` renders errors docker's way."""

    command_class = DockerCommand
    group_class = type
    debug = False

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        code = self._run(args, prog_name, complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(
        self,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        **extra: Any,
    ) -> int:
        self.debug = os.environ.get("NSNET_DEBUG", "") not in ("", "0")
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = click.Group.main(
                self, argv, prog_name or "nsnet", complete_var, standalone_mode=False, **extra
            )
            return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except CLIExit as exc:
            if exc.message:
                warn(exc.message)
            return exc.code
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help())
            return 0
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "nsnet"
            warn(f"Error: {exc.format_message()} (see '{where} --help')")
            return usage_exit_code(exc)
        except click.ClickException as exc:
            warn(f"Error: {exc.format_message()}")
            return exc.exit_code
        except click.exceptions.Abort:
            warn("Aborted.")
            return 1
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            _silence_stdout()
            return 141
        except (ClientError, FormatError) as exc:
            if self.debug:
                raise
            warn(error_line(exc))
            return 1
        except Exception as exc:
            if self.debug:
                raise
            warn(f"Error: {exc.__class__.__name__}: {exc}")
            return 1


def _silence_stdout() -> None:
    """After EPIPE, the interpreter's final flush would complain; point stdout at /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def parse_filters(values: Iterable[str]) -> dict[str, list[str]]:
    """`-f key=value` flags as docker's filters.ParseFlag reads them."""
    out: dict[str, list[str]] = {}
    for item in values:
        if "=" not in item:
            fail("bad format of filter (expected name=value)")
        key, value = item.split("=", 1)
        key = key.strip().lower()
        value = value.strip()
        bucket = out.setdefault(key, [])
        if value not in bucket:
            bucket.append(value)
    return out


def binary_stream(name: str) -> IO[bytes]:
    """The byte stream under sys.stdout/stderr/stdin (click 8.5 deprecates its helper)."""
    stream = getattr(sys, name)
    buffer = getattr(stream, "buffer", None)
    return cast("IO[bytes]", buffer if buffer is not None else stream)


def emit(text: str) -> None:
    """Write already-terminated text to stdout."""
    click.echo(text, nl=False)


def name_of(container: Mapping[str, Any]) -> str:
    name = str(container.get("Name") or "")
    return name[1:] if name.startswith("/") else name


@click.group(
    cls=NsnetGroup,
    context_settings={"help_option_names": ["--help"], "max_content_width": 100},
)
@click.option(
    "-H",
    "--host",
    envvar="NSNET_HOST",
    metavar="SOCKET",
    help="Daemon socket (unix:///path or a path); default unix:///run/nsnet/nsnet.sock.",
)
@click.option("-D", "--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(None, "-v", "--version", package_name="nsnet", message="nsnet %(version)s")
@click.pass_context
def cli(ctx: click.Context, host: str | None, debug: bool) -> None:
    """nsnet: container networking on the kernel's own primitives, driven like docker."""
    if debug and isinstance(ctx.command, NsnetGroup):
        ctx.command.debug = True
    ctx.obj = State(host=host, debug=debug)
