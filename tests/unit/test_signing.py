"""Optional signing: with `MLOPS_SIGNING_KEY`, version metadata, the production alias, each
version's status and evaluation, and the audit events carry an HMAC that every read checks;
without it, nothing changes. A rotation accepts previous keys until `mlops sign --rotate` has
re-signed what they signed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlops_tasks.cli import main
from mlops_tasks.errors import IntegrityError, UsageError
from mlops_tasks.registry import Registry, encode_json
from mlops_tasks.settings import Settings
from mlops_tasks.signing import keyring
from mlops_tasks.storage import ArtifactStore
from tests.unit.test_registry import lineage, model_bytes, register_gated

KEY = "k" * 32
OTHER_KEY = "o" * 32
ALIAS = "models/m/aliases/production.json"
META = "models/m/versions/{}/metadata.json"


def signed_store(
    uri_or_path: str | Path, key: str | None = KEY, previous: tuple[str, ...] = ()
) -> ArtifactStore:
    """The store as a deployment with (or without) a signing key opens it."""
    env = {"MLOPS_STORE": Path(uri_or_path).as_uri()}
    if key:
        env["MLOPS_SIGNING_KEY"] = key
    if previous:
        env["MLOPS_SIGNING_PREVIOUS_KEYS"] = ",".join(previous)
    return Settings.from_env(env).open_store()


def two_promoted(store: ArtifactStore) -> Registry:
    reg = Registry(store)
    for seed in range(2):
        register_gated(reg, "m", seed)
        reg.promote("m", seed + 1, reason=f"promote v{seed + 1}", actor="alice")
    return reg


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_without_a_key_nothing_is_signed_or_checked(tmp_path: Path) -> None:
    store = signed_store(tmp_path / "s", key=None)
    reg = two_promoted(store)
    assert not store.exists("models/m/versions/1/metadata.sig")
    assert "signature" not in store.get_json(ALIAS)
    assert reg.load_production("m")[0] == 2
    assert reg.verify("m").problems == ()
    # Signed documents read fine by a deployment without the key.
    signed = signed_store(tmp_path / "t")
    two_promoted(signed)
    assert Registry(signed_store(tmp_path / "t", key=None)).load_production("m")[0] == 2


def test_with_a_key_registering_and_promoting_sign_and_loading_checks(tmp_path: Path) -> None:
    store = signed_store(tmp_path / "s")
    reg = two_promoted(store)
    assert store.exists("models/m/versions/1/metadata.sig")
    assert isinstance(store.get_json(ALIAS)["signature"], str)
    reg.rollback("m", reason="back", actor="bob")  # every alias move signs
    assert reg.load_production("m")[0] == 1
    assert reg.verify("m").problems == ()


def _replace_artifact_and_checksum(store: ArtifactStore) -> str:
    """The attack the unsigned checksum allowed: a new model with a matching SHA-256."""
    other = model_bytes(7)
    meta = json.loads(store.get_bytes(META.format(2)))
    store.put_bytes("models/m/versions/2/model.skops", other)
    store.put_bytes(META.format(2), encode_json({**meta, "model_sha256": _sha(other)}))
    return "versions/2/metadata.json: its signature does not match"


def _unsigned_version(store: ArtifactStore) -> str:
    store.delete("models/m/versions/2/metadata.sig")
    return "versions/2/metadata.json: not signed"


def _alias_moved(store: ArtifactStore) -> str:
    doc, token = store.read_json_versioned(ALIAS)
    store.compare_and_swap(ALIAS, {**doc, "version": 1}, token)  # signature kept, now stale
    return "its signature does not match"


def _alias_unsigned(store: ArtifactStore) -> str:
    doc, token = store.read_json_versioned(ALIAS)
    store.compare_and_swap(ALIAS, {k: v for k, v in doc.items() if k != "signature"}, token)
    return "not signed, and a signing key is configured"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_replace_artifact_and_checksum, id="metadata-edited"),
        pytest.param(_unsigned_version, id="metadata-unsigned"),
        pytest.param(_alias_moved, id="alias-edited"),
        pytest.param(_alias_unsigned, id="alias-unsigned"),
    ],
)
def test_with_a_key_tampered_documents_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tamper
) -> None:
    store = signed_store(tmp_path / "s")
    reg = two_promoted(store)
    expected = tamper(store)
    with pytest.raises(IntegrityError, match=expected):
        reg.load_production("m")
    monkeypatch.setenv("MLOPS_SIGNING_KEY", KEY)
    for argv in (["verify", "m"], ["show", "m", "2"], ["promote", "m", "2", "--reason", "try it"]):
        code, out = cli(capsys, *argv, "--store", store.uri)
        assert code == IntegrityError.exit_code, (argv, out)
        assert expected in out and "Traceback" not in out
    # The same store read without a key: behaviour as before signing existed.
    plain = Registry(signed_store(tmp_path / "s", key=None))
    if tamper is _replace_artifact_and_checksum:
        assert "differs from the" in "\n".join(plain.verify("m").problems)  # chain only
    else:
        assert plain.get_version("m", 2).version == 2


def test_another_key_refuses_what_the_first_signed(tmp_path: Path) -> None:
    two_promoted(signed_store(tmp_path / "s"))
    other = Registry(signed_store(tmp_path / "s", key=OTHER_KEY))
    with pytest.raises(IntegrityError, match=r"production\.json: not a valid alias document"):
        other.alias("m")
    report = other.verify("m")
    # The alias, both versions' metadata and evaluation, the audit trail's newest event and
    # the trail's head.
    assert len(report.problems) == 7, report.problems
    assert all("signature does not match" in p for p in report.problems)
    files = [
        "production.json",
        "1/metadata.json",
        "1/evaluation.json",
        "audit/0000000004.json",
        "audit_head.json",
    ]
    assert all(any(f in p for p in report.problems) for f in files)


def test_what_was_written_before_the_key_is_refused_until_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Turning signing on does not bless what is already in the store: `mlops sign` does,
    after the registry verifies cleanly."""
    two_promoted(signed_store(tmp_path / "s", key=None))
    store = signed_store(tmp_path / "s")
    reg = Registry(store)
    with pytest.raises(IntegrityError, match=r"metadata\.json: not signed .*`mlops sign m`"):
        reg.get_version("m", 1)
    monkeypatch.setenv("MLOPS_SIGNING_KEY", KEY)
    code, out = cli(capsys, "sign", "m", "--reason", "key introduced", "--store", store.uri)
    assert code == 0 and out == (
        "m: signed v1, v2, the production alias, v1 evaluation, v2 evaluation, the audit "
        "trail, the audit head\n"
    )
    assert reg.load_production("m")[0] == 2 and reg.verify("m").problems == ()
    (event,) = reg.audit("m", "sign")
    assert event["details"] == {
        "versions": [1, 2],
        "evaluations": [1, 2],
        "statuses": [],
        "alias": True,
        "audit_trail": True,
        "audit_head": True,
    }
    assert cli(capsys, "sign", "m", "--reason", "again", "--store", store.uri) == (
        0,
        "m: all signed\n",
    )


