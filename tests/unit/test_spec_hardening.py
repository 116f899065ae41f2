"""Specs that pass `validate-spec` never crash later: bounds, cross-checks, encodings and YAML.

Each case of the first table passed `load_spec` before (and crashed a task, a DAG import or
`validate-spec --deep` itself later). The property tests mutate the shipped specs and feed raw
bytes: reading a spec returns a ModelSpec or raises a SpecError naming the file and a field,
never anything else, and every accepted spec builds its expectations and its pipeline.
"""

from __future__ import annotations

import copy
import math
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_tasks.cli import main as cli_main
from mlops_tasks.errors import SpecError
from mlops_tasks.specs import (
    CRON_PRESETS,
    MAX_SPEC_BYTES,
    ModelSpec,
    check_cron,
    load_spec,
    parse_spec,
    spec_files,
)

SPEC_DIR = Path(__file__).resolve().parents[2] / "dags" / "specs"
EXAMPLE = SPEC_DIR / "credit_default.yaml"


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(raw: Any) -> str:
    return yaml.dump(raw, Dumper=_NoAliases, allow_unicode=True, sort_keys=False)


def _write(tmp_path: Path, raw: Any, name: str = "credit_default") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(_dump(raw), encoding="utf-8")
    return path


def _example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def _field_lines(message: str) -> list[str]:
    """The field paths an error names: `  field.path: ...` lines, or `file: field: ...`."""
    fields = re.findall(r"^  (.+?): ", message, flags=re.MULTILINE)
    inline = re.match(r"^[^\n]*?\.ya?ml: ([a-z_][a-z0-9_.]*): ", message)
    return fields + ([inline.group(1)] if inline else [])


# Values that passed before ------------------------------------------------------------------
def _set(*path: Any, value: Any):
    def mutate(raw: dict[str, Any]) -> None:
        node = raw
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    return mutate


