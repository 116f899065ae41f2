"""Artifacts: no code runs from a stored model, and identical fits give identical bytes.

The malicious archives are built by hand the way skops stores a node that *calls* what it names
(`ConstructorFromReduceNode`: `module.Class(*args)`), and each is shown to run its payload under
the old rule (every type under a trusted module prefix, e.g. `builtins.` or `numpy.`) before it
is shown to be refused, with nothing run, by `load_artifact`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_tasks.errors import IntegrityError
from mlops_tasks.model import artifacts
from mlops_tasks.model.artifacts import (
    FAMILY_NODES,
    PIPELINE_NODES,
    TRUSTED_TYPES,
    check_artifact,
    derive_allow_lists,
    dump_artifact,
    load_artifact,
)
from mlops_tasks.registry import Registry
from mlops_tasks.storage import ArtifactStore
from tests.unit.test_registry import lineage

REPO = Path(__file__).resolve().parents[2]

#: The rule this replaces: any type under these module prefixes was loaded.
OLD_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.", "mlops_tasks.")


def old_load(data: bytes) -> Any:
    """Today's load_artifact, verbatim in effect: skops with every prefix-trusted type."""
    import skops.io as sio

    types = sio.get_untrusted_types(data=data)
    assert all(t.startswith(OLD_TRUSTED_PREFIXES) for t in types), types  # the old check passes
    return sio.loads(data, trusted=types)


# Building skops archives by hand ------------------------------------------------------------
def _value(v: Any) -> dict[str, Any]:
    return {
        "__class__": type(v).__name__,
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(v),
        "is_json": True,
    }


def _tuple(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "__class__": "tuple",
        "__module__": "builtins",
        "__loader__": "TupleNode",
        "content": list(items),
    }


def _empty_dict() -> dict[str, Any]:
    return {
        "__class__": "dict",
        "__module__": "builtins",
        "__loader__": "DictNode",
        "content": {},
        "key_types": {
            "__class__": "list",
            "__module__": "builtins",
            "__loader__": "ListNode",
            "content": [],
        },
    }


def _call(path: str, *args: dict[str, Any]) -> dict[str, Any]:
    """A node that skops constructs as `path(*args)`."""
    module, name = path.rsplit(".", 1)
    return {
        "__class__": name,
        "__module__": module,
        "__loader__": "ConstructorFromReduceNode",
        "content": _tuple(*args),
    }


def _archive(root: dict[str, Any], members: dict[str, bytes] | None = None) -> bytes:
    import skops
    from skops.io._protocol import PROTOCOL

    schema = {**root, "protocol": PROTOCOL, "_skops_version": skops.__version__}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, payload in (members or {}).items():
            z.writestr(name, payload)
        z.writestr("schema.json", json.dumps(schema))
    return buffer.getvalue()


