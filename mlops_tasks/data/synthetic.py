"""Deterministic demo data: a consumer-credit table written as dated daily batches.

One table serves two demo models: `default` (binary: will the customer default within 12 months)
and `annual_spend` (regression). Every day's batch is seeded from (seed, date, scenario), so the
same call always writes the same bytes. Scenarios:

* `stable`           the reference distribution.
* `covariate_shift`  feature distributions move (lower incomes, higher utilisation, more online
                     customers); the label relationship is unchanged.
* `concept_drift`    features stay, the label relationship changes (defaults driven by
                     employment type and interest rate instead of utilisation).
* `quality_break`    broken data: nulls, out-of-range values, an unknown category and a retyped
                     column.
"""

from __future__ import annotations

import hashlib
import io
import logging
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_tasks.errors import MlopsError
from mlops_tasks.storage import ArtifactStore, resolve

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SCENARIOS = ("stable", "covariate_shift", "concept_drift", "quality_break")
DEMO_SOURCE = "store://demo/customers/batches"

REGIONS = ["north", "south", "east", "west", "central"]
EMPLOYMENT = ["salaried", "self_employed", "unemployed", "retired", "student"]
HOME = ["rent", "own", "mortgage", "other"]
PURPOSE = ["car", "home", "education", "business", "personal", "debt_consolidation"]
CHANNEL = ["branch", "online", "mobile", "partner"]

NUMERIC = [
    "age",
    "income",
    "credit_limit",
    "balance",
    "utilization",
    "num_accounts",
    "num_late_payments_12m",
    "months_since_last_delinquency",
    "debt_to_income",
    "loan_amount",
    "loan_term_months",
    "interest_rate",
    "employment_years",
    "num_credit_inquiries_6m",
    "avg_monthly_spend",
    "savings_balance",
    "payment_to_income",
    "tenure_months",
    "num_dependents",
    "credit_score",
]
CATEGORICAL = ["region", "employment_type", "home_ownership", "loan_purpose", "channel"]


def _rng(seed: int, day: date, scenario: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}|{day.isoformat()}|{scenario}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _choice(rng: np.random.Generator, values: list[str], p: list[float], n: int) -> np.ndarray:
    probs = np.asarray(p, dtype=float)
    return rng.choice(np.asarray(values, dtype=object), size=n, p=probs / probs.sum())


def _customers(rng: np.random.Generator, n: int, shift: bool) -> dict[str, np.ndarray]:
    """The customer profile columns (draw order fixed: it defines the data)."""
    c: dict[str, np.ndarray] = {}
    c["age"] = np.clip(rng.normal(42 if not shift else 31, 12, n), 18, 90).round()
    income = np.exp(rng.normal(10.8 if not shift else 10.3, 0.45, n)).round(2)
    c["income"] = income
    c["credit_limit"] = (income * rng.uniform(0.1, 0.5, n)).round(2)
    c["utilization"] = np.clip(rng.beta(2, 5 if not shift else 3.0, n), 0, 1).round(4)
    c["balance"] = (c["credit_limit"] * c["utilization"]).round(2)
    c["num_accounts"] = rng.poisson(4, n).astype(float)
    late = rng.poisson(0.4 if not shift else 0.7, n).astype(float)
    c["num_late_payments_12m"] = late
    c["months_since_last_delinquency"] = np.where(late > 0, rng.integers(0, 24, n), 60).astype(
        float
    )
    c["debt_to_income"] = np.clip(rng.normal(0.3 if not shift else 0.42, 0.12, n), 0, 1.5).round(4)
    c["loan_amount"] = (rng.lognormal(9.3, 0.6, n)).round(2)
    c["loan_term_months"] = rng.choice([12.0, 24.0, 36.0, 48.0, 60.0], n)
    c["interest_rate"] = np.clip(rng.normal(0.11, 0.04, n), 0.01, 0.35).round(4)
    c["employment_years"] = np.clip(rng.exponential(6, n), 0, 45).round(1)
    c["num_credit_inquiries_6m"] = rng.poisson(1.0 if not shift else 2.2, n).astype(float)
    c["spend_base"] = income / 12 * rng.uniform(0.2, 0.6, n)
    c["savings_balance"] = np.clip(rng.lognormal(8.5, 1.2, n), 0, None).round(2)
    monthly_payment = c["loan_amount"] / c["loan_term_months"]
    c["payment_to_income"] = np.clip(monthly_payment / (income / 12), 0, 5).round(4)
    c["tenure_months"] = rng.integers(1, 240, n).astype(float)
    c["num_dependents"] = rng.poisson(1.1, n).astype(float)
    score = rng.normal(690 if not shift else 660, 60, n) - 25 * late
    c["credit_score"] = np.clip(score - 40 * (c["utilization"] - 0.3), 300, 850).round()
    regions = [0.2, 0.2, 0.2, 0.2, 0.2] if not shift else [0.1, 0.45, 0.15, 0.2, 0.1]
    c["region"] = _choice(rng, REGIONS, regions, n)
    c["employment_type"] = _choice(rng, EMPLOYMENT, [0.6, 0.15, 0.07, 0.1, 0.08], n)
    c["home_ownership"] = _choice(rng, HOME, [0.4, 0.2, 0.35, 0.05], n)
    c["loan_purpose"] = _choice(rng, PURPOSE, [0.2, 0.15, 0.1, 0.1, 0.25, 0.2], n)
    channels = [0.3, 0.4, 0.2, 0.1] if not shift else [0.1, 0.5, 0.35, 0.05]
    c["channel"] = _choice(rng, CHANNEL, channels, n)
    return c


