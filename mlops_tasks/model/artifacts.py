"""Model artifacts: skops archives that load only allow-listed types and dump reproducibly.

**No code runs from a stored model.** skops rebuilds an object graph from `schema.json`; every
node names a loader and a `module.Class`, and some loaders *call* what they name (a
`ConstructorFromReduceNode` for `builtins.exec` runs `exec(...)`). So before anything is
constructed, `check_artifact` lists every node of the archive (without importing or building
anything) and accepts it only if, for one estimator family of `specs.ESTIMATORS`:

* every node, as `Loader:module.Class`, is in `ALLOWED_NODES[family]`, the complete inventory of
  the pipelines `training.build_pipeline` makes for that family, and
* every type skops itself does not trust (`skops.io.get_untrusted_types`) is in
  `TRUSTED_TYPES[family]`, exact names only.

Both lists are data, derived from real fitted pipelines by `derive_allow_lists()`
(`python -m mlops_tasks.model.artifacts` prints them) and re-derived by a test, so they cannot drift
from the installed scikit-learn/skops unnoticed. Archives must be stored uncompressed, which
bounds what reading one can expand to by its size.

**Reproducible bytes.** `skops.io.dumps` is not byte-identical across identical fits: it names
nodes by `id(obj)` (`__id__` and the `<id>.npy` member names), names `bytes` members with
`uuid4()`, and stamps every zip member with the wall-clock time. `canonicalize` renumbers ids and
members in schema order and writes the zip with fixed metadata, so identical fits give identical
bytes, and the canonical archive loads to the same object.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from mlops_tasks.errors import IntegrityError
from mlops_tasks.model.threads import single_thread

# Derived by `python -m mlops_tasks.model.artifacts` (scikit-learn 1.9.1, skops 0.16.0); a test
# re-derives them from fitted pipelines and fails on any difference.
#: Nodes of every pipeline: preprocessing and plain containers.
PIPELINE_NODES: tuple[str, ...] = (
    "DTypeNode:numpy.dtype",
    "DictNode:builtins.dict",
    "JsonNode:builtins.str",
    "ListNode:builtins.list",
    "NdArrayNode:numpy.float64",
    "NdArrayNode:numpy.ndarray",
    "ObjectNode:sklearn.compose._column_transformer.ColumnTransformer",
    "ObjectNode:sklearn.impute._base.SimpleImputer",
    "ObjectNode:sklearn.pipeline.Pipeline",
    "ObjectNode:sklearn.preprocessing._data.StandardScaler",
    "ObjectNode:sklearn.preprocessing._encoders.OneHotEncoder",
    "SliceNode:builtins.slice",
    "TupleNode:builtins.tuple",
    "TypeNode:builtins.str",
    "TypeNode:numpy.float64",
)
#: Nodes each estimator family adds (both tasks, every tunable parameter setting).
FAMILY_NODES: dict[str, tuple[str, ...]] = {
    "hist_gradient_boosting": (
        "LossNode:sklearn._loss._loss.CyHalfBinomialLoss",
        "LossNode:sklearn._loss._loss.CyHalfSquaredError",
        "NdArrayNode:numpy.uint64",
        "ObjectNode:sklearn._loss.link.IdentityLink",
        "ObjectNode:sklearn._loss.link.Interval",
        "ObjectNode:sklearn._loss.link.LogitLink",
        "ObjectNode:sklearn._loss.loss.HalfBinomialLoss",
        "ObjectNode:sklearn._loss.loss.HalfSquaredError",
        "ObjectNode:sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "ObjectNode:sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "ObjectNode:sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
        "ObjectNode:sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "ObjectNode:sklearn.preprocessing._label.LabelEncoder",
        "RandomGeneratorNode:numpy.random._generator.Generator",
        "TypeNode:sklearn._loss._loss.CyHalfBinomialLoss",
        "TypeNode:sklearn._loss._loss.CyHalfSquaredError",
    ),
    "random_forest": (
        "NdArrayNode:numpy.int64",
        "ObjectNode:sklearn.ensemble._forest.RandomForestClassifier",
        "ObjectNode:sklearn.ensemble._forest.RandomForestRegressor",
        "ObjectNode:sklearn.tree._classes.DecisionTreeClassifier",
        "ObjectNode:sklearn.tree._classes.DecisionTreeRegressor",
        "TreeNode:sklearn.tree._tree.Tree",
        "TypeNode:sklearn.tree._tree.Tree",
    ),
    "extra_trees": (
        "NdArrayNode:numpy.int64",
        "ObjectNode:sklearn.ensemble._forest.ExtraTreesClassifier",
        "ObjectNode:sklearn.ensemble._forest.ExtraTreesRegressor",
        "ObjectNode:sklearn.tree._classes.ExtraTreeClassifier",
        "ObjectNode:sklearn.tree._classes.ExtraTreeRegressor",
        "TreeNode:sklearn.tree._tree.Tree",
        "TypeNode:sklearn.tree._tree.Tree",
    ),
    "gradient_boosting": (
        "LossNode:sklearn._loss._loss.CyAbsoluteError",
        "LossNode:sklearn._loss._loss.CyExponentialLoss",
        "LossNode:sklearn._loss._loss.CyHalfBinomialLoss",
        "LossNode:sklearn._loss._loss.CyHalfSquaredError",
        "LossNode:sklearn._loss._loss.CyHuberLoss",
        "LossNode:sklearn._loss._loss.CyPinballLoss",
        "ObjectNode:sklearn._loss.link.HalfLogitLink",
        "ObjectNode:sklearn._loss.link.IdentityLink",
        "ObjectNode:sklearn._loss.link.Interval",
        "ObjectNode:sklearn._loss.link.LogitLink",
        "ObjectNode:sklearn._loss.loss.AbsoluteError",
        "ObjectNode:sklearn._loss.loss.ExponentialLoss",
        "ObjectNode:sklearn._loss.loss.HalfBinomialLoss",
        "ObjectNode:sklearn._loss.loss.HalfSquaredError",
        "ObjectNode:sklearn._loss.loss.HuberLoss",
        "ObjectNode:sklearn._loss.loss.PinballLoss",
        "ObjectNode:sklearn.dummy.DummyClassifier",
        "ObjectNode:sklearn.dummy.DummyRegressor",
        "ObjectNode:sklearn.ensemble._gb.GradientBoostingClassifier",
        "ObjectNode:sklearn.ensemble._gb.GradientBoostingRegressor",
        "ObjectNode:sklearn.tree._classes.DecisionTreeRegressor",
        "RandomStateNode:numpy.random.mtrand.RandomState",
        "TreeNode:sklearn.tree._tree.Tree",
        "TypeNode:sklearn._loss._loss.CyAbsoluteError",
        "TypeNode:sklearn._loss._loss.CyExponentialLoss",
        "TypeNode:sklearn._loss._loss.CyHalfBinomialLoss",
        "TypeNode:sklearn._loss._loss.CyHalfSquaredError",
        "TypeNode:sklearn._loss._loss.CyHuberLoss",
        "TypeNode:sklearn._loss._loss.CyPinballLoss",
        "TypeNode:sklearn.tree._tree.Tree",
    ),
    "logistic_regression": ("ObjectNode:sklearn.linear_model._logistic.LogisticRegression",),
    "sgd": (
        "LossNode:sklearn._loss._loss.CyHalfBinomialLoss",
        "LossNode:sklearn.linear_model._sgd_fast.ModifiedHuber",
        "ObjectNode:sklearn.linear_model._stochastic_gradient.SGDClassifier",
        "ObjectNode:sklearn.linear_model._stochastic_gradient.SGDRegressor",
        "TypeNode:sklearn._loss._loss.CyHalfBinomialLoss",
        "TypeNode:sklearn.linear_model._sgd_fast.ModifiedHuber",
    ),
    "svm": (
        "ObjectNode:sklearn.calibration.CalibratedClassifierCV",
        "ObjectNode:sklearn.calibration._CalibratedClassifier",
        "ObjectNode:sklearn.calibration._SigmoidCalibration",
        "ObjectNode:sklearn.svm._classes.SVC",
        "ObjectNode:sklearn.svm._classes.SVR",
    ),
    "knn": (
        "ObjectNode:sklearn.neighbors._classification.KNeighborsClassifier",
        "ObjectNode:sklearn.neighbors._regression.KNeighborsRegressor",
    ),
    "mlp": (
        "ObjectNode:sklearn.neural_network._multilayer_perceptron.MLPClassifier",
        "ObjectNode:sklearn.neural_network._multilayer_perceptron.MLPRegressor",
        "ObjectNode:sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "ObjectNode:sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "ObjectNode:sklearn.preprocessing._label.LabelBinarizer",
        "RandomStateNode:numpy.random.mtrand.RandomState",
    ),
    "ridge": ("ObjectNode:sklearn.linear_model._ridge.Ridge",),
    "linear_regression": ("ObjectNode:sklearn.linear_model._base.LinearRegression",),
    "lasso": ("ObjectNode:sklearn.linear_model._coordinate_descent.Lasso",),
    "elastic_net": ("ObjectNode:sklearn.linear_model._coordinate_descent.ElasticNet",),
}
#: Per family, the exact types skops reports as untrusted (`get_untrusted_types`) that we trust.
TRUSTED_TYPES: dict[str, tuple[str, ...]] = {
    "hist_gradient_boosting": (
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    ),
    "random_forest": (
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
    ),
    "extra_trees": (
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
    ),
    "gradient_boosting": (
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
    ),
    "logistic_regression": ("numpy.dtype",),
    "sgd": ("numpy.dtype",),
    "svm": (
        "numpy.dtype",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
    ),
    "knn": ("numpy.dtype",),
    "mlp": (
        "numpy.dtype",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    ),
    "ridge": ("numpy.dtype",),
    "linear_regression": ("numpy.dtype",),
    "lasso": ("numpy.dtype",),
    "elastic_net": ("numpy.dtype",),
}
ALLOWED_NODES: dict[str, frozenset[str]] = {
    family: frozenset(PIPELINE_NODES + extra) for family, extra in FAMILY_NODES.items()
}

SCHEMA = "schema.json"
#: Fixed zip metadata of canonical archives: the DOS epoch, a regular 0600 file, Unix.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


# Inspecting -----------------------------------------------------------------------------------
def _open(data: bytes) -> zipfile.ZipFile:
    """The archive, after checking its members are stored (uncompressed) and unique."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"expected bytes, got {type(data).__name__}")
    archive = zipfile.ZipFile(io.BytesIO(data))
    infos = archive.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise ValueError("duplicate archive members")
    if SCHEMA not in names:
        raise ValueError(f"no {SCHEMA} in the archive")
    compressed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if compressed:  # stored members cannot expand beyond the archive's own size
        raise ValueError(f"compressed members are not allowed: {compressed[:5]}")
    return archive


