"""SQLite connection settings for the one-machine deployment (scripts/local_airflow.py).

Four Airflow processes and their task workers write to one SQLite file. The driver gives up
on a locked database after 5 seconds, which a busy 2-core machine exceeds (seen as HTTP 500
"Database error" on a REST trigger while tasks wrote XComs); waiting longer is the fix. This
module has no imports so Airflow can load it while it configures its own database engine.
"""

CONNECT_ARGS = {"timeout": 60}