def test_sign_refuses_a_registry_that_does_not_verify(tmp_path: Path) -> None:
    two_promoted(signed_store(tmp_path / "s", key=None))
    store = signed_store(tmp_path / "s")
    _replace_artifact_and_checksum_unsigned(store)
    with pytest.raises(IntegrityError, match="refusing to sign a registry that does not verify"):
        Registry(store).sign("m", reason="x", actor="alice")
    assert not store.exists("models/m/versions/1/metadata.sig")
    with pytest.raises(UsageError, match="no signing key"):
        Registry(signed_store(tmp_path / "s", key=None)).sign("m", reason="x", actor="alice")


def _replace_artifact_and_checksum_unsigned(store: ArtifactStore) -> None:
    other = model_bytes(7)
    meta = json.loads(store.get_bytes(META.format(2)))
    store.put_bytes("models/m/versions/2/model.skops", other)
    store.put_bytes(META.format(2), encode_json({**meta, "model_sha256": _sha(other)}))


def test_the_signing_key_is_checked_and_kept_out_of_repr() -> None:
    with pytest.raises(UsageError, match="an HMAC key of at least 16 characters"):
        Settings.from_env({"MLOPS_SIGNING_KEY": "short"})
    settings = Settings.from_env({"MLOPS_SIGNING_KEY": KEY})
    assert settings.signing_key == KEY and KEY not in repr(settings)
    assert Settings.from_env({}).open_store(f"file://{Path.cwd()}").keyring is None