def _tree(archive: zipfile.ZipFile) -> Any:
    import skops.io  # noqa: F401  (registers every node loader)
    from skops.io._audit import get_tree
    from skops.io._utils import read_schema

    schema, context = read_schema(archive)
    if not isinstance(schema, dict):
        raise ValueError(f"{SCHEMA} is not an object")
    return get_tree(schema, context, trusted=None)


def _nodes(tree: Any) -> set[str]:
    """Every node reachable from `tree`, as `Loader:module.Class` (nothing is constructed)."""
    from skops.io._audit import CachedNode, Node
    from skops.io._utils import get_module

    out: set[str] = set()
    seen: set[int] = set()
    stack: list[Any] = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, Node):
            if id(item) in seen:
                continue
            seen.add(id(item))
            out.add(f"{type(item).__name__}:{item.module_name}.{item.class_name}")
            if isinstance(item, CachedNode):
                stack.append(item.cached)
            stack.extend(item.children.values())
        elif isinstance(item, type):
            out.add(f"type:{get_module(item)}.{item.__name__}")
        # str, bytes buffers and None carry no type
    return out


def inventory(data: bytes) -> tuple[set[str], list[str]]:
    """(every node as `Loader:module.Class`, the types skops does not trust) of an archive.

    Builds skops' node tree only: no object is constructed and no named module is imported.
    Raises ValueError (or what zipfile/json raise) on an unreadable archive.
    """
    with _open(data) as archive:
        tree = _tree(archive)
    return _nodes(tree), sorted(tree.get_unsafe_set())


