"""Native thread pools of a fit, set exactly, so that its bytes do not depend on the machine."""

from __future__ import annotations

from typing import Any


def fit_threads(threads: int) -> Any:
    """Fit inside this for reproducible bytes: native thread pools set to exactly `threads`.

    HistGradientBoosting stores the OpenMP thread count it fitted with (`_BinMapper.n_threads`)
    and sums gradients in parallel, so its artifact depends on that count: the same data, seed
    and count give the same bytes, on any machine. Training records the count with the version
    and `reproduce` refits with it.
    """
    import sklearn  # noqa: F401  (loads its OpenMP runtime: a pool not loaded yet is not limited)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def single_thread() -> Any:
    """`fit_threads(1)`: for fits whose bytes must not depend on any setting."""
    return fit_threads(1)