def test_a_signed_registry_on_both_backends(store: ArtifactStore) -> None:
    store.keyring = keyring(KEY, (), ())
    reg = two_promoted(store)
    assert reg.load_production("m")[0] == 2 and reg.verify("m").problems == ()
    doc, token = store.read_json_versioned(ALIAS)
    store.compare_and_swap(ALIAS, {**doc, "version": 1}, token)
    with pytest.raises(IntegrityError, match="signature does not match"):
        reg.alias("m")


# What decides a promotion, and the trail of it, is signed too ------------------------------
def with_a_rejected_and_an_ungated_candidate(store: ArtifactStore) -> Registry:
    """v1, v2 promoted; v3 failed its gate and was rejected; v4 never got a gate result."""
    reg = two_promoted(store)
    v3 = reg.register("m", model_bytes(3), lineage(), actor="run").version
    reg.record_evaluation("m", v3, {"decision": {"passed": False, "checks": []}})
    reg.reject("m", v3, reason="gate failed", actor="run")
    files = {"holdout.parquet": b"predictions"}
    reg.register("m", model_bytes(4), lineage(), actor="killed run", files=files)
    return reg


def _forged_evaluation(store: ArtifactStore) -> str:
    """A passed gate written for the ungated candidate without the key."""
    store.put_json("models/m/versions/4/evaluation.json", {"decision": {"passed": True}})
    return "versions/4/evaluation.json: refused, not signed"


def _edited_evaluation(store: ArtifactStore) -> str:
    key = "models/m/versions/3/evaluation.json"
    store.put_json(key, {**store.get_json(key), "decision": {"passed": True, "checks": []}})
    return "versions/3/evaluation.json: refused, its signature does not match"


def _edited_status(store: ArtifactStore) -> str:
    """The rejected candidate made a candidate again (its stale signature kept)."""
    key = "models/m/versions/3/status.json"
    doc, token = store.read_json_versioned(key)
    store.compare_and_swap(key, {**doc, "status": "candidate"}, token)
    _edited_evaluation(store)
    return "versions/3/status.json: refused, its signature does not match"


def _holdout_replaced(store: ArtifactStore) -> str:
    """The predictions the ungated candidate's gate will be computed from, replaced together
    with the checksum its metadata keeps of them."""
    store.put_bytes("models/m/versions/4/holdout.parquet", b"better predictions")
    meta = json.loads(store.get_bytes(META.format(4)))
    meta["files_sha256"]["holdout.parquet"] = _sha(b"better predictions")
    store.put_bytes(META.format(4), encode_json(meta))
    return "versions/4/metadata.json: its signature does not match"


def _chain_rewritten(store: ArtifactStore) -> str:
    """An event edited, every later event's predecessor hash recomputed and the head moved to
    the new newest event: the chain holds, the signatures do not."""
    keys = sorted(store.list_keys("models/m/audit/"))
    events = [json.loads(store.get_bytes(k)) for k in keys]
    events[0]["actor"] = "mallory"
    prev = None
    for key, event in zip(keys, events, strict=True):
        event["prev_sha256"] = prev
        data = encode_json(event)
        store.put_bytes(key, data)
        prev = _sha(data)
    head = json.loads(store.get_bytes("models/m/audit_head.json"))
    store.put_bytes("models/m/audit_head.json", encode_json({**head, "sha256": prev}))
    return "the audit trail of m is not vouched for (no event is validly signed)"


def _unsigned_event_appended(store: ArtifactStore) -> str:
    """Someone without the key appends to the trail (a plausible promotion of v4)."""
    unkeyed = Registry(signed_store(Path(store.uri.removeprefix("file://")), key=None))
    unkeyed.record_event("m", "note", actor="mallory", reason="looks harmless")
    return "audit/0000000008.json: audit event 8 is not signed"


