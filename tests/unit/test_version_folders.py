"""A version is what its folder says it is: its metadata names its own model and version
number, and with a signing key every signature of a version file binds the model, the
version number, the file and its content. A folder copied over another version's, replayed
byte for byte, or copied to another model is refused by the registry, the CLI and the
prediction service, with or without a key, and `mlops verify` reports it."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from mlops_tasks.errors import IntegrityError
from mlops_tasks.registry import Registry, encode_json
from mlops_tasks.storage import ArtifactStore
from tests.unit.test_registry import lineage, model_bytes, register_gated
from tests.unit.test_signing import KEY, cli, signed_store

REPO = Path(__file__).resolve().parents[2]
SERVED = "credit_default"  # the model the serving tests load (its spec is in dags/specs)
OTHER = "customer_spend"


def four_versions(store: ArtifactStore) -> Registry:
    """credit_default v1..v4 promoted in turn (v4 retrained to the same bytes as v3, as a
    reproducible fit on the same data is), and customer_spend v1..v4 registered and gated."""
    reg = Registry(store)
    for seed in (0, 1, 2, 2):
        version = register_gated(reg, SERVED, seed)
        reg.promote(SERVED, version, reason=f"promote v{version}", actor="alice")
    for seed in (5, 6, 7, 8):
        register_gated(reg, OTHER, seed)
    return reg


def copy_folder(store: ArtifactStore, src: tuple[str, int], dst: tuple[str, int]) -> None:
    """`cp -r models/<src>/versions/<n>/. models/<dst>/versions/<m>/`: no key needed."""
    src_prefix = f"models/{src[0]}/versions/{src[1]}/"
    dst_prefix = f"models/{dst[0]}/versions/{dst[1]}/"
    for key in store.list_keys(src_prefix):
        store.put_bytes(dst_prefix + key[len(src_prefix) :], store.get_bytes(key))


COPIES = [
    pytest.param((SERVED, 1), id="v1-copied-over-production-v4"),
    pytest.param((SERVED, 3), id="v3-replayed-byte-identically-over-v4"),
    pytest.param((OTHER, 4), id="another-models-v4-copied-over-v4"),
]
KEYS = [pytest.param(KEY, id="signed"), pytest.param(None, id="unsigned")]


def claim(src: tuple[str, int]) -> str:
    return (
        f"models/{SERVED}/versions/4/metadata.json: claims to be {src[0]} v{src[1]} but was "
        f"found as {SERVED} v4"
    )


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("src", COPIES)
def test_a_copied_version_folder_is_refused_by_the_registry_and_the_cli(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    src: tuple[str, int],
    key: str | None,
) -> None:
    store = signed_store(tmp_path / "s", key=key)
    reg = four_versions(store)
    assert reg.verify(SERVED).problems == ()
    copy_folder(store, src, (SERVED, 4))
    for load in (
        lambda: reg.get_version(SERVED, 4),
        lambda: reg.load_production(SERVED),
        lambda: reg.load(SERVED, 4),
    ):
        with pytest.raises(IntegrityError, match=claim(src)):
            load()
    if key:
        monkeypatch.setenv("MLOPS_SIGNING_KEY", key)
    code, out = cli(capsys, "show", SERVED, "4", "--store", store.uri)
    assert code == IntegrityError.exit_code and claim(src) in out, out
    assert "Traceback" not in out and f"{src[0]} v{src[1]}  [" not in out
    code, out = cli(capsys, "verify", SERVED, "--store", store.uri)
    assert code == IntegrityError.exit_code and claim(src) in out, out
    code, out = cli(capsys, "verify", SERVED, "--store", store.uri, "--json")
    problems = json.loads(out)["problems"]
    assert code == IntegrityError.exit_code and any(claim(src) in p for p in problems)
    if key:  # the signature, bound to the folder it was made for, no longer verifies either
        signature = f"{SERVED}/versions/4/metadata.json: its signature does not match"
        assert any(signature in p for p in problems), problems
        assert any(f"{SERVED}/versions/4/evaluation.json: refused" in p for p in problems)
    # Nothing was moved, and the genuine versions still load.
    assert reg.alias(SERVED) == 4 and reg.get_version(SERVED, 3).version == 3


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("src", COPIES)
def test_the_service_never_serves_a_copied_version_and_is_not_ready(
    tmp_path: Path, src: tuple[str, int], key: str | None
) -> None:
    from fastapi.testclient import TestClient

    from mlops_tasks.serving.app import create_app
    from mlops_tasks.serving.models import ModelManager
    from mlops_tasks.settings import Settings
    from mlops_tasks.specs import load_spec

    store = signed_store(tmp_path / "s", key=key)
    reg = four_versions(store)
    reg.rollback(SERVED, to=3, reason="serve v3 first", actor="ops")
    manager = ModelManager(reg, [load_spec(REPO / f"dags/specs/{SERVED}.yaml")])
    assert manager.refresh() == {SERVED: {"from": None, "to": 3}}
    reg.promote(SERVED, 4, reason="back to v4", actor="ops")
    copy_folder(store, src, (SERVED, 4))  # after the promotion, before the service loads it
    assert manager.refresh() == {}
    ready, status = manager.ready()
    assert not ready and manager.slots[SERVED].version == 3  # v3 keeps serving
    assert claim(src) in status[SERVED]["error"]
    # A restarted service serves nothing for the model and stays not ready.
    app = create_app(Settings.from_env({}), store, REPO / "dags/specs", poll_seconds=3600)
    with TestClient(app) as client:
        resp = client.get("/readyz")
        assert resp.status_code == 503
        model = resp.json()["models"][SERVED]
        assert model["serving"] is None and claim(src) in model["error"]


def test_verify_reports_every_copied_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = signed_store(tmp_path / "s", key=None)
    four_versions(store)
    copy_folder(store, (SERVED, 1), (SERVED, 2))
    copy_folder(store, (SERVED, 1), (SERVED, 4))
    copy_folder(store, (SERVED, 1), (OTHER, 1))
    code, out = cli(capsys, "verify", SERVED, "--store", store.uri, "--json")
    problems = json.loads(out)["problems"]
    assert code == IntegrityError.exit_code
    claims = [p for p in problems if "claims to be" in p]
    assert len(claims) == 2, problems
    assert "versions/2/metadata.json: claims to be credit_default v1" in claims[0]
    code, out = cli(capsys, "verify", OTHER, "--store", store.uri)
    assert code == IntegrityError.exit_code
    assert f"models/{OTHER}/versions/1/metadata.json: claims to be {SERVED} v1" in out


def test_with_a_key_a_gate_result_copied_to_another_version_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed passed gate, copied to a candidate whose own gate failed: before, its
    signature covered only its content, and the candidate became promotable."""
    store = signed_store(tmp_path / "s")
    reg = four_versions(store)
    v5 = reg.register(SERVED, model_bytes(9), lineage(), actor="run").version
    failed = {"decision": {"passed": False, "checks": []}}
    reg.record_evaluation(SERVED, v5, failed)
    evaluation = f"models/{SERVED}/versions/{{}}/evaluation.json"
    store.put_bytes(evaluation.format(v5), store.get_bytes(evaluation.format(1)))
    with pytest.raises(IntegrityError, match=r"5/evaluation\.json: refused, its signature"):
        reg.promote(SERVED, v5, reason="forged gate", actor="mallory")
    monkeypatch.setenv("MLOPS_SIGNING_KEY", KEY)
    code, out = cli(capsys, "verify", SERVED, "--store", store.uri)
    assert code == IntegrityError.exit_code and "5/evaluation.json: refused" in out
    assert reg.alias(SERVED) == 4


