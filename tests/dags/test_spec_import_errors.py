"""One unreadable spec never hides the other models' DAGs.

A spec that is not UTF-8 raised UnicodeDecodeError, which the DAG file does not catch, so the
whole file failed to import and every model's DAGs vanished. A YAML alias bomb did the same
through memory. Each must show as an import error naming its file, next to the other DAGs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.dags.conftest import REPO, dag_folder
from tests.dags.test_dag_integrity import _probe

GOOD = {"credit_default_retrain", "credit_default_monitor", "mlops_change_production"}


def _folder(tmp_path: Path) -> tuple[Path, Path]:
    dags, specs = dag_folder(tmp_path)
    shutil.copy(REPO / "dags/specs/credit_default.yaml", specs)
    return dags, specs


def _latin1(specs: Path) -> Path:
    text = (REPO / "dags/specs/customer_spend.yaml").read_text()
    path = specs / "customer_spend.yaml"
    path.write_bytes(text.replace("card spend", "card spend (\u20ac, caf\u00e9)").encode("cp1252"))
    return path


def _bomb(specs: Path) -> Path:
    """Billion laughs: 10**9 strings once expanded, in an extra expectation's kwargs."""
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    extra = "    - type: expect_column_values_to_be_unique\n      kwargs:\n" + "".join(
        f"        {line}\n" for line in levels
    )
    text = (REPO / "dags/specs/credit_default.yaml").read_text()
    text = text.replace("name: credit_default", "name: bomb_model")
    path = specs / "bomb_model.yaml"
    path.write_text(text.replace("  expectations:\n", "  expectations:\n" + extra))
    return path


@pytest.mark.parametrize(
    ("write", "message"),
    [
        pytest.param(_latin1, "not UTF-8 text", id="non-utf8"),
        pytest.param(_bomb, "anchors and aliases (&, *) are not allowed", id="alias-bomb"),
    ],
)
def test_bad_spec_is_an_import_error_naming_the_file(tmp_path: Path, write, message: str) -> None:
    dags, specs = _folder(tmp_path)
    bad = write(specs)
    res = _probe(dags, MLOPS_SPEC_DIR=str(specs))
    assert set(res["dags"]) >= GOOD, res
    assert not any(d.startswith(bad.stem) for d in res["dags"])
    (error,) = res["errors"].values()
    assert str(bad) in error
    assert message in error


def test_both_bad_specs_together_still_leave_the_good_dags(tmp_path: Path) -> None:
    dags, specs = _folder(tmp_path)
    bad = [_latin1(specs), _bomb(specs)]
    res = _probe(dags, MLOPS_SPEC_DIR=str(specs))
    assert set(res["dags"]) >= GOOD, res
    (error,) = res["errors"].values()
    for path in bad:
        assert str(path) in error


def test_a_bad_deployment_setting_is_reported_and_unschedules_nothing(tmp_path: Path) -> None:
    """A serving token the service refuses used to fail the models' DAG file at parse time,
    which the dag-processor answers by dropping every DAG of it."""
    dags, specs = _folder(tmp_path)
    res = _probe(dags, MLOPS_SPEC_DIR=str(specs), MLOPS_SERVING_API_TOKEN="alice:")
    assert set(res["dags"]) >= GOOD, res
    ((where, error),) = res["errors"].items()
    assert where.endswith("mlops_spec_errors.py")
    assert "deployment settings (the environment): MLOPS_SERVING_API_TOKEN" in error
    assert "alice" in error and "no token after ':'" in error
