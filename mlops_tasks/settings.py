"""Deployment settings: read once from the environment into one object, then passed down.

This is the only module that reads `os.environ`. Everything a model needs is in its spec;
everything a deployment needs (where the store is, who acts, where the prediction service
runs) is here. Each variable is listed in the README's configuration table.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_tasks import __version__
from mlops_tasks.errors import UsageError

if TYPE_CHECKING:
    from mlops_tasks.signing import Keyring
    from mlops_tasks.storage import ArtifactStore, S3Credentials

REPO = Path(__file__).resolve().parent.parent

#: Every environment variable the package reads, with what it means (README table).
VARIABLES = {
    "MLOPS_STORE": "artifact store: file:///path or s3://bucket/prefix",
    "MLOPS_SPEC_DIR": "directory of model specs",
    "MLOPS_ACTOR": "who the CLI records as acting",
    "MLOPS_SERVING_URL": "where deploy verification finds the prediction service",
    "MLOPS_SERVING_TOKEN": "bearer token of the service's /admin/reload",
    "MLOPS_SERVING_THREADS": "OpenMP/BLAS threads per prediction in the service",
    "MLOPS_TRAIN_THREADS": "OpenMP/BLAS threads of a training fit (default 1)",
    "MLOPS_SERVING_API_TOKEN": "bearer token(s) for predict, feedback and /metrics",
    "MLOPS_SERVING_MAX_BODY_BYTES": "largest request body the service reads",
    "MLOPS_SERVING_MAX_STRING_LENGTH": "longest text field the service accepts",
    "MLOPS_SERVING_FEEDBACK_WINDOW": "how many recent request ids accept feedback",
    "MLOPS_SERVING_WORKERS": "worker processes of `mlops serve` (`--workers` wins)",
    "MLOPS_GIT_SHA": "code version recorded in lineage when git is not available",
    "MLOPS_SIGNING_KEY": "key (HMAC or Ed25519) that signs the registry's documents and events",
    "MLOPS_SIGNING_PREVIOUS_KEYS": "earlier signing keys still accepted (comma-separated)",
    "MLOPS_VERIFY_KEYS": "Ed25519 public keys that check signatures without making them",
    "MLOPS_SIGNING_CONN_ID": "Airflow connection whose password is the signing key",
    "AWS_ENDPOINT_URL": "S3-compatible endpoint (MinIO, ...); credentials from the AWS chain",
    "MLOPS_AWS_CONN_ID": "Airflow connection (type aws) with the S3 store's keys and endpoint",
    "MLOPS_POOL": "Airflow pool every model task runs in (a spec's schedule.pool wins)",
    "MLOPS_TRUSTED_PACKAGES": "packages a custom estimator may come from (comma-separated)",
    "AIRFLOW__API__BASE_URL": "the Airflow UI's address; the CLI links reports through it",
}


def _default_store_uri() -> str:
    base = REPO if (REPO / "pyproject.toml").exists() else Path.cwd()
    return (base / ".mlops").as_uri()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def check_signing_key(key: str, source: str) -> str:
    """`key` if it is a key to sign with (an HMAC secret of `signing.MIN_SIGNING_KEY` or more
    characters, or an Ed25519 key); `source` names where it came from."""
    from mlops_tasks.signing import parse_key

    parse_key(key, source)
    return key


def previous_signing_keys(raw: str, source: str) -> tuple[str, ...]:
    """Comma-separated earlier keys, each checked like the current one."""
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    return tuple(check_signing_key(k, f"each key of {source}") for k in keys)


def _verify_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    from mlops_tasks.signing import check_verify_keys

    return check_verify_keys(env.get("MLOPS_VERIFY_KEYS") or "", "MLOPS_VERIFY_KEYS")


def _trusted_packages(env: Mapping[str, str]) -> tuple[str, ...]:
    """`MLOPS_TRUSTED_PACKAGES`: top-level package names, each one a custom estimator's class
    path may start with (`specs.check_class_path` refuses the standard library's)."""
    from mlops_tasks.specs import check_class_path

    names = [n.strip() for n in (env.get("MLOPS_TRUSTED_PACKAGES") or "").split(",") if n.strip()]
    for name in names:
        if not name.isidentifier():
            raise UsageError(
                f"MLOPS_TRUSTED_PACKAGES: {name[:80]!r} is not a top-level package name"
            )
        try:
            check_class_path(f"{name}.Estimator")
        except ValueError as err:
            raise UsageError(f"MLOPS_TRUSTED_PACKAGES: {err}") from None
    return tuple(dict.fromkeys(names))


def _signing_key(env: Mapping[str, str]) -> str | None:
    key = env.get("MLOPS_SIGNING_KEY") or None
    return None if key is None else check_signing_key(key, "MLOPS_SIGNING_KEY")


#: The serving API's bearer tokens are as guessable as they are short.
MIN_API_TOKEN = 16
API_TOKEN_ENV = "MLOPS_SERVING_API_TOKEN"


def api_token_entries(value: str | Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The (name, token) pairs of `MLOPS_SERVING_API_TOKEN`: comma-separated entries, each
    `TOKEN` or `NAME:TOKEN` (name "" when it has none).

    A value that cannot be what was meant is a UsageError naming the variable, the entry and
    what is wrong, never the token: one that holds no entry (`" "`, `","`), which would
    silently turn auth off; an empty entry; nothing before or after the ':'; a token shorter
    than `MIN_API_TOKEN` characters.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    if not any(item.strip() for item in items):
        raise UsageError(
            f"{API_TOKEN_ENV} is set but holds no token; unset it to turn bearer auth off"
        )
    entries = []
    for i, raw in enumerate(items, 1):
        where = f"{API_TOKEN_ENV}: entry {i} of {len(items)}"
        item = raw.strip()
        if not item:
            raise UsageError(f"{where} is empty (a stray comma?); entries are TOKEN or NAME:TOKEN")
        name, sep, token = item.partition(":")
        name, token = (name.strip(), token.strip()) if sep else ("", item)
        if sep and not name:
            raise UsageError(f"{where} has nothing before ':' (NAME:TOKEN, or the token alone)")
        if name:
            where += f" ({name})"
        if not token:
            raise UsageError(f"{where} has no token after ':'")
        if len(token) < MIN_API_TOKEN:
            raise UsageError(
                f"{where}: the token is shorter than {MIN_API_TOKEN} characters "
                "(e.g. `openssl rand -hex 32`)"
            )
        entries.append((name, token))
    return tuple(entries)


def _reload_token(env: Mapping[str, str]) -> str | None:
    """`MLOPS_SERVING_TOKEN`, the bearer token of the service's /admin/reload, checked at
    start: a blank one would look set and match nothing, a short one is guessable."""
    raw = env.get("MLOPS_SERVING_TOKEN")
    if raw is None or raw == "":
        return None
    token = raw.strip()
    if not token:
        raise UsageError("MLOPS_SERVING_TOKEN is set but blank; unset it to turn /admin/reload off")
    if len(token) < MIN_API_TOKEN:
        raise UsageError(
            f"MLOPS_SERVING_TOKEN: the token is shorter than {MIN_API_TOKEN} characters "
            "(e.g. `openssl rand -hex 32`)"
        )
    return token


def _api_tokens(env: Mapping[str, str]) -> str | None:
    raw = env.get(API_TOKEN_ENV) or None
    if raw is not None:
        api_token_entries(raw)  # refused at start, not at the first request
    return raw


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, as a container's cpuset sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _int(env: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise UsageError(f"{name} must be an integer from {low} to {high}, got {raw!r}")
    return int(raw)


def _spec_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("MLOPS_SPEC_DIR") or REPO / "dags" / "specs")


def _pool(env: Mapping[str, str]) -> str | None:
    return (env.get("MLOPS_POOL") or "").strip() or None


@dataclass(frozen=True)
class ParseSettings:
    """What the DAG files read when Airflow parses them: where the specs are and the pool.

    Nothing else, on purpose: the dag-processor drops every DAG of a file whose parse fails, so
    a bad deployment setting (a serving token, a signing key) read at parse time would
    unschedule every model. Such a setting fails the tasks that need it, and
    `dags/mlops_spec_errors.py` reports it as its import error.
    """

    spec_dir: Path
    airflow_pool: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ParseSettings:
        env = os.environ if env is None else env
        return cls(spec_dir=_spec_dir(env), airflow_pool=_pool(env))


@dataclass(frozen=True)
class Settings:
    """Where things are and who acts; built once per process by `Settings.from_env()`."""

    store_uri: str
    spec_dir: Path
    actor: str
    serving_url: str | None = None
    serving_token: str | None = None
    serving_threads: int = 1
    serving_api_tokens: str | None = None
    serving_max_body_bytes: int | None = None
    serving_max_string_length: int | None = None
    serving_feedback_window: int | None = None
    serving_workers: int = 1
    #: Threads a training fit may use; recorded with the version, which `reproduce` refits
    #: with (gradient-boosted trees store the count and sum in parallel).
    train_threads: int = 1
    git_sha: str | None = None
    aws_endpoint_url: str | None = None
    #: Named explicitly: the connection must exist. None: `aws_default` if it exists.
    aws_conn_id: str | None = None
    airflow_pool: str | None = None
    #: Signs the registry's documents and audit events when set (`mlops_tasks/registry/`);
    #: kept out of repr and logs.
    signing_key: str | None = field(default=None, repr=False)
    #: Keys signed with before a rotation: still accepted, never signed with.
    signing_previous_keys: tuple[str, ...] = field(default=(), repr=False)
    #: Ed25519 public keys (`MLOPS_VERIFY_KEYS`): accepted; without `signing_key`, this
    #: process checks every signature and can make none (the prediction service).
    verify_keys: tuple[str, ...] = ()
    #: An Airflow connection that holds the signing key; the Airflow layer reads it
    #: (`plugins/mlops_airflow.py`) and hands the key over as `signing_key`.
    signing_conn_id: str | None = None
    #: Airflow's `[api] base_url` (the UI's address as people open it): the CLI prints the
    #: Models view's link to a report instead of its store URI when it is set.
    ui_base_url: str | None = None
    #: Packages a custom estimator's stored types may come from (`MLOPS_TRUSTED_PACKAGES`),
    #: like Airflow's `allowed_deserialization_classes`: nothing else is rebuilt from a model.
    trusted_packages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from mlops_tasks.signing import PUBLIC_PREFIX

        signs = bool(self.signing_key or self.signing_conn_id)
        if self.signing_previous_keys and not (signs or self.verify_keys):
            raise UsageError(
                "MLOPS_SIGNING_PREVIOUS_KEYS needs a current key (MLOPS_SIGNING_KEY or "
                "MLOPS_SIGNING_CONN_ID to sign with, or MLOPS_VERIFY_KEYS to check with)"
            )
        if not signs and any(not k.startswith(PUBLIC_PREFIX) for k in self.signing_previous_keys):
            raise UsageError(
                "with MLOPS_VERIFY_KEYS and no MLOPS_SIGNING_KEY, MLOPS_SIGNING_PREVIOUS_KEYS "
                f"holds public keys only ({PUBLIC_PREFIX}...): an HMAC or private key there "
                "could forge the signatures this process only checks"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            store_uri=env.get("MLOPS_STORE") or _default_store_uri(),
            spec_dir=_spec_dir(env),
            actor=env.get("MLOPS_ACTOR") or _os_user(),
            serving_url=env.get("MLOPS_SERVING_URL") or None,
            serving_token=_reload_token(env),
            serving_threads=_int(env, "MLOPS_SERVING_THREADS", 1, 256) or 1,
            serving_api_tokens=_api_tokens(env),
            serving_max_body_bytes=_int(env, "MLOPS_SERVING_MAX_BODY_BYTES", 1, 2**40),
            serving_max_string_length=_int(env, "MLOPS_SERVING_MAX_STRING_LENGTH", 1, 2**30),
            serving_feedback_window=_int(env, "MLOPS_SERVING_FEEDBACK_WINDOW", 1, 10**8),
            serving_workers=_int(env, "MLOPS_SERVING_WORKERS", 1, 64) or 1,
            train_threads=_int(env, "MLOPS_TRAIN_THREADS", 1, 256) or 1,
            git_sha=env.get("MLOPS_GIT_SHA") or None,
            aws_endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            aws_conn_id=(env.get("MLOPS_AWS_CONN_ID") or "").strip() or None,
            airflow_pool=_pool(env),
            signing_key=_signing_key(env),
            signing_previous_keys=previous_signing_keys(
                env.get("MLOPS_SIGNING_PREVIOUS_KEYS") or "", "MLOPS_SIGNING_PREVIOUS_KEYS"
            ),
            verify_keys=_verify_keys(env),
            signing_conn_id=(env.get("MLOPS_SIGNING_CONN_ID") or "").strip() or None,
            ui_base_url=(env.get("AIRFLOW__API__BASE_URL") or "").strip().rstrip("/") or None,
            trusted_packages=_trusted_packages(env),
        )

    @property
    def serving_client_token(self) -> str | None:
        """The bearer token this deployment's clients send: the first entry of
        `MLOPS_SERVING_API_TOKEN` (entries are `TOKEN` or `NAME:TOKEN`, comma-separated)."""
        if not self.serving_api_tokens:
            return None
        return api_token_entries(self.serving_api_tokens)[0][1]

    def open_store(
        self,
        uri: str | None = None,
        endpoint_url: str | None = None,
        credentials: S3Credentials | None = None,
    ) -> ArtifactStore:
        """The store at `uri` (default: this deployment's), with this deployment's endpoint
        and signing keys (every `Registry` of the store signs with the current key and accepts
        the current and the previous ones).

        The Airflow layer passes the endpoint and keys of its AWS connection; without them
        `AWS_ENDPOINT_URL` and boto3's credential chain apply.
        """
        from mlops_tasks.storage import open_store

        if self.signing_conn_id and not self.signing_key:  # fail closed: never run unsigned
            raise UsageError(
                f"MLOPS_SIGNING_CONN_ID={self.signing_conn_id!r} names an Airflow connection, "
                "which only Airflow tasks read; outside Airflow give the key in MLOPS_SIGNING_KEY"
            )
        endpoint = endpoint_url or self.aws_endpoint_url
        store = open_store(uri or self.store_uri, endpoint_url=endpoint, credentials=credentials)
        store.keyring = self.keyring()
        store.trusted_packages = self.trusted_packages
        return store

    def keyring(self) -> Keyring | None:
        """The keys this deployment signs and checks the registry with (None: no key, nothing
        signed or checked)."""
        from mlops_tasks.signing import keyring

        return keyring(self.signing_key, self.signing_previous_keys, self.verify_keys)

    @cached_property
    def code_version(self) -> dict[str, str | None]:
        """The package version and the git commit it runs from (`MLOPS_GIT_SHA` or git)."""
        sha = self.git_sha
        if not sha:
            try:
                out = subprocess.run(
                    ["git", "rev-parse", "HEAD"],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                )
                sha = out.stdout.strip() or None
            except (OSError, subprocess.SubprocessError):
                sha = None
        return {"package": __version__, "git_sha": sha}
