"""What a model version saw at training, and the serving checks built from it.

Every version stores `profile.json` beside its model: for each numeric feature the smallest and
largest finite value, the null share and a few quantiles; for each categorical feature the
categories seen with their counts (the `MAX_CATEGORIES` most frequent, the rest summed as
`other`). It is computed on `prepare_features`' canonical form, the form the model sees, so the
prediction service compares like with like.

The service turns a profile into `FeatureChecks`: a value of a categorical feature that training
never saw, or a number outside the training [min, max], is a data issue. Such rows are still
scored (the pipeline ignores unknown categories and trees extrapolate flat); they are counted
and flagged so that a new category or a shifted range shows up at once, not only at the next
monitor run. Versions registered before profiles existed have none: they keep serving, with the
categories their fitted encoder knows and no range check.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_tasks.errors import DataError, NotFoundError
from mlops_tasks.model.modelling import prepare_features
from mlops_tasks.registry import Registry
from mlops_tasks.storage import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd

    from mlops_tasks.specs import ModelSpec

log = logging.getLogger(__name__)

PROFILE_FILE = "profile.json"
FORMAT = 1
MAX_CATEGORIES = 1000  # per feature; a profile stays small whatever the cardinality
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
UNSEEN = "unseen"  # flag prefixes in the inference log: "unseen:region", "range:age"
RANGE = "range"


# Profile ------------------------------------------------------------------------------------
def feature_profile(spec: ModelSpec, features: pd.DataFrame) -> dict[str, Any]:
    """The profile of `features`, the output of `prepare_features(spec, train)`.

    Only finite numbers count towards min, max and quantiles (nulls are their own share), so
    the document is always valid JSON."""
    return {
        "format": FORMAT,
        "rows": len(features),
        "numeric": {c: _numeric(features[c]) for c in spec.features.numeric},
        "categorical": {c: _categorical(features[c]) for c in spec.features.categorical},
    }


def _numeric(col: pd.Series) -> dict[str, Any]:
    values = col.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    out: dict[str, Any] = {"null_share": _share(int(np.isnan(values).sum()), len(values))}
    if finite.size == 0:
        return {**out, "min": None, "max": None, "quantiles": {}}
    qs = np.quantile(finite, QUANTILES)
    return {
        **out,
        "min": float(finite.min()),
        "max": float(finite.max()),
        "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
    }


def _categorical(col: pd.Series) -> dict[str, Any]:
    present = col.dropna()
    counts = present.astype(str).value_counts(sort=False)
    ranked = sorted(((str(k), int(n)) for k, n in counts.items()), key=lambda kv: (-kv[1], kv[0]))
    kept = ranked[:MAX_CATEGORIES]
    return {
        "null_share": _share(len(col) - len(present), len(col)),
        "distinct": len(ranked),
        "categories": dict(kept),
        "other": sum(n for _, n in ranked[MAX_CATEGORIES:]),
    }


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def encode_profile(profile: dict[str, Any]) -> bytes:
    """The stored form; refuses NaN and infinities rather than write invalid JSON."""
    return (json.dumps(profile, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()


def profile_file(spec: ModelSpec, train: pd.DataFrame) -> dict[str, bytes]:
    """`{"profile.json": ...}` of the training split `train` (raw rows; prepared here), for
    the `files` a version is registered with."""
    return {PROFILE_FILE: encode_profile(feature_profile(spec, prepare_features(spec, train)))}


def load_profile(
    source: Registry | ArtifactStore, model: str, version: int
) -> dict[str, Any] | None:
    """The version's profile; None for a version registered before profiles existed.

    A profile that is not one (bad JSON, another format) is a DataError naming its URI."""
    registry = source if isinstance(source, Registry) else Registry(source)
    try:
        data = registry.read_file(model, version, PROFILE_FILE)
    except NotFoundError:
        return None
    uri = registry.version_uri(model, version, PROFILE_FILE)
    try:
        doc = json.loads(data)
    except ValueError as err:
        raise DataError(f"{uri}: not valid JSON: {err}", model=model, version=version) from err
    if problem := _shape_problem(doc):
        raise DataError(
            f"{uri}: not a feature profile of format {FORMAT}: {problem}",
            model=model,
            version=version,
        )
    return doc


def _shape_problem(doc: Any) -> str | None:
    """What makes `doc` unusable as a profile (the checks read these fields), or None."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return "no matching `format`"
    numeric, categorical = doc.get("numeric"), doc.get("categorical")
    if not isinstance(numeric, dict) or not isinstance(categorical, dict):
        return "`numeric` and `categorical` must be objects"
    for f, entry in numeric.items():
        bounds = [entry.get(k) for k in ("min", "max")] if isinstance(entry, dict) else [""]
        if not all(
            b is None or (isinstance(b, int | float) and not isinstance(b, bool)) for b in bounds
        ):
            return f"numeric.{f}: `min` and `max` must be numbers or null"
    for f, entry in categorical.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("categories"), dict):
            return f"categorical.{f}: `categories` must be an object"
        if not isinstance(entry.get("other", 0), int):
            return f"categorical.{f}: `other` must be a count"
    return None


