"""Loaded production models and their hot swap.

Each model lives in an immutable `Slot`; a request reads the slot reference once, so a swap
(one dict assignment) happens between requests, never during one. A new version is loaded and
verified (SHA-256, trusted types) before it replaces the old one; if it fails to load, the old
version keeps serving and the error is reported on /readyz and /metrics.

With a spec folder, every refresh also re-reads the folder (`rescan`): a model whose spec file
is added starts serving, one whose file is removed stops (404), and a changed spec reloads its
version under the new spec, the old one serving until then. A spec file that does not load is
reported and changes nothing: the model it held keeps its last good spec.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_tasks.data import joins
from mlops_tasks.data.profile import FeatureChecks, load_profile
from mlops_tasks.errors import DataError, IntegrityError, MlopsError, SpecError
from mlops_tasks.records import ModelVersion
from mlops_tasks.registry import Registry
from mlops_tasks.serving.compiled import Compiled, NotCompiled, RowChecks, compile_model
from mlops_tasks.specs import ModelSpec, load_spec, spec_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    spec: ModelSpec
    version: int
    model: Any
    lineage: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)
    checks: FeatureChecks | None = None  # what training saw, to flag what it did not
    compiled: Compiled | None = None  # the fast path; None: the full pipeline scores
    row_checks: RowChecks | None = None  # `checks` on request rows
    #: The version's decision threshold (None: the most probable class).
    threshold: float | None = None
    #: The lookup joins' tables as the version pinned them, indexed once at load.
    joined: tuple[joins.AsOfTable, ...] = ()


@dataclass
class SpecChanges:
    """What a `rescan` of the spec folder found: models added, changed, removed."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


