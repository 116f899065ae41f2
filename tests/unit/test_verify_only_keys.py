"""Ed25519 keys: writers sign with the private key, and a process given only the public key
(`MLOPS_VERIFY_KEYS`, the prediction service) checks every signature and can make none.

With HMAC signatures the service had to hold the key that signs, so a break-in there could
forge a signed older version into production; with a public key it cannot."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_tasks import signing
from mlops_tasks.errors import IntegrityError, UsageError
from mlops_tasks.registry import Registry
from mlops_tasks.settings import Settings
from mlops_tasks.storage import ArtifactStore, encode_json
from tests.unit.test_registry import register_gated
from tests.unit.test_signing import ALIAS, KEY, cli, two_promoted

PRIVATE, PUBLIC = signing.generate()
OTHER_PRIVATE, OTHER_PUBLIC = signing.generate()


def opened(path: Path, **env: str) -> ArtifactStore:
    """The store as a process with these settings opens it."""
    return Settings.from_env({"MLOPS_STORE": path.as_uri(), **env}).open_store()


def writer(path: Path) -> Registry:
    return Registry(opened(path, MLOPS_SIGNING_KEY=PRIVATE))


def checker(path: Path, keys: str = PUBLIC) -> Registry:
    return Registry(opened(path, MLOPS_VERIFY_KEYS=keys))


def test_a_public_key_checks_what_the_private_key_signed(tmp_path: Path) -> None:
    two_promoted(writer(tmp_path / "s").store)
    sig = (tmp_path / "s/models/m/versions/2/metadata.sig").read_text()
    assert sig.startswith("bound:ed25519:") and len(sig) == len("bound:ed25519:") + 128
    reg = checker(tmp_path / "s")
    assert reg.load_production("m")[0] == 2
    report = reg.verify("m")
    assert report.problems == () and report.signatures.checked is True


def test_a_process_with_the_public_key_alone_cannot_change_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    two_promoted(writer(tmp_path / "s").store)
    reg = checker(tmp_path / "s")
    before = {k: reg.store.get_bytes(k) for k in reg.store.list_keys("models/")}
    changes = [
        lambda: reg.rollback("m", reason="try it", actor="mallory"),
        lambda: reg.promote("m", 1, reason="try it", actor="mallory"),
        lambda: register_gated(reg, "m", seed=5),
        lambda: reg.record_event("m", "note", actor="mallory", reason="try it"),
        lambda: reg.sign("m", reason="try it", actor="mallory"),
    ]
    for change in changes:
        with pytest.raises(UsageError, match="MLOPS_VERIFY_KEYS"):
            change()
    assert {k: reg.store.get_bytes(k) for k in reg.store.list_keys("models/")} == before
    monkeypatch.setenv("MLOPS_VERIFY_KEYS", PUBLIC)
    code, out = cli(capsys, "rollback", "m", "--reason", "try it", "--store", reg.store.uri)
    assert code == UsageError.exit_code and "cannot make them" in out and "Traceback" not in out


def test_what_a_public_key_holder_forges_is_refused(tmp_path: Path) -> None:
    """The break-in the issue describes, from the service's host, which holds only what the
    service holds: copy v1's signed folder over production v2, or re-point the alias and sign
    it with a key of one's own. What the service reads (`alias`, `get_version`, `load`)
    refuses each."""
    two_promoted(writer(tmp_path / "s").store)
    root = tmp_path / "s/models/m/versions"
    for leaf in ("metadata.json", "metadata.sig", "model.skops"):
        (root / "2" / leaf).write_bytes((root / "1" / leaf).read_bytes())
    reg = checker(tmp_path / "s")
    assert reg.alias("m") == 2
    with pytest.raises(IntegrityError, match="found as m v2"):
        reg.get_version("m", 2)

    two_promoted(writer(tmp_path / "t").store)
    store = checker(tmp_path / "t").store
    doc, token = store.read_json_versioned(ALIAS)
    forged = {k: v for k, v in doc.items() if k != "signature"} | {"version": 1}
    own = signing.parse_key(OTHER_PRIVATE, "an attacker's own key")
    forged["signature"] = own.sign(encode_json(forged))
    store.compare_and_swap(ALIAS, forged, token)
    with pytest.raises(IntegrityError, match="signature does not match"):
        checker(tmp_path / "t").alias("m")


def test_a_signature_of_another_pair_or_of_an_hmac_key_is_refused(tmp_path: Path) -> None:
    two_promoted(writer(tmp_path / "s").store)
    assert len(checker(tmp_path / "s", OTHER_PUBLIC).verify("m").problems) > 0
    hmac_signed = tmp_path / "h"
    two_promoted(Registry(opened(hmac_signed, MLOPS_SIGNING_KEY=KEY)).store)
    with pytest.raises(IntegrityError, match="signature does not match"):
        checker(hmac_signed).load_production("m")


def test_moving_from_an_hmac_key_to_an_ed25519_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rotation of docs/reliability.md, from a shared secret to a key pair."""
    two_promoted(Registry(opened(tmp_path / "s", MLOPS_SIGNING_KEY=KEY)).store)
    monkeypatch.setenv("MLOPS_SIGNING_KEY", PRIVATE)
    monkeypatch.setenv("MLOPS_SIGNING_PREVIOUS_KEYS", KEY)
    uri = (tmp_path / "s").as_uri()
    code, out = cli(capsys, "sign", "m", "--rotate", "--reason", "to Ed25519", "--store", uri)
    assert code == 0 and out.startswith("m: re-signed with the new key: "), out
    reg = checker(tmp_path / "s")
    assert reg.load_production("m")[0] == 2 and reg.verify("m").problems == ()


