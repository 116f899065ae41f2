"""`mlops`: inspect and change the registry, validate specs, run the flows, serve models.

Human-readable tables by default, `--json` for scripts. Global options (`--store`, `--json`,
`--spec-dir`, `-v`) work before or after the command. Exit codes: 0 success, 1 unexpected
error, 2 bad usage, and each MlopsError subclass has its own code (see `mlops --help`).
Nothing in the domain imports this package.
"""

from __future__ import annotations

import argparse
import logging
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


def main(argv: Sequence[str] | None = None) -> int:
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
