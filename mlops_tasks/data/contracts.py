"""Per-batch data contracts: each `dt=` batch is checked once, and a bad one is quarantined.

A batch is checked against the model's *declared* contract (`validation.declared_expectations`:
columns and types, nulls per column, declared ranges and categories, the target's labels, the
spec's extra expectations) the first time a run sees it. The verdict is stored under

    models/<model>/contracts/<contract hash>/<batch content hash>.json

so the same bytes under the same contract are never checked twice, a batch replaced with new
content at the same date is checked again, and a changed contract re-checks everything. A batch
that fails is quarantined: a record with its evidence under `models/<model>/quarantine/` and an
audit event `batch_quarantined`. Quarantined batches are left out of every training and
monitoring window until a person releases them (`mlops quarantine release`, audited), and
`validation.on_bad_batch: fail` makes the run fail instead of going on without them.

Learned checks (ranges and categories seen in production's training data) are not part of the
contract: data that moved away from the reference is drift evidence, not a broken batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING, Any

from mlops_tasks.errors import IntegrityError, NotFoundError, UsageError
from mlops_tasks.registry import Registry, check_reason, now
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore, encode_json

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def contract_hash(spec: ModelSpec, joined: dict[str, str] | None = None) -> str:
    """SHA-256 of what the contract is made of; a spec change elsewhere (hyperparameters,
    drift policy, schedules) keeps it, so batches are not re-checked for nothing. With
    `data.joins`, the joins and the joined tables' snapshots (`joined`, by name) are part of
    it: a batch judged before the other table caught up is judged again after."""
    declared: dict[str, Any] = {
        "task": spec.task,
        "target": spec.target,
        "target_expr": spec.target_expr,
        "derive": spec.data.derive,
        "scope": spec.data.scope,
        "positive_class": spec.positive_class,
        "id": spec.data.id_column,
        "time": spec.data.time_column,
        "features": spec.features.model_dump(mode="json"),
        "validation": spec.validation.model_dump(
            mode="json", include={"max_null_fraction", "ranges", "categories", "expectations"}
        ),
    }
    if spec.data.joins:
        declared["joins"] = [j.model_dump(mode="json") for j in spec.data.joins]
        declared["joined"] = joined or {}
    return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()


def batch_hash(data: bytes) -> str:
    """A batch is addressed by its file's bytes: cheap (no parsing), and any change counts."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BatchVerdict:
    """One batch's contract check: passed, or quarantined (and maybe released since)."""

    uri: str
    day: str
    content_hash: str
    passed: bool
    rows: int
    failures: tuple[dict[str, Any], ...] = ()
    released: bool = False

    @property
    def admitted(self) -> bool:
        return self.passed or self.released

    def summary(self) -> str:
        what = "; ".join(
            f"{f['expectation']}" + (f" on {f['column']!r}" if f.get("column") else "")
            for f in self.failures[:4]
        )
        more = f" and {len(self.failures) - 4} more" if len(self.failures) > 4 else ""
        return f"batch dt={self.day} ({self.uri}): {what}{more}"


def _result_key(model: str, contract: str, content: str) -> str:
    return f"models/{model}/contracts/{contract[:16]}/{content}.json"


#: What every reader of a batch's verdict relies on, by field (the rest is evidence).
_VERDICT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "batch": str,
    "day": str,
    "content_hash": str,
    "rows": int,
    "passed": bool,
    "failures": list,
}
_QUARANTINE_FIELDS = {**_VERDICT_FIELDS, "quarantined_at": str}
_RELEASE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "by": str,
    "reason": str,
    "at": str,
    "content_hash": str,
}


