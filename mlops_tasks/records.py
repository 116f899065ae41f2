"""The records that travel between flow steps, one frozen dataclass per concept.

Steps take and return these; they become JSON only at a boundary (Airflow's XCom, the retrain
Asset event's `extra`, files in the store), always through `to_json` / `from_json` here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter

T = TypeVar("T")

#: `external`: a model trained elsewhere and brought to the registry (`mlops register`).
TriggerKind = Literal["schedule", "manual", "drift", "cli", "external"]
#: What a monitoring check's data drift is measured against (`drift.reference`).
ReferenceKind = Literal["training", "previous_window", "rolling", "same_period_last_year"]


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


def to_json(record: Any) -> Any:
    """A record as plain JSON-able data (dates as ISO strings, tuples as lists)."""
    if record is None:
        return None
    return _adapter(type(record)).dump_python(record, mode="json")


def from_json(cls: type[T], data: Any) -> T:
    """The record of type `cls` that `to_json` produced."""
    out: T = _adapter(cls).validate_python(data)
    return out


@dataclass(frozen=True)
class RetrainRequest:
    """A monitor's decision to retrain, handed to the retrain run (the Asset event's extra)."""

    model: str
    reason: str
    report_uri: str
    drift_share: float | None
    drifted_columns: tuple[str, ...]
    monitor_run_id: str
    check_id: str
    as_of: datetime | None = None


@dataclass(frozen=True)
class Trigger:
    """Who or what started a run; kept in the new version's lineage and the audit trail."""

    kind: TriggerKind
    user: str | None = None
    reason: str = ""
    run_id: str | None = None
    run_type: str | None = None
    drift: RetrainRequest | None = None

    @property
    def actor(self) -> str:
        """Who a triggered change is recorded as: the person, else what started it."""
        return self.user or f"airflow:{self.kind}"

    @classmethod
    def from_request(cls, request: RetrainRequest, run_id: str | None = None) -> Trigger:
        return cls("drift", user="monitor", reason=request.reason, run_id=run_id, drift=request)


@dataclass(frozen=True)
class MonitoringCheck:
    """A stored monitoring check as the retrain policy reads it (`policy.checks`): what was
    decided, when and for which logical time, on which evidence, against which production
    version. Fields older checks lack are None (or empty)."""

    decision: Literal["retrain", "no_retrain", "escalate"]
    at: str
    decided_for: str | None = None
    check_id: str | None = None
    drift_detected: bool = False
    current_rows: int | None = None
    reference_version: int | None = None
    evidence: tuple[str, ...] = ()
    #: The production move it judged (`ProductionMove.key`) and where it placed that move in
    #: its own clock (`policy.production_since`).
    production_move: str | None = None
    production_since: str | None = None
    #: What its data drift was measured against (`drift.reference`; older checks: training).
    reference_kind: ReferenceKind = "training"

    @property
    def when(self) -> str:
        """The logical time it decided for (else when it ran)."""
        return self.decided_for or self.at


@dataclass(frozen=True)
class AliasEntry:
    """A version the production alias held before, and when it moved on (`rolled_back`: a
    rollback left it, and a later rollback without a target never returns to it)."""

    version: int
    until: str | None = None
    rolled_back: bool = False


@dataclass(frozen=True)
class ProductionAlias:
    """The production alias as stored: the version in production, since when, the event of
    the move that put it there (its `details` say more, e.g. the run's `as_of`), and the
    versions before it, oldest first."""

    version: int | None
    since: str | None = None
    history: tuple[AliasEntry, ...] = ()
    event: dict[str, Any] | None = None

    def held(self, version: int) -> bool:
        """Whether `version` was ever in production (now or before)."""
        return version == self.version or any(h.version == version for h in self.history)


@dataclass(frozen=True)
class ProductionRequest:
    """A person's request to change production: promote `version`, or roll back (to
    `version`; default the previous production version)."""

    action: Literal["promote", "rollback"]
    reason: str
    version: int | None = None


@dataclass(frozen=True)
class RunParams:
    """Per-run choices a person can make (Airflow Params, CLI flags)."""

    force_deploy: bool = False
    training_window_days: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    #: What a change_production run is asked to do.
    change: ProductionRequest | None = None
    #: The file of a model trained elsewhere that a register run brings (a path).
    artifact: str | None = None


