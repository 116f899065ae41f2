"""The raw Palmer penguins table, as published, written to a store as daily batches, and the
`mlops` command run in this process against that store.

`penguins-raw.csv` ships in the `palmerpenguins` wheel (Horst, Hill and Gorman, Palmer
Archipelago (Antarctica) penguin data, 2020, https://allisonhorst.github.io/palmerpenguins/,
CC0; data by Kristen Gorman and the Palmer Station LTER): 344 birds with column names holding
spaces and units (`Culmen Length (mm)`), the egg date as text, three species under their long
names, the sex as `MALE`/`FEMALE` with 11 blanks, and a `Clutch Completion` flag. Pinned in
requirements-data.txt and read from the installed files.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_tasks.cli import main
from mlops_tasks.storage import LocalStore

#: Where the batches go in a store (the example specs' `data.source`).
PREFIX = "realdata/penguins/batches"


def raw_table() -> pd.DataFrame:
    try:
        path = distribution("palmerpenguins").locate_file("palmerpenguins/data/penguins-raw.csv")
    except PackageNotFoundError:
        pytest.fail(
            "palmerpenguins is not installed; `make install` installs requirements-data.txt"
        )
    return pd.read_csv(str(path))


def write_batches(store: LocalStore) -> None:
    """One batch per egg-laying day, as `dt=<Date Egg>/part-0.csv`."""
    for day, rows in raw_table().groupby("Date Egg"):
        store.put_bytes(f"{PREFIX}/dt={day}/part-0.csv", rows.to_csv(index=False).encode())


@dataclass
class Loop:
    """A store and a spec directory, and `mlops ARGV --store S --spec-dir D --json` on them."""

    store: LocalStore
    specs: Path

    def mlops(self, *argv: str) -> tuple[int, Any, str]:
        args = [*argv, "--store", self.store.uri, "--spec-dir", str(self.specs), "--json"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
        text = out.getvalue()
        return code, json.loads(text) if text.strip() else None, err.getvalue()
