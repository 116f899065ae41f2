#!/usr/bin/env bash
# `make demo`: seed demo data into the local store (once) and run Airflow on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLOPS_STORE="${MLOPS_STORE:-file://$PWD/.mlops}"
export PYTHONWARNINGS="ignore::DeprecationWarning,ignore::FutureWarning"
if ! .venv/bin/python - <<'PY'
import sys
from mlops_tasks.datasets import batch_dates
from mlops_tasks.synthetic import DEMO_SOURCE
sys.exit(0 if batch_dates(DEMO_SOURCE) else 1)
PY
then
  .venv/bin/mlops demo seed --days 14 --rows 1500
fi
exec .venv/bin/python scripts/local_airflow.py --home "$PWD/.airflow" --port "${AIRFLOW_PORT:-8080}"