NAN, INF = float("nan"), float("inf")
BOUNDS = [
    (
        "learning-rate-nan",
        _set("model", "params", "learning_rate", value=NAN),
        "model.params.learning_rate",
        "finite",
    ),
    (
        "learning-rate-inf",
        _set("model", "params", "learning_rate", value=INF),
        "model.params.learning_rate",
        "finite",
    ),
    (
        "param-huge-int",
        _set("model", "params", "learning_rate", value=10**400),
        "model.params.learning_rate",
        "must be <=",
    ),
    ("seed-negative", _set("model", "seed", value=-1), "model.seed", "greater than or equal"),
    ("seed-2**40", _set("model", "seed", value=2**40), "model.seed", "less than or equal"),
    (
        "window-1e9-days",
        _set("data", "training_window_days", value=10**9),
        "data.training_window_days",
        "less than or equal",
    ),
    (
        "cooldown-1e308",
        _set("drift", "cooldown_hours", value=1e308),
        "drift.cooldown_hours",
        "less than or equal",
    ),
    ("cooldown-inf", _set("drift", "cooldown_hours", value=INF), "drift.cooldown_hours", "finite"),
    ("share-nan", _set("drift", "drift_share", value=NAN), "drift.drift_share", "finite"),
    (
        "threshold-inf",
        _set("drift", "overrides", "income", "threshold", value=INF),
        "drift.overrides.income.threshold",
        "finite",
    ),
    (
        "range-nan",
        _set("validation", "ranges", "age", "max", value=NAN),
        "validation.ranges.age.max",
        "finite",
    ),
    (
        "gate-min-nan",
        _set("evaluation", "min", "roc_auc", value=NAN),
        "evaluation.min.roc_auc",
        "finite",
    ),
    ("max-drop-inf", _set("evaluation", "max_drop", value=INF), "evaluation.max_drop", "finite"),
    (
        "cron-99",
        _set("schedule", "monitor", value="99 99 99 99 99"),
        "schedule.monitor",
        "minute field: 99 is outside 0-59",
    ),
    (
        "cron-@sometimes",
        _set("schedule", "retrain", value="@sometimes"),
        "schedule.retrain",
        "unknown preset '@sometimes'",
    ),
    (
        "cron-@once",
        _set("schedule", "retrain", value="@once"),
        "schedule.retrain",
        "cannot run @once",
    ),
    (
        "cron-never-fires",
        _set("schedule", "retrain", value="0 3 30 2 *"),
        "schedule.retrain",
        "never fires",
    ),
    (
        "range-min-above-max",
        _set("validation", "ranges", "age", value={"min": 100, "max": 18}),
        "validation.ranges.age",
        "min (100) is greater than max (18)",
    ),
    (
        "range-empty",
        _set("validation", "ranges", "age", value={}),
        "validation.ranges.age",
        "give min, max or both",
    ),
    (
        "range-on-category",
        _set("validation", "ranges", "region", value={"min": 0}),
        "validation.ranges",
        "not a numeric feature",
    ),
    (
        "min-rows-1e30",
        _set("validation", "min_rows", value=10**30),
        "validation.min_rows",
        "less than or equal",
    ),
    (
        "max-rows-below-min",
        _set("validation", "max_rows", value=10),
        "validation.max_rows",
        "10 is less than min_rows (500)",
    ),
    (
        "roc-auc-above-1",
        _set("evaluation", "min", "roc_auc", value=1.5),
        "evaluation.min.roc_auc",
        "outside [0, 1]",
    ),
    (
        "log-loss-negative",
        _set("evaluation", "max", "log_loss", value=-0.1),
        "evaluation.max.log_loss",
        "outside [0, inf]",
    ),
    (
        "slice-metric-above-1",
        _set("evaluation", "min_slice_metric", value=2.0),
        "evaluation.min_slice_metric",
        "outside [0, 1]",
    ),
    (
        "max-drop-above-span",
        _set("evaluation", "max_drop", value=3.0),
        "evaluation.max_drop",
        "outside [0, 1]",
    ),
    (
        "holdout-tiny",
        _set("evaluation", "holdout_fraction", value=1e-300),
        "evaluation.holdout_fraction",
        "greater than or equal",
    ),
    (
        "threshold-huge",
        _set("drift", "overrides", "income", "threshold", value=1e12),
        "drift.overrides.income.threshold",
        "less than or equal",
    ),
    (
        "window-days-huge",
        _set("drift", "window_days", value=10**6),
        "drift.window_days",
        "less than or equal",
    ),
    (
        "consecutive-huge",
        _set("drift", "consecutive_checks", value=10**12),
        "drift.consecutive_checks",
        "less than or equal",
    ),
    (
        "tolerance-huge",
        _set("validation", "range_tolerance", value=1e300),
        "validation.range_tolerance",
        "less than or equal",
    ),
    (
        "verify-rows-huge",
        _set("deployment", "verify_sample_rows", value=10**12),
        "deployment.verify_sample_rows",
        "less than or equal",
    ),
    (
        "too-many-slices",
        _set("evaluation", "slices", value=["region"] * 21),
        "evaluation.slices",
        "at most 20 items",
    ),
    (
        "too-many-expectations",
        _set(
            "validation",
            "expectations",
            value=[{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "age"}}]
            * 101,
        ),
        "validation.expectations",
        "at most 100 items",
    ),
    (
        "empty-category-list",
        _set("validation", "categories", "region", value=[]),
        "validation.categories.region",
        "at least 1 item",
    ),
    ("long-owner", _set("owner", value="x" * 300), "owner", "at most 256 characters"),
    (
        "long-description",
        _set("description", value="x" * 100_000),
        "description",
        "at most 4096 characters",
    ),
    (
        "long-column-name",
        _set("features", "numeric", 0, value="a" * 1000),
        "features.numeric.0",
        "at most 256 characters",
    ),
    ("empty-column-name", _set("target", value=""), "target", "at least 1 character"),
    (
        "id-column-is-target",
        _set("data", "id_column", value="default"),
        "data.id_column",
        "also the target",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field", "message"), [pytest.param(*c[1:], id=c[0]) for c in BOUNDS]
)
def test_out_of_bounds_values_are_refused_naming_file_and_field(
    tmp_path: Path, mutate, field: str, message: str
) -> None:
    raw = _example()
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    assert field in _field_lines(text), text
    assert message in text, text
    assert len(text) < 2_000  # never echoes a huge input back


