"""Registry integrity: corrupt files, the repair path, the audit hash chain and `mlops verify`."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from mlops_tasks.cli import main
from mlops_tasks.errors import IntegrityError, MlopsError, UnknownModel
from mlops_tasks.registry import Registry, encode_json
from mlops_tasks.storage import ArtifactStore, LocalStore
from tests.unit.test_registry import lineage, model_bytes, passed_gate, register_gated

ALIAS = "models/m/aliases/production.json"
REPO = Path(__file__).resolve().parents[2]


def history_of_three(store: ArtifactStore) -> Registry:
    """v1 -> v2 -> v3 promoted, then rolled back to v2; a reject and a retrain request."""
    reg = Registry(store)
    for seed in range(3):
        register_gated(reg, "m", seed)
        reg.promote("m", seed + 1, reason=f"v{seed + 1}", actor="alice")
    reg.rollback("m", reason="v3 misbehaves", actor="bob")
    reg.register("m", model_bytes(3), lineage(), actor="ci")
    reg.reject("m", 4, reason="gate failed", actor="gate")
    reg.record_event("m", "retrain_request", actor="monitor", reason="drift")
    return reg


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# Corrupt files -----------------------------------------------------------------------------
CORRUPT = [
    pytest.param(b'{"version": 2, "hist', "not valid JSON", id="truncated-json"),
    pytest.param(b"\xff\xfe garbage", "not valid JSON", id="binary"),
    pytest.param(b"[1, 2]\n", "a JSON list, not an object", id="a-list"),
    pytest.param(b'{"version": "two"}\n', "'two' is not a version number", id="bad-version"),
    pytest.param(b'{"version": 2, "history": [3]}\n', "history is not a list", id="bad-history"),
]


@pytest.mark.parametrize(("content", "problem"), CORRUPT)
def test_a_corrupt_alias_is_an_integrity_error_naming_the_file_and_the_repair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: str
) -> None:
    """A corrupt production.json made every CLI command print a traceback."""
    store = LocalStore(tmp_path / "s")
    history_of_three(store)
    store.put_bytes(ALIAS, content)
    uri = store.uri
    for argv in (
        ["models"],
        ["versions", "m"],
        ["show", "m", "1"],
        ["promote", "m", "1", "--reason", "x"],
        ["rollback", "m", "--reason", "x"],
    ):
        code, _, err = run(capsys, *argv, "--store", uri)
        assert code == IntegrityError.exit_code, argv
        assert f"{uri}/{ALIAS}" in err and problem in err, argv
        assert "mlops repair-alias m --reason" in err and "Traceback" not in err, argv
    assert run(capsys, "audit", "m", "--store", uri)[0] == 0  # the trail stays readable
    code, out, _ = run(capsys, "verify", "m", "--store", uri)
    assert code == IntegrityError.exit_code and problem in out


def test_repair_alias_rebuilds_production_from_the_audit_trail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalStore(tmp_path / "s")
    reg = history_of_three(store)
    before = reg.alias_doc("m")
    store.put_bytes(ALIAS, b"{oops")
    uri = store.uri
    code, out, _ = run(capsys, "repair-alias", "m", "--reason", "disk hiccup", "--store", uri)
    assert code == 0 and "production is v2" in out
    doc = reg.alias_doc("m")
    assert doc["version"] == 2
    steps = [(h["version"], h.get("rolled_back", False)) for h in doc["history"]]
    assert steps == [(h["version"], h.get("rolled_back", False)) for h in before["history"]]
    (event,) = reg.audit("m", "repair_alias")
    assert (event["reason"], event["to_version"]) == ("disk hiccup", 2)
    assert event["details"]["source"] == "audit trail" and event["details"]["replaced_sha256"]
    assert run(capsys, "verify", "m", "--store", uri)[0] == 0
    # A later rollback still steps back through the rebuilt history.
    assert reg.rollback("m", reason="after repair", actor="ops")["version"] == 1


def test_repair_alias_to_an_explicit_version(tmp_path: Path, capsys) -> None:
    store = LocalStore(tmp_path / "s")
    reg = history_of_three(store)
    store.put_bytes(ALIAS, b"[]")
    argv = ["repair-alias", "m", "--to", "1", "--reason", "known good", "--store", store.uri]
    assert run(capsys, *argv)[0] == 0
    assert reg.alias("m") == 1
    assert reg.verify("m")["problems"] == []
    rejected = ["repair-alias", "m", "--to", "4", "--reason", "no", "--store", store.uri]
    code, _, err = run(capsys, *rejected)
    assert code == 6 and "rejected" in err


def test_corrupt_metadata_and_events_name_the_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    reg = history_of_three(store)
    store.put_bytes("models/m/versions/1/metadata.json", b'{"model_sha256": 7}')
    with pytest.raises(IntegrityError, match=r"versions/1/metadata.json: not a version's meta"):
        reg.get_version("m", 1)
    store.put_bytes("models/m/versions/2/metadata.json", b'{"model_sha256": "ab"}')
    with pytest.raises(IntegrityError, match=r"versions/2/metadata.json: does not name its mod"):
        reg.get_version("m", 2)
    named = b'{"model_sha256": "ab", "name": "m", "version": 2}'
    store.put_bytes("models/m/versions/2/metadata.json", named)
    with pytest.raises(IntegrityError, match=r"versions/2/metadata.json: metadata does not"):
        reg.get_version("m", 2)
    store.put_bytes("models/m/audit/0000000002.json", b"{")
    with pytest.raises(IntegrityError, match=r"audit/0000000002.json: not a valid audit event"):
        reg.audit("m")


def test_a_serving_manager_keeps_its_model_and_reports_not_ready(tmp_path: Path) -> None:
    """The service kept reporting ready on a corrupt alias; a restart did not start."""
    from fastapi.testclient import TestClient

    from mlops_tasks.serving.app import create_app
    from mlops_tasks.serving.models import ModelManager
    from mlops_tasks.settings import Settings
    from mlops_tasks.specs import load_spec

    store = LocalStore(tmp_path / "s")
    reg = Registry(store)
    version = reg.register("credit_default", model_bytes(), lineage(), actor="ci").version
    passed_gate(reg, "credit_default", version)
    reg.promote("credit_default", version, reason="serve it", actor="ci")
    spec = load_spec(REPO / "dags/specs/credit_default.yaml")
    manager = ModelManager(reg, [spec])
    assert manager.refresh() == {"credit_default": {"from": None, "to": 1}}
    store.put_bytes("models/credit_default/aliases/production.json", b"\x00not json")
    with pytest.raises(MlopsError):  # the path `refresh` catches
        reg.alias("credit_default")
    manager.refresh()
    ready, status = manager.ready()
    assert not ready and manager.slots["credit_default"].version == 1
    assert "not valid JSON" in status["credit_default"]["error"]
    app = create_app(Settings.from_env({}), store, REPO / "dags/specs", poll_seconds=3600)
    with TestClient(app) as client:  # a restarted service still starts
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert "repair-alias" in resp.json()["models"]["credit_default"]["error"]
        assert client.get("/healthz").status_code == 200


# Tamper evidence ---------------------------------------------------------------------------
def test_a_clean_registry_verifies_and_events_form_a_chain(store: ArtifactStore) -> None:
    reg = history_of_three(store)
    report = reg.verify("m")
    assert report["problems"] == []
    assert (report["production"], report["versions"], report["events"]) == (2, 4, 10)
    events = reg.audit("m")
    assert [e["seq"] for e in events] == list(range(1, 11))
    assert events[0]["prev_sha256"] is None
    for prev, event in itertools.pairwise(events):
        key = f"models/m/audit/{prev['seq']:010d}.json"
        assert event["prev_sha256"] == hashlib.sha256(store.get_bytes(key)).hexdigest()


def test_verify_an_unknown_model_is_not_found(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "verify", "ghost", "--store", (tmp_path / "s").as_uri())
    assert code == UnknownModel.exit_code and "unknown model 'ghost'" in err


def _edit_event(store: ArtifactStore) -> str:
    key = "models/m/audit/0000000004.json"
    event = json.loads(store.get_bytes(key))
    store.put_bytes(key, encode_json({**event, "actor": "mallory"}))
    return "event 4 was edited or replaced"


def _delete_event(store: ArtifactStore) -> str:
    store.delete("models/m/audit/0000000005.json")
    return "audit event 5 is missing"


def _move_alias(store: ArtifactStore) -> str:
    doc, token = store.read_json_versioned(ALIAS)
    store.compare_and_swap(ALIAS, {**doc, "version": 3}, token)
    return "production alias says v3 but the audit trail says v2"


def _rewrite_history(store: ArtifactStore) -> str:
    doc, token = store.read_json_versioned(ALIAS)
    store.compare_and_swap(ALIAS, {**doc, "history": doc["history"][1:]}, token)
    return "does not match the audit trail"


def _replace_artifact(store: ArtifactStore) -> str:
    """Swap model and metadata checksum together: only the register event still knows."""
    other = model_bytes(7)
    meta = json.loads(store.get_bytes("models/m/versions/1/metadata.json"))
    store.put_bytes("models/m/versions/1/model.skops", other)
    meta["model_sha256"] = hashlib.sha256(other).hexdigest()
    store.put_bytes("models/m/versions/1/metadata.json", encode_json(meta))
    return "differs from the"


def _flip_byte(store: ArtifactStore) -> str:
    data = bytearray(store.get_bytes("models/m/versions/2/model.skops"))
    data[100] ^= 1
    store.put_bytes("models/m/versions/2/model.skops", bytes(data))
    return "does not match the registered"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_edit_event, id="edit-event"),
        pytest.param(_delete_event, id="delete-event"),
        pytest.param(_move_alias, id="alias-moved-without-event"),
        pytest.param(_rewrite_history, id="alias-history-rewritten"),
        pytest.param(_replace_artifact, id="artifact-and-metadata-replaced"),
        pytest.param(_flip_byte, id="artifact-byte-flipped"),
    ],
)
def test_verify_detects_tampering(tmp_path: Path, capsys, tamper) -> None:
    store = LocalStore(tmp_path / "s")
    history_of_three(store)
    assert run(capsys, "verify", "m", "--store", store.uri)[0] == 0
    expected = tamper(store)
    code, out, _ = run(capsys, "verify", "m", "--store", store.uri)
    assert code == IntegrityError.exit_code
    assert expected in out, out
    code, out, _ = run(capsys, "verify", "m", "--store", store.uri, "--json")
    assert code == IntegrityError.exit_code and json.loads(out)["problems"]


def test_events_from_before_the_chain_are_still_read_first(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    old = {
        "event_id": "e" * 32,
        "model": "m",
        "action": "note",
        "actor": "old",
        "at": "2025-01-01T00:00:00.000000Z",
        "reason": "before the chain",
        "from_version": None,
        "to_version": None,
        "details": {},
    }
    store.put_bytes(f"models/m/audit/20250101T000000.000000Z_{'e' * 32}.json", encode_json(old))
    reg = Registry(store)
    reg.record_event("m", "note", actor="new")
    assert [e["actor"] for e in reg.audit("m")] == ["old", "new"]
    report = reg.verify("m")
    assert report["problems"] == [] and report["legacy_events"] == 1
