"""Registry: versions, aliases, promotion, rollback, audit trail and artifact integrity."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_tasks.data.datasets import content_hash, snapshot
from mlops_tasks.errors import IntegrityError, NotFoundError, RegistryError
from mlops_tasks.records import DatasetLineage, Trigger, VersionLineage
from mlops_tasks.registry import Registry, dump_artifact
from mlops_tasks.storage import ArtifactStore, LocalStore, S3Store


@cache
def training_frame() -> pd.DataFrame:
    """The rows every test version is trained on (`lineage` names their snapshot)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    return frame.assign(y=(frame["a"] > 0).astype(int))


@cache
def snapshot_hash() -> str:
    return content_hash(training_frame())


def store_snapshot(store: ArtifactStore) -> str:
    """Freeze `training_frame` in `store`, as a retrain run does before it registers."""
    return snapshot(training_frame(), ["tests"], store).hash


@cache
def model_bytes(seed: int = 0) -> bytes:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + rng.normal(scale=0.3, size=60) > 0).astype(int)
    return dump_artifact(LogisticRegression().fit(x, y))


def lineage() -> VersionLineage:
    return VersionLineage(
        task="classification",
        estimator="logistic_regression",
        params={"C": 1.0},
        seed=1,
        features={"numeric": ["a", "b", "c"], "categorical": []},
        target="y",
        spec_hash="f" * 64,
        dataset=DatasetLineage(
            train=snapshot_hash(),
            rows=60,
            train_rows=48,
            holdout_rows=12,
            split="hash",
            holdout_fraction=0.2,
        ),
        primary_metric="roc_auc",
        metrics={"roc_auc": 0.9},
        triggered_by=Trigger("cli", user="tester", reason="unit test"),
        code_version={"package": "0.1.0", "git_sha": None},
    )


def passed_gate(reg: Registry, model: str, version: int) -> None:
    """What a retrain run's evaluation leaves behind for a candidate that passed its gate."""
    reg.record_evaluation(model, version, {"decision": {"passed": True, "checks": []}})


def register_gated(reg: Registry, model: str, seed: int = 0, actor: str = "tester") -> int:
    store_snapshot(reg.store)
    version = reg.register(model, model_bytes(seed), lineage(), actor=actor).version
    passed_gate(reg, model, version)
    return version


def test_register_allocates_sequential_versions_with_lineage(store: ArtifactStore) -> None:
    reg = Registry(store)
    v1 = reg.register("m", model_bytes(), lineage(), actor="alice")
    v2 = reg.register("m", model_bytes(1), lineage(), actor="bob")
    assert (v1.version, v2.version) == (1, 2)
    meta = reg.get_version("m", 1)
    assert meta.status == "candidate"
    assert meta.created_by == "alice"
    assert meta.dataset.train == snapshot_hash()
    assert meta.code_version["package"]
    assert meta.triggered_by == Trigger("cli", user="tester", reason="unit test")
    assert len(meta.model_sha256) == 64
    assert reg.version_numbers("m") == [1, 2]
    assert reg.models() == ["m"]
    assert [e["action"] for e in reg.audit("m")] == ["register", "register"]


def test_promote_rollback_and_audit(store: ArtifactStore) -> None:
    reg = Registry(store)
    for seed in range(3):
        register_gated(reg, "m", seed)
    reg.promote("m", 1, reason="first", actor="alice")
    reg.promote("m", 2, reason="better", actor="bob")
    assert reg.alias("m") == 2
    assert reg.get_version("m", 1).status == "archived"
    assert reg.promote("m", 2, reason="again", actor="bob").changed is False  # idempotent
    res = reg.rollback("m", reason="v2 misbehaves", actor="carol")
    assert (res.previous, res.version) == (2, 1)
    assert reg.get_version("m", 2).status == "archived"
    reg.promote("m", 3, reason="third", actor="dave")
    assert reg.rollback("m", to=2, reason="pick 2", actor="erin").version == 2
    moves = [
        (e["action"], e["from_version"], e["to_version"], e["actor"], e["reason"])
        for e in reg.audit("m")
        if e["action"] in ("promote", "rollback")
    ]
    assert moves == [
        ("promote", None, 1, "alice", "first"),
        ("promote", 1, 2, "bob", "better"),
        ("rollback", 2, 1, "carol", "v2 misbehaves"),
        ("promote", 1, 3, "dave", "third"),
        ("rollback", 3, 2, "erin", "pick 2"),
    ]
    assert reg.load_production("m")[1].predict(np.zeros((1, 3))).shape == (1,)


