"""Real public data for the integration tests: the Bikeshare table from ISLP, as daily batches.

Third-party data, not written by this project. `Bikeshare` (hourly counts of rental bikes in
Washington, DC, in 2011: 8,645 rows) ships inside the PyPI wheel of ISLP, the companion package
of James, Witten, Hastie, Tibshirani and Taylor, *An Introduction to Statistical Learning, with
Applications in Python* (Springer, 2023), https://www.statlearning.com, `ISLP==0.4.0` (a
BSD-style licence, per its metadata), file `ISLP/data/Bikeshare.csv`. ISLP took it from the UCI
Machine Learning Repository: Hadi Fanaee-T and Joao Gama, "Event labeling combining ensemble
detectors and background knowledge", Progress in Artificial Intelligence (2013), dataset "Bike
Sharing", https://archive.ics.uci.edu/dataset/275/bike+sharing+dataset, built from Capital
Bikeshare's public trip history, http://capitalbikeshare.com/system-data. ISLP's table is the
first of the two UCI years (2011).

The wheel is installed without its dependencies (`requirements-data.txt`, `--no-deps`) and the
CSV is read from the installed files: importing `ISLP` would import torch.

Why this table: it has a clock (day of year and hour) and natural seasonal drift (temperature,
humidity, season code and demand all move through the year), integer-coded categories
(`season` 1-4, `workingday` 0/1) and text ones (`weathersit`, and `hr` stored as quoted text
"0".."23"), none of it shaped by this project's code.
"""

from __future__ import annotations

import io
from datetime import date
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from typing import TYPE_CHECKING

import pandas as pd

from mlops_tasks.storage import ArtifactStore, resolve

if TYPE_CHECKING:
    from pathlib import Path

#: The package and file the table comes from; pinned in requirements-data.txt.
PACKAGE = "ISLP"
CSV = "ISLP/data/Bikeshare.csv"
#: The year of the rows: the file only carries the day of the year (1-365) and the hour. Its
#: 8,645 rows are UCI's 2011 records, and `weekday` (0 = Sunday) agrees with 2011's calendar
#: on every row (`load` checks it).
YEAR = 2011
#: Where the batches go in a store, and the source a spec names.
PREFIX = "realdata/bikeshare/batches"
SOURCE = f"store://{PREFIX}"

_SPEC = """\
# Hourly bike rentals in Washington DC (ISLP's Bikeshare, 2011; see tests/realdata.py).
name: bikeshare
description: >
  Bikes rented per hour in Washington DC, from the season, the hour, working days and the
  weather. Public data (ISLP / UCI Bike Sharing), replayed day by day to show seasonal drift.
owner: realdata
task: regression
data:
  source: {source}
  time_column: timestamp
  training_window_days: 28
target: bikers
features:
  numeric: [{numeric}]
  categorical: [{categorical}]
model:
  estimator: hist_gradient_boosting
  params: {{learning_rate: 0.1, max_iter: 100, max_leaf_nodes: 15, min_samples_leaf: 5}}
  seed: 7
validation:
  min_rows: 100
  max_null_fraction: 0.0
  ranges:
    temp: {{min: 0, max: 1}}
    hum: {{min: 0, max: 1}}
    windspeed: {{min: 0, max: 1}}
evaluation:
  primary_metric: rmse
  min: {{r2: 0.5}}
  max_drop: 10
  holdout_fraction: 0.25
drift:
  drift_share: 0.3
  consecutive_checks: 1
  cooldown_hours: 72
  min_rows: 100
  window_days: 7
  current_source: batches
  performance: {{metric: rmse, max_drop_pct: 15, min_labelled_rows: 100}}
schedule:
  retrain: null
  monitor: "0 0 * * *"
deployment:
  approval: auto
  verify_sample_rows: 50
"""

#: The integer-coded columns (season 1-4, workingday 0/1) and the text-coded hour are
#: categories: one canonical text form each, in training, serving, validation and drift.
SPEC = _SPEC.format(
    source=SOURCE,
    numeric="temp, hum, windspeed",
    categorical="season, workingday, weathersit, hr",
)


def spec_text(source: str = SOURCE) -> str:
    """The `bikeshare` spec, reading its batches from `source`."""
    return SPEC.replace(SOURCE, source)


def csv_path() -> Path:
    """The installed CSV, without importing the package (that would import torch)."""
    try:
        path = distribution(PACKAGE).locate_file(CSV)
    except PackageNotFoundError:
        raise RuntimeError(
            f"{PACKAGE} is not installed; `make install` installs requirements-data.txt"
        ) from None
    return path  # type: ignore[return-value]


@cache
def _table() -> pd.DataFrame:
    return pd.read_csv(csv_path(), dtype={"hr": str, "mnth": str, "weathersit": str})


def load() -> pd.DataFrame:
    """The table as published, plus `timestamp` (UTC) from the day of the year and the hour.

    Integer-coded columns stay integers and `hr` stays text, as the file has them.
    """
    df = _table().copy()
    start = pd.Timestamp(f"{YEAR}-01-01", tz="UTC")
    df.insert(
        0,
        "timestamp",
        start
        + pd.to_timedelta(df["day"] - 1, unit="D")
        + pd.to_timedelta(df["hr"].astype(int), unit="h"),
    )
    calendar_weekday = (df["timestamp"].dt.dayofweek + 1) % 7  # pandas: 0 = Monday
    if not (calendar_weekday == df["weekday"]).all():
        raise ValueError(f"{CSV}: `weekday` does not match the calendar of {YEAR}")
    return df


def write_batches(
    store: ArtifactStore,
    source: str = SOURCE,
    start: date | None = None,
    end: date | None = None,
) -> list[date]:
    """Write one `dt=YYYY-MM-DD/part.parquet` batch per day in [start, end]; the dates."""
    st, prefix = resolve(source, store)
    df = load()
    days = df["timestamp"].dt.date
    written = []
    for day, rows in df.groupby(days, sort=True):
        if (start and day < start) or (end and day > end):
            continue
        buf = io.BytesIO()
        rows.reset_index(drop=True).to_parquet(buf, index=False)
        st.put_bytes(f"{prefix.rstrip('/')}/dt={day.isoformat()}/part.parquet", buf.getvalue())
        written.append(day)
    return written
