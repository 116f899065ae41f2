"""Registry integrity: corrupt files, the repair path, the audit hash chain and `mlops verify`."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_tasks.cli import main
from mlops_tasks.errors import IntegrityError, MlopsError, UnknownModel
from mlops_tasks.registry import Registry, encode_json
from mlops_tasks.storage import ArtifactStore, LocalStore
from tests.unit.test_registry import (
    lineage,
    model_bytes,
    passed_gate,
    register_gated,
    snapshot_hash,
)
from tests.unit.test_signing import KEY, signed_store

ALIAS = "models/m/aliases/production.json"
REPO = Path(__file__).resolve().parents[2]


def history_of_three(store: ArtifactStore) -> Registry:
    """v1 -> v2 -> v3 promoted, then rolled back to v2; a reject and a retrain request."""
    reg = Registry(store)
    for seed in range(3):
        register_gated(reg, "m", seed)
        reg.promote("m", seed + 1, reason=f"promote v{seed + 1}", actor="alice")
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
        ["promote", "m", "1", "--reason", "try it"],
        ["rollback", "m", "--reason", "try it"],
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
    assert reg.rollback("m", reason="after repair", actor="ops").version == 1


def test_repair_alias_to_an_explicit_version(tmp_path: Path, capsys) -> None:
    store = LocalStore(tmp_path / "s")
    reg = history_of_three(store)
    store.put_bytes(ALIAS, b"[]")
    argv = ["repair-alias", "m", "--to", "1", "--reason", "known good", "--store", store.uri]
    assert run(capsys, *argv)[0] == 0
    assert reg.alias("m") == 1
    assert reg.verify("m").problems == ()
    rejected = ["repair-alias", "m", "--to", "4", "--reason", "try it", "--store", store.uri]
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
    assert report.problems == ()
    assert (report.production, report.versions, report.events) == (2, 4, 10)
    events = reg.audit("m")
    assert [e["seq"] for e in events] == list(range(1, 11))
    assert events[0]["prev_sha256"] is None
    for prev, event in itertools.pairwise(events):
        key = f"models/m/audit/{prev['seq']:010d}.json"
        assert event["prev_sha256"] == hashlib.sha256(store.get_bytes(key)).hexdigest()


def test_verify_json_keeps_its_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mlops verify --json` is read by scripts: the record prints as the dict it replaced."""
    store = LocalStore(tmp_path / "s")
    report = history_of_three(store).verify("m")
    assert report.ok and report.head.seq == 10
    code, out, _ = run(capsys, "verify", "m", "--store", store.uri, "--json")
    assert code == 0
    assert json.loads(out) == {
        "model": "m",
        "head": {"seq": 10, "sha256": report.head.sha256},
        "events": 10,
        "chained_events": 10,
        "legacy_events": 0,
        "versions": 4,
        "production": 2,
        "problems": [],
        "signatures": {"checked": False, "found": 0},
    }


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


def rechain(store: ArtifactStore, events: list[dict[str, Any]]) -> bytes:
    """Store `events` as the trail, each numbered by its place and hashed onto the one before
    (what someone without the key can do); the newest event's bytes."""
    data, prev = b"", None
    for seq, event in enumerate(events, start=1):
        data = encode_json({**event, "seq": seq, "prev_sha256": prev})
        store.put_bytes(f"models/m/audit/{seq:010d}.json", data)
        prev = hashlib.sha256(data).hexdigest()
    return data


def _trail(store: ArtifactStore) -> list[dict[str, Any]]:
    return [json.loads(store.get_bytes(k)) for k in sorted(store.list_keys("models/m/audit/"))]


def _delete_newest_event(store: ArtifactStore) -> str:
    """The retrain request at the tail: nothing else refers to it."""
    store.delete("models/m/audit/0000000010.json")
    return "anchors audit event 10 as the newest, but the trail ends at event 9"


def _reorder_and_rechain(store: ArtifactStore) -> str:
    """v4's rejection moved before its registration, every hash recomputed: a consistent
    chain, but not the one the head anchors."""
    events = _trail(store)
    events[7], events[8] = events[8], events[7]
    rechain(store, events)
    return "does not match that event (replaced, or the chain rebuilt?)"


def _replace_snapshot(store: ArtifactStore) -> str:
    """The rows v1 to v4 were trained on edited in place."""
    key = f"datasets/{snapshot_hash()}/data.parquet"
    frame = pd.read_parquet(io.BytesIO(store.get_bytes(key)))
    frame.loc[0, "a"] += 1.0
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    store.put_bytes(key, buffer.getvalue())
    return f"{key}: the training data of m v1, v2, v3, v4 was changed: its content hashes to"


def _delete_snapshot(store: ArtifactStore) -> str:
    store.delete(f"datasets/{snapshot_hash()}/data.parquet")
    return "the training data of m v1, v2, v3, v4 cannot be read: dataset snapshot"


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
        pytest.param(_delete_newest_event, id="newest-event-deleted"),
        pytest.param(_reorder_and_rechain, id="events-reordered-and-rechained"),
        pytest.param(_replace_snapshot, id="dataset-snapshot-edited"),
        pytest.param(_delete_snapshot, id="dataset-snapshot-deleted"),
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
    assert report.problems == () and report.legacy_events == 1


# The head anchors the newest event -----------------------------------------------------------
HEAD = "models/m/audit_head.json"