def _type_name(node: str) -> str:
    return node.split(":", 1)[1]


def check_artifact(data: bytes, what: str, estimator: str | None = None) -> tuple[str, list[str]]:
    """Refuse the artifact unless every node and type is allow-listed for one estimator family.

    Returns (family, the exact untrusted types to pass to skops). Raises IntegrityError naming
    the unknown types, or saying the archive cannot be read.
    """
    try:
        nodes, untrusted = inventory(data)
    except Exception as err:  # a corrupt archive fails in zipfile/json/skops with many types
        raise IntegrityError(f"{what}: not a readable skops artifact: {err}") from err
    families = [estimator] if estimator else list(ALLOWED_NODES)
    for family in families:
        if nodes <= ALLOWED_NODES.get(family, frozenset()) and set(untrusted) <= set(
            TRUSTED_TYPES.get(family, ())
        ):
            return family, untrusted
    known_nodes = frozenset().union(*(ALLOWED_NODES.get(f, frozenset()) for f in families))
    known_types = {t for f in families for t in TRUSTED_TYPES.get(f, ())}
    known_names = {_type_name(n) for n in known_nodes}
    unknown = sorted(
        {
            f"{name} (as {node.split(':', 1)[0]})" if name in known_names else name
            for node in nodes - known_nodes
            for name in [_type_name(node)]
        }
        | (set(untrusted) - known_types)
    )
    if unknown:
        raise IntegrityError(
            f"{what}: artifact contains untrusted types {unknown}; refusing to load "
            f"(only the exact types of a {' / '.join(families)} pipeline are allowed)",
            types=unknown,
            nodes=sorted(nodes - known_nodes),
        )
    raise IntegrityError(
        f"{what}: artifact mixes the types of several estimator families; refusing to load",
        types=sorted(nodes),
    )


