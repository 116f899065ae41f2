"""`mlops reproduce`: a version rebuilt from its lineage gives the same predictions and bytes.

One module-scoped store holds two versions made by in-process retrain runs: v1 on batches, v2
on batches plus labelled traffic (`data.include_feedback`). Each test works on a copy when it
changes the store.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_tasks.cli import main
from mlops_tasks.errors import NotReproducible
from mlops_tasks.flow.flows import SNAPSHOT
from mlops_tasks.model.reproduce import compare_predictions, reproduce
from mlops_tasks.registry import Registry
from mlops_tasks.settings import Settings
from mlops_tasks.specs import ModelSpec
from mlops_tasks.storage import LocalStore
from tests.flowkit import retrain
from tests.integration.test_data_contracts import (
    START,
    credit_spec,
    end_of,
    log_traffic,
    stable_days,
)

CODE = {"package": "test", "git_sha": None}


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@dataclass(frozen=True)
class Trained:
    root: Path
    spec: ModelSpec
    spec_dir: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """v1 trained on a day of batches, v2 on the same batches plus labelled traffic; both
    gradient-boosted trees (the family whose bytes depend on the thread count), fitted on one
    thread and on two."""
    tmp = tmp_path_factory.mktemp("reproduce")
    store = LocalStore(tmp / "store")
    spec = credit_spec(
        model__estimator="hist_gradient_boosting",
        model__params={"max_iter": 20, "max_leaf_nodes": 15},
        data__include_feedback=True,
    )
    stable_days(store, days=1)
    day = START
    env = {"MLOPS_STORE": store.uri}
    one = Settings.from_env({**env, "MLOPS_TRAIN_THREADS": "1"})
    assert retrain(spec, store, as_of=end_of(day), settings=one).status == "success"
    traffic = stable_frame(day)
    log_traffic(store, spec, traffic, end_of(day) - timedelta(hours=2), version=1)
    two = Settings.from_env({**env, "MLOPS_TRAIN_THREADS": "2"})  # whatever the machine has
    run = retrain(spec, store, as_of=end_of(day), settings=two)
    assert run[SNAPSHOT].traffic_rows == len(traffic)
    spec_dir = tmp / "specs"
    spec_dir.mkdir()
    (spec_dir / f"{spec.name}.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return Trained(tmp / "store", spec, spec_dir)


def stable_frame(day: Any) -> pd.DataFrame:
    from mlops_tasks.data import synthetic

    return synthetic.generate_day(day, 600, seed=5)


def copy(trained: Trained, tmp_path: Path) -> LocalStore:
    shutil.copytree(trained.root, tmp_path / "store")
    return LocalStore(tmp_path / "store")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_every_version_of_a_retrain_reproduces_bit_for_bit(
    trained: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalStore(trained.root)
    versions = Registry(store).versions(trained.spec.name)
    assert [v.version for v in versions] == [1, 2]
    # The fit's thread count is recorded (gradient-boosted trees store it in the artifact)
    # and the rebuild uses it.
    assert [v.train_threads for v in versions] == [1, 2]
    assert versions[1].dataset.traffic is not None  # v2 learned from labelled traffic
    before = files(trained.root)
    for v in versions:
        code, out = cli(
            capsys, "--store", store.uri, "--json", "reproduce", trained.spec.name, str(v.version)
        )
        result = json.loads(out)
        assert code == 0, result
        assert result["identical"] and result["predictions_identical"]
        assert result["artifact_identical"] and result["artifact_sha256"] == v.model_sha256
        assert result["spec_source"] == "stored" and result["spec_hash_matches"]
        assert result["snapshot_intact"] and result["differing_rows"] == 0
        assert result["holdout_rows"] == v.dataset.holdout_rows
        assert result["code_then"] == v.code_version and "code_now" in result
        assert result["notes"] == []
    assert files(trained.root) == before  # nothing written to the store


def test_the_text_report_says_what_was_compared(
    trained: Trained, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli(capsys, "--store", trained.root.as_uri(), "reproduce", trained.spec.name, "1")
    assert code == 0
    assert out.startswith(f"{trained.spec.name} v1: reproduced")
    assert "predictions  identical on" in out and "artifact     identical" in out
    assert "code         then" in out


def test_a_tampered_snapshot_is_not_identical_and_says_why(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = copy(trained, tmp_path)
    meta = Registry(store).get_version(trained.spec.name, 1)
    key = f"datasets/{meta.dataset.train}/data.parquet"
    frame = pd.read_parquet(io.BytesIO(store.get_bytes(key)))
    frame.loc[frame.index[::7], "income"] *= 1.5  # someone "fixed" the data in place
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    store.put_bytes(key, buf.getvalue())

    code, out = cli(capsys, "--store", store.uri, "reproduce", trained.spec.name, "1")
    assert code == NotReproducible.exit_code != 0
    assert out.startswith(f"{trained.spec.name} v1: NOT reproduced")
    assert "(content changed)" in out
    assert f"dataset snapshot {meta.dataset.train[:12]}: its content hashes to" in out
    assert "it was changed after v1 was trained" in out
    assert "predictions  NOT identical" in out and "holdout predictions differ in" in out
    assert "artifact     NOT identical" in out


def test_a_version_stored_without_its_spec_is_rebuilt_from_its_lineage(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = copy(trained, tmp_path)
    store.delete(f"models/{trained.spec.name}/versions/2/spec.json")
    code, out = cli(
        capsys,
        "--store",
        store.uri,
        "--spec-dir",
        str(trained.spec_dir),
        "--json",
        "reproduce",
        trained.spec.name,
        "2",
    )
    result = json.loads(out)
    assert code == 0, result
    assert result["spec_source"] == "lineage" and result["spec_hash_matches"]
    assert "rebuilt from its lineage" in result["notes"][0]


def test_a_version_without_its_spec_needs_the_current_spec(
    trained: Trained, tmp_path: Path
) -> None:
    from mlops_tasks.errors import SpecError

    store = copy(trained, tmp_path)
    store.delete(f"models/{trained.spec.name}/versions/1/spec.json")
    with pytest.raises(SpecError, match="no stored spec and no current spec"):
        reproduce(store, trained.spec.name, 1, CODE)


def test_changed_params_in_the_current_spec_do_not_matter_when_the_spec_is_stored(
    trained: Trained,
) -> None:
    current = trained.spec.with_params({"max_iter": 5})
    result = reproduce(LocalStore(trained.root), trained.spec.name, 1, CODE, current)
    assert result.identical and result.spec_source == "stored"
    assert not result.same_code  # the fixture's runs recorded this checkout's code version


@pytest.mark.parametrize(
    ("rebuilt", "expected"),
    [
        pytest.param(
            {"prediction": [1, 0, 1], "probability": [0.9, 0.1, 0.8]}, (True, 0), id="same"
        ),
        pytest.param(
            {"prediction": [1, 0, 0], "probability": [0.9, 0.1, 0.4]}, (False, 1), id="row"
        ),
        pytest.param(
            {"prediction": [1, 0, 1], "probability": [0.9, 0.1, float(np.nextafter(0.8, 1))]},
            (False, 1),
            id="one-ulp",
        ),
        pytest.param(
            {"prediction": [1.0, 0.0, 1.0], "probability": [0.9, 0.1, 0.8]}, (False, 0), id="dtype"
        ),
        pytest.param({"prediction": [1, 0]}, (False, 3), id="shape"),
    ],
)
def test_compare_predictions_is_exact(
    rebuilt: dict[str, list[float]], expected: tuple[bool, int]
) -> None:
    stored = pd.DataFrame({"prediction": [1, 0, 1], "probability": [0.9, 0.1, 0.8]})
    same, differing, _ = compare_predictions(stored, pd.DataFrame(rebuilt))
    assert (same, differing) == expected
