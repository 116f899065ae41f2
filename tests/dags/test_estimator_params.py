"""The trigger form's `hp_*` Params for every allow-listed estimator: one per tunable param of
the model's task, typed, bounded and with its choices, each accepting null (the spec's value)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mlops_tasks.specs import ESTIMATORS
from tests.dags.conftest import REPO

BASE = {"classification": "credit_default", "regression": "customer_spend"}
CASES = [(estimator, task) for estimator, info in ESTIMATORS.items() for task in info.tasks]


def _name(estimator: str, task: str) -> str:
    return f"hp_{estimator}_{task[:5]}"


@pytest.fixture(scope="module")
def retrain_params(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each estimator's retrain DAG's Params, from specs that leave every param at its default."""
    from airflow.dag_processing.dagbag import DagBag

    specs = tmp_path_factory.mktemp("specs")
    for estimator, task in CASES:
        raw = yaml.safe_load((REPO / "dags" / "specs" / f"{BASE[task]}.yaml").read_text())
        raw["name"] = _name(estimator, task)
        raw["model"] = {"estimator": estimator, "seed": 3}
        (specs / f"{raw['name']}.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_SPEC_DIR", str(specs))
        bag = DagBag(dag_folder=str(REPO / "dags" / "mlops_dags.py"))
    assert bag.import_errors == {}
    return {f"{e}/{t}": bag.dags[f"{_name(e, t)}_retrain"].params for e, t in CASES}


@pytest.mark.parametrize(("estimator", "task"), CASES, ids=[f"{e}-{t}" for e, t in CASES])
def test_every_tunable_param_is_a_typed_bounded_param(
    retrain_params: dict[str, Any], estimator: str, task: str
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = retrain_params[f"{estimator}/{task}"]
    rules = ESTIMATORS[estimator].rules(task)
    assert {k for k in params if k.startswith("hp_")} == {f"hp_{n}" for n in rules}
    for name, rule in rules.items():
        param = params.get_param(f"hp_{name}")
        assert param.schema["type"] == ["null", rule.type]
        assert param.resolve(None) is None  # not given: the spec's value
        if rule.enum is not None:
            for value in rule.enum:
                assert param.resolve(value) == value
            with pytest.raises(ParamValidationError):
                param.resolve("not-a-choice")
        if rule.maximum is not None:
            assert param.resolve(rule.maximum) == rule.maximum
            with pytest.raises(ParamValidationError, match="greater than the maximum"):
                param.resolve(rule.maximum + 1)
        if rule.minimum is not None:
            with pytest.raises(ParamValidationError, match="less than the minimum"):
                param.resolve(rule.minimum - 1)


def test_classifier_and_regressor_offer_their_own_losses(retrain_params: dict[str, Any]) -> None:
    clf = retrain_params["sgd/classification"].get_param("hp_loss").schema["enum"]
    reg = retrain_params["sgd/regression"].get_param("hp_loss").schema["enum"]
    assert set(clf) == {None, "log_loss", "modified_huber"}  # losses with probabilities
    assert "squared_error" in reg and "log_loss" not in reg
    assert "hp_epsilon" in retrain_params["svm/regression"]
    assert "hp_epsilon" not in retrain_params["svm/classification"]
