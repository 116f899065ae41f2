"""Spec loading: the shipped specs are valid; wrong specs name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops_tasks.errors import SpecError
from mlops_tasks.specs import find_spec, load_spec, load_specs, spec_files

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
            "model.params.max_iter",
            "max_iter",
            id="param-out-of-bounds",
        ),
        pytest.param(
            lambda r: r["model"]["params"].update(kernel="rbf"),
            "model.params.kernel",
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


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            "  training_window_days:",
            "  trainig_window_days:",
            "data.trainig_window_days: unknown key (not part of the spec schema); "
            "did you mean 'training_window_days'?",
            id="section-key",
        ),
        pytest.param(
            "\ndrift:",
            "\ndrfit:",
            "drfit: unknown key (not part of the spec schema); did you mean 'drift'?",
            id="top-level",
        ),
        pytest.param(
            "      kwargs: {column: customer_id}",
            "      kwarg: {column: customer_id}",
            "validation.expectations.0.kwarg: unknown key (not part of the spec schema); "
            "did you mean 'kwargs'?",
            id="list-item",
        ),
        pytest.param(
            "\ndrift:",
            "\nzzzzzz: 1\ndrift:",
            "zzzzzz: unknown key (not part of the spec schema)\n",
            id="nothing-close",
        ),
    ],
)
def test_unknown_keys_name_the_key_meant(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = (SPEC_DIR / "credit_default.yaml").read_text()
    assert old in text
    path = tmp_path / "credit_default.yaml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert message in str(err.value) + "\n"


def test_load_specs_keeps_the_good_beside_the_bad(tmp_path: Path) -> None:
    for spec in spec_files(SPEC_DIR):
        (tmp_path / spec.name).write_text(spec.read_text())
    (tmp_path / "broken.yaml").write_text("name: broken\ntask: classification\n")
    good, bad = load_specs(tmp_path)
    assert [s.name for _, s in good] == [p.stem for p in spec_files(SPEC_DIR)]
    (err,) = bad
    assert err.context["file"] == str(tmp_path / "broken.yaml")
    assert "required field is missing" in str(err)


def test_the_spec_guide_names_every_key() -> None:
    """docs/specs.md lists every key a spec may have, so a new key cannot go undocumented."""
    import typing

    from pydantic import BaseModel

    from mlops_tasks.specs import ModelSpec
    from tests.conftest import REPO

    guide = (REPO / "docs" / "specs.md").read_text()
    missing = []

    def walk(model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            if f"`{name}`" not in guide:
                missing.append(f"{model.__name__}.{name}")
            todo = [field.annotation]
            while todo:
                t = todo.pop()
                if isinstance(t, type) and issubclass(t, BaseModel):
                    walk(t)
                else:
                    todo.extend(typing.get_args(t))

    walk(ModelSpec)
    assert missing == []


@pytest.mark.parametrize(
    ("reference", "kind"),
    [
        pytest.param("training", "training", id="training"),
        pytest.param("previous_window", "previous_window", id="previous-window"),
        pytest.param({"rolling": 28}, "rolling", id="rolling"),
        pytest.param("same_period_last_year", "same_period_last_year", id="last-year"),
    ],
)
def test_drift_reference_kinds(tmp_path: Path, reference, kind: str) -> None:
    spec = load_spec(_write(tmp_path, lambda r: r["drift"].update(reference=reference)))
    assert spec.drift.reference_kind == kind
    dumped = spec.model_dump(mode="json")["drift"]
    # `training` is left out of the dump: specs written before the key keep their hash.
    assert dumped.get("reference") == (None if kind == "training" else reference)
    same_hash = spec.spec_hash() == load_spec(EXAMPLE).spec_hash()
    assert same_hash is (kind == "training")
    assert "reference" not in load_spec(EXAMPLE).model_dump(mode="json")["drift"]


@pytest.mark.parametrize(
    ("reference", "field", "message"),
    [
        pytest.param("weekly", "drift.reference", "unknown reference 'weekly'", id="unknown"),
        pytest.param(28, "drift.reference", "unknown reference 28", id="bare-number"),
        pytest.param({"days": 7}, "drift.reference", "unknown reference", id="other-mapping"),
        pytest.param("rolling", "drift.reference.rolling", "number of days", id="no-days"),
        pytest.param({"rolling": 0}, "drift.reference.rolling", "0 is not", id="zero-days"),
        pytest.param({"rolling": 367}, "drift.reference.rolling", "367 is not", id="too-long"),
        pytest.param({"rolling": 2.5}, "drift.reference.rolling", "2.5 is not", id="fraction"),
        pytest.param({"rolling": True}, "drift.reference.rolling", "True is not", id="bool"),
    ],
)
def test_a_wrong_drift_reference_names_the_field(
    tmp_path: Path, reference, field: str, message: str
) -> None:
    path = _write(tmp_path, lambda r: r["drift"].update(reference=reference))
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert f"  {field}: " in str(info.value)


def test_a_window_reference_needs_batches(tmp_path: Path) -> None:
    def one_table(raw: dict) -> None:
        raw["data"]["source"] = "store://tables/credit.parquet"
        raw["drift"]["reference"] = "previous_window"

    with pytest.raises(SpecError, match=r"data\.source names a single table") as info:
        load_spec(_write(tmp_path, one_table))
    assert "  drift.reference: previous_window is a window" in str(info.value)
