"""Rebuild a registered version from its lineage and say whether it comes out the same.

A version's metadata names everything that made it: the spec (stored beside it as `spec.json`
and hashed in the lineage), the content-addressed dataset snapshot, the seed, the parameters and
the code version. `reproduce` reads those back, runs `training.fit_and_score` again (the
routine the train step made the version with) on the snapshot, the spec and the thread count
the version records, and compares the result with what was stored: the holdout predictions
(`holdout.parquet`) value by value, and the artifact by its SHA-256. It only reads: nothing is
written to the store. A version trained elsewhere and brought with `mlops register` has no fit
to run again: `reproduce` refuses it with NotReproducible, saying who brought which file.

Versions registered before the spec was stored with them are rebuilt from the lineage's fields
(task, estimator, params, class weights, seed, features, target, holdout fraction) over the
current spec, which supplies what the lineage does not record (the time and id columns that
choose the split, a classifier's positive class); the result says so, and whether the rebuilt
spec hashes to the recorded `spec_hash`.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import ValidationError

from mlops_tasks.data.datasets import content_hash, load_snapshot
from mlops_tasks.errors import NotFoundError, NotReproducible, SpecError
from mlops_tasks.model.training import fit_and_score
from mlops_tasks.registry import Registry, sha256
from mlops_tasks.specs import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

    from mlops_tasks.records import ModelVersion
    from mlops_tasks.storage import ArtifactStore

log = logging.getLogger(__name__)

#: The file a version's spec is stored in (written by `training.train_candidate`).
SPEC_FILE = "spec.json"


@dataclass(frozen=True)
class Reproduction:
    """What rebuilding one version gave, compared with what was stored."""

    model: str
    version: int
    #: `stored`: the version's own spec.json; `lineage`: its lineage over the current spec.
    spec_source: Literal["stored", "lineage"]
    spec_hash_matches: bool
    dataset: str
    #: Whether the snapshot's content still hashes to the name it is stored under.
    snapshot_intact: bool
    holdout_rows: int
    #: None when the version has no stored holdout predictions to compare with.
    predictions_identical: bool | None
    differing_rows: int
    max_abs_difference: float | None
    artifact_identical: bool
    artifact_sha256: str
    registered_sha256: str
    code_then: dict[str, str | None]
    code_now: dict[str, str | None]
    #: Why something is not identical, or what the rebuild had to assume; plain sentences.
    notes: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        """Both the holdout predictions and the artifact's bytes came out the same."""
        return bool(self.predictions_identical) and self.artifact_identical

    @property
    def same_code(self) -> bool:
        return self.code_then == self.code_now


def _lineage_spec(meta: ModelVersion, current: ModelSpec | None) -> ModelSpec:
    """The spec a version was trained with, from its lineage over the current spec."""
    if current is None:
        raise SpecError(
            f"{meta.name} v{meta.version} has no stored spec and no current spec was found: "
            "its lineage does not record the data section (time and id columns choose the "
            "split); give the spec directory with --spec-dir",
            model=meta.name,
        )
    base = current.model_dump(mode="json")
    raw = {
        **base,
        "task": meta.task,
        "target": meta.target,
        "positive_class": base["positive_class"] if meta.task == "classification" else None,
        "features": meta.features,
        "model": {
            "estimator": meta.estimator,
            "params": meta.params,
            "seed": meta.seed,
            "class_weight": meta.class_weight,
            **({"class_path": meta.custom.class_path} if meta.custom else {}),
        },
        "evaluation": {**base["evaluation"], "holdout_fraction": meta.dataset.holdout_fraction},
    }
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(
            f"{meta.name} v{meta.version}: its lineage does not make a valid spec with the "
            f"current one: {err.errors()[0]['msg']}",
            model=meta.name,
        ) from None


def _spec(
    registry: Registry, meta: ModelVersion, current: ModelSpec | None, notes: list[str]
) -> tuple[ModelSpec, Literal["stored", "lineage"]]:
    where = registry.version_uri(meta.name, meta.version, SPEC_FILE)
    try:
        data = registry.read_file(meta.name, meta.version, SPEC_FILE)
    except NotFoundError:
        notes.append(
            f"no {SPEC_FILE} is stored with v{meta.version} (registered before specs were "
            "stored): rebuilt from its lineage (task, estimator, params, class weights, seed, "
            "features, target, holdout fraction) over the current spec's data section"
        )
        return _lineage_spec(meta, current), "lineage"
    try:
        return ModelSpec.model_validate_json(data), "stored"
    except ValidationError as err:
        notes.append(
            f"{where} is not a valid spec today ({err.errors()[0]['msg']}): rebuilt from the "
            "lineage over the current spec instead"
        )
        return _lineage_spec(meta, current), "lineage"


