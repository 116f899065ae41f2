"""What the Models view shows, read from the store with the registry's, the policy's and the
data contract's own readers (nothing here parses store objects itself).

Every summary is built per model: a model whose stored objects are damaged gets its error
(`ModelSummary.error`) and the others still show. Report locations are turned into paths the
UI serves (`report_path`), never into public file paths.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from mlops_tasks.data.contracts import quarantined
from mlops_tasks.errors import MlopsError, NotFoundError
from mlops_tasks.flow.flows import STEP_REPORTS
from mlops_tasks.monitor.policy import history
from mlops_tasks.records import ModelVersion
from mlops_tasks.registry import Registry
from mlops_tasks.reports import safe_run_id
from mlops_tasks.storage import ArtifactStore

log = logging.getLogger(__name__)


@dataclass
class ModelSummary:
    """One row of the Models page."""

    name: str
    production: int | None = None
    versions: int = 0
    last_version: ModelVersion | None = None
    last_check: dict[str, Any] | None = None
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class ModelDetail:
    """Everything the page of one model shows."""

    name: str
    production: int | None
    versions: list[ModelVersion]
    checks: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    quarantined: list[dict[str, Any]]
    reports: list[str]
    #: Versions that could not be read (number, error), shown rather than hidden.
    unreadable: list[tuple[int, str]] = field(default_factory=list)


def model_names(store: ArtifactStore, spec_names: list[str]) -> list[str]:
    """Models in the registry or declared by a spec (a new model has no version yet)."""
    return sorted(set(Registry(store).models()) | set(spec_names))


def summary(store: ArtifactStore, model: str) -> ModelSummary:
    """Production, last version and its trigger, last check, held batches of one model."""
    out = ModelSummary(model)
    registry = Registry(store)
    try:
        numbers = registry.version_numbers(model)
        out.versions = len(numbers)
        out.production = registry.alias(model)
        if numbers:
            out.last_version = registry.get_version(model, numbers[-1])
        checks = history(store, model, limit=1)
        out.last_check = checks[-1] if checks else None
        out.quarantined = [q for q in quarantined(store, model) if not q["released"]]
    except MlopsError as err:
        log.warning("models view: %s: %s", model, err)
        out.error = str(err)
    return out


def detail(store: ArtifactStore, model: str) -> ModelDetail:
    """Versions, checks, audit trail, held batches and report keys of one model.

    A version that cannot be read is listed as unreadable; damage to the alias or the audit
    trail raises (the page says what is wrong instead of guessing).
    """
    registry = Registry(store)
    numbers = registry.version_numbers(model)
    if not numbers and not store.list_keys(f"models/{model}/"):
        raise NotFoundError(f"no model named {model!r} in {store.uri}", model=model)
    alias = registry.production_alias(model)
    versions, unreadable = [], []
    for n in numbers:
        try:
            versions.append(registry.get_version(model, n, alias))
        except MlopsError as err:
            unreadable.append((n, str(err)))
    return ModelDetail(
        name=model,
        production=registry.alias(model),
        versions=versions,
        checks=history(store, model),
        audit=registry.audit(model),
        quarantined=quarantined(store, model),
        reports=sorted(
            (k for k in store.list_keys(f"reports/{model}/") if k.endswith(".html")),
            key=report_order,
            reverse=True,
        ),
        unreadable=unreadable,
    )


_RUN_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2})\D?(\d{2})\D?(\d{2})")


def report_order(key: str) -> tuple[str, str]:
    """Sort key of a report: the time in its run's id (`manual__2026-12-07T02_45_10...`,
    `retrain__2026-12-07T025404...`), then the key; newest last."""
    run = key.split("/")[2] if key.count("/") >= 3 else ""
    found = _RUN_TIME.search(run)
    return ("".join(found.groups()) if found else "", key)


def step_report(store: ArtifactStore, model: str, run_id: str, step: str) -> str | None:
    """The key of the report a run's step left (`STEP_REPORTS`), or None."""
    prefix = STEP_REPORTS.get(step)
    if prefix is None:
        return None
    folder = f"reports/{model}/{safe_run_id(run_id)}/"
    found = [
        k
        for k in store.list_keys(folder)
        if k.endswith(".html") and k[len(folder) :].startswith(prefix)
    ]
    return found[-1] if found else None


def report_key(path: str) -> str | None:
    """The store key a served report path names, or None when it is not a report's key.

    Only `reports/<model>/<run>/<file>.html|json` is served: no `..`, no absolute path, no
    empty segment, nothing outside `reports/`.
    """
    if "\\" in path or "\x00" in path:
        return None
    parts = path.split("/")
    if len(parts) != 3 or any(p in ("", ".", "..") for p in parts):
        return None
    if not parts[2].endswith((".html", ".json")):
        return None
    key = posixpath.join("reports", *parts)
    return key if posixpath.normpath(key) == key else None


def report_path(uri: str | None, store_uri: str) -> str | None:
    """`<model>/<run>/<file>` of a report URI in the store (the UI's report route), else None."""
    if not uri:
        return None
    prefix = store_uri.rstrip("/") + "/reports/"
    if not uri.startswith(prefix):
        return None
    rest = uri[len(prefix) :]
    return rest if report_key(rest) else None
