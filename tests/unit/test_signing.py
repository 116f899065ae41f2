"""Optional signing: with `MLOPS_SIGNING_KEY`, version metadata and the production alias carry
an HMAC that every read checks; without it, nothing changes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlops_tasks.cli import main
from mlops_tasks.errors import IntegrityError, UsageError
from mlops_tasks.registry import Registry, encode_json
from mlops_tasks.settings import Settings
from mlops_tasks.storage import ArtifactStore
from tests.unit.test_registry import model_bytes, register_gated

KEY = "k" * 32
OTHER_KEY = "o" * 32
ALIAS = "models/m/aliases/production.json"
META = "models/m/versions/{}/metadata.json"


def signed_store(uri_or_path: str | Path, key: str | None = KEY) -> ArtifactStore:
    """The store as a deployment with (or without) a signing key opens it."""
    env = {"MLOPS_STORE": Path(uri_or_path).as_uri()}
    if key:
        env["MLOPS_SIGNING_KEY"] = key
    return Settings.from_env(env).open_store()


def two_promoted(store: ArtifactStore) -> Registry:
    reg = Registry(store)
    for seed in range(2):
        register_gated(reg, "m", seed)
        reg.promote("m", seed + 1, reason=f"v{seed + 1}", actor="alice")
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
    assert reg.verify("m")["problems"] == []
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
    assert reg.verify("m")["problems"] == []


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
    for argv in (["verify", "m"], ["show", "m", "2"], ["promote", "m", "2", "--reason", "x"]):
        code, out = cli(capsys, *argv, "--store", store.uri)
        assert code == IntegrityError.exit_code, (argv, out)
        assert expected in out and "Traceback" not in out
    # The same store read without a key: behaviour as before signing existed.
    plain = Registry(signed_store(tmp_path / "s", key=None))
    if tamper is _replace_artifact_and_checksum:
        assert "differs from the" in "\n".join(plain.verify("m")["problems"])  # chain only
    else:
        assert plain.get_version("m", 2).version == 2


def test_another_key_refuses_what_the_first_signed(tmp_path: Path) -> None:
    two_promoted(signed_store(tmp_path / "s"))
    other = Registry(signed_store(tmp_path / "s", key=OTHER_KEY))
    with pytest.raises(IntegrityError, match=r"production\.json: not a valid alias document"):
        other.alias("m")
    report = other.verify("m")
    assert len(report["problems"]) == 3  # the alias and both versions' metadata
    assert all("signature does not match" in p for p in report["problems"])


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
    assert code == 0 and "signed v1, v2, the production alias" in out
    assert reg.load_production("m")[0] == 2 and reg.verify("m")["problems"] == []
    (event,) = reg.audit("m", "sign")
    assert event["details"] == {"versions": [1, 2], "alias": True}
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
    with pytest.raises(UsageError, match="at least 16 characters"):
        Settings.from_env({"MLOPS_SIGNING_KEY": "short"})
    settings = Settings.from_env({"MLOPS_SIGNING_KEY": KEY})
    assert settings.signing_key == KEY and KEY not in repr(settings)
    assert Settings.from_env({}).open_store(f"file://{Path.cwd()}").signing_key is None


def test_a_signed_registry_on_both_backends(store: ArtifactStore) -> None:
    store.signing_key = KEY.encode()
    reg = two_promoted(store)
    assert reg.load_production("m")[0] == 2 and reg.verify("m")["problems"] == []
    doc, token = store.read_json_versioned(ALIAS)
    store.compare_and_swap(ALIAS, {**doc, "version": 1}, token)
    with pytest.raises(IntegrityError, match="signature does not match"):
        reg.alias("m")