@dataclass(frozen=True)
class SnapshotRef:
    """A frozen, content-addressed window of data in the store."""

    hash: str
    uri: str
    rows: int
    sources: int
    source: Literal["batches", "table", "inference"] = "batches"
    start: str | None = None
    end: str | None = None
    labelled_rows: int | None = None
    #: Content hashes of the batches the window holds (lineage).
    batches: tuple[str, ...] = ()
    #: Batches left out because they broke the declared contract (quarantined).
    quarantined: tuple[str, ...] = ()
    #: The labelled-traffic snapshot added to a training window (`data.include_feedback`).
    traffic_hash: str | None = None
    traffic_rows: int = 0
    #: Rows of the admitted batches left out as the spec asks: outside `data.scope`, or
    #: without a label (`mlops_tasks.data.rows`).
    out_of_scope: int = 0
    unlabelled: int = 0
    #: The joined tables' snapshots by join name (`data.joins`).
    joins: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationResult:
    success: bool
    rows: int
    statistics: dict[str, Any]
    report_uri: str
    #: Findings of the learned (non-blocking) checks.
    warnings: int = 0
    #: Batches left out of the window because they broke the declared contract.
    quarantined: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainedVersion:
    model: str
    version: int
    dataset_hash: str
    train_rows: int
    holdout_rows: int
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class Evaluation:
    """The gate's verdict on a candidate, with where its evidence (the model card) is."""

    model: str
    version: int
    passed: bool
    failed: tuple[str, ...]
    metrics: dict[str, float | None]
    production_version: int | None
    report_uri: str


@dataclass(frozen=True)
class Approval:
    approved: bool
    by: str | None = None
    #: What the approver wrote (the approval form's `comment`), kept in the audit trail.
    comment: str | None = None


@dataclass(frozen=True)
class ProductionChange:
    """What a promote, rollback, alias repair or withdrawal did: production moved from
    `previous` to `version` (`changed`, with the audit event `event_id`; None after a
    withdrawal: nothing in production), or was at `version` already."""

    model: str
    version: int | None
    previous: int | None
    changed: bool
    event_id: str | None = None


@dataclass(frozen=True)
class AuditHead:
    """The newest event of an audit trail: its number and the SHA-256 of its stored bytes
    (None when there is none), to keep outside the store as an anchor of its own."""

    seq: int
    sha256: str | None


@dataclass(frozen=True)
class SignatureCount:
    """Whether a check verified signatures (a key is configured), and how many of the
    model's documents carry one, valid or not."""

    checked: bool
    found: int


@dataclass(frozen=True)
class RegistryVerification:
    """What `Registry.verify` found of a model's registry: `problems` is empty when the
    audit chain, the production alias, the versions and their training data all agree."""

    model: str
    head: AuditHead
    events: int
    chained_events: int
    legacy_events: int
    versions: int
    production: int | None
    problems: tuple[str, ...]
    signatures: SignatureCount

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class SignedDocuments:
    """Which versions' `metadata.sig`, `evaluation.json` and `status.json` a signing run
    signed (or re-signed)."""

    versions: tuple[int, ...] = ()
    evaluations: tuple[int, ...] = ()
    statuses: tuple[int, ...] = ()


@dataclass(frozen=True)
class SigningResult:
    """What `Registry.sign` signed: the versions' documents, the alias, the audit trail and
    its head; `rotated`: the keys of what it re-signed with the current key; `rebound`: the
    version documents signed under the old scheme that it bound to their folder."""

    model: str
    versions: tuple[int, ...]
    evaluations: tuple[int, ...]
    statuses: tuple[int, ...]
    alias: bool
    audit_trail: bool
    audit_head: bool
    rotated: tuple[str, ...]
    rebound: SignedDocuments


@dataclass(frozen=True)
class Deployment:
    model: str
    version: int
    previous: int | None
    changed: bool


@dataclass(frozen=True)
class Verification:
    model: str
    version: int
    verified_rows: int
    served_by_service: bool = False


@dataclass(frozen=True)
class Reference:
    """What a monitoring check compares with: the production version (performance drift
    compares with its holdout `metrics`) and the snapshot `hash` data drift is measured
    against, which `kind` says: the version's training snapshot (`training`), or a window of
    the model's batches before the current one (`drift.reference`), from `start` to `end`."""

    version: int
    hash: str
    metrics: dict[str, float | None]
    kind: ReferenceKind = "training"
    #: A window's first and last day (ISO dates) and its rows; None for `training`.
    start: str | None = None
    end: str | None = None
    rows: int | None = None


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    threshold: float
    score: float
    drifted: bool
    #: Categories of the current window never seen in the reference, with their counts.
    new_categories: dict[str, int] | None = None
    #: Share of the current window's values outside the reference's [min, max].
    out_of_range_share: float | None = None