def test_errors_never_echo_huge_inputs(tmp_path: Path) -> None:
    raw = _example()
    raw["model"]["params"]["learning_rate"] = 10**4000
    raw["colour" * 1000] = "x"
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, raw))
    assert len(str(info.value)) < 2_000


def test_validate_spec_reports_max_rows_below_min_rows(tmp_path: Path, capsys) -> None:
    """This crashed `validate-spec` itself (GX refused the row-count expectation)."""
    raw = _example()
    raw["validation"]["max_rows"] = 10
    path = _write(tmp_path, raw)
    assert cli_main(["validate-spec", str(path)]) == SpecError.exit_code
    out = capsys.readouterr()
    assert "validation.max_rows: 10 is less than min_rows (500)" in out.out + out.err
    assert "Traceback" not in out.out + out.err


# Cron --------------------------------------------------------------------------------------
VALID_CRONS = [
    "0 3 * * 0",
    "*/10 * * * *",
    "15 * * * *",
    "0 0 1 */3 *",
    "0-30/5 8-18 * * 1-5",
    "0 9 * * MON-FRI",
    "0 0 1 jan,jul *",
    "5,10,15 0 * * 7",
    "0 0 29 2 *",
    "00 03 * * 0",
    "30 2 31 * *",
    "0 12 * * sun",
    *CRON_PRESETS,
]
INVALID_CRONS = [
    "99 99 99 99 99",
    "@sometimes",
    "@once",
    "@continuous",
    "@midnight",
    "@annually",
    "* * * *",
    "* * * * * *",
    "60 * * * *",
    "* 24 * * *",
    "* * 0 * *",
    "* * 32 * *",
    "* * * 13 *",
    "* * * * 8",
    "*/0 * * * *",
    "*/61 * * * *",
    "1,,2 * * * *",
    "5-1 * * * *",
    "* * * * FRI-MON",
    "-1 * * * *",
    "a * * * *",
    "* * L * *",
    "* * * * 5#3",
    "0 0 ? * *",
    "H * * * *",
    "0 0 30 2 *",
    "0 0 31 4,6,9,11 *",
    "１ * * * *",
    "",
    "x" * 300,
]


@pytest.mark.parametrize("expression", VALID_CRONS)
def test_valid_crons_are_accepted_and_airflow_agrees(expression: str) -> None:
    from croniter import croniter

    check_cron(expression)
    resolved = CRON_PRESETS.get(expression, expression)
    assert croniter.is_valid(resolved)
    croniter(resolved).get_next()  # it fires


@pytest.mark.parametrize("expression", INVALID_CRONS)
def test_invalid_crons_are_refused(expression: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        check_cron(expression)


def test_presets_are_airflows() -> None:
    """Exactly the presets Airflow 3 resolves for a cron timetable (not @once/@continuous)."""
    cron = pytest.importorskip("airflow.sdk.definitions.timetables._cron")
    assert cron.CRON_PRESETS == CRON_PRESETS


_CRON_TOKENS = [
    "*",
    "0",
    "1",
    "5",
    "7",
    "12",
    "23",
    "29",
    "30",
    "31",
    "59",
    "60",
    "99",
    "MON",
    "fri",
    "JAN",
    "dec",
    "-",
    ",",
    "/",
    "*/",
    "?",
    "L",
    "#",
    "@daily",
    "@once",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(_CRON_TOKENS), min_size=1, max_size=5).map("".join),
        min_size=1,
        max_size=6,
    ).map(" ".join)
)
def test_any_cron_we_accept_airflow_accepts_and_it_fires(expression: str) -> None:
    from croniter import croniter

    try:
        check_cron(expression)
    except ValueError:
        return
    resolved = CRON_PRESETS.get(expression, expression)
    assert croniter.is_valid(resolved), expression
    croniter(resolved).get_next()


