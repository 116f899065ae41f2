"""Running the declared flows in tests, the way the CLI does (`mlops run ...`)."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops_tasks.flow.context import RunContext, new_run_id
from mlops_tasks.flow.flows import MONITOR, RETRAIN, FlowRun, run_flow
from mlops_tasks.records import Approval, RunParams, Trigger
from mlops_tasks.settings import Settings
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import ArtifactStore, LocalStore


def context(
    spec: ModelSpec,
    store: ArtifactStore,
    kind: str = "retrain",
    trigger: Trigger | None = None,
    run_id: str | None = None,
    as_of: datetime | None = None,
    params: RunParams | None = None,
    settings: Settings | None = None,
) -> RunContext:
    return RunContext.create(
        spec,
        store,
        settings or Settings.from_env({"MLOPS_STORE": store.uri}),
        run_id or new_run_id(kind),
        trigger or Trigger("manual", user="pytest", reason=f"test {kind}"),
        params,
        as_of,
    )


def retrain(
    spec: ModelSpec,
    store: ArtifactStore,
    trigger: Trigger | None = None,
    run_id: str | None = None,
    as_of: datetime | None = None,
    params: RunParams | None = None,
    approve: bool = True,
    settings: Settings | None = None,
) -> FlowRun:
    ctx = context(spec, store, "retrain", trigger, run_id, as_of, params, settings)
    return run_flow(RETRAIN, ctx, lambda _c, _o: Approval(True, "pytest") if approve else None)


def monitor(
    spec: ModelSpec,
    store: ArtifactStore,
    run_id: str | None = None,
    as_of: datetime | None = None,
) -> FlowRun:
    trigger = Trigger("cli", user="pytest", reason="test monitor")
    return run_flow(MONITOR, context(spec, store, "monitor", trigger, run_id, as_of))


@dataclass
class Loop:
    """A store and a spec folder, driven by the `mlops` command in process."""

    store: LocalStore
    specs: Path

    def mlops(self, *argv: str) -> tuple[int, Any, str]:
        """Exit code, parsed --json output and stderr of `mlops ARGV` on this store and specs."""
        from mlops_tasks.cli import main

        args = [*argv, "--store", self.store.uri, "--spec-dir", str(self.specs), "--json"]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
        text = out.getvalue()
        return code, json.loads(text) if text.strip() else None, err.getvalue()