@dataclass(frozen=True)
class DataDrift:
    columns: tuple[ColumnDrift, ...]
    drifted_columns: tuple[str, ...]
    drifted_share: float
    threshold_share: float
    drift_detected: bool


@dataclass(frozen=True)
class PerformanceDrift:
    """Production's performance metric on the labelled rows of a check, against its own
    holdout metric (`drift.performance_drift`); `summary` says it in words."""

    drift_detected: bool
    metric: str
    labelled_rows: int
    summary: str
    current: float | None = None
    baseline: float | None = None
    drop: float | None = None
    max_drop: float | None = None
    #: The check's flag when the metric is undefined on the labelled window, and why (`the
    #: labelled window holds one class (all 1)`); such a check neither triggers nor blocks a
    #: retrain by its performance. None when the metric was computed or not attempted.
    undefined: str | None = None


@dataclass(frozen=True)
class DriftResult:
    reference_version: int
    reference_hash: str
    current_hash: str
    reference_rows: int
    current_rows: int
    data: DataDrift
    performance: PerformanceDrift | None
    report_uri: str
    #: Data drift of the logged prediction traffic, checked beside the batches (one does not
    #: hide the other); None when the window held too little traffic.
    traffic: DataDrift | None = None
    traffic_rows: int = 0
    #: What `reference_hash` is (`Reference.kind`), and a window's first and last day.
    reference_kind: ReferenceKind = "training"
    reference_start: str | None = None
    reference_end: str | None = None
    #: Why data drift was not judged (a reference window of fewer than `drift.min_rows`
    #: rows: `data` then has no columns); None when it was.
    data_not_checked: str | None = None

    @property
    def detected(self) -> bool:
        return (
            self.data.drift_detected
            or bool(self.traffic and self.traffic.drift_detected)
            or bool(self.performance and self.performance.drift_detected)
        )

    def evidence(self) -> tuple[str, ...]:
        """What drifted, as stable names: columns (`traffic:` for the traffic window) and
        `performance`; a retrain that did not fix these is not asked for again."""
        found = list(self.data.drifted_columns if self.data.drift_detected else ())
        if self.traffic and self.traffic.drift_detected:
            found += [f"traffic:{c}" for c in self.traffic.drifted_columns]
        if self.performance and self.performance.drift_detected:
            found.append("performance")
        return tuple(found)


@dataclass(frozen=True)
class Decision:
    """The retrain policy's verdict on one drift check, as recorded in the check history."""

    decision: Literal["retrain", "no_retrain", "escalate"]
    reasons: tuple[str, ...]
    drift_detected: bool
    streak: int
    check_id: str
    report_uri: str
    drift_share: float | None
    drifted_columns: tuple[str, ...]
    run_id: str
    as_of: datetime | None = None
    current_rows: int = 0
    #: What held a retrain back although drift persisted (`retrain request`, `promotion`,
    #: `escalation`).
    blocked_by: str | None = None
    #: What drifted (`DriftResult.evidence`): a retrain that did not fix it is not repeated.
    evidence: tuple[str, ...] = ()
    #: The move that put production there (`ProductionMove.key`) and when it happened in this
    #: check's clock, which the promotion cooldown counts from (`policy.production_since`).
    production_move: str | None = None
    production_since: str | None = None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def retrain_request(self, model: str) -> RetrainRequest:
        return RetrainRequest(
            model=model,
            reason=self.reason,
            report_uri=self.report_uri,
            drift_share=self.drift_share,
            drifted_columns=self.drifted_columns,
            monitor_run_id=self.run_id,
            check_id=self.check_id,
            as_of=self.as_of,
        )


@dataclass(frozen=True)
class DatasetLineage:
    train: str
    rows: int
    train_rows: int
    holdout_rows: int
    split: str
    holdout_fraction: float
    #: Content hashes of the batches in the snapshot, and the labelled-traffic snapshot added
    #: to it (`data.include_feedback`).
    batches: tuple[str, ...] = ()
    traffic: str | None = None
    #: Rows of those batches the spec leaves out: outside `data.scope`, or without a label.
    out_of_scope: int = 0
    unlabelled: int = 0
    #: The snapshots of the tables `data.joins` enriched the rows from, by join name (what
    #: the service looks requests up in), and how many rows found no match in each.
    joins: dict[str, str] = field(default_factory=dict)
    join_unmatched: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Threshold:
    """A classifier's decision threshold: a row is positive when its probability is >= `value`.
    `rule` says how it was chosen; the scores are the validation split's at that threshold."""

    value: float
    rule: str
    validation_rows: int = 0
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None


