"""The raw Palmer penguins table, as published, written to a store as daily batches, and the
`mlops` command's runner for such a store (`tests.flowkit.Loop`).

`penguins-raw.csv` ships in the `palmerpenguins` wheel (Horst, Hill and Gorman, Palmer
Archipelago (Antarctica) penguin data, 2020, https://allisonhorst.github.io/palmerpenguins/,
CC0; data by Kristen Gorman and the Palmer Station LTER): 344 birds with column names holding
spaces and units (`Culmen Length (mm)`), the egg date as text, three species under their long
names, the sex as `MALE`/`FEMALE` with 11 blanks, and a `Clutch Completion` flag. Pinned in
requirements-data.txt and read from the installed files.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

import pandas as pd
import pytest

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
