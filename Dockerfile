# The one image of the production stack (docker-compose.yaml): Airflow's api-server, scheduler,
# dag-processor, triggerer and Celery workers, and the prediction service (`mlops serve`).
#
#   MLOPS_GIT_SHA=$(git rev-parse HEAD) docker compose build
#
# The base image is the official Airflow image of the same version as `apache-airflow` in
# requirements.txt (tests/unit/test_compose.py checks that they agree). Packages are installed
# as the `airflow` user, as the image's documentation requires.
FROM apache/airflow:3.3.2-python3.11

# Recorded in every model version's lineage (the image has no .git to ask).
ARG MLOPS_GIT_SHA=unknown

USER airflow
WORKDIR /opt/airflow

# 1. Pinned dependencies first, so that a code change does not reinstall them. The Celery
#    executor and the FAB auth manager are pinned in requirements.in as well; they are named
#    here too so that the image does not depend on requirements.txt having been re-locked.
COPY --chown=airflow:root requirements.txt /tmp/mlops/requirements.txt
RUN pip install --no-cache-dir -r /tmp/mlops/requirements.txt \
        "apache-airflow-providers-celery==3.26.0" \
        "apache-airflow-providers-fab==3.10.2"

# 2. The task layer, without dependencies (they are all pinned above).
COPY --chown=airflow:root pyproject.toml README.md /tmp/mlops/
COPY --chown=airflow:root mlops_tasks /tmp/mlops/mlops_tasks
RUN pip install --no-cache-dir --no-deps /tmp/mlops && rm -rf /tmp/mlops

# 3. DAGs (with the model specs) and plugins, baked in: every container runs the same code.
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins

ENV MLOPS_SPEC_DIR=/opt/airflow/dags/specs \
    MLOPS_GIT_SHA=${MLOPS_GIT_SHA} \
    PYTHONWARNINGS=ignore::DeprecationWarning,ignore::FutureWarning

# Fail the build, not the first task, if a driver or provider is missing or a spec is invalid.
RUN python -c "import airflow.providers.celery, airflow.providers.fab, psycopg2, asyncpg, redis" \
    && mlops validate-spec /opt/airflow/dags/specs/*.yaml