# Encodings and YAML ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            EXAMPLE.read_text().replace("consumer-credit", "caf\u00e9").encode("latin-1"),
            id="latin-1",
        ),
        pytest.param(EXAMPLE.read_text().encode("utf-16"), id="utf-16"),
        pytest.param(b"name: credit_default\n\xff\xfe\x00garbage\n", id="binary"),
    ],
)
def test_non_utf8_spec_is_a_spec_error_naming_the_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "credit_default.yaml"
    path.write_bytes(data)
    with pytest.raises(SpecError, match=r"not UTF-8 text") as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ")


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb (10**levels strings once expanded), in an extra expectation's
    kwargs: an Any field, which the old loader accepted without expanding, so anything that
    later walked the spec (its hash, a JSON dump, GX) expanded it."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    kwargs = "".join(f"        {line}\n" for line in lines)
    extra = "    - type: expect_column_values_to_be_unique\n      kwargs:\n" + kwargs
    text = EXAMPLE.read_text().replace("  expectations:\n", "  expectations:\n" + extra)
    assert "&a9" in text if levels == 9 else True
    return text


def test_billion_laughs_is_refused_at_once_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "credit_default.yaml"
    path.write_text(billion_laughs())
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match=r"anchors and aliases .* not allowed") as info:
            load_spec(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert str(info.value).startswith(f"{path}: ")
    assert "line " in str(info.value)


def test_anchors_are_refused_even_when_harmless(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("  min_rows: 500", "  min_rows: &rows 500")
    with pytest.raises(SpecError, match="anchors and aliases"):
        parse_spec(text, "spec.yaml")


def test_oversized_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "credit_default.yaml"
    path.write_text(EXAMPLE.read_text() + "# padding\n" * (4 * 2**20 // 10))
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match=f"larger than {MAX_SPEC_BYTES} bytes"):
            load_spec(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_SPEC_BYTES + 2**20


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            EXAMPLE.read_text() + "owner: someone-else\n",
            r"duplicate key 'owner'",
            id="duplicate-top-level-key",
        ),
        pytest.param(
            EXAMPLE.read_text().replace("  min_rows: 500\n", "  min_rows: 500\n  min_rows: 5\n"),
            r"duplicate key 'min_rows'",
            id="duplicate-nested-key",
        ),
        pytest.param(
            EXAMPLE.read_text() + "---\nname: other\n", r"single document", id="two-documents"
        ),
        pytest.param(
            "- name: credit_default\n", r"must be a YAML mapping, got list", id="list-document"
        ),
        pytest.param("just a string\n", r"must be a YAML mapping, got str", id="scalar-document"),
        pytest.param("", r"must be a YAML mapping, got NoneType", id="empty-document"),
        pytest.param("1: one\n", r"keys must be strings", id="int-key"),
        pytest.param("? [a, b]\n: one\n", r"keys must be strings", id="list-key"),
        pytest.param("a: {<<: {b: 1}}\n", r"merge keys", id="merge-key"),
        pytest.param(
            "a: " + "[" * 200 + "]" * 200 + "\n", r"nested more than 32 levels", id="deep-nesting"
        ),
        pytest.param("a: " + "[" * 50_000, r"nested more than 32 levels", id="deep-unclosed"),
        pytest.param(
            "a: !!python/object/apply:os.system [true]\n", r"not valid YAML", id="python-tag"
        ),
        pytest.param("a: \x00\n", r"not valid YAML", id="nul-character"),
    ],
)
def test_yaml_shapes_a_spec_may_not_take(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "credit_default.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ")


def test_shipped_specs_still_load() -> None:
    for path in spec_files(SPEC_DIR):
        assert load_spec(path).name == path.stem


# Property: mutated specs -------------------------------------------------------------------
SHIPPED = {p.stem: yaml.safe_load(p.read_text()) for p in spec_files(SPEC_DIR)}
_WORDS = [
    "99 99 99 99 99",
    "@sometimes",
    "@once",
    "@daily",
    "*/0 * * * *",
    "0 0 30 2 *",
    "0 3 * * 0",
    "",
    " ",
    "x" * 5_000,
    "expect_column_values_to_be_unique",
    "expect_nonexistent_thing",
    "roc_auc",
    "rmse",
    "r2",
    "log_loss",
    "age",
    "income",
    "region",
    "channel",
    "customer_id",
    "event_time",
    "default",
    "annual_spend",
    "hist_gradient_boosting",
    "random_forest",
    "ridge",
    "logistic_regression",
    "classification",
    "regression",
    "file:///tmp/x",
    "s3://bucket/key",
    "psi",
    "auto",
    "manual",
    "batches",
    ".nan",
    "1e400",
    "learning_rate",
    "max_iter",
    "min",
    "max",
    "column",
    "café",
    "\u202e",
    "a\tb",
]
_NUMBERS = [
    0,
    1,
    -1,
    2,
    0.5,
    1.0,
    1e-300,
    2**31,
    2**32 - 1,
    2**32,
    2**40,
    2**63,
    10**30,
    -(10**30),
    10**400,
    1e308,
    -1e308,
    5e-324,
    NAN,
    INF,
    -INF,
]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from(_NUMBERS)
    | st.text(max_size=30)
    | st.sampled_from(_WORDS)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.sampled_from(_WORDS), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out += _paths(value, (*prefix, i))
    return out


def _containers(tree: Any) -> list[tuple[Any, ...]]:
    return [()] + [p for p in _paths(tree) if isinstance(_get(tree, p), dict)]


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@st.composite
def mutated_specs(draw: st.DrawFn) -> tuple[str, dict[str, Any], list[tuple[Any, ...]]]:
    """A shipped spec with 1-3 random edits: replace a value, delete a key, add a key."""
    name = draw(st.sampled_from(sorted(SHIPPED)))
    raw = copy.deepcopy(SHIPPED[name])
    touched = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if op == "add":
            where = draw(st.sampled_from(_containers(raw)))
            key = draw(st.sampled_from(_WORDS) | st.text(min_size=1, max_size=12))
            _get(raw, where)[key] = draw(_values)
            touched.append((*where, key))
            continue
        paths = _paths(raw)
        path = draw(st.sampled_from(paths))
        parent = _get(raw, path[:-1])
        if op == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_values)
        touched.append(path)
    return name, raw, touched


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutated")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_specs())
def test_mutated_specs_load_or_fail_cleanly_and_accepted_ones_build(case, spec_dir: Path) -> None:
    from mlops_tasks.data.validation import declared_expectations
    from mlops_tasks.model.modelling import build_pipeline

    name, raw, touched = case
    path = spec_dir / f"{name}.yaml"
    path.write_text(_dump(raw), encoding="utf-8")
    try:
        spec = load_spec(path)
    except SpecError as err:
        text = str(err)
        assert text.startswith(f"{path}: "), text
        fields = _field_lines(text)
        assert fields and "spec" not in fields, text
        return
    assert isinstance(spec, ModelSpec)
    assert len(spec.spec_hash()) == 64
    build_pipeline(spec)
    extra_edited = any(p[:2] == ("validation", "expectations") for p in touched)
    try:
        declared_expectations(spec)
    except SpecError as err:  # only GX itself can tell whether an extra expectation exists
        assert extra_edited and "validation.expectations." in str(err), str(err)
    for value in _numbers(spec.model_dump()):  # every number finite and within a float's ints
        assert math.isfinite(value) and abs(value) <= 2**53, value
    for cron in (spec.schedule.retrain, spec.schedule.monitor):
        if cron:
            from croniter import croniter

            assert croniter.is_valid(CRON_PRESETS.get(cron, cron)), cron


