"""What the Models view reads: report paths it may serve, and damaged models shown, not fatal."""

from __future__ import annotations

import pytest

from mlops_tasks import overview
from mlops_tasks.errors import IntegrityError
from mlops_tasks.storage import LocalStore


@pytest.mark.parametrize(
    ("path", "key"),
    [
        pytest.param("m/run_1/drift.html", "reports/m/run_1/drift.html", id="html"),
        pytest.param("m/run_1/evaluation-v2.json", "reports/m/run_1/evaluation-v2.json", id="json"),
        pytest.param("../models/m/aliases/production.json", None, id="dot-dot"),
        pytest.param("m/../../etc/passwd.html", None, id="dot-dot-inside"),
        pytest.param("/etc/passwd.html", None, id="absolute"),
        pytest.param("m/run/..\\..\\x.html", None, id="backslash"),
        pytest.param("m//x.html", None, id="empty-segment"),
        pytest.param("m/run/x.py", None, id="not-a-report"),
        pytest.param("m/run/sub/x.html", None, id="too-deep"),
        pytest.param("m/run/x\x00.html", None, id="nul"),
    ],
)
def test_only_report_keys_can_be_named(path: str, key: str | None) -> None:
    assert overview.report_key(path) == key


def test_report_uris_become_served_paths_only_inside_the_store() -> None:
    store = "file:///data/store"
    assert overview.report_path(f"{store}/reports/m/r/drift.html", store) == "m/r/drift.html"
    assert overview.report_path("file:///elsewhere/reports/m/r/drift.html", store) is None
    assert overview.report_path(f"{store}/reports/../models/m/x.html", store) is None
    assert overview.report_path(None, store) is None


def test_a_damaged_model_gets_its_error_and_the_others_still_show(local_store: LocalStore) -> None:
    local_store.put_bytes("models/broken/aliases/production.json", b"{not json")
    local_store.put_bytes("models/fine/versions/1/metadata.json", b"{not json")
    assert overview.model_names(local_store, ["declared"]) == ["broken", "declared", "fine"]
    broken = overview.summary(local_store, "broken")
    assert broken.error and "production.json" in broken.error
    fine = overview.summary(local_store, "fine")
    assert fine.error and "metadata.json" in fine.error
    assert overview.summary(local_store, "declared").error is None
    with pytest.raises(IntegrityError, match=r"production\.json"):
        overview.detail(local_store, "broken")


def test_a_step_finds_the_report_its_run_left(local_store: LocalStore) -> None:
    run = "manual__2026-01-01T00:00:00+00:00"
    folder = "reports/m/manual__2026-01-01T00_00_00_00_00"
    for name in ("validation.html", "evaluation-v3.html", "evaluation-v3.json"):
        local_store.put_bytes(f"{folder}/{name}", b"x")
    assert overview.step_report(local_store, "m", run, "evaluate_candidate") == (
        f"{folder}/evaluation-v3.html"
    )
    assert overview.step_report(local_store, "m", run, "validate_data") == (
        f"{folder}/validation.html"
    )
    assert overview.step_report(local_store, "m", run, "detect_drift") is None
    assert overview.step_report(local_store, "m", run, "train_candidate") is None