def test_keygen_prints_a_pair_and_the_public_key_of_a_private_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = cli(capsys, "keygen")
    private, public = (line.split("=", 1)[1] for line in out.splitlines())
    assert code == 0 and out.splitlines()[0].startswith("MLOPS_SIGNING_KEY=ed25519:")
    monkeypatch.setenv("MLOPS_SIGNING_KEY", private)
    assert cli(capsys, "keygen", "--public") == (0, f"MLOPS_VERIFY_KEYS={public}\n")
    monkeypatch.setenv("MLOPS_SIGNING_KEY", KEY)
    code, out = cli(capsys, "keygen", "--public")
    assert code == UsageError.exit_code and "HMAC key" in out and KEY not in out


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLOPS_VERIFY_KEYS": KEY}, "holds public keys only"),
        ({"MLOPS_VERIFY_KEYS": PRIVATE}, "holds public keys only"),
        ({"MLOPS_VERIFY_KEYS": "ed25519-pub:AAAA"}, "base64 of a 32-byte Ed25519 public key"),
        ({"MLOPS_SIGNING_KEY": "ed25519:not base64!"}, "MLOPS_SIGNING_KEY: ed25519:... must"),
        (
            {"MLOPS_VERIFY_KEYS": PUBLIC, "MLOPS_SIGNING_PREVIOUS_KEYS": KEY},
            "holds public keys only",
        ),
        ({"MLOPS_SIGNING_PREVIOUS_KEYS": OTHER_PUBLIC}, "needs a current key"),
    ],
)
def test_key_settings_are_checked_at_start_without_showing_a_key(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message) as err:
        Settings.from_env(env)
    for value in env.values():
        assert value not in str(err.value) or value.startswith("ed25519-pub:")


def test_public_keys_may_accompany_a_signing_key_and_a_rotation(tmp_path: Path) -> None:
    two_promoted(Registry(opened(tmp_path / "s", MLOPS_SIGNING_KEY=OTHER_PRIVATE)).store)
    both = checker(tmp_path / "s", f"{PUBLIC},{OTHER_PUBLIC}")
    assert both.verify("m").problems == ()
    signer = Registry(
        opened(tmp_path / "s", MLOPS_SIGNING_KEY=PRIVATE, MLOPS_VERIFY_KEYS=OTHER_PUBLIC)
    )
    assert signer.load_production("m")[0] == 2  # the other pair's signatures are accepted


KEY_TEXT = st.one_of(
    st.text(max_size=80),
    st.builds(lambda s: "ed25519:" + s, st.text(string.printable, max_size=60)),
    st.builds(lambda s: "ed25519-pub:" + s, st.text(string.printable, max_size=60)),
)


def _refusal(text: str) -> str:
    with pytest.raises(UsageError) as err:
        signing.parse_key(text, "MLOPS_SIGNING_KEY")
    return str(err.value)


REFUSALS = {_refusal("short"), _refusal("ed25519:x"), _refusal("ed25519-pub:x")}


@settings(max_examples=300, deadline=None)
@given(KEY_TEXT)
def test_any_text_is_a_key_or_a_usage_error_that_does_not_show_it(text: str) -> None:
    try:
        key = signing.parse_key(text, "MLOPS_SIGNING_KEY")
    except UsageError as err:
        assert str(err) in REFUSALS  # one of three fixed messages: nothing of the text shown
        return
    signature = key.sign(b"doc") if key.can_sign else None
    if signature is not None:
        assert key.verifies(b"doc", signature) and not key.verifies(b"other", signature)