# Checks -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataIssues:
    """What one batch of request rows holds that training never saw.

    `unseen` and `out_of_range` count flagged values per feature (features without any are
    left out); `flags` maps each flagged row's position to its flags, e.g.
    `("unseen:region", "range:age")`. Clean rows are not in `flags`."""

    unseen: dict[str, int] = field(default_factory=dict)
    out_of_range: dict[str, int] = field(default_factory=dict)
    flags: dict[int, tuple[str, ...]] = field(default_factory=dict)


class FeatureChecks:
    """Known categories and ranges per feature, checked a request batch at a time.

    `categories` maps a categorical feature to the values training saw; `ranges` a numeric one
    to its training (min, max). Features in neither are not checked."""

    def __init__(
        self,
        categories: dict[str, frozenset[str]],
        ranges: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        ranges = ranges or {}
        self.categories = categories
        self.ranged = tuple(ranges)
        self.low = np.array([lo for lo, _ in ranges.values()], dtype=float)
        self.high = np.array([hi for _, hi in ranges.values()], dtype=float)
        self._wanted = frozenset(categories) | frozenset(ranges)
        # flag names in the order of `check`'s columns: ranges first, then categories
        self._labels = [f"{RANGE}:{f}" for f in self.ranged] + [f"{UNSEEN}:{f}" for f in categories]
        self._names = np.array(self._labels, dtype=object)

    @classmethod
    def build(cls, spec: ModelSpec, profile: dict[str, Any] | None, model: Any) -> FeatureChecks:
        """Checks from the version's profile. Without one (older versions), or for a feature
        whose profile lists only the most frequent categories, the fitted encoder's categories
        stand in; ranges come from the profile only."""
        encoder = _encoder_categories(spec, model)
        categories: dict[str, frozenset[str]] = {}
        ranges: dict[str, tuple[float, float]] = {}
        seen_cat = (profile or {}).get("categorical", {})
        seen_num = (profile or {}).get("numeric", {})
        for f in spec.features.categorical:
            entry = seen_cat.get(f)
            if entry is not None and not entry.get("other"):
                categories[f] = frozenset(entry.get("categories", {}))
            elif f in encoder:
                categories[f] = encoder[f]
        for f in spec.features.numeric:
            entry = seen_num.get(f) or {}
            if entry.get("min") is not None and entry.get("max") is not None:
                ranges[f] = (float(entry["min"]), float(entry["max"]))
        return cls(categories, ranges)

    def check(self, x: pd.DataFrame) -> DataIssues:
        """Flag the values of `x` (a `records_frame`) outside what training saw. Nulls are
        never flagged: they are missing, not unseen."""
        import pandas as pd

        # One pass over the frame's columns: indexing a frame column by column, or selecting
        # a sub-frame, costs more than the checks themselves on a small request.
        cols = {c: s.to_numpy() for c, s in x.items() if c in self._wanted}
        parts: list[np.ndarray] = []
        if self.ranged:
            values = np.column_stack([cols[f] for f in self.ranged]).astype(float, copy=False)
            with np.errstate(invalid="ignore"):  # NaN compares False: not out of range
                parts.append((values < self.low) | (values > self.high))
        for f, known in self.categories.items():
            col = cols[f]
            # A set lookup per value: at 1 to 10,000 rows, faster than pandas' hash-table calls.
            unknown = np.fromiter((v not in known for v in col), dtype=bool, count=len(col))
            parts.append((unknown & pd.notna(col))[:, None])
        if not parts:
            return DataIssues()
        flagged = np.hstack(parts)
        counts = flagged.sum(axis=0)
        if not counts.any():
            return DataIssues()
        unseen: dict[str, int] = {}
        out_of_range: dict[str, int] = {}
        for label, n in zip(self._labels, counts.tolist(), strict=True):
            if n:
                kind, feature = label.split(":", 1)
                (unseen if kind == UNSEEN else out_of_range)[feature] = int(n)
        flags = {
            int(i): tuple(self._names[flagged[i]].tolist())
            for i in np.flatnonzero(flagged.any(axis=1))
        }
        return DataIssues(unseen, out_of_range, flags)


def _encoder_categories(spec: ModelSpec, model: Any) -> dict[str, frozenset[str]]:
    """The categories the fitted pipeline's one-hot encoder knows, per feature; empty when the
    model is not the pipeline `modelling.build_pipeline` makes."""
    try:
        pre = model.named_steps["preprocess"]
        names = next(cols for name, _, cols in pre.transformers_ if name == "categorical")
        cats = pre.named_transformers_["categorical"].named_steps["encode"].categories_
    except (AttributeError, KeyError, TypeError, StopIteration):
        return {}
    return {
        f: frozenset(str(c) for c in values)
        for f, values in zip(names, cats, strict=False)
        if f in spec.features.categorical
    }
