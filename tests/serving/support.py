"""A small real store for the serving tests: both demo specs (cheaper training parameters),
one version of each trained by the real retrain pipeline and promoted, made once per process."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from mlops_tasks.data import synthetic
from mlops_tasks.flow.flows import TRAIN
from mlops_tasks.records import Trigger
from mlops_tasks.registry import Registry
from mlops_tasks.specs import find_spec
from mlops_tasks.storage import LocalStore
from tests.conftest import REPO
from tests.flowkit import retrain

MODELS = ("credit_default", "customer_spend")


@functools.cache
def trained() -> tuple[LocalStore, Path]:
    """(store, spec dir) with a production version of every demo model."""
    root = Path(tempfile.mkdtemp(prefix="mlops-serving-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    spec_dir = root / "specs"
    spec_dir.mkdir()
    for name in MODELS:
        doc = yaml.safe_load((REPO / "dags" / "specs" / f"{name}.yaml").read_text())
        if doc["model"]["estimator"] == "hist_gradient_boosting":
            doc["model"]["params"]["max_iter"] = 30  # a small real model, trained in seconds
        (spec_dir / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    store = LocalStore(root / "store")
    synthetic.write_batches(days=6, rows_per_day=1000, store=store)
    registry = Registry(store)
    for name in MODELS:
        spec = find_spec(name, spec_dir)
        res = retrain(spec, store, Trigger("cli", "tester", "fixture"))
        version = int(res[TRAIN].version)
        if registry.alias(name) != version:
            registry.promote(name, version, reason="serving tests", actor="tester")
    return store, spec_dir


def records(name: str, n: int, seed: int = 3) -> list[dict[str, Any]]:
    spec = find_spec(name, trained()[1])
    frame = synthetic.generate_day(datetime.now(UTC).date(), n, "stable", seed=seed)
    return synthetic.feature_records(frame, spec.features.all)


def labels(name: str, n: int, seed: int = 3) -> list[Any]:
    spec = find_spec(name, trained()[1])
    frame = synthetic.generate_day(datetime.now(UTC).date(), n, "stable", seed=seed)
    return [v.item() if hasattr(v, "item") else v for v in frame[spec.target].to_numpy()]
