"""Shared pieces of the `mlops` commands: the session (arguments over settings), output
helpers and the parser that each command module adds to."""

from __future__ import annotations

import argparse
import dataclasses
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_tasks import errors
from mlops_tasks.errors import MlopsError, UnknownModel
from mlops_tasks.settings import Settings

if TYPE_CHECKING:
    from mlops_tasks.registry import Registry
    from mlops_tasks.specs import ModelSpec
    from mlops_tasks.storage import ArtifactStore

EXIT_CODES = "\n".join(
    f"  {cls.exit_code:>2}  {cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}"
    for cls in sorted(
        {
            c
            for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, MlopsError) and c.exit_code > 1
        },
        key=lambda c: (c.exit_code, c.__name__),
    )
)

Command = Callable[["Session"], int]

#: Where Airflow mounts the Models view, which serves reports at `reports/<model>/<run>/<file>`
#: (`URL_PREFIX` in plugins/mlops_ui.py; this package does not import plugins).
UI_PREFIX = "/mlops"


@dataclass
class Session:
    """One command's arguments and the settings they override, with what commands share."""

    args: argparse.Namespace
    settings: Settings

    @cached_property
    def store(self) -> ArtifactStore:
        return self.settings.open_store(self.args.store)

    @cached_property
    def registry(self) -> Registry:
        from mlops_tasks.registry import Registry

        return Registry(self.store)

    @property
    def spec_dir(self) -> Path:
        return Path(self.args.spec_dir) if self.args.spec_dir else self.settings.spec_dir

    @property
    def actor(self) -> str:
        return getattr(self.args, "actor", None) or self.settings.actor

    def spec(self, name: str) -> ModelSpec:
        from mlops_tasks.specs import find_spec

        return find_spec(name, self.spec_dir)

    def known_models(self) -> list[str]:
        """Models with a spec in the spec directory or anything in the store."""
        from mlops_tasks.specs import spec_files

        return sorted({p.stem for p in spec_files(self.spec_dir)} | set(self.registry.models()))

    def check_model(self) -> None:
        """Refuse a command whose `model` argument names a model nobody defined or stored.

        Without this, reading commands printed an empty table and exited 0 on a typo, and
        changing ones failed on something else ("no production version").
        """
        name = getattr(self.args, "model", None)
        if name is None:
            return
        known = self.known_models()
        if name in known:
            return
        raise UnknownModel(
            f"unknown model {name!r}: no spec in {self.spec_dir} and nothing in "
            f"{self.store.uri}; known models: {', '.join(known) or 'none'}",
            model=name,
            known=known,
            spec_dir=str(self.spec_dir),
            uri=self.store.uri,
        )

    def report_link(self, uri: str | None) -> str | None:
        """Where a person opens the report at store URI `uri`: the Models view's URL when the
        Airflow UI's address is known and the UI serves this store, else `uri` itself."""
        base = self.settings.ui_base_url
        given = (self.args.store or "").rstrip("/")
        other_store = bool(given) and given != self.settings.store_uri.rstrip("/")
        if not uri or not base or other_store:
            return uri
        from mlops_tasks.overview import report_path

        path = report_path(uri, self.store.uri)
        return f"{base}{UI_PREFIX}/reports/{urllib.parse.quote(path)}" if path else uri

    def out(self, data: Any, text: Callable[[Any], str]) -> None:
        """`data` as JSON with --json, else as `text(data)`; a record (a dataclass such as
        `ProductionChange`) is shown as its JSON. JSON has no Infinity or NaN: a document
        stored before they were stored as null shows them as null (`finite`)."""
        if dataclasses.is_dataclass(data) and not isinstance(data, type):
            from mlops_tasks.records import to_json

            data = to_json(data)
        if self.args.json:
            from mlops_tasks.storage import finite

            print(json.dumps(finite(data), indent=2, sort_keys=True, default=str, allow_nan=False))
        else:
            print(text(data))

    def say(self, text: str) -> None:
        """Progress for people; silent with --json so the output stays one JSON document."""
        if not self.args.json:
            print(text, flush=True)


def table(rows: list[dict[str, Any]], cols: list[str], empty: str = "(none)") -> str:
    if not rows:
        return empty
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, *body])


def short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Global options, accepted before the command (main parser) and after it (subparsers:
    their defaults are suppressed so they never overwrite a value given earlier)."""
    p = argparse.ArgumentParser(add_help=False)

    def dflt(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    p.add_argument("--store", default=dflt(None), help="artifact store URI (default: $MLOPS_STORE)")
    p.add_argument(
        "--spec-dir", default=dflt(None), help="directory of model specs ($MLOPS_SPEC_DIR)"
    )
    p.add_argument(
        "--json", action="store_true", default=dflt(False), help="machine-readable JSON output"
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", default=dflt(False), help="log progress to stderr"
    )
    return p


class Parser:
    """The command tree; each module adds its commands through `add`."""

    def __init__(self) -> None:
        self.root = argparse.ArgumentParser(
            prog="mlops",
            description="Drift-aware ML retraining platform: registry, specs, flows, serving.",
            epilog=(
                f"exit codes:\n   0  success\n   1  unexpected error\n{EXIT_CODES}\n"
                " 130  interrupted (Ctrl-C)\n"
                " 141  the reader of the output went away (`mlops audit M | head -1`)"
            ),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[_common(False)],
        )
        self.sub = self.root.add_subparsers(dest="command", required=True, metavar="COMMAND")
        self.common = _common(True)

    def add(
        self, name: str, func: Command | None, help_: str, under: Any = None
    ) -> argparse.ArgumentParser:
        parent = under if under is not None else self.sub
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=help_, description=help_, parents=[self.common]
        )
        if func is not None:
            p.set_defaults(func=func)
        return p

    def group(self, name: str, help_: str, dest: str, metavar: str) -> Any:
        p = self.add(name, None, help_)
        return p.add_subparsers(dest=dest, required=True, metavar=metavar)
