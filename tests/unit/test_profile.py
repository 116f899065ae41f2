"""Feature profiles stored with a version, and the serving checks built from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_tasks.data import profile as prof
from mlops_tasks.data.profile import (
    PROFILE_FILE,
    FeatureChecks,
    encode_profile,
    feature_profile,
    load_profile,
)
from mlops_tasks.errors import DataError
from mlops_tasks.model.modelling import build_pipeline, prepare_features, records_frame
from mlops_tasks.registry import Registry
from mlops_tasks.specs import ModelSpec, load_spec
from mlops_tasks.storage import LocalStore

SPEC_DIR = Path(__file__).resolve().parents[2] / "dags" / "specs"


def make_spec() -> ModelSpec:
    """The shipped credit spec cut down to four features (a logistic regression, fast)."""
    data = load_spec(SPEC_DIR / "credit_default.yaml").model_dump(mode="json")
    data |= {
        "name": "toy",
        "target": "y",
        "features": {"numeric": ["age", "score"], "categorical": ["region", "kind"]},
        "model": {"estimator": "logistic_regression", "params": {}, "seed": 0},
    }
    data["evaluation"] |= {"slices": []}
    data["drift"] |= {"overrides": {}}
    data["validation"] |= {"ranges": {}, "expectations": []}
    return ModelSpec.model_validate(data)


SPEC = make_spec()


def train_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [20, 30, None, 40, 50, 60],
            "score": [0.5, 0.1, 0.9, 0.3, float("inf"), 0.7],  # inf: neither null nor in range
            "region": ["north", "south", "north", None, "north", "east"],
            "kind": [1, 2, 1, 2, 1, 2],  # integer-coded: its canonical form is text
            "y": [0, 1, 0, 1, 0, 1],
        }
    )


def test_profile_of_the_canonical_features() -> None:
    p = feature_profile(SPEC, prepare_features(SPEC, train_frame()))
    assert p["format"] == prof.FORMAT and p["rows"] == 6
    age = p["numeric"]["age"]
    assert (age["min"], age["max"], age["null_share"]) == (20.0, 60.0, pytest.approx(1 / 6))
    assert age["quantiles"]["0.5"] == 40.0 and set(age["quantiles"]) == {
        f"{q:g}" for q in prof.QUANTILES
    }
    assert (p["numeric"]["score"]["min"], p["numeric"]["score"]["max"]) == (0.1, 0.9)
    region = p["categorical"]["region"]
    assert region["categories"] == {"north": 3, "east": 1, "south": 1}
    assert list(region["categories"]) == ["north", "east", "south"]  # by count, then name
    assert (region["other"], region["distinct"]) == (0, 3)
    assert region["null_share"] == pytest.approx(1 / 6)
    assert p["categorical"]["kind"]["categories"] == {"1": 3, "2": 3}
    json.loads(encode_profile(p))  # strict JSON: no NaN, no Infinity


def test_an_all_null_column_has_no_range() -> None:
    df = train_frame().assign(age=None)
    age = feature_profile(SPEC, prepare_features(SPEC, df))["numeric"]["age"]
    assert age == {"null_share": 1.0, "min": None, "max": None, "quantiles": {}}
    json.loads(encode_profile(feature_profile(SPEC, prepare_features(SPEC, df))))


def test_categories_beyond_the_cap_are_summed_as_other(monkeypatch) -> None:
    monkeypatch.setattr(prof, "MAX_CATEGORIES", 2)
    df = train_frame().assign(region=["a", "a", "a", "b", "b", "c"])
    region = feature_profile(SPEC, prepare_features(SPEC, df))["categorical"]["region"]
    assert region["categories"] == {"a": 3, "b": 2}
    assert (region["other"], region["distinct"]) == (1, 3)


def registered(tmp_path, files: dict[str, bytes]) -> tuple[Registry, int]:
    """A registry with one version (any bytes as its model) and the given files."""
    from mlops_tasks.records import DatasetLineage, Trigger, VersionLineage

    registry = Registry(LocalStore(tmp_path / "store"))
    lineage = VersionLineage(
        task="classification",
        estimator="logistic_regression",
        params={},
        seed=0,
        features=SPEC.features.model_dump(),
        target="y",
        spec_hash="x",
        dataset=DatasetLineage(
            train="d", rows=6, train_rows=6, holdout_rows=0, split="hash", holdout_fraction=0.2
        ),
        primary_metric="roc_auc",
        metrics={},
        triggered_by=Trigger("cli", "tester", "test"),
        run_id="r",
        code_version={},
    )
    version = registry.register("toy", b"model", lineage, actor="tester", files=files)
    return registry, version.version


def test_load_profile_round_trip_and_none_for_older_versions(tmp_path) -> None:
    train = train_frame()
    files = prof.profile_file(SPEC, train)
    registry, v = registered(tmp_path, files)
    expected = feature_profile(SPEC, prepare_features(SPEC, train))
    assert load_profile(registry, "toy", v) == expected
    assert load_profile(registry.store, "toy", v) == expected  # a store works as well
    old_registry, old = registered(tmp_path / "old", {})  # registered before profiles existed
    assert load_profile(old_registry, "toy", old) is None


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"{not json", id="bad-json"),
        pytest.param(b'{"format": 99, "numeric": {}, "categorical": {}}', id="other-format"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(
            b'{"format": 1, "numeric": {"age": {"min": "0", "max": 1}}, "categorical": {}}',
            id="text-bound",
        ),
        pytest.param(
            b'{"format": 1, "numeric": {}, "categorical": {"region": ["north"]}}',
            id="categories-not-counted",
        ),
    ],
)
def test_a_broken_profile_is_an_error_naming_its_uri(tmp_path, data: bytes) -> None:
    registry, v = registered(tmp_path, {PROFILE_FILE: data})
    with pytest.raises(DataError, match=r"versions/1/profile\.json"):
        load_profile(registry, "toy", v)


def checks_for(train: pd.DataFrame) -> FeatureChecks:
    return FeatureChecks.build(SPEC, feature_profile(SPEC, prepare_features(SPEC, train)), None)


def request(*rows: dict) -> pd.DataFrame:
    base = {"age": 30.0, "score": 0.5, "region": "north", "kind": "1"}
    return records_frame(SPEC, [{**base, **r} for r in rows])


def test_checker_flags_unseen_categories_and_out_of_range_numbers() -> None:
    checks = checks_for(train_frame())
    issues = checks.check(
        request(
            {},  # clean
            {"region": "west", "age": 61.0},  # unseen + above max
            {"age": 20.0, "score": 0.9},  # the bounds themselves are in range
            {"age": None, "region": None, "kind": None, "score": None},  # nulls: missing
            {"kind": "3", "score": 0.0, "region": "west"},
        )
    )
    assert issues.unseen == {"region": 2, "kind": 1}
    assert issues.out_of_range == {"age": 1, "score": 1}
    assert issues.flags == {
        1: ("range:age", "unseen:region"),
        4: ("range:score", "unseen:region", "unseen:kind"),
    }


def test_a_clean_batch_has_no_issues() -> None:
    issues = checks_for(train_frame()).check(request({}, {"region": "east", "age": 60.0}))
    assert (issues.unseen, issues.out_of_range, issues.flags) == ({}, {}, {})


def fitted(train: pd.DataFrame) -> Any:
    """The spec's real pipeline fitted on `train` (its infinity made finite: sklearn refuses
    it)."""
    finite = train.replace(float("inf"), 1.0)
    return build_pipeline(SPEC).fit(prepare_features(SPEC, finite), finite["y"])


def test_without_profile_the_encoders_categories_are_checked_and_no_range() -> None:
    checks = FeatureChecks.build(SPEC, None, fitted(train_frame()))
    assert checks.ranged == ()
    assert checks.categories["kind"] == {"1", "2"}
    issues = checks.check(request({"region": "west", "age": 1e9}))
    assert (issues.unseen, issues.out_of_range) == ({"region": 1}, {})


def test_a_capped_feature_uses_the_encoders_complete_categories(monkeypatch) -> None:
    monkeypatch.setattr(prof, "MAX_CATEGORIES", 1)
    train = train_frame()
    profile = feature_profile(SPEC, prepare_features(SPEC, train))
    checks = FeatureChecks.build(SPEC, profile, fitted(train))
    assert {"north", "south", "east"} <= checks.categories["region"]  # "south" beyond the cap
    assert checks.check(request({"region": "south"})).unseen == {}
    # with no encoder to stand in, a capped feature is not checked rather than misflagged
    assert "region" not in FeatureChecks.build(SPEC, profile, None).categories


def test_checker_is_vectorised_over_many_rows() -> None:
    rng = np.random.default_rng(0)
    n = 5_000
    ages = rng.uniform(0, 100, n)
    regions = rng.choice(["north", "south", "east", "west"], n)
    issues = checks_for(train_frame()).check(
        request(*({"age": float(a), "region": str(r)} for a, r in zip(ages, regions, strict=True)))
    )
    expected_range = int(((ages < 20) | (ages > 60)).sum())
    assert issues.out_of_range == {"age": expected_range}
    assert issues.unseen == {"region": int((regions == "west").sum())}
    assert len(issues.flags) == int(((ages < 20) | (ages > 60) | (regions == "west")).sum())
