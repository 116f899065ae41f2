"""Which worker ran a task: Airflow's `core.hostname_callable` for the distributed profile.

scripts/local_airflow.py starts several Celery workers on one machine and gives each its own
`MLOPS_HOSTNAME` (`worker-1`, `worker-2`, ...); task instances record that name as their
`hostname`, so the UI and the REST API show which worker ran each task. Without the variable
(any other process) this is Airflow's default, the fully qualified domain name. Stdlib only:
Airflow imports it while it starts a task.
"""

import os
import socket


def hostname() -> str:
    return os.environ.get("MLOPS_HOSTNAME") or socket.getfqdn()