def _numbers(tree: Any) -> list[float]:
    if isinstance(tree, bool):
        return []
    if isinstance(tree, int | float):
        return [tree]
    if isinstance(tree, dict):
        return [n for v in tree.values() for n in _numbers(v)]
    if isinstance(tree, list | tuple):
        return [n for v in tree for n in _numbers(v)]
    return []


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode()))
def test_any_bytes_load_or_raise_spec_error(data: bytes, tmp_path_factory) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_bytes(data)
    try:
        load_spec(path)
    except SpecError as err:
        assert str(err).startswith(f"{path}")


_YAML_BITS = [
    "name: ",
    "fuzz",
    "\n",
    "  ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    "&a ",
    "*a",
    "!!str ",
    "!!python/name:os.system ",
    "? ",
    "---\n",
    "...\n",
    "'",
    '"',
    "#",
    "1e400",
    ".nan",
    "~",
    "<<: ",
    "|\n",
    "\t",
    "\ufeff",
    "\\x00",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_YAML_BITS) | st.text(max_size=4), max_size=40).map("".join))
def test_any_yaml_ish_text_parses_or_raises_spec_error(text: str) -> None:
    try:
        parse_spec(text, "fuzz.yaml")
    except SpecError as err:
        assert str(err).startswith("fuzz.yaml")
