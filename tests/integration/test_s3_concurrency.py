"""Many models change production at once on S3: the registry's compare-and-swap keeps each apart.

Celery workers retrain different models at the same time, so promotions and rollbacks of
different models reach one bucket concurrently (and, through a retry or a manual rollback, the
same model twice). Here eight processes, two per model, register, promote and roll back four
models at once against moto's S3 server running as a process of its own, over HTTP. Afterwards
every model's production history is one linear chain in which each alias move has exactly one
audit event, no process's successful move is missing, and no event of one model shows up under
another.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import random
import time
import uuid
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
import pytest

from mlops_tasks.errors import RegistryError
from mlops_tasks.records import ProductionChange
from mlops_tasks.registry import Registry, dump_artifact
from mlops_tasks.storage import S3Store
from tests.conftest import moto_server_process
from tests.unit.test_registry import lineage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = ["fraud", "churn", "credit", "spend"]
PER_MODEL = 2  # processes per model: contention within a model as well as across models
MOVES = 10  # promotions and rollbacks attempted by each process


@cache
def model_bytes(seed: int) -> bytes:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + rng.normal(scale=0.3, size=60) > 0).astype(int)
    return dump_artifact(LogisticRegression().fit(x, y))


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 server in its own process: the writers below really run in parallel."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with moto_server_process() as endpoint:
        yield endpoint


def _change_production(
    bucket: str, endpoint: str, model: str, worker: int, barrier: Any, out: Any
) -> None:
    """Register one version, then promote and roll back `model` MOVES times."""
    reg = Registry(S3Store(bucket, "store", endpoint_url=endpoint))
    actor = f"{model}-p{worker}"
    rng = random.Random(f"{model}{worker}")
    own = reg.register(model, model_bytes(10 + worker), lineage(), actor=actor).version
    barrier.wait(120)  # every version exists, and every writer starts moving at once
    changes, began = [], time.time()
    for i in range(MOVES):
        res: ProductionChange | None = None
        if i % 3 == 2:
            # Nothing left to step back to is refused, and nothing moves.
            with contextlib.suppress(RegistryError):
                res = reg.rollback(model, reason=f"{actor} rollback {i}", actor=actor)
        else:
            target = own if i == 0 else rng.randint(1, 4)
            # The versions have no gate result: promoting them is a person's forced decision.
            res = reg.promote(model, target, reason=f"{actor} promote {i}", actor=actor, force=True)
        if res is not None and res.changed:
            changes.append(res.event_id)
    out.put((model, own, changes, (began, time.time())))


def test_concurrent_promotions_of_different_models_keep_each_history_linear(
    s3_server: str,
) -> None:
    bucket = f"mlops-{uuid.uuid4().hex[:10]}"
    store = S3Store(bucket, "store", endpoint_url=s3_server)
    store.client.create_bucket(Bucket=bucket)
    reg = Registry(store)
    for model in MODELS:  # two versions and a history to roll back through
        for seed in (1, 2):
            reg.register(model, model_bytes(seed), lineage(), actor="setup")
        reg.promote(model, 1, reason="setup", actor="setup", force=True)
        reg.promote(model, 2, reason="setup", actor="setup", force=True)
    for worker in range(PER_MODEL):
        model_bytes(10 + worker)  # fitted here once; the forked writers inherit it and sklearn

    ctx = mp.get_context("fork")  # this process runs no threads (the S3 server is a process)
    barrier, out = ctx.Barrier(len(MODELS) * PER_MODEL), ctx.Queue()
    procs = [
        ctx.Process(target=_change_production, args=(bucket, s3_server, m, w, barrier, out))
        for m in MODELS
        for w in range(PER_MODEL)
    ]
    for p in procs:
        p.start()
    started = time.monotonic()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, f"a writer failed: exit code {p.exitcode}"
    print(f"{len(procs)} writers, {MOVES} moves each: {time.monotonic() - started:.1f} s")
    spans = [r[3] for r in results]
    assert max(b for b, _ in spans) < min(e for _, e in spans), "writers did not overlap"

    for model in MODELS:
        mine = [r for r in results if r[0] == model]
        # Concurrent registrations got distinct numbers after the two set-up versions.
        assert sorted(r[1] for r in mine) == [3, 4]
        reported = [e for r in mine for e in r[2]]
        assert reported, f"{model}: no writer moved production"
        events = reg.audit(model)
        assert all(e["model"] == model for e in events)
        moves = [e for e in events if e["action"] in ("promote", "rollback")]
        assert len({e["event_id"] for e in moves}) == len(moves)
        # Every successful move a writer was told about has its event, and there are no others.
        assert len(set(reported)) == len(reported)
        assert {e["event_id"] for e in moves if e["actor"] != "setup"} == set(reported)
        assert len(moves) == 2 + len(reported)
        # One linear chain: the alias history replays the events exactly, in order.
        doc = reg.alias_doc(model)
        chain = [h["version"] for h in doc["history"]] + [doc["version"]]
        by_time = sorted(moves, key=lambda e: e["at"])
        assert [e["to_version"] for e in by_time] == chain
        assert [e["from_version"] for e in by_time] == [None, *chain[:-1]]
        assert [h["until"] for h in doc["history"]] == [e["at"] for e in by_time[1:]]
        assert doc["event"]["event_id"] == by_time[-1]["event_id"]