def compare_predictions(
    stored: pd.DataFrame, rebuilt: pd.DataFrame
) -> tuple[bool, int, float | None]:
    """(identical, rows that differ, the largest absolute difference of a numeric column).

    Identical means the same columns, dtypes and every value bit for bit (NaN equals NaN).
    """
    if list(stored.columns) != list(rebuilt.columns) or len(stored) != len(rebuilt):
        return False, max(len(stored), len(rebuilt)), None
    differing = np.zeros(len(stored), dtype=bool)
    largest: float | None = None
    for column in stored.columns:
        a, b = stored[column].to_numpy(), rebuilt[column].to_numpy()
        both_missing = np.asarray(stored[column].isna() & rebuilt[column].isna())
        differing |= ~((a == b) | both_missing)
        if a.dtype.kind in "fiu" and b.dtype.kind in "fiu" and len(a):
            gap = float(np.nanmax(np.abs(a.astype(float) - b.astype(float)), initial=0.0))
            largest = gap if largest is None else max(largest, gap)
    dtypes_equal = list(stored.dtypes) == list(rebuilt.dtypes)
    return bool(dtypes_equal and not differing.any()), int(differing.sum()), largest


def reproduce(
    store: ArtifactStore,
    model: str,
    version: int,
    code_now: dict[str, str | None],
    current_spec: ModelSpec | None = None,
) -> Reproduction:
    """Rebuild `model` v`version` from its lineage and compare it with what was stored.

    `current_spec` is used only for versions stored without their spec. Reads only.
    """
    import pandas as pd

    registry = Registry(store)
    meta = registry.get_version(model, version)
    if meta.external is not None:
        brought = meta.external
        raise NotReproducible(
            f"{model} v{version} cannot be rebuilt: it was not trained here but brought by "
            f"{brought.brought_by} as {brought.file} (sha256 {brought.sha256[:16]}...); "
            "there is no fit to run again. Its holdout predictions were scored here, on "
            f"snapshot {meta.dataset.train[:12]}",
            model=model,
            version=version,
            external=brought.file,
        )
    notes: list[str] = []
    spec, source = _spec(registry, meta, current_spec, notes)
    spec_matches = spec.spec_hash() == meta.spec_hash
    if not spec_matches:
        notes.append(
            f"the {'stored' if source == 'stored' else 'rebuilt'} spec hashes to "
            f"{spec.spec_hash()[:12]}, not the {meta.spec_hash[:12]} the lineage records"
        )
    digest = meta.dataset.train
    df = load_snapshot(digest, store)
    intact = content_hash(df) == digest
    if not intact:
        notes.append(
            f"dataset snapshot {digest[:12]}: its content hashes to {content_hash(df)[:12]}, "
            f"not the hash it is stored under: it was changed after v{version} was trained"
        )
    fit = fit_and_score(spec, df, meta.train_threads)
    rebuilt = pd.read_parquet(io.BytesIO(fit.holdout_scores))
    try:
        stored = pd.read_parquet(io.BytesIO(registry.read_file(model, version, "holdout.parquet")))
    except NotFoundError:
        stored = None
        notes.append(f"v{version} has no stored holdout predictions to compare with")
    same, differing, largest = (
        compare_predictions(stored, rebuilt) if stored is not None else (None, 0, None)
    )
    if same is False:
        gap = f" (largest difference {largest:.6g})" if largest else ""
        notes.append(
            f"holdout predictions differ in {differing} of {len(rebuilt)} rows{gap}"
            if differing
            else "holdout predictions have the same values but different column types"
        )
    if fit.threshold != meta.threshold:
        was = meta.threshold.value if meta.threshold else None
        now_ = fit.threshold.value if fit.threshold else None
        notes.append(f"the decision threshold was {was}, rebuilt {now_}")
    if fit.search != meta.search:
        then = meta.search.best_params if meta.search else None
        now_params = fit.search.best_params if fit.search else None
        notes.append(
            f"the hyperparameter search came out differently (best params {then}, rebuilt "
            f"{now_params})"
        )
    artifact = sha256(fit.artifact)
    if artifact != meta.model_sha256:
        notes.append(
            f"the rebuilt artifact's SHA-256 {artifact[:16]}... differs from the registered "
            f"{meta.model_sha256[:16]}..."
        )
    result = Reproduction(
        model=model,
        version=version,
        spec_source=source,
        spec_hash_matches=spec_matches,
        dataset=digest,
        snapshot_intact=intact,
        holdout_rows=len(fit.holdout),
        predictions_identical=same,
        differing_rows=differing,
        max_abs_difference=largest,
        artifact_identical=artifact == meta.model_sha256,
        artifact_sha256=artifact,
        registered_sha256=meta.model_sha256,
        code_then=dict(meta.code_version),
        code_now=dict(code_now),
        notes=tuple(notes),
    )
    log.info("%s v%d reproduced: identical=%s", model, version, result.identical)
    return result
