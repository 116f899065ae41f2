"""One exception hierarchy for the whole package.

Every error carries the context a person needs to act on it (file, field, URI, metric,
threshold, report) and its own retry policy: `retryable` says whether running the same step
again may succeed (a store hiccup) or is bound to fail the same way (bad data, a failed gate).
The Airflow adapter reads that attribute; nothing here knows Airflow.
"""

from __future__ import annotations

from typing import Any


class MlopsError(Exception):
    """Root of every error raised on purpose by mlops_tasks."""

    exit_code = 1
    #: Whether the same call may succeed when tried again (transient infrastructure trouble).
    retryable = False

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return self.message


class SpecError(MlopsError):
    """A model spec file is missing, unreadable or does not match the schema."""

    exit_code = 11


class UsageError(MlopsError):
    """A command or step was called with arguments that cannot work together."""

    exit_code = 2


class StepSkipped(MlopsError):
    """A flow step has nothing to do (no production version to monitor, no retrain decided).

    Not a failure: the runner stops the flow there and Airflow marks the task skipped.
    """

    exit_code = 0


class StoreError(MlopsError):
    """The artifact store failed or was given a bad URI."""

    retryable = True


class NotFoundError(StoreError):
    """A key, model, version or alias does not exist."""

    exit_code = 3
    retryable = False


class ConcurrentUpdateError(StoreError):
    """A compare-and-swap lost a race: the object changed since it was read."""

    exit_code = 4


class IntegrityError(MlopsError):
    """An artifact's checksum or types do not match what the registry recorded."""

    exit_code = 5


class RegistryError(MlopsError):
    """An operation on the model registry is not allowed (e.g. promoting a rejected version)."""

    exit_code = 6


class DataError(MlopsError):
    """A table cannot be read or does not have the expected shape."""

    exit_code = 7


class DataValidationError(MlopsError):
    """Data failed its Great Expectations suite; `report_uri` holds the evidence."""

    exit_code = 8


class GateFailed(MlopsError):
    """A candidate model failed its evaluation gate; it was marked rejected."""

    exit_code = 9


class DeploymentError(MlopsError):
    """A deployed version could not be verified; production was rolled back."""

    exit_code = 10


class NotReproducible(MlopsError):
    """A version rebuilt from its lineage gave different predictions or artifact bytes."""

    exit_code = 12


class IncompatibleModel(MlopsError):
    """A model brought from elsewhere does not fit its spec (features, classes, task)."""

    exit_code = 14


class UnknownModel(NotFoundError):
    """A command named a model with no spec in the spec directory and nothing in the store."""

    exit_code = 13