def _schema(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {n: z.read(n) for n in z.namelist() if n != "schema.json"}
        return json.loads(z.read("schema.json")), members


def _payloads(marker: Path) -> dict[str, dict[str, Any]]:
    """Nodes that write `marker` when constructed, each passing the old prefix check."""
    m = str(marker)
    return {
        "builtins.exec": _call("builtins.exec", _value(f"open({m!r}, 'w').write('pwned')")),
        "builtins.eval": _call(
            "builtins.eval", _value(f"__import__('pathlib').Path({m!r}).write_text('pwned')")
        ),
        "builtins.open": _call("builtins.open", _value(m), _value("w")),  # creates/truncates
        "numpy.testing._private.utils.runstring": _call(
            "numpy.testing._private.utils.runstring",
            _value(f"open({m!r}, 'w').write('pwned')"),
            _empty_dict(),
        ),
    }


# Fitted pipelines ----------------------------------------------------------------------------
FAMILIES = [
    ("hist_gradient_boosting", "classification"),
    ("hist_gradient_boosting", "regression"),
    ("random_forest", "classification"),
    ("random_forest", "regression"),
    ("logistic_regression", "classification"),
    ("ridge", "regression"),
]


@pytest.fixture(scope="module")
def fitted() -> dict[tuple[str, str], Any]:
    return {(f, t): artifacts._fit(f, t, {}) for f, t in FAMILIES}


def _x() -> Any:
    import pandas as pd

    rng = np.random.default_rng(99)
    return pd.DataFrame(
        {
            "x1": rng.normal(size=50),
            "x2": rng.exponential(size=50),
            "c1": rng.choice(["a", "b", "zzz"], size=50).astype(object),
        }
    )


def _inject(data: bytes, node: dict[str, Any]) -> bytes:
    """A real pipeline archive with one extra attribute on the Pipeline holding `node`."""
    schema, members = _schema(data)
    attrs = schema["content"]
    attrs["content"]["_cache"] = node
    attrs["key_types"]["content"].append(
        {"__class__": "str", "__module__": "builtins", "__loader__": "TypeNode"}
    )
    root = {k: v for k, v in schema.items() if k not in ("protocol", "_skops_version")}
    return _archive(root, members)


# Code execution ------------------------------------------------------------------------------
@pytest.mark.parametrize("payload", list(_payloads(Path("x"))))
def test_old_prefix_rule_runs_code_new_rule_refuses(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "marker"
    data = _archive(_payloads(marker)[payload])

    old_load(data)  # the old rule: the payload runs at load time
    assert marker.exists(), "the crafted archive should run its payload under the old rule"
    marker.unlink()

    with pytest.raises(IntegrityError, match=f"untrusted types .*'{payload}'") as info:
        load_artifact(data, "evil v1")
    assert payload in info.value.context["types"]
    assert not marker.exists()


def test_payload_hidden_in_a_working_pipeline(tmp_path: Path, fitted) -> None:
    """The model still predicts after the payload ran: nothing would look wrong."""
    marker = tmp_path / "marker"
    pipeline = fitted[("hist_gradient_boosting", "classification")]
    data = _inject(dump_artifact(pipeline), _payloads(marker)["builtins.exec"])

    loaded = old_load(data)
    assert marker.exists()
    assert np.array_equal(loaded.predict(_x()), pipeline.predict(_x()))
    marker.unlink()

    with pytest.raises(IntegrityError, match=r"untrusted types \['builtins.exec'\]"):
        load_artifact(data, "credit_default v3")
    assert not marker.exists()


@pytest.mark.parametrize(
    "node",
    [
        pytest.param(_call("os.system", _value("true")), id="os.system"),
        pytest.param(
            _call("builtins.getattr", _call("builtins.__import__", _value("os")), _value("system")),
            id="getattr-import",
        ),
        pytest.param(
            {"__class__": "exec", "__module__": "builtins", "__loader__": "FunctionNode"},
            id="function-node",
        ),
        pytest.param(
            {"__class__": "exec", "__module__": "builtins", "__loader__": "TypeNode"},
            id="type-node",
        ),
        pytest.param(_call("numpy.float64", _value(1.0)), id="allowed-type-other-loader"),
    ],
)
def test_other_callables_are_refused_naming_the_type(node: dict[str, Any], fitted) -> None:
    data = _inject(dump_artifact(fitted[("ridge", "regression")]), node)
    with pytest.raises(IntegrityError, match=r"untrusted types \[.*'(builtins|os|numpy)\.") as info:
        load_artifact(data, "m v1")
    assert str(info.value).startswith("m v1: ")


def test_types_skops_trusts_by_default_are_not_enough(fitted) -> None:
    """Every sklearn estimator is trusted by skops; only those of our pipelines are here."""
    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    data = dump_artifact(Pipeline([("f", FunctionTransformer(np.log1p))]))
    assert sio.get_untrusted_types(data=data) == []  # the old check would load it
    with pytest.raises(IntegrityError, match="FunctionTransformer"):
        load_artifact(data, "m v1")


def test_family_is_checked_when_given(fitted) -> None:
    data = dump_artifact(fitted[("random_forest", "regression")])
    assert check_artifact(data, "m v1")[0] == "random_forest"
    assert check_artifact(data, "m v1", estimator="random_forest")[0] == "random_forest"
    with pytest.raises(IntegrityError, match=r"untrusted types .*RandomForestRegressor"):
        check_artifact(data, "m v1", estimator="ridge")


def test_registry_refuses_a_tampered_version(tmp_path: Path, local_store: ArtifactStore) -> None:
    marker = tmp_path / "marker"
    reg = Registry(local_store)
    reg.register("m", _archive(_payloads(marker)["builtins.exec"]), lineage(), actor="attacker")
    with pytest.raises(IntegrityError, match=r"m v1: artifact contains untrusted types"):
        reg.load("m", 1)
    with pytest.raises(IntegrityError):
        reg.promote("m", 1, reason="tampered", actor="attacker", force=True)
    assert not marker.exists()
    assert reg.alias("m") is None


# Crafted trees: trusted types, hostile contents -----------------------------------------------
def _bad_forest(fitted, field: str, value: int) -> Any:
    import copy

    from sklearn.tree._tree import Tree

    pipeline = copy.deepcopy(fitted[("random_forest", "regression")])
    tree = pipeline[-1].estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    internal = np.where(nodes["left_child"] != -1)[0]
    nodes[field][internal[-1]] = value
    crafted = Tree(*tree.__reduce__()[1])
    crafted.__setstate__({**state, "nodes": nodes})  # scikit-learn accepts it as it is
    pipeline[-1].estimators_[0].tree_ = crafted
    return pipeline


def _bad_boosting(fitted, field: str, value: int) -> Any:
    import copy

    pipeline = copy.deepcopy(fitted[("hist_gradient_boosting", "classification")])
    predictor = pipeline[-1]._predictors[0][0]
    internal = np.where(predictor.nodes["is_leaf"] == 0)[0]
    predictor.nodes[field][internal[-1]] = value
    return pipeline


@pytest.mark.parametrize(
    ("craft", "field", "value", "message"),
    [
        pytest.param(_bad_forest, "left_child", 10**6, "outside the tree", id="forest-child"),
        pytest.param(_bad_forest, "right_child", 0, "back up it", id="forest-cycle"),
        pytest.param(_bad_forest, "feature", 10**6, "feature outside", id="forest-feature"),
        pytest.param(_bad_boosting, "left", 60_000, "outside the tree", id="hgb-child"),
        pytest.param(_bad_boosting, "feature_idx", 10**6, "feature outside", id="hgb-feature"),
        pytest.param(_bad_boosting, "is_categorical", 1, "bitsets", id="hgb-bitset"),
    ],
)
def test_malformed_trees_are_refused(fitted, craft, field: str, value: int, message: str) -> None:
    """Tree and TreePredictor are trusted types whose indices predict() follows unchecked."""
    data = dump_artifact(craft(fitted, field, value))
    old_load(data)  # the old rule loads it (predicting with it would read out of bounds)
    with pytest.raises(IntegrityError, match=message):
        load_artifact(data, "m v4")


# Not skops at all ----------------------------------------------------------------------------
class _Boom:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(pickle.dumps(_Boom()), id="pickle"),
        pytest.param(pickle.dumps({"a": 1}), id="harmless-pickle"),
        pytest.param(b"", id="empty"),
        pytest.param(b"PK\x03\x04" + b"\x00" * 64, id="zip-header-only"),
    ],
)
def test_non_skops_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(IntegrityError, match="m v2: not a readable skops artifact"):
        load_artifact(data, "m v2")