class ModelManager:
    """Keeps every spec's production version loaded; `refresh()` swaps in new versions."""

    def __init__(
        self,
        registry: Registry,
        specs: list[ModelSpec],
        on_event: Any = None,
        spec_dir: Path | None = None,
        on_specs: Callable[[SpecChanges], None] | None = None,
    ) -> None:
        self.registry = registry
        self.specs = {s.name: s for s in specs}
        #: The folder `rescan` re-reads (None: the specs given are the only ones).
        self.spec_dir = spec_dir
        #: Spec files that do not load, by file name: what is wrong with each.
        self.spec_errors: dict[str, str] = {}
        #: Called with what a `rescan` changed (the app rebuilds its typed routes).
        self.on_specs: Callable[[SpecChanges], None] = on_specs or (lambda changes: None)
        #: Each spec file as last read: (size, mtime in ns), and the model it named.
        self._files: dict[str, tuple[tuple[int, int], str | None]] = {}
        self.slots: dict[str, Slot] = {}
        self.errors: dict[str, str] = {}
        self.expected: dict[str, int | None] = {}
        #: The version each model is loading right now (a load and its checks take a while).
        self.loading: dict[str, int] = {}
        self._lock = threading.Lock()
        self._on_event = on_event or (lambda *a, **k: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rescan(self) -> SpecChanges:
        """Re-read the spec folder: take in added and changed specs, drop removed ones.

        A file is read again only when its size or modification time changed. A file that
        no longer loads keeps its model's last good spec and is reported in `spec_errors`; a
        file that names a model another file already holds is refused the same way."""
        changes = SpecChanges()
        if self.spec_dir is None:
            return changes
        # Copy on write: /readyz and the routes read `specs` while this runs.
        self.specs = dict(self.specs)
        seen: dict[str, tuple[int, int]] = {}
        for path in spec_files(self.spec_dir):
            try:
                st = path.stat()
            except OSError:
                continue  # removed while listing
            seen[path.name] = (st.st_size, st.st_mtime_ns)
        owners = {model: f for f, (_, model) in self._files.items() if model}
        for fname in sorted(set(self._files) - set(seen)):  # removed files
            _, model = self._files.pop(fname)
            self.spec_errors.pop(fname, None)
            if model and owners.get(model) == fname:
                self._drop(model)
                changes.removed.append(model)
        for fname, stamp in seen.items():
            known = self._files.get(fname)
            if known is not None and known[0] == stamp:
                continue
            previous = known[1] if known else None
            try:
                spec = load_spec(self.spec_dir / fname)
                owner = owners.setdefault(spec.name, fname)
                if owner != fname:
                    raise SpecError(
                        f"{self.spec_dir / fname}: model {spec.name!r} is already served from "
                        f"{owner}; not loaded"
                    )
            except SpecError as err:
                self._files[fname] = (stamp, previous)
                if self.spec_errors.get(fname) != str(err):
                    log.error("spec %s not loaded: %s", fname, err)
                self.spec_errors[fname] = str(err)
                continue
            self.spec_errors.pop(fname, None)
            self._files[fname] = (stamp, spec.name)
            if previous and previous != spec.name:  # the file now names another model
                self._drop(previous)
                changes.removed.append(previous)
            old = self.specs.get(spec.name)
            if old is not None and old.spec_hash() == spec.spec_hash():
                continue
            self.specs[spec.name] = spec
            (changes.changed if old is not None else changes.added).append(spec.name)
            log.info("%s: spec %s (%s)", spec.name, "changed" if old else "added", fname)
        return changes

    def _drop(self, name: str) -> None:
        """Stop serving `name`: its spec file is gone."""
        for table in (self.specs, self.slots, self.expected, self.errors, self.loading):
            table.pop(name, None)
        log.info("%s: spec removed; no longer served", name)

    def refresh(self) -> dict[str, Any]:
        """Re-read the spec folder, then compare every model's production alias with what is
        loaded; swap what changed (a version whose spec changed is loaded again under it)."""
        changes: dict[str, Any] = {}
        with self._lock:  # one refresh at a time (poller and /admin/reload)
            specs = self.rescan()
            for name, spec in self.specs.items():
                try:
                    wanted = self.registry.alias(name)
                except MlopsError as err:
                    self.errors[name] = f"cannot read production alias: {err}"
                    continue
                self.expected[name] = wanted
                current = self.slots.get(name)
                if wanted is None or (
                    current and current.version == wanted and current.spec is spec
                ):
                    self.errors.pop(name, None)  # nothing to serve, or already serving it
                    continue
                self.loading[name] = wanted
                try:
                    change = self._swap(name, spec, wanted, current)
                finally:
                    self.loading.pop(name, None)
                if change:
                    changes[name] = change
            if specs:  # after the reloads: a changed model's new route meets its new version
                self.on_specs(specs)
        return changes

    def _swap(
        self, name: str, spec: ModelSpec, wanted: int, current: Slot | None
    ) -> dict[str, Any] | None:
        """Load `wanted` with its checks and make it the served slot; None when it is refused
        (the error is kept for /readyz) or production moved on while it loaded."""
        try:
            meta = self.registry.get_version(name, wanted)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = self.registry.load(name, wanted, meta)
            checks = self._checks(spec, wanted, model)
            joined = joins.pinned(spec, self.registry.store, meta.dataset.joins)
        except MlopsError as err:
            msg = f"v{wanted} refused: {err}"
            if self.errors.get(name) != msg:
                log.error(
                    "%s: %s; still serving %s",
                    name,
                    msg,
                    f"v{current.version}" if current else "nothing",
                )
                self._on_event("load_error", name, wanted)
            self.errors[name] = msg
            return None
        if self.registry.alias(name) != wanted:
            return None  # production moved on while this version loaded; next round
        self.slots[name] = Slot(
            spec,
            wanted,
            model,
            _summary(meta),
            checks=checks,
            compiled=_compiled(spec, wanted, model),
            row_checks=RowChecks(checks),
            threshold=meta.threshold.value if meta.threshold else None,
            joined=joined,
        )
        self.errors.pop(name, None)
        self._on_event("loaded", name, wanted)
        log.info(
            "%s: now serving v%d (was %s)",
            name,
            wanted,
            current.version if current else "nothing",
        )
        return {"from": current.version if current else None, "to": wanted}

    def _checks(self, spec: ModelSpec, version: int, model: Any) -> FeatureChecks:
        """The version's data checks. A version without a profile (registered before profiles
        existed) or with an unreadable or damaged one still serves, checked against its encoder's
        categories only; a store that fails to answer refuses the version for this round."""
        try:
            profile = load_profile(self.registry, spec.name, version)
        except DataError as err:
            log.warning("%s v%d: profile ignored: %s", spec.name, version, err)
            profile = None
        except IntegrityError as err:
            # The profile only flags odd inputs: a damaged one is reported, not a reason to
            # stop serving a version whose model and metadata check out.
            log.error("%s v%d: profile ignored: %s", spec.name, version, err)
            profile = None
        if profile is None:
            log.info(
                "%s v%d: no feature profile; categories are checked against its encoder, "
                "ranges not at all",
                spec.name,
                version,
            )
        return FeatureChecks.build(spec, profile, model)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready when every model with a production version serves exactly that version.
        While a new production version loads, its model is not ready and `loading` names it, so
        a caller can tell "not yet" from "refused" (`error`)."""
        status: dict[str, Any] = {}
        ok = True
        for name in self.specs:  # rebound, never changed in place, by `rescan`
            want = self.expected.get(name)
            slot = self.slots.get(name)
            serving = slot.version if slot else None
            good = want is None or serving == want
            ok &= good and name not in self.errors
            status[name] = {
                "production": want,
                "serving": serving,
                "loading": self.loading.get(name),
                "error": self.errors.get(name),
            }
        return ok, status

    def start_polling(self, interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception:  # keep polling whatever one round hit
                    log.exception("model refresh failed")

        self._thread = threading.Thread(target=loop, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)


def _compiled(spec: ModelSpec, version: int, model: Any) -> Compiled | None:
    """The version's compiled preprocessing, or None (logged once, as the version loads)
    when the compiler does not cover it: that version is scored by its full pipeline."""
    try:
        return compile_model(spec, model)
    except NotCompiled as err:
        log.warning(
            "%s v%d: served by its full pipeline (preprocessing not compiled: %s)",
            spec.name,
            version,
            err,
        )
        return None


def _summary(meta: ModelVersion) -> dict[str, Any]:
    trig = meta.triggered_by
    return {
        "version": meta.version,
        "created_at": meta.created_at,
        "estimator": meta.estimator,
        "dataset": meta.dataset.train,
        **({"joins": meta.dataset.joins} if meta.dataset.joins else {}),
        "spec_hash": meta.spec_hash,
        "metrics": meta.metrics,
        "triggered_by": {
            "kind": trig.kind,
            "user": trig.user,
            "reason": trig.reason,
            "run_id": trig.run_id,
        },
        "model_sha256": meta.model_sha256,
        "threshold": meta.threshold.value if meta.threshold else None,
    }
