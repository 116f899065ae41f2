"""A user's own estimator classes, as a team would keep them in its package, for the tests of
`model.estimator: custom` (`tests/integration/test_custom_estimator.py`).

`ShrunkenCentroidClassifier` is a real classifier (nearest shrunken centroids, Tibshirani et
al. 2002, with a softmax over distances for probabilities); the others are what a careless or
hostile package could hand the platform.
"""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin


class ShrunkenCentroidClassifier(ClassifierMixin, BaseEstimator):
    """Each class is its centroid, shrunk toward the overall mean by `shrinkage`; a row's class
    probabilities are a softmax of its negative squared distances over `temperature`."""

    def __init__(self, shrinkage: float = 0.0, temperature: float = 1.0) -> None:
        self.shrinkage = shrinkage
        self.temperature = temperature

    def fit(self, features: Any, y: Any, sample_weight: Any = None) -> ShrunkenCentroidClassifier:
        features = np.asarray(features, dtype=float)
        y = np.asarray(y)
        weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
        self.classes_ = np.unique(y)
        overall = np.average(features, axis=0, weights=weights)
        centroids = np.vstack(
            [np.average(features[y == c], axis=0, weights=weights[y == c]) for c in self.classes_]
        )
        self.centroids_ = overall + (1.0 - self.shrinkage) * (centroids - overall)
        self.n_features_in_ = features.shape[1]
        return self

    def predict_proba(self, features: Any) -> np.ndarray:
        features = np.asarray(features, dtype=float)
        distance = ((features[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        logits = -distance / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        out: np.ndarray = odds / odds.sum(axis=1, keepdims=True)
        return out

    def predict(self, features: Any) -> np.ndarray:
        out: np.ndarray = self.classes_[self.predict_proba(features).argmax(axis=1)]
        return out


class HookedClassifier(ShrunkenCentroidClassifier):
    """Keeps a callable from outside its package in its fitted state: loading it would hand
    `builtins.eval` to whoever next reads the attribute."""

    def fit(self, features: Any, y: Any, sample_weight: Any = None) -> HookedClassifier:
        super().fit(features, y, sample_weight)
        self.hook_ = builtins.eval
        return self


class MeanRegressor(RegressorMixin, BaseEstimator):
    """Predicts the training mean: a regressor, so not a classifier."""

    def fit(self, features: Any, y: Any) -> MeanRegressor:
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, features: Any) -> np.ndarray:
        return np.full(len(features), self.mean_)


class NeedsArguments(ClassifierMixin, BaseEstimator):
    """A constructor argument without a default: scikit-learn cannot clone it."""

    def __init__(self, depth: int) -> None:
        self.depth = depth


class NotAnEstimator:
    """A class, but not a scikit-learn estimator."""
