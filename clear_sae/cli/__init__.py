"""`clear-sae`: the command line over the library, one module per subcommand in `clear_sae.cli.commands`."""

from __future__ import annotations

import argparse
import re
import signal
import sys

from clear_sae import __version__
from clear_sae.cli.commands import ALL as COMMANDS
from clear_sae.cli.options import apply_config_file, configure_logging, log
from clear_sae.config import fit_threads, usable_cores
from clear_sae.errors import ClearSaeError, clear_interrupt, request_interrupt

USAGE_ERROR = 2
"""Exit status of a command line argparse refuses (argparse's own)."""
DOMAIN_ERROR = 3
"""Exit status of a command that stopped on bad input with a one-line `clear-sae: error: ...`."""
INTERRUPTED = 130
"""Exit status after Ctrl-C or SIGTERM; what was already written is kept."""

EPILOG = (
    f"Exit status: 0 done, {USAGE_ERROR} a usage error (an unknown or malformed option), {DOMAIN_ERROR} bad input "
    f"(one line on stderr says what is wrong and how to fix it), {INTERRUPTED} interrupted. "
    "Every subcommand takes --config FILE: a JSON or YAML mapping of its option names to values, which options "
    "given on the command line override."
)


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option with its default, where it has one (not for a required or off-by-default one)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.required:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The `clear-sae` parser (its subcommands' parsers by name: `subcommands`)."""
    parser = argparse.ArgumentParser(
        prog="clear-sae",
        description="Sparse-autoencoder concept erasure at the layer where a concept separates (CLEAR).",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"clear-sae {__version__}")
    volume = parser.add_mutually_exclusive_group()
    volume.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const=-1,
        dest="verbosity",
        default=0,
        help="print warnings and errors only",
    )
    volume.add_argument(
        "-v", "--verbose", action="store_const", const=1, dest="verbosity", help="also print debugging detail"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.HELP,
            epilog=EPILOG,
            formatter_class=DefaultsShown,
        )
        p.add_argument("--config", metavar="FILE", help="JSON or YAML file of option values (flags override it)")
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parsers of `parser`'s subcommands, by name."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; with `--config FILE`, its values become the subcommand's defaults first."""
    parser = build_parser()
    commands = subcommands(parser)
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    first = pre_parse(argv, commands)
    if first is not None:
        name, path = first
        apply_config_file(commands[name], name, path)
    return parser.parse_args(argv)


def pre_parse(argv: list[str], commands: dict[str, argparse.ArgumentParser]) -> tuple[str, str] | None:
    """The subcommand and the `--config` file an argument list names (None when it names no config file)."""
    name = next((a for a in argv if a in commands), None)
    if name is None:
        return None
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--config")
    known, _ = finder.parse_known_args(argv[argv.index(name) + 1 :])
    return (name, known.config) if known.config else None


def one_line(message: str) -> str:
    """`message` on one line: line breaks (from a quoted library error) become spaces, other spacing is kept."""
    return re.sub(r"[ \t]*\n\s*", " ", message.strip())


def main(argv: list[str] | None = None) -> int:
    """Entry point of `clear-sae`; returns the exit status."""
    try:
        args = parse(argv)
    except ClearSaeError as err:  # a --config file that cannot be read
        print(f"clear-sae: error: {one_line(str(err))}", file=sys.stderr)
        return DOMAIN_ERROR
    configure_logging(args.verbosity)
    # Only before torch is imported (always, for the command line; not when a test calls `main` in-process), as
    # the setting takes effect when torch starts.
    fitted = None if "torch" in sys.modules else fit_threads()
    if fitted is not None:
        threads, busy = fitted
        log.info(
            f"{busy:.1f} of {usable_cores()} cores are busy with other work: torch uses {threads} thread(s) "
            "(set OMP_NUM_THREADS to choose)"
        )
    clear_interrupt()
    signal.signal(signal.SIGTERM, request_interrupt)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # an ignored SIGINT (background job) stays so
        signal.signal(signal.SIGINT, request_interrupt)
    try:
        args.run(args)
    except ClearSaeError as err:
        print(f"clear-sae: error: {one_line(str(err))}", file=sys.stderr)
        return DOMAIN_ERROR
    except KeyboardInterrupt:
        resumable = args.command in ("cache", "train")
        hint = "; continue it with the same command and --resume" if resumable else ""
        print(f"clear-sae: interrupted; what was already written is kept{hint}", file=sys.stderr)
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