#: The family name of a user's own estimator (`specs.CUSTOM_ESTIMATOR`).
CUSTOM = "custom"


def _in_packages(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def _custom_inventory(
    data: bytes, what: str, packages: tuple[str, ...]
) -> tuple[tuple[str, ...], list[str]]:
    """(the archive's types beyond the platform's pipeline types, skops' untrusted types)."""
    try:
        nodes, untrusted = inventory(data)
    except Exception as err:
        raise IntegrityError(f"{what}: not a readable skops artifact: {err}") from err
    known_nodes = frozenset().union(*ALLOWED_NODES.values())
    known_types = {t for types in TRUSTED_TYPES.values() for t in types}
    extra = {_type_name(n) for n in nodes - known_nodes} | (set(untrusted) - known_types)
    outside = sorted(t for t in extra if not _in_packages(t, packages))
    if outside:
        where = ", ".join(packages) if packages else "none: MLOPS_TRUSTED_PACKAGES is not set"
        raise IntegrityError(
            f"{what}: a custom estimator's artifact holds types {outside} from outside the "
            f"trusted packages ({where}); refusing it. Trust a package by naming it in "
            "MLOPS_TRUSTED_PACKAGES wherever models train and load",
            types=outside,
        )
    return tuple(sorted(extra)), untrusted


def custom_types(data: bytes, what: str, packages: tuple[str, ...]) -> tuple[str, ...]:
    """The types of a custom estimator's archive beyond the platform's own pipeline types,
    each of which must come from one of `packages` (the operator's `MLOPS_TRUSTED_PACKAGES`):
    what its version records and `check_custom` trusts. An IntegrityError names any other.
    """
    return _custom_inventory(data, what, packages)[0]


def check_custom(
    data: bytes, what: str, recorded: tuple[str, ...], packages: tuple[str, ...]
) -> list[str]:
    """Refuse a custom estimator's archive unless its types beyond the platform's are exactly
    the ones its version `recorded`, all from the trusted `packages`. Returns the untrusted
    types to pass to skops."""
    found, untrusted = _custom_inventory(data, what, packages)
    if set(found) != set(recorded):
        raise IntegrityError(
            f"{what}: the artifact's own types {list(found)} are not the ones its version "
            f"recorded {list(recorded)}; refusing to load",
            types=sorted(set(found) ^ set(recorded)),
        )
    return untrusted


def load_artifact(
    data: bytes,
    what: str,
    estimator: str | None = None,
    custom: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> Any:
    """Load skops bytes after `check_artifact` (a custom estimator: `check_custom` with
    `custom`, its (recorded types, trusted packages)); never pickle. Any failure is an
    IntegrityError."""
    import skops.io as sio

    if estimator == CUSTOM:
        if custom is None:
            raise IntegrityError(f"{what}: a custom estimator's version records no types")
        untrusted = check_custom(data, what, *custom)
    else:
        _, untrusted = check_artifact(data, what, estimator)
    try:
        obj = sio.loads(bytes(data), trusted=untrusted)
    except Exception as err:
        raise IntegrityError(f"{what}: not a loadable skops artifact: {err}") from err
    problem = tree_problem(obj)
    if problem:
        raise IntegrityError(f"{what}: {problem}; refusing to load", problem=problem)
    return obj


# Trees ----------------------------------------------------------------------------------------
def tree_problem(obj: Any) -> str | None:
    """What is wrong with the trees inside `obj`, or None.

    A decision tree's node array holds child and feature indices that scikit-learn follows at
    predict time without bounds checks, so a crafted (trusted-type) tree could read outside its
    arrays. Every tree reachable from `obj` must be well formed: internal nodes point to later
    nodes (no cycles) inside the array, split on a feature the estimator has, and leaves have no
    children.
    """
    import numpy as np

    seen: set[int] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, list | tuple):
            stack.extend(item)
            continue
        if isinstance(item, dict):
            stack.extend(item.values())
            continue
        attrs = getattr(item, "__dict__", None)
        if not isinstance(attrs, dict) or not type(item).__module__.startswith("sklearn."):
            continue
        n_features = attrs.get("n_features_in_")
        tree = attrs.get("tree_")
        if tree is not None:
            problem = _sklearn_tree_problem(np, tree, n_features)
            if problem:
                return f"{type(item).__name__}.tree_: {problem}"
        for i, predictors in enumerate(attrs.get("_predictors") or []):
            for j, predictor in enumerate(predictors):
                problem = _predictor_problem(np, predictor, n_features)
                if problem:
                    return f"{type(item).__name__}._predictors[{i}][{j}]: {problem}"
        stack.extend(v for k, v in attrs.items() if k not in ("tree_", "_predictors"))
    return None


def _links_problem(np: Any, left: Any, right: Any, internal: Any, n: int) -> str | None:
    index = np.arange(n)
    if (left[~internal] != -1).any() or (right[~internal] != -1).any():
        return "a leaf has children"
    for child in (left[internal], right[internal]):
        if ((child <= index[internal]) | (child >= n)).any():
            return "a node points outside the tree or back up it"
    return None


def _sklearn_tree_problem(np: Any, tree: Any, n_features: Any) -> str | None:
    from sklearn.tree._tree import Tree

    if not isinstance(tree, Tree) or not isinstance(n_features, int | np.integer):
        return "not a tree of an estimator with a known number of features"
    n = int(tree.node_count)
    left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
    feature, value = np.asarray(tree.feature), np.asarray(tree.value)
    if n < 1 or not len(left) == len(right) == len(feature) == value.shape[0] == n:
        return "node arrays of different lengths"
    internal = left != -1
    if ((feature[internal] < 0) | (feature[internal] >= n_features)).any():
        return f"a split on a feature outside 0-{int(n_features) - 1}"
    return _links_problem(np, left, right, internal, n)


def _predictor_problem(np: Any, predictor: Any, n_features: Any) -> str | None:
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

    if not isinstance(predictor, TreePredictor) or not isinstance(n_features, int | np.integer):
        return "not a tree of an estimator with a known number of features"
    nodes = predictor.nodes
    n = len(nodes)
    if n < 1:
        return "an empty tree"
    internal = nodes["is_leaf"] == 0
    left = np.where(internal, nodes["left"].astype(np.int64), -1)
    right = np.where(internal, nodes["right"].astype(np.int64), -1)
    feature = nodes["feature_idx"][internal].astype(np.int64)
    if ((feature < 0) | (feature >= n_features)).any():
        return f"a split on a feature outside 0-{int(n_features) - 1}"
    categorical = internal & (nodes["is_categorical"] != 0)
    bitsets = min(len(predictor.binned_left_cat_bitsets), len(predictor.raw_left_cat_bitsets))
    if (nodes["bitset_idx"][categorical].astype(np.int64) >= bitsets).any():
        return "a categorical split outside the tree's bitsets"
    return _links_problem(np, left, right, internal, n)


# Writing --------------------------------------------------------------------------------------
def _is_node(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(value.get(k), str) for k in ("__class__", "__module__", "__loader__")
    )


def canonicalize(data: bytes) -> bytes:
    """The same skops archive with ids, member names and zip metadata made deterministic.

    Object ids become 1, 2, 3... and member files `<n>.npy`/`.bin`/... in the order the schema
    first mentions them (JSON values lose their ids: skops only uses ids to share one object
    between references, which changes nothing for an immutable value); members are written in
    that order with a fixed timestamp and mode. The schema's key order is kept: it is the
    construction order of dicts and attributes.
    """
    with _open(data) as archive:
        schema = json.loads(archive.read(SCHEMA))
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    ids: dict[int, int] = {}
    files: dict[str, str] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        node = _is_node(value)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if node and key == "__id__" and value["__loader__"] == "JsonNode":
                continue  # a JSON value is immutable: its identity means nothing on load
            if node and key == "__id__" and isinstance(item, int) and not isinstance(item, bool):
                out[key] = ids.setdefault(item, len(ids) + 1)
            elif node and key == "file" and isinstance(item, str):
                if item not in members or item == SCHEMA:
                    raise ValueError(f"schema names a missing member {item!r}")
                suffix = item.rsplit(".", 1)[-1] if item.endswith((".npy", ".npz")) else "bin"
                out[key] = files.setdefault(item, f"{len(files) + 1}.{suffix}")
            else:
                out[key] = walk(item)
        return out

    canonical = walk(schema)
    orphans = sorted(set(members) - set(files) - {SCHEMA})
    if orphans:
        raise ValueError(f"archive members the schema does not use: {orphans[:5]}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as out:
        entries = [(new, members[old]) for old, new in files.items()]
        entries.append((SCHEMA, json.dumps(canonical, indent=2).encode()))
        for name, payload in entries:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o100600 << 16
            out.writestr(info, payload)
    return buffer.getvalue()


def dump_artifact(obj: Any) -> bytes:
    """Serialise with skops, canonically: identical objects give identical bytes."""
    import skops.io as sio

    return canonicalize(sio.dumps(obj))


# Deriving the allow-lists --------------------------------------------------------------------
#: Settings beyond single choices: those that only go together (`specs.check_params` refuses
#: them one by one) and numbers that change what is stored (k-NN's `p` picks the metric).
_EXTRA_VARIANTS: dict[str, tuple[dict[str, Any], ...]] = {
    "logistic_regression": (
        {"penalty": "l1", "solver": "saga"},
        {"penalty": "elasticnet", "solver": "saga", "l1_ratio": 0.5},
    ),
    "sgd": ({"penalty": "elasticnet", "l1_ratio": 0.5},),
    "knn": ({"p": 1},),
    "gradient_boosting": ({"subsample": 0.5},),
}
#: Fewer rounds than the defaults, for speed: the stored types do not depend on them.
_QUICK: dict[str, dict[str, Any]] = {
    "hist_gradient_boosting": {"max_iter": 10},
    "random_forest": {"n_estimators": 5},
    "extra_trees": {"n_estimators": 5},
    "gradient_boosting": {"n_estimators": 10},
    "mlp": {"max_iter": 20, "hidden_units": 8},
}


def _variants() -> list[tuple[str, str, dict[str, Any]]]:
    """(family, task, params): each family for each task it serves, with its defaults and with
    every value of each of its choices (enums, booleans), since a setting can add types (a loss
    object, a calibrator)."""
    from mlops_tasks.specs import ESTIMATORS, check_params

    out: list[tuple[str, str, dict[str, Any]]] = []
    for family, info in ESTIMATORS.items():
        for task in info.tasks:
            settings: list[dict[str, Any]] = [{}, *_EXTRA_VARIANTS.get(family, ())]
            for name, rule in info.rules(task).items():
                values = [True, False] if rule.type == "boolean" else rule.enum or []
                settings.extend({name: v} for v in values)
            for setting in settings:
                params = {**_QUICK.get(family, {}), **setting}
                try:
                    check_params(family, params, task)
                except ValueError:
                    continue  # a value that needs another setting (see _EXTRA_VARIANTS)
                out.append((family, task, params))
    return out


def _fit(family: str, task: str, params: dict[str, Any], seed: int = 7) -> Any:
    """A `build_pipeline` pipeline of `family` fitted on small synthetic data with nulls."""
    import numpy as np
    import pandas as pd

    from mlops_tasks.model.modelling import build_pipeline, prepare_features
    from mlops_tasks.specs import ModelSpec

    rng = np.random.default_rng(seed)
    n = 240
    df = pd.DataFrame({"x1": rng.normal(size=n), "x2": rng.exponential(size=n)})
    df["c1"] = rng.choice(["a", "b", "c"], size=n)
    df.loc[::13, "x1"] = np.nan
    df.loc[::11, "c1"] = None
    classification = task == "classification"
    y = (
        (df["x2"].to_numpy() + rng.normal(size=n) > 1.0).astype(int)
        if classification
        else (rng.normal(size=n))
    )
    spec = ModelSpec.model_validate(
        {
            "name": "allow_list",
            "task": task,
            "data": {"source": "file:///dev/null"},
            "target": "y",
            "features": {"numeric": ["x1", "x2"], "categorical": ["c1"]},
            "model": {"estimator": family, "params": params, "seed": seed},
            "evaluation": {"primary_metric": "roc_auc" if classification else "rmse"},
        }
    )
    with single_thread():
        return build_pipeline(spec).fit(prepare_features(spec, df), y)


Lists = tuple[tuple[str, ...], dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]


def derive_allow_lists() -> Lists:
    """(PIPELINE_NODES, FAMILY_NODES, TRUSTED_TYPES) from real fitted pipelines, as installed."""
    import skops.io as sio

    nodes: dict[str, set[str]] = {}
    types: dict[str, set[str]] = {}
    for family, task, params in _variants():
        data = sio.dumps(_fit(family, task, params))
        nodes.setdefault(family, set()).update(inventory(data)[0])
        types.setdefault(family, set()).update(sio.get_untrusted_types(data=data))
    common = set.intersection(*nodes.values())
    return (
        tuple(sorted(common)),
        {f: tuple(sorted(n - common)) for f, n in nodes.items()},
        {f: tuple(sorted(t)) for f, t in types.items()},
    )


if __name__ == "__main__":  # pragma: no cover - regenerates the constants above
    import pprint

    pipeline, family_nodes, trusted = derive_allow_lists()
    print("PIPELINE_NODES =", pprint.pformat(pipeline, width=100))
    print("FAMILY_NODES =", pprint.pformat(family_nodes, width=100))
    print("TRUSTED_TYPES =", pprint.pformat(trusted, width=100))