# Versions signed before signatures were bound to their folder ------------------------------
def sign_as_before(store: ArtifactStore, key: str) -> list[str]:
    """Re-sign every version file of every model the way it was signed before: the HMAC of
    the metadata's bytes, and of each status and evaluation's canonical JSON."""

    def mac(data: bytes) -> str:
        return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()

    signed = []
    for k in store.list_keys("models/"):
        if k.endswith("/metadata.json"):
            store.put_bytes(k.removesuffix(".json") + ".sig", mac(store.get_bytes(k)).encode())
        elif k.endswith(("/status.json", "/evaluation.json")):
            doc = {f: v for f, v in json.loads(store.get_bytes(k)).items() if f != "signature"}
            store.put_bytes(k, encode_json({**doc, "signature": mac(encode_json(doc))}))
        else:
            continue
        signed.append(k)
    return signed


def test_versions_signed_under_the_old_scheme_are_refused_until_re_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = signed_store(tmp_path / "s")
    reg = four_versions(store)
    sign_as_before(store, KEY)
    with pytest.raises(IntegrityError) as err:
        reg.load_production(SERVED)
    assert f"models/{SERVED}/versions/4/metadata.json: signed under the old scheme, which " in (
        str(err.value)
    )
    assert f"re-sign it with `mlops sign {SERVED} --reason ...`" in str(err.value)
    monkeypatch.setenv("MLOPS_SIGNING_KEY", KEY)
    code, out = cli(capsys, "verify", SERVED, "--store", store.uri, "--json")
    problems = json.loads(out)["problems"]
    assert code == IntegrityError.exit_code and len(problems) == 8, problems  # 4 meta, 4 gates
    assert all("signed under the old scheme" in p for p in problems)
    code, out = cli(capsys, "sign", SERVED, "--reason", "bind signatures", "--store", store.uri)
    assert code == 0, out
    assert out == (
        f"{SERVED}: re-signed bound to their model and version: v1, v2, v3, v4, "
        "v1 evaluation, v2 evaluation, v3 evaluation, v4 evaluation\n"
    )
    assert reg.load_production(SERVED)[0] == 4 and reg.verify(SERVED).problems == ()
    (event,) = reg.audit(SERVED, "sign")
    four = [1, 2, 3, 4]
    assert event["details"]["rebound"] == {"versions": four, "evaluations": four, "statuses": []}
    sig = store.get_bytes(f"models/{SERVED}/versions/4/metadata.sig").decode()
    assert sig.startswith("bound:")
    # Now bound: the copy the old scheme let through is refused.
    copy_folder(store, (SERVED, 1), (SERVED, 4))
    with pytest.raises(IntegrityError, match=claim((SERVED, 1))):
        reg.load_production(SERVED)


