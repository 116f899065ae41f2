"""`mlops`: inspect and change the registry, validate specs, run the flows, serve models.

Human-readable tables by default, `--json` for scripts. Global options (`--store`, `--json`,
`--spec-dir`, `-v`) work before or after the command. Exit codes: 0 success, 1 unexpected
error, 2 bad usage, each MlopsError subclass has its own code (see `mlops --help`), 130 on
Ctrl-C and 141 when the reader of the output went away (`mlops audit M | head -1`).
Nothing in the domain imports this package.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from mlops_tasks.cli import demo, registry_cmds, run_cmds
from mlops_tasks.cli.base import Parser, Session
from mlops_tasks.errors import MlopsError
from mlops_tasks.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = Parser()
    registry_cmds.register(parser)
    run_cmds.register(parser)
    demo.register(parser)
    return parser.root


#: The status a shell reports for a process that SIGPIPE ended (128 + 13): what `cat`, `seq`
#: or `grep` give in `... | head -1`. Python ignores SIGPIPE and raises BrokenPipeError instead.
BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = run_command(argv)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:
        # The reader of our output (`head`, `less`, `grep -m1`) is gone, which is no error of
        # ours: point stdout at /dev/null so that the interpreter's last flush does not fail
        # again, and end the way well-behaved Unix tools do (the recipe of Python's `signal`
        # docs, "Note on SIGPIPE", with the status SIGPIPE gives them instead of its 1).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE
    return code


def run_command(argv: Sequence[str] | None = None) -> int:
    """One command; its exit status."""
    args = build_parser().parse_args(argv)
    # The service logs what it serves at INFO; other commands only warn unless -v.
    info = args.verbose or args.command == "serve"
    logging.basicConfig(
        level=logging.INFO if info else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        session = Session(args, Settings.from_env())
        session.check_model()
        code: int = args.func(session)
        return code
    except MlopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
