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
    "age", "income", "credit_limit", "balance", "utilization", "num_accounts",
    "num_late_payments_12m", "months_since_last_delinquency", "debt_to_income", "loan_amount",
    "loan_term_months", "interest_rate", "employment_years", "num_credit_inquiries_6m",
    "avg_monthly_spend", "savings_balance", "payment_to_income", "tenure_months",
    "num_dependents", "credit_score",
]  # fmt: skip
CATEGORICAL = ["region", "employment_type", "home_ownership", "loan_purpose", "channel"]


def _rng(seed: int, day: date, scenario: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}|{day.isoformat()}|{scenario}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _choice(rng: np.random.Generator, values: list[str], p: list[float], n: int) -> np.ndarray:
    probs = np.asarray(p, dtype=float)
    return rng.choice(np.asarray(values, dtype=object), size=n, p=probs / probs.sum())


def generate_day(day: date, rows: int, scenario: str = "stable", seed: int = 7) -> pd.DataFrame:
    """One day's batch of `rows` customers under `scenario`."""
    import pandas as pd

    if scenario not in SCENARIOS:
        raise MlopsError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    rng = _rng(seed, day, scenario)
    n = rows
    shift = scenario == "covariate_shift"

    age = np.clip(rng.normal(42 if not shift else 31, 12, n), 18, 90).round()
    income = np.exp(rng.normal(10.8 if not shift else 10.3, 0.45, n)).round(2)
    credit_limit = (income * rng.uniform(0.1, 0.5, n)).round(2)
    utilization = np.clip(rng.beta(2, 5 if not shift else 3.0, n), 0, 1).round(4)
    balance = (credit_limit * utilization).round(2)
    num_accounts = rng.poisson(4, n).astype(float)
    late = rng.poisson(0.4 if not shift else 0.7, n).astype(float)
    months_since_delinq = np.where(late > 0, rng.integers(0, 24, n), 60).astype(float)
    dti = np.clip(rng.normal(0.3 if not shift else 0.42, 0.12, n), 0, 1.5).round(4)
    loan_amount = (rng.lognormal(9.3, 0.6, n)).round(2)
    loan_term = rng.choice([12.0, 24.0, 36.0, 48.0, 60.0], n)
    interest = np.clip(rng.normal(0.11, 0.04, n), 0.01, 0.35).round(4)
    emp_years = np.clip(rng.exponential(6, n), 0, 45).round(1)
    inquiries = rng.poisson(1.0 if not shift else 2.2, n).astype(float)
    spend_base = income / 12 * rng.uniform(0.2, 0.6, n)
    savings = np.clip(rng.lognormal(8.5, 1.2, n), 0, None).round(2)
    payment_to_income = np.clip(loan_amount / loan_term / (income / 12), 0, 5).round(4)
    tenure = rng.integers(1, 240, n).astype(float)
    dependents = rng.poisson(1.1, n).astype(float)
    credit_score = np.clip(
        rng.normal(690 if not shift else 660, 60, n) - 25 * late - 40 * (utilization - 0.3),
        300,
        850,
    ).round()

    region = _choice(rng, REGIONS, [0.2, 0.2, 0.2, 0.2, 0.2] if not shift else
                     [0.1, 0.45, 0.15, 0.2, 0.1], n)  # fmt: skip
    employment = _choice(rng, EMPLOYMENT, [0.6, 0.15, 0.07, 0.1, 0.08], n)
    home = _choice(rng, HOME, [0.4, 0.2, 0.35, 0.05], n)
    purpose = _choice(rng, PURPOSE, [0.2, 0.15, 0.1, 0.1, 0.25, 0.2], n)
    channel = _choice(rng, CHANNEL, [0.3, 0.4, 0.2, 0.1] if not shift else [0.1, 0.5, 0.35, 0.05],
                      n)  # fmt: skip

    z_score = (credit_score - 680) / 60
    if scenario == "concept_drift":
        # Defaults now follow employment type and the loan's price, not the credit profile.
        logit = (
            -1.6
            + 2.2 * (employment == "unemployed")
            + 1.4 * (employment == "self_employed")
            + 14.0 * (interest - 0.11)
            - 1.5 * (employment == "salaried")
            + 0.8 * z_score
        )
    else:
        logit = (
            -1.9
            - 1.1 * z_score
            + 2.2 * (utilization - 0.3)
            + 0.45 * late
            + 1.6 * (dti - 0.3)
            + 0.9 * (employment == "unemployed")
            + 0.25 * inquiries
            - 0.02 * emp_years
            + 0.3 * (purpose == "debt_consolidation")
        )
    default = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    annual_spend = (
        12 * spend_base * (1 + 0.3 * (channel == "online")) + 50 * num_accounts
        + rng.normal(0, 800, n)
    ).round(2)  # fmt: skip
    avg_monthly_spend = (spend_base + rng.normal(0, 150, n)).round(2)

    start = datetime.combine(day, time())
    seconds = np.sort(rng.integers(0, 86_400, n))
    df = pd.DataFrame(
        {
            "customer_id": [f"c{day:%Y%m%d}-{i:06d}" for i in range(n)],
            "event_time": pd.to_datetime(start) + pd.to_timedelta(seconds, unit="s"),
            "age": age, "income": income, "credit_limit": credit_limit, "balance": balance,
            "utilization": utilization, "num_accounts": num_accounts,
            "num_late_payments_12m": late,
            "months_since_last_delinquency": months_since_delinq, "debt_to_income": dti,
            "loan_amount": loan_amount, "loan_term_months": loan_term, "interest_rate": interest,
            "employment_years": emp_years, "num_credit_inquiries_6m": inquiries,
            "avg_monthly_spend": avg_monthly_spend, "savings_balance": savings,
            "payment_to_income": payment_to_income, "tenure_months": tenure,
            "num_dependents": dependents, "credit_score": credit_score,
            "region": region, "employment_type": employment, "home_ownership": home,
            "loan_purpose": purpose, "channel": channel,
            "default": default, "annual_spend": annual_spend,
        }
    )  # fmt: skip
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


def batch_key(prefix: str, day: date) -> str:
    return f"{prefix.rstrip('/')}/dt={day.isoformat()}/part-0.parquet"


def write_batches(
    source: str = DEMO_SOURCE,
    start: date | None = None,
    days: int = 7,
    rows_per_day: int = 2_000,
    scenario: str = "stable",
    seed: int = 7,
    store: ArtifactStore | None = None,
) -> list[str]:
    """Write `days` daily batches from `start` (default: ending yesterday) under `source`."""
    st, prefix = resolve(source, store)
    start = start or date.today() - timedelta(days=days)
    uris = []
    for i in range(days):
        day = start + timedelta(days=i)
        buf = io.BytesIO()
        generate_day(day, rows_per_day, scenario, seed).to_parquet(buf, index=False)
        key = batch_key(prefix, day)
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