@dataclass(frozen=True)
class SearchFold:
    """One cross-validation fold of a search: how many training rows it fits on and how many
    it scores (`time` folds: the rows after them, between `validation_from` and
    `validation_to`)."""

    fit_rows: int
    validation_rows: int
    validation_from: str | None = None
    validation_to: str | None = None


@dataclass(frozen=True)
class SearchTrial:
    """One candidate scored in one round (halving) or once (random): its params, the rows each
    fold's fit used, each fold's score and their mean. A candidate that failed to fit (or whose
    metric is undefined on a fold) has `mean` None and says why in `error`."""

    candidate: int
    round: int
    params: dict[str, Any]
    fold_rows: tuple[int, ...]
    fold_scores: tuple[float | None, ...]
    mean: float | None
    error: str | None = None


@dataclass(frozen=True)
class SearchResult:
    """A hyperparameter search (`model.search`): every trial, and the winner (`trials[best]`)
    whose params the version was refitted with on the whole training split."""

    method: str
    metric: str
    higher_is_better: bool
    cv: str
    folds: tuple[SearchFold, ...]
    trials: tuple[SearchTrial, ...]
    best: int
    best_params: dict[str, Any]
    #: Halving: the share of the candidates each round keeps is 1/factor.
    factor: int | None = None

    def ranked(self) -> list[int]:
        """The trials' indices, best score first; failed trials last, in their order."""

        def key(i: int) -> tuple[int, int, float, int]:
            t = self.trials[i]
            if t.mean is None:
                return (1, 0, 0.0, i)
            return (0, -t.round, -t.mean if self.higher_is_better else t.mean, i)

        return sorted(range(len(self.trials)), key=key)


@dataclass(frozen=True)
class ExternalArtifact:
    """A model trained elsewhere and brought to the registry: the file it came in (its name,
    SHA-256 and size, which are the stored artifact's: it is kept byte for byte) and who
    brought it. Such a version was scored, gated and deployed here, but not trained here."""

    file: str
    sha256: str
    bytes: int
    brought_by: str


@dataclass(frozen=True)
class CustomEstimator:
    """A version fitted with the user's own estimator class (`model.estimator: custom`): the
    class and every type of its artifact beyond the platform's own pipeline types. Loading
    trusts exactly these, and only from the packages `MLOPS_TRUSTED_PACKAGES` names."""

    class_path: str
    types: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class VersionLineage:
    """Everything needed to explain (and rebuild) a version: what it was trained on, how, by
    which code and why. Training builds it; the registry stores it as the version's metadata."""

    task: str
    estimator: str
    params: dict[str, Any]
    seed: int
    features: dict[str, list[str]]
    target: str
    spec_hash: str
    dataset: DatasetLineage
    primary_metric: str
    metrics: dict[str, float | None]
    triggered_by: Trigger
    run_id: str | None = None
    code_version: dict[str, str | None] = field(default_factory=dict)
    #: OpenMP/BLAS threads of the fit (versions from before it was recorded: one).
    train_threads: int = 1
    #: The spec's `model.class_weight`: `balanced`, a weight per label, or None.
    class_weight: str | dict[str, float] | None = None
    #: The decision threshold serving and the metrics use (None: the most probable class).
    threshold: Threshold | None = None
    #: The hyperparameter search that chose `params` (None: the spec fixed them all).
    search: SearchResult | None = None
    #: Set when the version was trained elsewhere (`mlops register`): then `dataset` is the
    #: window it was scored on and monitored against, not what it was fitted on, and `seed` is
    #: the spec's (evaluation's shuffles), not the fit's.
    external: ExternalArtifact | None = None
    #: Set for a custom estimator: its class and the exact types its artifact holds.
    custom: CustomEstimator | None = None


@dataclass(frozen=True, kw_only=True)
class ModelVersion(VersionLineage):
    """One registered version: its lineage, where the artifact is, its status and (once
    evaluated) the gate's full evaluation."""

    name: str
    version: int
    status: str = "candidate"
    created_at: str
    created_by: str
    model_sha256: str
    model_bytes: int
    evaluation: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = to_json(self)
        return out
