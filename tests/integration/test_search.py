"""`model.search` through the declared retrain flow: a searched version of gradient-boosted
trees (the family whose bytes depend on the thread count) fitted on two threads, rebuilt bit
for bit by `mlops reproduce`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mlops_tasks.cli import main
from mlops_tasks.registry import Registry
from mlops_tasks.settings import Settings
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import LocalStore
from tests.flowkit import retrain
from tests.integration.test_data_contracts import START, credit_spec, end_of, stable_days

SEARCH = {
    "n_iter": 2,
    "params": {
        "learning_rate": {"low": 0.05, "high": 0.3, "log": True},
        "max_leaf_nodes": {"low": 4, "high": 16},
    },
}


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@dataclass(frozen=True)
class Searched:
    store: LocalStore
    spec: ModelSpec
    settings: Settings


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    store = LocalStore(tmp_path_factory.mktemp("search") / "store")
    spec = credit_spec(
        model__estimator="hist_gradient_boosting",
        model__params={"max_iter": 10},
        model__search=SEARCH,
    )
    stable_days(store, days=1)
    settings = Settings.from_env({"MLOPS_STORE": store.uri, "MLOPS_TRAIN_THREADS": "2"})
    assert retrain(spec, store, as_of=end_of(START), settings=settings).status == "success"
    return Searched(store, spec, settings)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_a_searched_version_reproduces_bit_for_bit(
    searched: Searched, capsys: pytest.CaptureFixture[str]
) -> None:
    meta = Registry(searched.store).get_version(searched.spec.name, 1)
    assert meta.search is not None and meta.train_threads == 2
    assert len(meta.search.trials) == 2 and meta.search.cv == "time"
    assert meta.params == {"max_iter": 10, **meta.search.best_params}
    code, result = cli(
        capsys, "--store", searched.store.uri, "--json", "reproduce", searched.spec.name, "1"
    )
    assert code == 0, result
    assert result["identical"] and result["artifact_sha256"] == meta.model_sha256
    assert result["spec_hash_matches"] and result["notes"] == []