def test_rejected_versions_cannot_reach_production(store: ArtifactStore) -> None:
    reg = Registry(store)
    reg.register("m", model_bytes(), lineage(), actor="tester")
    reg.reject("m", 1, reason="gate failed: roc_auc 0.51 < 0.70", actor="gate")
    assert reg.get_version("m", 1).status == "rejected"
    with pytest.raises(RegistryError, match="rejected and cannot be promoted"):
        reg.promote("m", 1, reason="try anyway", actor="tester")
    assert reg.alias("m") is None


def test_errors_name_what_is_missing(store: ArtifactStore) -> None:
    reg = Registry(store)
    with pytest.raises(NotFoundError, match="model 'ghost' has no version 4"):
        reg.get_version("ghost", 4)
    with pytest.raises(NotFoundError, match="has no production version"):
        reg.load_production("ghost")
    register_gated(reg, "m")
    reg.promote("m", 1, reason="only one", actor="tester")
    with pytest.raises(RegistryError, match="no earlier production version"):
        reg.rollback("m", reason="nothing to go back to", actor="tester")


def _model_key(reg: Registry, version: int) -> str:
    return f"models/m/versions/{version}/model.skops"


def test_flipped_byte_fails_integrity_check(store: ArtifactStore) -> None:
    reg = Registry(store)
    register_gated(reg, "m")
    data = bytearray(store.get_bytes(_model_key(reg, 1)))
    data[len(data) // 2] ^= 0x01
    store.put_bytes(_model_key(reg, 1), bytes(data))
    with pytest.raises(IntegrityError, match=r"SHA-256 .* does not match"):
        reg.load("m", 1)
    with pytest.raises(IntegrityError):
        reg.promote("m", 1, reason="tampered", actor="tester")
    assert reg.alias("m") is None


class Untrusted:
    """A type outside the trusted prefixes: its artifact must never be loaded."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_untrusted_types_are_refused(store: ArtifactStore) -> None:
    reg = Registry(store)
    reg.register("m", dump_artifact(Untrusted()), lineage(), actor="tester")
    with pytest.raises(IntegrityError, match=r"untrusted types .*Untrusted"):
        reg.load("m", 1)


# Concurrency: 8 processes register and promote the same model --------------------------------
def _register_and_promote(store_uri: str, endpoint: str | None, i: int, out) -> None:
    from mlops_tasks.storage import open_store

    reg = Registry(open_store(store_uri, endpoint_url=endpoint))
    version = register_gated(reg, "m", i, actor=f"worker{i}")
    res = reg.promote("m", version, reason=f"worker {i}", actor=f"worker{i}")
    out.put((version, res.changed))


def _uri(store: ArtifactStore) -> tuple[str, str | None]:
    if isinstance(store, S3Store):
        return store.uri, store.client.meta.endpoint_url
    return store.uri, None


def test_eight_processes_register_and_promote_concurrently(store: ArtifactStore) -> None:
    uri, endpoint = _uri(store)
    for i in range(8):
        model_bytes(i)  # fit in the parent: forked workers inherit loaded modules and cache
    import skops.io  # noqa: F401  (loaded once here, not in every worker)

    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_register_and_promote, args=(uri, endpoint, i, out)) for i in range(8)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    versions = sorted(v for v, _ in results)
    assert versions == list(range(1, 9))  # distinct numbers, none skipped
    reg = Registry(store)
    prod = reg.alias("m")
    assert prod in versions
    assert reg.load_production("m")[1].predict(np.zeros((2, 3))).shape == (2,)
    changes = sum(1 for _, changed in results if changed)
    events = reg.audit("m")
    assert len([e for e in events if e["action"] == "register"]) == 8
    assert len([e for e in events if e["action"] == "promote"]) == changes
    assert len({e["event_id"] for e in events}) == len(events)
    # Every alias move is in the history: the chain of promotions is unbroken.
    doc = reg.alias_doc("m")
    assert len(doc["history"]) + 1 == changes
    # 16 concurrent appenders left one linear hash chain that agrees with the alias.
    assert sorted(e["seq"] for e in events) == list(range(1, len(events) + 1))
    assert reg.verify("m").problems == ()


# SIGKILL in the middle of promotions ---------------------------------------------------------
def _promote_forever(store_uri: str, ready) -> None:
    from mlops_tasks.storage import open_store

    reg = Registry(open_store(store_uri))
    ready.set()
    i = 0
    while True:
        reg.promote("m", 1 + i % 3, reason=f"flip {i}", actor="flipper")
        i += 1


@pytest.mark.parametrize("delay", [0.3, 0.7, 1.3])
def test_sigkill_during_promotion_leaves_alias_valid(tmp_path: Path, delay: float) -> None:
    store = LocalStore(tmp_path / "store")
    reg = Registry(store)
    for seed in range(3):
        register_gated(reg, "m", seed)
    reg.promote("m", 1, reason="start", actor="tester")
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_promote_forever, args=(store.uri, ready))
    proc.start()
    assert ready.wait(120)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    version = reg.alias("m")
    assert version in (1, 2, 3)
    assert reg.load_production("m")[1].predict(np.zeros((1, 3))).shape == (1,)
    # Promotion still works afterwards (no stale lock), and no alias move lost its audit event.
    reg.promote("m", 1 if version != 1 else 2, reason="after the crash", actor="tester")
    promotes = reg.audit("m", action="promote")
    assert len(promotes) > 3  # the worker really was promoting when it died
    assert len(promotes) == len(reg.alias_doc("m")["history"]) + 1
    assert reg.verify("m").problems == ()  # a move finished by its successor is no gap
    leftovers = [
        p.name for p in (store.root / "models/m/aliases").iterdir() if p.name.endswith(".tmp")
    ]
    assert len(leftovers) <= 1  # at most the killed writer's own scratch file, never the alias


def test_repeated_rollbacks_step_back_through_production_history(store: ArtifactStore) -> None:
    """A second rollback used to go forward again (v3 -> v4 after v4 -> v3)."""
    reg = Registry(store)
    for seed in range(4):
        register_gated(reg, "m", seed)
        reg.promote("m", seed + 1, reason=f"promote v{seed + 1}", actor="tester")
    steps = [reg.rollback("m", reason="step back", actor="ops") for _ in range(3)]
    assert [(r.previous, r.version) for r in steps] == [(4, 3), (3, 2), (2, 1)]
    with pytest.raises(RegistryError, match="no earlier production version than v1"):
        reg.rollback("m", reason="nothing left", actor="ops")
    history = reg.alias_doc("m")["history"]
    assert [(h["version"], h.get("rolled_back", False)) for h in history] == [
        (1, False),
        (2, False),
        (3, False),
        (4, True),
        (3, True),
        (2, True),
    ]
    # A deliberate promotion makes a version a good place to return to again.
    reg.promote("m", 3, reason="v3 fixed upstream", actor="ops")
    reg.promote("m", 4, reason="try v4 again", actor="ops")
    assert reg.rollback("m", reason="v4 still bad", actor="ops").version == 3


@pytest.mark.parametrize(
    ("evaluation", "why"),
    [
        pytest.param(None, "has no gate result", id="killed-before-evaluation"),
        pytest.param(
            {"decision": {"passed": False, "checks": []}},
            "did not pass its evaluation gate",
            id="killed-before-rejection",
        ),
    ],
)
def test_ungated_candidates_are_promoted_only_by_force(
    store: ArtifactStore, evaluation: dict | None, why: str
) -> None:
    """Killed runs left candidates without a gate result that promote still accepted."""
    reg = Registry(store)
    reg.register("m", model_bytes(), lineage(), actor="tester")
    if evaluation is not None:
        reg.record_evaluation("m", 1, evaluation)
    with pytest.raises(RegistryError, match=rf"m v1 {why}.*--force") as info:
        reg.promote("m", 1, reason="looks fine", actor="tester")
    assert info.value.exit_code == 6
    with pytest.raises(RegistryError, match=why):
        reg.rollback("m", to=1, reason="not via rollback either", actor="tester")
    assert reg.alias("m") is None
    reg.promote("m", 1, reason="hotfix, checked by hand", actor="alice", force=True)
    (event,) = reg.audit("m", "promote")
    assert event["details"]["forced"] is True and why in event["details"]["ungated"]
    assert event["reason"] == "hotfix, checked by hand"
    # Once it has been in production, it may come back without force.
    register_gated(reg, "m", 1)
    reg.promote("m", 2, reason="gated", actor="tester")
    assert reg.rollback("m", reason="back", actor="tester").version == 1


def test_force_never_promotes_a_rejected_version(store: ArtifactStore) -> None:
    reg = Registry(store)
    reg.register("m", model_bytes(), lineage(), actor="tester")
    reg.reject("m", 1, reason="gate failed", actor="gate")
    with pytest.raises(RegistryError, match="rejected and cannot be promoted"):
        reg.promote("m", 1, reason="force it", actor="tester", force=True)


def test_a_change_asked_for_on_a_stale_view_changes_nothing(store: ArtifactStore) -> None:
    """A rollback form sent twice used to step back twice (v3 -> v2 -> v1): each change may
    carry the production version its asker saw, and is refused once production moved."""
    reg = Registry(store)
    for seed in range(3):
        register_gated(reg, "m", seed)
        reg.promote("m", seed + 1, reason=f"promote v{seed + 1}", actor="tester")
    assert reg.rollback_target("m") == 2
    assert reg.rollback("m", reason="v3 misbehaves", actor="ops", expected=3).version == 2
    events = len(reg.audit("m"))
    with pytest.raises(RegistryError, match="production is v2 now, not v3"):
        reg.rollback("m", reason="v3 misbehaves", actor="ops", expected=3)
    with pytest.raises(RegistryError, match="production is v2 now, not v3"):
        reg.promote("m", 3, reason="stale page", actor="ops", expected=3)
    assert reg.alias("m") == 2 and len(reg.audit("m")) == events
    assert reg.rollback_target("m") == 1
    assert reg.promote("m", 3, reason="fixed", actor="ops", expected=2).version == 3


def test_rollback_target_is_none_without_an_earlier_version(store: ArtifactStore) -> None:
    reg = Registry(store)
    assert reg.rollback_target("m") is None
    register_gated(reg, "m")
    reg.promote("m", 1, reason="first", actor="tester")
    assert reg.rollback_target("m") is None


NO_REASONS = [
    pytest.param("", id="empty"),
    pytest.param("  \t\n ", id="blanks"),
    pytest.param(" ok ", id="two-characters"),
]


@pytest.mark.parametrize("reason", NO_REASONS)
def test_every_change_of_production_needs_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reason: str
) -> None:
    """Blank reasons were accepted by promote, rollback, repair-alias and release-batch."""
    from mlops_tasks.cli import main
    from mlops_tasks.data.contracts import release
    from mlops_tasks.errors import UsageError

    store = LocalStore(tmp_path / "s")
    reg = Registry(store)
    for seed in range(3):
        register_gated(reg, "m", seed)
    reg.promote("m", 1, reason="first", actor="alice")
    reg.promote("m", 2, reason="  second  ", actor="alice")
    assert reg.audit("m", "promote")[-1]["reason"] == "second"  # kept without the blanks
    before = store.list_keys()
    changes = {
        "promoting m v3": lambda: reg.promote("m", 3, reason=reason, actor="bob"),
        "rolling back m": lambda: reg.rollback("m", reason=reason, actor="bob"),
        "repairing the production alias of m": lambda: reg.repair_alias("m", reason, "bob"),
        "releasing a quarantined batch of m": lambda: release(
            store, "m", "2026-01-01", "bob", reason
        ),
    }
    for change, call in changes.items():
        with pytest.raises(UsageError, match=rf"^{change} needs a reason of at least 3 char"):
            call()
    for argv in (
        ["promote", "m", "3"],
        ["rollback", "m"],
        ["repair-alias", "m", "--to", "1"],
        ["release-batch", "m", "2026-01-01"],
    ):
        code = main([*argv, "--reason", reason, "--store", store.uri])
        err = capsys.readouterr().err
        assert code == UsageError.exit_code and "needs a reason of at least 3" in err, argv
    assert store.list_keys() == before and reg.alias("m") == 2


@pytest.mark.parametrize(
    ("given", "recorded"),
    [
        pytest.param(None, "manual retrain passed its gate", id="none"),
        pytest.param("v1", "manual retrain passed its gate (v1)", id="too-short"),
        pytest.param(" weekly refresh ", "weekly refresh", id="given"),
    ],
)
def test_a_deploy_never_fails_on_the_optional_reason_of_its_trigger(
    tmp_path: Path, given: str | None, recorded: str
) -> None:
    """A production change needs a reason of 3 or more characters; a retrain's reason is
    optional (the trigger form's `reason`), so a run triggered with "v1" trained and gated,
    then failed at its deploy step."""
    from mlops_tasks.model.deployment import deploy
    from mlops_tasks.specs import find_spec

    spec = find_spec("credit_default", Path(__file__).parents[2] / "dags" / "specs")
    reg = Registry(LocalStore(tmp_path / "s"))
    version = register_gated(reg, spec.name)
    trigger = Trigger("manual", "alice", given)
    deployed = deploy(spec, version, trigger, "run-1", reg.store)
    assert deployed.changed and reg.alias(spec.name) == version
    (event,) = reg.audit(spec.name, "promote")
    assert event["reason"] == recorded
