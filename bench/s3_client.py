"""What building an S3 store costs, by how its boto3 client is made.

`S3Store` gives each store a botocore session of its own, so the AWS credential chain is read
again for every store (boto3's default session reads it once per process). The three ways
measured, each after one warm-up store in the same process:

* `default session`: `boto3.client(...)`, what the store did before (credentials cached);
* `boto3 Session()`: a new `boto3.session.Session()` per store, the plain fix;
* `S3Store`: a new botocore session per store sharing the loaded service models.

No request is sent: the endpoint is never contacted.

    .venv/bin/python bench/s3_client.py [--stores 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

ENDPOINT = "http://127.0.0.1:9"


def _config() -> Any:
    from botocore.config import Config

    return Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"total_max_attempts": 4, "mode": "standard"},
        s3={"addressing_style": "path"},
    )


def default_session() -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=ENDPOINT, config=_config())


def boto3_session() -> Any:
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=ENDPOINT, config=_config())


def s3_store() -> Any:
    from mlops_tasks.storage import S3Store

    return S3Store("bucket", "prefix", endpoint_url=ENDPOINT).client


def measure(build: Callable[[], Any], stores: int) -> list[float]:
    build()  # imports and the first load of the service models are not counted
    times = []
    for _ in range(stores):
        start = time.perf_counter()
        client = build()
        times.append(time.perf_counter() - start)
    assert client._get_credentials().access_key == os.environ["AWS_ACCESS_KEY_ID"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    for name, build in (
        ("default session", default_session),
        ("boto3 Session()", boto3_session),
        ("S3Store", s3_store),
    ):
        times = measure(build, args.stores)
        print(
            f"{name:16} median {statistics.median(times) * 1000:6.1f} ms  "
            f"max {max(times) * 1000:6.1f} ms  ({args.stores} stores)"
        )


if __name__ == "__main__":
    main()