def test_corrupt_zips_are_refused(fitted) -> None:
    data = dump_artifact(fitted[("logistic_regression", "classification")])
    truncated = data[: len(data) // 2]
    garbled = bytearray(data)
    start = data.index(b'"__loader__"')  # inside the stored schema.json
    garbled[start : start + 12] = b"\xff" * 12
    no_schema = _rename_member(data, "schema.json", "schema.txt")
    for bad in (truncated, bytes(garbled), no_schema):
        with pytest.raises(IntegrityError, match=r"m v2: not a (readable|loadable) skops artifact"):
            load_artifact(bad, "m v2")


def _rename_member(data: bytes, old: str, new: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buffer, "w") as dst:
        for info in src.infolist():
            dst.writestr(new if info.filename == old else info.filename, src.read(info))
    return buffer.getvalue()


def test_compressed_members_are_refused(fitted) -> None:
    """Stored members only: what an archive expands to is bounded by its own size."""
    data = dump_artifact(fitted[("ridge", "regression")])
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buffer, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(IntegrityError, match="compressed members are not allowed"):
        load_artifact(buffer.getvalue(), "m v1")


# The allow-list is data, and it matches what the installed libraries write --------------------
def test_allow_lists_match_fitted_pipelines() -> None:
    """Re-derive the lists from real fitted pipelines: a library upgrade cannot drift them."""
    pipeline, family_nodes, trusted = derive_allow_lists()
    assert pipeline == PIPELINE_NODES
    assert family_nodes == FAMILY_NODES
    assert trusted == TRUSTED_TYPES
    from mlops_tasks.specs import ESTIMATORS

    assert set(FAMILY_NODES) == set(TRUSTED_TYPES) == set(ESTIMATORS)
    for names in [PIPELINE_NODES, *FAMILY_NODES.values(), *TRUSTED_TYPES.values()]:
        assert not any(n.endswith((".", "*")) for n in names)  # exact names, never prefixes


def test_every_family_loads_and_is_recognised(fitted) -> None:
    for (family, _task), pipeline in fitted.items():
        data = dump_artifact(pipeline)
        assert check_artifact(data, "m v1")[0] == family
        loaded = load_artifact(data, "m v1")
        assert np.array_equal(loaded.predict(_x()), pipeline.predict(_x()))


# Reproducible bytes -------------------------------------------------------------------------
def test_identical_fits_give_identical_bytes() -> None:
    import skops.io as sio

    for family, task in FAMILIES:
        first, second = artifacts._fit(family, task, {}), artifacts._fit(family, task, {})
        assert sio.dumps(first) != sio.dumps(second)  # why canonicalising is needed
        a, b = dump_artifact(first), dump_artifact(second)
        assert a == b, (family, task)
        assert artifacts.canonicalize(a) == a  # idempotent
        loaded = load_artifact(a, "m v1")
        x = _x()
        assert np.array_equal(loaded.predict(x), first.predict(x)), (family, task)
        if task == "classification":
            assert np.array_equal(loaded.predict_proba(x), first.predict_proba(x))


def test_canonical_archive_is_stable_and_plain(fitted) -> None:
    data = dump_artifact(fitted[("random_forest", "classification")])
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        schema = json.loads(z.read("schema.json"))
    assert [i.filename for i in infos][-1] == "schema.json"
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    ids: list[int] = []

    def collect(v: Any) -> None:
        if isinstance(v, dict):
            if isinstance(v.get("__id__"), int):
                ids.append(v["__id__"])
            for x in v.values():
                collect(x)
        elif isinstance(v, list):
            for x in v:
                collect(x)

    collect(schema)
    assert max(ids) <= len(ids)  # small sequential numbers, not memory addresses


_OTHER_PROCESS = """
import hashlib, json, sys
from mlops_tasks.model import artifacts
out = {}
for family, task in json.loads(sys.argv[1]):
    out[f"{family}/{task}"] = hashlib.sha256(
        artifacts.dump_artifact(artifacts._fit(family, task, {}))).hexdigest()
print(json.dumps(out))
"""


def test_bytes_do_not_depend_on_the_process(fitted) -> None:
    """Another interpreter, another hash seed, other memory addresses: the same bytes."""
    expected = {
        f"{f}/{t}": hashlib.sha256(dump_artifact(p)).hexdigest() for (f, t), p in fitted.items()
    }
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", _OTHER_PROCESS, json.dumps(FAMILIES)]
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, check=True, cwd=REPO, timeout=600
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected
