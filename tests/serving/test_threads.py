"""OpenMP threads per prediction are limited in every thread that predicts, not only in the
server's main thread (OpenMP keeps the count per thread; see `serving.app.PerThreadLimit`)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

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
