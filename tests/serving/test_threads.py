"""OpenMP threads per prediction are limited in every thread that predicts, not only in the
server's main thread (OpenMP keeps the count per thread; see `serving.app.PerThreadLimit`)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import sklearn  # noqa: F401 (loads scikit-learn's OpenMP runtime)
from threadpoolctl import threadpool_info, threadpool_limits

from mlops_tasks.serving.app import PerThreadLimit


def _openmp_threads() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"}


def test_a_limit_on_the_main_thread_does_not_reach_a_pool_thread_but_per_thread_does() -> None:
    limit = PerThreadLimit(1)

    def in_pool_thread() -> tuple[set[int], set[int]]:
        before = _openmp_threads()
        limit.apply()
        limit.apply()  # once per thread; a second call changes nothing
        return before, _openmp_threads()

    with threadpool_limits(1), ThreadPoolExecutor(1) as pool:  # what the lifespan sets
        assert _openmp_threads() == {1}
        before, after = pool.submit(in_pool_thread).result()
    assert after == {1}
    if len(os.sched_getaffinity(0)) > 1 and "OMP_NUM_THREADS" not in os.environ:
        assert before != {1}, "the main thread's limit now reaches other threads"


class ChargingClock:
    """A CPU clock that advances by `cost` each time it is read: a request reads it when it
    starts and when it ends, so each request costs `cost`."""

    def __init__(self, cost: float) -> None:
        self.cost, self.now = cost, 0.0

    def __call__(self) -> float:
        self.now += self.cost
        return self.now


def test_cheap_small_requests_score_on_the_event_loop_the_rest_in_the_pool(monkeypatch) -> None:
    import threading

    from fastapi.testclient import TestClient

    from mlops_tasks.serving.app import INLINE_ROWS, INLINE_SECONDS, Service, create_app
    from mlops_tasks.settings import Settings
    from tests.serving.support import records, trained

    store, spec_dir = trained()
    seen: list[str] = []
    original = Service.predict

    def spy(self: Service, *args: object, **kwargs: object) -> object:
        seen.append(threading.current_thread().name)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Service, "predict", spy)
    app = create_app(Settings.from_env({"MLOPS_STORE": store.uri}), store, spec_dir, api_tokens=[])
    svc: Service = app.state.service
    # Each request's CPU cost is injected, never measured: a real one depends on the machine
    # and its load (6.6 ms on a busy one, where this test asserted a 1-row request <= 5 ms).
    svc.cpu_clock = clock = ChargingClock(INLINE_SECONDS / 5)
    path = "/v1/models/credit_default/predict"

    def predict(n: int) -> None:
        res = client.post(path, json={"records": records("credit_default", n)})
        assert res.status_code == 200 and len(res.json()["predictions"]) == n

    with TestClient(app) as client:
        loop = client.portal.call(threading.current_thread).name  # type: ignore[union-attr]
        predict(1)  # the version's first request: its cost is not known yet
        (key,) = svc.small_request_cpu
        assert svc.small_request_cpu[key] == pytest.approx(clock.cost)  # what it was charged
        predict(1)
        predict(INLINE_ROWS)
        predict(INLINE_ROWS + 1)
        svc.small_request_cpu[key] = 10 * INLINE_SECONDS  # as a heavy model's would
        predict(1)
    assert seen[0] != loop
    assert seen[1:3] == [loop, loop]
    assert seen[3] != loop and seen[4] != loop
