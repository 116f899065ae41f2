#!/usr/bin/env bash
# `make demo`: seed demo data (once), start the prediction service and Airflow on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "stop" ]; then
  # `make stop`: end a `make demo` running elsewhere. The launcher stops Airflow's components
  # on SIGTERM, and this script's exit trap then stops the prediction service.
  pid="$(cat .airflow/launcher.pid 2>/dev/null || true)"
  if [ -z "$pid" ] || ! grep -qs local_airflow.py "/proc/$pid/cmdline"; then
    echo "no demo is running (no live launcher in .airflow/launcher.pid)"
    exit 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 60); do
    kill -0 "$pid" 2>/dev/null || { echo "demo stopped"; exit 0; }
    sleep 1
  done
  echo "the launcher (pid $pid) did not stop within 60 s" >&2
  exit 1
fi
export MLOPS_STORE="${MLOPS_STORE:-file://$PWD/.mlops}"
export PYTHONWARNINGS="ignore::DeprecationWarning,ignore::FutureWarning"
mkdir -p .airflow/logs
if [ ! -s .airflow/.serving_token ]; then
  (umask 077 && .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(24))" \
    > .airflow/.serving_token)
fi
export MLOPS_SERVING_TOKEN="$(cat .airflow/.serving_token)"
export MLOPS_SERVING_URL="http://127.0.0.1:${SERVING_PORT:-8000}"

if ! .venv/bin/python - <<'PY'
import sys
from mlops_tasks.data.datasets import batch_dates
from mlops_tasks.settings import Settings
from mlops_tasks.data.synthetic import DEMO_SOURCE
sys.exit(0 if batch_dates(DEMO_SOURCE, Settings.from_env().open_store()) else 1)
PY
then
  .venv/bin/mlops demo seed --days 14 --rows 1500
fi

# Appended to, as local_airflow.py does with Airflow's logs: the previous run's log is what
# tells why it ended. Each start is marked, so `grep -n '^=== ' serve.log` lists the runs.
SERVE_LOG=.airflow/logs/serve.log
printf '=== mlops serve started %s on port %s ===\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "${SERVING_PORT:-8000}" >> "$SERVE_LOG"
.venv/bin/mlops serve --port "${SERVING_PORT:-8000}" >> "$SERVE_LOG" 2>&1 &
SERVE_PID=$!
trap 'kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true' EXIT
echo "prediction service: $MLOPS_SERVING_URL (docs at $MLOPS_SERVING_URL/docs, log appended to $SERVE_LOG)"

.venv/bin/python scripts/local_airflow.py --home "$PWD/.airflow" --port "${AIRFLOW_PORT:-8080}"