def _shape_problem(doc: Any, fields: dict[str, type | tuple[type, ...]]) -> str | None:
    """What is wrong with the shape of a stored record, None when nothing is."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    for name, kind in fields.items():
        value = doc.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{name} is {value!r}, not {getattr(kind, '__name__', kind)}"
    for i, failure in enumerate(doc.get("failures", [])):
        if not isinstance(failure, dict) or not isinstance(failure.get("expectation"), str):
            return f"failures[{i}] is not an object naming its expectation"
        if not isinstance(failure.get("column"), str | None):
            return f"failures[{i}].column is {failure['column']!r}, not a column name"
    return None


def _checked(
    store: ArtifactStore,
    key: str,
    what: str,
    fields: dict[str, type | tuple[type, ...]],
    content: str | None = None,
) -> dict[str, Any]:
    """The record stored at `key`, when it has the shape readers rely on and (given
    `content`) names the batch it is stored for; IntegrityError naming the file otherwise."""
    doc = store.get_json(key)  # IntegrityError naming the file when it is not JSON
    problem = _shape_problem(doc, fields)
    if problem is None and content is not None and doc["content_hash"] != content:
        problem = f"it names batch {str(doc['content_hash'])[:16]}..., not the one it is stored for"
    if problem is None:
        record: dict[str, Any] = doc
        return record
    uri = store.uri_for(key)
    raise IntegrityError(
        f"{uri}: not a valid {what} ({problem}); restore it from a backup (docs/operations.md)",
        key=key,
        uri=uri,
    )


def quarantine_key(model: str, content: str) -> str:
    return f"models/{model}/quarantine/{content}.json"


def release_key(model: str, content: str) -> str:
    return f"models/{model}/quarantine/{content}.released.json"


def check_batch(
    spec: ModelSpec,
    store: ArtifactStore,
    uri: str,
    day: date,
    data: bytes,
    frame: pd.DataFrame,
    run_id: str,
    problem: dict[str, Any] | None = None,
    joined: dict[str, str] | None = None,
) -> BatchVerdict:
    """The batch's verdict under the spec's contract: stored once per (contract, content);
    a failing batch is quarantined (record + audit event) the first time it is seen.

    `frame` is the batch as the model sees it (`rows.shape`); `problem` says why it could
    not be shaped (an expression of the spec that these rows cannot be evaluated on), which
    fails the batch without checking further."""
    from mlops_tasks.data import validation

    content, contract = batch_hash(data), contract_hash(spec, joined)
    key = _result_key(spec.name, contract, content)
    try:
        stored = _checked(store, key, "contract verdict", _VERDICT_FIELDS, content)
    except NotFoundError:
        stored = None
    newly_failed = False
    if stored is None:
        if problem is not None:
            failures: list[dict[str, Any]] = [
                {
                    "expectation": "spec_expression_evaluates",
                    "column": None,
                    "unexpected_count": None,
                    "unexpected_percent": None,
                    "examples": [],
                    "observed_value": None,
                    "kwargs": {"field": problem.get("field")},
                    "error": problem.get("error"),
                }
            ]
        else:
            failures = validation.check_contract(spec, frame)
        stored = {
            "model": spec.name,
            "batch": uri,
            "day": day.isoformat(),
            "content_hash": content,
            "contract_hash": contract,
            "rows": len(frame),
            "passed": not failures,
            "failures": failures,
            "checked_at": now(),
            "run_id": run_id,
        }
        newly_failed = store.put_if_absent(key, encode_json(stored)) and bool(failures)
    verdict = BatchVerdict(
        uri=uri,
        day=stored["day"],
        content_hash=content,
        passed=bool(stored["passed"]),
        rows=int(stored["rows"]),
        failures=tuple(stored["failures"]),
    )
    if newly_failed:
        _quarantine(spec, store, stored, verdict)
    if not verdict.passed and store.exists(release_key(spec.name, content)):
        verdict = replace(verdict, released=True)
    return verdict


def _quarantine(
    spec: ModelSpec, store: ArtifactStore, result: dict[str, Any], verdict: BatchVerdict
) -> None:
    store.put_if_absent(
        quarantine_key(spec.name, verdict.content_hash),
        encode_json({**result, "quarantined_at": now()}),
    )
    Registry(store).record_event(
        spec.name,
        "batch_quarantined",
        actor="contract",
        reason=verdict.summary(),
        details={
            "batch": verdict.uri,
            "day": verdict.day,
            "content_hash": verdict.content_hash,
            "failures": list(verdict.failures[:10]),
            "run_id": result["run_id"],
        },
    )
    log.warning("%s: quarantined %s", spec.name, verdict.summary())


def quarantined(store: ArtifactStore, model: str) -> list[dict[str, Any]]:
    """Every quarantined batch of `model`, oldest first, with `released` (and by whom)."""
    keys = store.list_keys(f"models/{model}/quarantine/")
    releases = {k.rsplit("/", 1)[1].split(".")[0]: k for k in keys if k.endswith(".released.json")}
    out = []
    for key in keys:
        if key.endswith(".released.json"):
            continue
        content = key.rsplit("/", 1)[1].removesuffix(".json")
        record = _checked(store, key, "quarantine record", _QUARANTINE_FIELDS, content)
        release = releases.get(content)
        record["released"] = (
            _checked(store, release, "release record", _RELEASE_FIELDS, content)
            if release
            else None
        )
        out.append(record)
    return sorted(out, key=lambda r: (r["day"], r["quarantined_at"]))


def release(
    store: ArtifactStore, model: str, batch: str, actor: str, reason: str
) -> dict[str, Any]:
    """Let a quarantined batch back into windows (audited). `batch` is its content hash (or a
    unique prefix of at least 8 characters) or its date, when one batch of that date is held."""
    reason = check_reason(reason, f"releasing a quarantined batch of {model}")
    held = [r for r in quarantined(store, model) if not r["released"]]
    matches = [
        r
        for r in held
        if r["day"] == batch or (len(batch) >= 8 and r["content_hash"].startswith(batch))
    ]
    if len(matches) != 1:
        listed = ", ".join(f"{r['day']} {r['content_hash'][:12]}" for r in held) or "none"
        what = "no" if not matches else "more than one"
        raise UsageError(
            f"{model}: {what} quarantined batch matches {batch!r} (held: {listed})", model=model
        )
    record = matches[0]
    doc = {"by": actor, "reason": reason, "at": now(), "content_hash": record["content_hash"]}
    store.put_if_absent(release_key(model, record["content_hash"]), encode_json(doc))
    Registry(store).record_event(
        model,
        "batch_released",
        actor=actor,
        reason=reason,
        details={"batch": record["batch"], "day": record["day"], "hash": record["content_hash"]},
    )
    return {**record, "released": doc}