@pytest.mark.parametrize("key", [pytest.param(None, id="no-key"), pytest.param(KEY, id="key")])
def test_deleting_the_newest_events_is_detected_with_or_without_a_key(
    tmp_path: Path, key: str | None
) -> None:
    """Deleting the newest audit events passed verify, with a key or without."""
    store = signed_store(tmp_path / "s", key=key)
    reg = history_of_three(store)
    assert store.get_json(HEAD)["seq"] == 10
    for seq in (9, 10):  # the rejection of v4 and a retrain request
        store.delete(f"models/m/audit/{seq:010d}.json")
    problems = reg.verify("m").problems
    assert any("events 9 to 10 are missing (deleted?)" in p for p in problems), problems
    store.delete(HEAD)  # every event since the head existed says it anchors them
    problems = reg.verify("m").problems
    assert any(f"{HEAD} is missing (deleted?), though audit events from 1" in p for p in problems)


def test_an_append_never_moves_a_head_that_no_longer_matches_the_trail(
    tmp_path: Path,
) -> None:
    """Otherwise the next register or retrain request would hide a deleted tail."""
    store = LocalStore(tmp_path / "s")
    reg = history_of_three(store)
    store.delete("models/m/audit/0000000010.json")
    reg.record_event("m", "note", actor="ci", reason="appended after the deletion")
    assert store.get_json(HEAD)["seq"] == 10
    problems = reg.verify("m").problems
    assert problems == (
        f"{store.uri}/{HEAD}: the SHA-256 it records for audit event 10, the newest it "
        "anchors, does not match that event (replaced, or the chain rebuilt?)",
    )


def test_without_a_key_a_head_rebuilt_with_the_trail_goes_unnoticed(tmp_path: Path) -> None:
    """The limits docs/reliability.md (4) states: without a key whoever rewrites the head
    along with the trail is not noticed; with a key only an old head put back is."""
    store = signed_store(tmp_path / "s")
    reg = history_of_three(store)
    plain = Registry(signed_store(tmp_path / "s", key=None))
    old_head = store.get_bytes(HEAD)  # anchors event 10
    reg.record_event("m", "note", actor="ci", reason="the newest event")
    store.delete("models/m/audit/0000000011.json")
    tail = store.get_bytes("models/m/audit/0000000010.json")
    rebuilt = {**json.loads(old_head), "sha256": hashlib.sha256(tail).hexdigest()}
    store.put_bytes(HEAD, encode_json({k: v for k, v in rebuilt.items() if k != "signature"}))
    assert plain.verify("m").problems == ()
    assert any(
        "audit_head.json: not a valid audit head (not signed" in p for p in reg.verify("m").problems
    )
    store.put_bytes(HEAD, old_head)  # a validly signed head of its own, replayed
    assert reg.verify("m").problems == () and plain.verify("m").problems == ()


def test_a_trail_from_before_the_head_verifies_and_the_next_append_anchors_it(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "s")
    reg = history_of_three(store)
    # As an earlier release left it: no head, and no event anchored by one.
    rechain(store, [{k: v for k, v in e.items() if k != "anchored"} for e in _trail(store)])
    store.delete(HEAD)
    assert reg.verify("m").problems == ()
    reg.record_event("m", "note", actor="ops", reason="after the upgrade")
    assert store.get_json(HEAD)["seq"] == 11
    store.delete("models/m/audit/0000000011.json")
    problems = reg.verify("m").problems
    assert any("anchors audit event 11 as the newest" in p for p in problems), problems


def test_verify_reports_an_event_appended_twice(store: ArtifactStore) -> None:
    """What a retried write whose reply was lost used to leave: one change, two events."""
    reg = Registry(store)
    event = reg.record_event("m", "note", actor="ci", reason="once")
    chain_fields = ("seq", "prev_sha256", "anchored", "signature")
    reg.trail.append("m", {k: v for k, v in event.items() if k not in chain_fields})
    assert reg.verify("m").problems == (
        f"m: audit events 1, 2 carry the same event id {event['event_id']}: one change was "
        "appended 2 times (a retried write?)",
    )


# repair-alias --to checks what promote checks ------------------------------------------------
def test_repair_alias_to_a_version_checks_what_promote_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`repair-alias --to N` put an ungated candidate, even a folder never registered, in
    production without --force."""
    store = LocalStore(tmp_path / "s")
    reg = history_of_three(store)  # v4 was rejected
    reg.register("m", model_bytes(5), lineage(), actor="killed run")  # v5: no gate result
    root = Path(store.root) / "models/m/versions"
    shutil.copytree(root / "5", root / "6")  # v6: copied in, never registered
    meta = json.loads((root / "6/metadata.json").read_bytes())
    (root / "6/metadata.json").write_bytes(encode_json({**meta, "version": 6}))
    store.put_bytes(ALIAS, b"{oops")

    def repair(version: int, *more: str) -> tuple[int, str, str]:
        argv = ["repair-alias", "m", "--to", str(version), "--reason", "restore production"]
        return run(capsys, *argv, *more, "--store", store.uri)

    code, _, err = repair(5)
    assert code == 6 and "m v5 has no gate result" in err, err
    assert "`mlops repair-alias m --to 5 --force --reason ...`" in err
    code, _, err = repair(6, "--force")
    assert code == 6 and "m v6 has no register event in the audit trail" in err, err
    code, _, err = repair(4, "--force")
    assert code == 6 and "m v4 was rejected" in err, err
    assert store.get_bytes(ALIAS) == b"{oops" and not reg.audit("m", "repair_alias")
    assert repair(5, "--force")[0] == 0 and reg.alias("m") == 5
    (event,) = reg.audit("m", "repair_alias")
    assert event["details"]["forced"] is True and "no gate result" in event["details"]["ungated"]
    assert repair(1)[0] == 0  # in production before, as the audit trail shows: no force
    assert "forced" not in reg.audit("m", "repair_alias")[-1]["details"]
