"""Spec loading: the shipped specs are valid; wrong specs name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops_tasks.errors import SpecError
from mlops_tasks.specs import find_spec, load_spec, spec_files

SPEC_DIR = Path(__file__).resolve().parents[2] / "dags" / "specs"
EXAMPLE = SPEC_DIR / "credit_default.yaml"


def test_shipped_specs_are_valid() -> None:
    files = spec_files(SPEC_DIR)
    assert {f.stem for f in files} >= {"credit_default", "customer_spend"}
    for f in files:
        spec = load_spec(f)
        assert spec.name == f.stem
        assert len(spec.spec_hash()) == 64


def test_spec_hash_ignores_yaml_layout(tmp_path: Path) -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    other = tmp_path / "credit_default.yaml"
    other.write_text(yaml.safe_dump(raw, sort_keys=True, default_flow_style=True))
    assert load_spec(other).spec_hash() == load_spec(EXAMPLE).spec_hash()


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text())
    mutate(raw)
    path = tmp_path / "credit_default.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        pytest.param(lambda r: r.update(colour="red"), "colour", "unknown key", id="unknown-key"),
        pytest.param(
            lambda r: r["model"].update(seed="abc"), "model.seed", "valid integer", id="wrong-type"
        ),
        pytest.param(
            lambda r: r.pop("target"), "target", "required field is missing", id="missing-target"
        ),
        pytest.param(
            lambda r: r["model"].update(estimator="xgboost_magic"),
            "model.estimator",
            "unknown estimator 'xgboost_magic'",
            id="unknown-estimator",
        ),
        pytest.param(
            lambda r: r["model"]["params"].update(max_iter=-3),
            "model",
            "max_iter",
            id="param-out-of-bounds",
        ),
        pytest.param(
            lambda r: r["model"]["params"].update(kernel="rbf"),
            "model",
            "unknown parameter 'kernel'",
            id="unknown-param",
        ),
        pytest.param(
            lambda r: r["evaluation"].update(primary_metric="rmse"),
            "",
            "unknown metric 'rmse' for classification",
            id="metric-for-wrong-task",
        ),
        pytest.param(
            lambda r: r["evaluation"].update(slices=["planet"]),
            "",
            "evaluation.slices: not a feature",
            id="slice-not-a-feature",
        ),
        pytest.param(
            lambda r: r["drift"].update(drift_share=1.5),
            "drift.drift_share",
            "less than or equal to 1",
            id="share-out-of-range",
        ),
        pytest.param(
            lambda r: r["schedule"].update(monitor="every hour"),
            "schedule.monitor",
            "cron",
            id="bad-cron",
        ),
        pytest.param(
            lambda r: r["features"]["numeric"].append("prediction"),
            "",
            "clash with the inference log's own columns",
            id="feature-named-like-a-log-column",
        ),
        pytest.param(
            lambda r: r.update(target="data_issues"),
            "",
            "clashes with a column of the inference log",
            id="target-named-like-a-log-column",
        ),
        pytest.param(
            lambda r: r["data"].update(source="/tmp/x.csv"),
            "data.source",
            "must be a URI",
            id="source-not-uri",
        ),
    ],
)
def test_wrong_specs_name_file_and_field(tmp_path: Path, mutate, field: str, message: str) -> None:
    path = _write(tmp_path, mutate)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    text = str(info.value)
    assert str(path) in text
    if field:
        assert f"  {field}: " in text


def test_yaml_syntax_error_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML"):
        load_spec(bad)


def test_name_must_match_file(tmp_path: Path) -> None:
    path = tmp_path / "other_name.yaml"
    path.write_text(EXAMPLE.read_text())
    with pytest.raises(SpecError, match="must match the file name"):
        load_spec(path)


def test_param_overrides_are_checked() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.with_params({"max_iter": 10}).model.params["max_iter"] == 10
    with pytest.raises(SpecError, match="learning_rate"):
        spec.with_params({"learning_rate": 7.0})


def test_find_spec_by_name() -> None:
    assert find_spec("credit_default", SPEC_DIR).task == "classification"
    with pytest.raises(SpecError, match="no spec for model 'nope'"):
        find_spec("nope", SPEC_DIR)