def _legacy_event_added(store: ArtifactStore) -> str:
    """An event from 'before the chain' added: the chain does not cover it, no signature does."""
    event = {"event_id": "e" * 32, "model": "m", "action": "promote", "actor": "mallory"}
    store.put_bytes(f"models/m/audit/20200101T000000.000000Z_{'e' * 32}.json", encode_json(event))
    return "an event from before the hash chain that no signed event vouches for"


@pytest.mark.parametrize(
    ("tamper", "argv"),
    [
        pytest.param(_forged_evaluation, ["promote", "m", "4"], id="evaluation-forged"),
        pytest.param(_edited_evaluation, ["show", "m", "3"], id="evaluation-edited"),
        pytest.param(_edited_status, ["promote", "m", "3"], id="status-edited"),
        pytest.param(_holdout_replaced, ["show", "m", "4"], id="holdout-replaced"),
        pytest.param(_chain_rewritten, ["audit", "m"], id="audit-chain-rewritten"),
        pytest.param(_unsigned_event_appended, ["audit", "m"], id="audit-event-unsigned"),
        pytest.param(_legacy_event_added, ["audit", "m"], id="audit-legacy-event-added"),
    ],
)
def test_with_a_key_forged_gates_statuses_and_events_are_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tamper,
    argv: list[str],
) -> None:
    store = signed_store(tmp_path / "s")
    reg = with_a_rejected_and_an_ungated_candidate(store)
    assert reg.verify("m").problems == ()
    # Without the key each forgery works (or goes unnoticed), as it did before signing.
    expected = tamper(store)
    plain = Registry(signed_store(tmp_path / "s", key=None))
    assert plain.verify("m").problems == ()
    monkeypatch.setenv("MLOPS_SIGNING_KEY", KEY)
    if "promote" in argv:
        argv = [*argv, "--reason", "forged gate"]
    for command in (argv, ["verify", "m"]):
        code, out = cli(capsys, *command, "--store", store.uri)
        assert code == IntegrityError.exit_code, (command, out)
        assert expected in out and "Traceback" not in out, out
    assert reg.alias("m") == 2  # nothing moved
    if tamper is _holdout_replaced:
        with pytest.raises(IntegrityError, match=expected):
            reg.read_file("m", 4, "holdout.parquet")  # what evaluation computes the gate from
        assert plain.read_file("m", 4, "holdout.parquet") == b"better predictions"


def test_a_rejection_and_a_gate_result_are_signed(tmp_path: Path) -> None:
    store = signed_store(tmp_path / "s")
    reg = with_a_rejected_and_an_ungated_candidate(store)
    for leaf in ("3/status.json", "3/evaluation.json", "1/evaluation.json"):
        assert isinstance(store.get_json(f"models/m/versions/{leaf}")["signature"], str)
    assert reg.get_version("m", 3).status == "rejected"
    assert reg.get_version("m", 1).evaluation == {"decision": {"passed": True, "checks": []}}
    events = [json.loads(store.get_bytes(k)) for k in store.list_keys("models/m/audit/")]
    assert len(events) == 7 and all(isinstance(e["signature"], str) for e in events)


# Rotation ------------------------------------------------------------------------------------
NEW_KEY = "n" * 32