def _default_logit(c: dict[str, np.ndarray], concept_drift: bool) -> np.ndarray:
    z_score = (c["credit_score"] - 680) / 60
    employment = c["employment_type"]
    if concept_drift:
        # Defaults now follow employment type and the loan's price, not the credit profile.
        return np.asarray(
            -1.6
            + 2.2 * (employment == "unemployed")
            + 1.4 * (employment == "self_employed")
            + 14.0 * (c["interest_rate"] - 0.11)
            - 1.5 * (employment == "salaried")
            + 0.8 * z_score
        )
    return np.asarray(
        -1.9
        - 1.1 * z_score
        + 2.2 * (c["utilization"] - 0.3)
        + 0.45 * c["num_late_payments_12m"]
        + 1.6 * (c["debt_to_income"] - 0.3)
        + 0.9 * (employment == "unemployed")
        + 0.25 * c["num_credit_inquiries_6m"]
        - 0.02 * c["employment_years"]
        + 0.3 * (c["loan_purpose"] == "debt_consolidation")
    )


def generate_day(
    day: date, rows: int, scenario: str = "stable", seed: int = 7, part: int = 0
) -> pd.DataFrame:
    """One day's batch of `rows` customers under `scenario`; `part` > 0: a further batch of
    the same day, other customers (their ids carry the part)."""
    import pandas as pd

    if scenario not in SCENARIOS:
        raise MlopsError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    rng = _rng(seed + 7919 * part, day, scenario)
    n = rows
    c = _customers(rng, n, scenario == "covariate_shift")
    logit = _default_logit(c, scenario == "concept_drift")
    default = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    spend_base = c.pop("spend_base")
    online = 1 + 0.3 * (c["channel"] == "online")
    annual_spend = (
        12 * spend_base * online + 50 * c["num_accounts"] + rng.normal(0, 800, n)
    ).round(2)
    c["avg_monthly_spend"] = (spend_base + rng.normal(0, 150, n)).round(2)
    seconds = np.sort(rng.integers(0, 86_400, n))
    df = pd.DataFrame(
        {
            # A further part of a day numbers its customers after a prefix: ids stay unique.
            "customer_id": [f"c{day:%Y%m%d}-{part or ''}{i:06d}" for i in range(n)],
            "event_time": pd.to_datetime(datetime.combine(day, time()))
            + pd.to_timedelta(seconds, unit="s"),
            **{col: c[col] for col in NUMERIC},
            **{col: c[col] for col in CATEGORICAL},
            "default": default,
            "annual_spend": annual_spend,
        }
    )
    if scenario == "quality_break":
        df = _break(df, rng)
    return df


def _break(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    n = len(df)
    df = df.copy()
    df.loc[rng.uniform(size=n) < 0.3, "income"] = np.nan  # far more nulls than allowed
    bad_age = rng.uniform(size=n) < 0.05
    df.loc[bad_age, "age"] = rng.choice([-4.0, 212.0], int(bad_age.sum()))  # out of range
    df.loc[rng.uniform(size=n) < 0.1, "region"] = "atlantis"  # unknown category
    df["credit_score"] = df["credit_score"].map(lambda v: f"{v:.0f} pts")  # retyped column
    return df.drop(columns=["tenure_months"])  # dropped column


def batch_key(prefix: str, day: date, part: int = 0) -> str:
    return f"{prefix.rstrip('/')}/dt={day.isoformat()}/part-{part}.parquet"


def write_batches(
    source: str = DEMO_SOURCE,
    start: date | None = None,
    days: int = 7,
    rows_per_day: int = 2_000,
    scenario: str = "stable",
    seed: int = 7,
    *,
    store: ArtifactStore,
) -> list[str]:
    """Write `days` daily batches from `start` (default: ending yesterday) under `source`.

    A day that already holds a batch gets the new one as its next part (`part-1.parquet`,
    ...): a batch once written is never replaced.
    """
    st, prefix = resolve(source, store)
    start = start or date.today() - timedelta(days=days)
    uris = []
    for i in range(days):
        day = start + timedelta(days=i)
        part = len(st.list_keys(f"{prefix.rstrip('/')}/dt={day.isoformat()}/"))
        buf = io.BytesIO()
        generate_day(day, rows_per_day, scenario, seed, part).to_parquet(buf, index=False)
        key = batch_key(prefix, day, part)
        st.put_bytes(key, buf.getvalue())
        uris.append(st.uri_for(key))
    log.info("wrote %d %s batch(es) of %d rows under %s", days, scenario, rows_per_day, source)
    return uris


def demo_rows(rows: int, scenario: str = "stable", seed: int = 7) -> pd.DataFrame:
    """A frame of `rows` rows (one synthetic day), handy for tests and benchmarks."""
    return generate_day(date(2026, 1, 1), rows, scenario, seed)


def feature_records(df: pd.DataFrame, features: list[str]) -> list[dict[str, Any]]:
    """Rows as JSON-able dicts of the given features (for prediction requests)."""
    return [{str(k): v for k, v in row.items()} for row in df[features].to_dict(orient="records")]