def test_sign_never_re_binds_a_folder_whose_metadata_names_another_version(
    tmp_path: Path,
) -> None:
    """An old-scheme folder copied over another version's before the upgrade: its signature
    is valid for its bytes, but `sign` must not bless it for the folder it was found in."""
    store = signed_store(tmp_path / "s")
    reg = four_versions(store)
    sign_as_before(store, KEY)
    copy_folder(store, (SERVED, 1), (SERVED, 4))
    before = {k: store.get_bytes(k) for k in store.list_keys("models/")}
    with pytest.raises(IntegrityError, match="refusing to sign a registry that does not verify"):
        reg.sign(SERVED, reason="upgrade", actor="alice")
    assert {k: store.get_bytes(k) for k in store.list_keys("models/")} == before


def test_verify_without_a_key_says_signatures_went_unchecked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    four_versions(signed_store(tmp_path / "s"))
    plain = signed_store(tmp_path / "s", key=None)
    code, out = cli(capsys, "verify", SERVED, "--store", plain.uri)
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == (
        "ok: audit chain, production alias and artifacts agree; the store carries 17 "
        "signature(s) that went unchecked: no signing key is configured (MLOPS_SIGNING_KEY)"
    ), out
    code, out = cli(capsys, "verify", SERVED, "--store", plain.uri, "--json")
    assert json.loads(out)["signatures"] == {"checked": False, "found": 17}
    # A store without signatures, and a check with the key, say nothing of the kind.
    four_versions(signed_store(tmp_path / "t", key=None))
    code, out = cli(capsys, "verify", SERVED, "--store", (tmp_path / "t").as_uri())
    assert code == 0 and out.splitlines()[1] == (
        "ok: audit chain, production alias and artifacts agree (nothing is signed)"
    )


def test_readiness_tells_a_version_still_loading_from_one_refused(tmp_path: Path) -> None:
    from mlops_tasks.serving.models import ModelManager
    from mlops_tasks.specs import load_spec

    store = signed_store(tmp_path / "s", key=KEY)
    reg = four_versions(store)
    reg.rollback(SERVED, to=3, reason="serve v3 first", actor="ops")
    manager = ModelManager(reg, [load_spec(REPO / f"dags/specs/{SERVED}.yaml")])
    manager.refresh()
    seen: list[dict] = []
    get_version = reg.get_version

    def observed(name: str, version: int) -> object:
        seen.append(manager.ready()[1][SERVED])  # what /readyz answers mid-load
        return get_version(name, version)

    reg.promote(SERVED, 4, reason="to v4", actor="ops")
    copy_folder(store, (SERVED, 1), (SERVED, 4))
    reg.get_version = observed  # type: ignore[method-assign,assignment]
    manager.refresh()
    assert seen and seen[0]["loading"] == 4 and seen[0]["error"] is None
    ready, status = manager.ready()
    assert not ready and status[SERVED]["loading"] is None and status[SERVED]["error"]
    assert status[SERVED]["serving"] == 3