def test_rotation_accepts_the_old_key_until_everything_is_re_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_a_rejected_and_an_ungated_candidate(signed_store(tmp_path / "s"))
    rotating = Registry(signed_store(tmp_path / "s", key=NEW_KEY, previous=(KEY,)))
    new_only = Registry(signed_store(tmp_path / "s", key=NEW_KEY))
    # During the rotation the old key's signatures are accepted, and new ones use the new key.
    assert rotating.load_production("m")[0] == 2 and rotating.verify("m").problems == ()
    with pytest.raises(IntegrityError, match=r"production\.json: not a valid alias document"):
        new_only.alias("m")
    # The alias, 4 metadata, 3 gates, a status, the trail and its head.
    assert len(new_only.verify("m").problems) == 11
    # `sign` alone never replaces a signature; `--rotate` re-signs what the old key signed.
    monkeypatch.setenv("MLOPS_SIGNING_KEY", NEW_KEY)
    monkeypatch.setenv("MLOPS_SIGNING_PREVIOUS_KEYS", KEY)
    uri = rotating.store.uri
    assert cli(capsys, "sign", "m", "--reason", "no rotate", "--store", uri) == (
        0,
        "m: all signed\n",
    )
    code, out = cli(capsys, "sign", "m", "--rotate", "--reason", "yearly rotation", "--store", uri)
    assert code == 0 and out.startswith("m: re-signed with the new key: "), out
    (event,) = rotating.audit("m", "sign")
    assert event["reason"] == "yearly rotation" and len(event["details"]["rotated"]) == 11
    # The old key removed: everything reads with the new key alone, nothing with the old one.
    assert new_only.load_production("m")[0] == 2 and new_only.verify("m").problems == ()
    assert new_only.get_version("m", 3).status == "rejected"
    old_only = Registry(signed_store(tmp_path / "s", key=KEY))
    assert len(old_only.verify("m").problems) == 11
    # Tampering is refused as before.
    doc, token = new_only.store.read_json_versioned(ALIAS)
    new_only.store.compare_and_swap(ALIAS, {**doc, "version": 1}, token)
    with pytest.raises(IntegrityError, match="signature does not match"):
        new_only.alias("m")


def test_rotation_never_re_signs_what_no_accepted_key_signed(tmp_path: Path) -> None:
    with_a_rejected_and_an_ungated_candidate(signed_store(tmp_path / "s"))
    store = signed_store(tmp_path / "s", key=NEW_KEY, previous=(KEY,))
    _edited_evaluation(store)  # a forged gate with the old key's stale signature
    meta = json.loads(store.get_bytes(META.format(1)))
    store.put_bytes(META.format(1), encode_json({**meta, "created_by": "mallory"}))
    before = {k: store.get_bytes(k) for k in store.list_keys("models/m/")}
    with pytest.raises(
        IntegrityError, match=r"2 document\(s\) carry a signature that matches no"
    ) as err:
        Registry(store).sign("m", reason="rotate", actor="alice", rotate=True)
    assert "versions/1/metadata.sig" in str(err.value) and "3/evaluation.json" in str(err.value)
    assert {k: store.get_bytes(k) for k in store.list_keys("models/m/")} == before


def test_previous_keys_are_checked_and_kept_out_of_repr() -> None:
    settings = Settings.from_env(
        {"MLOPS_SIGNING_KEY": NEW_KEY, "MLOPS_SIGNING_PREVIOUS_KEYS": f" {KEY} ,{OTHER_KEY}"}
    )
    assert settings.signing_previous_keys == (KEY, OTHER_KEY)
    assert KEY not in repr(settings) and OTHER_KEY not in repr(settings)
    with pytest.raises(
        UsageError, match="each key of MLOPS_SIGNING_PREVIOUS_KEYS must be an HMAC key of at"
    ):
        Settings.from_env({"MLOPS_SIGNING_KEY": NEW_KEY, "MLOPS_SIGNING_PREVIOUS_KEYS": "short"})
    with pytest.raises(UsageError, match="needs a current key"):
        Settings.from_env({"MLOPS_SIGNING_PREVIOUS_KEYS": KEY})


def test_files_stored_with_a_version_are_checked_against_its_metadata(tmp_path: Path) -> None:
    store = signed_store(tmp_path / "s", key=None)
    reg = with_a_rejected_and_an_ungated_candidate(store)
    assert reg.read_file("m", 4, "holdout.parquet") == b"predictions"
    store.put_bytes("models/m/versions/4/holdout.parquet", b"other predictions")
    with pytest.raises(IntegrityError, match=r"4/holdout\.parquet: SHA-256 .* does not match"):
        reg.read_file("m", 4, "holdout.parquet")
    assert "4/holdout.parquet: SHA-256" in "\n".join(reg.verify("m").problems)
