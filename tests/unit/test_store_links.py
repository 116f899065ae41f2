"""A local store read with `no_symlinks` serves only files under its root: a link planted in a
store folder (to /etc/passwd, Airflow's secrets, another store) is refused at any depth."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlops_tasks.errors import IntegrityError, NotFoundError
from mlops_tasks.storage import LocalStore

KEY = "reports/m/run-1/drift.html"


@pytest.fixture
def planted(tmp_path: Path) -> tuple[LocalStore, Path]:
    """A store with one real report, and a secret file outside it."""
    store = LocalStore(tmp_path / "store")
    store.put_bytes(KEY, b"<!doctype html>report")
    secret = tmp_path / "outside" / "passwords.json"
    secret.parent.mkdir()
    secret.write_text('{"admin": "s3cret"}')
    return store, secret


def test_a_plain_report_is_read(planted: tuple[LocalStore, Path]) -> None:
    store, _ = planted
    assert store.get_bytes(KEY, no_symlinks=True) == b"<!doctype html>report"


@pytest.mark.parametrize(
    ("link", "key"),
    [
        pytest.param("reports/m/run-1/evil.html", "reports/m/run-1/evil.html", id="the-file"),
        pytest.param("reports/m/evil", "reports/m/evil/passwords.json", id="a-run-folder"),
        pytest.param("reports/evil", "reports/evil/passwords.json", id="a-model-folder"),
        pytest.param("reports", "reports/passwords.json", id="the-reports-folder"),
    ],
)
def test_a_link_at_any_depth_is_refused(
    planted: tuple[LocalStore, Path], link: str, key: str
) -> None:
    store, secret = planted
    path = store.root / link
    if path.exists():
        path.rename(path.with_name("moved-aside"))
    os.symlink(secret if link == key else secret.parent, path)
    assert store.get_bytes(key) == secret.read_bytes()  # a plain read follows the link
    with pytest.raises(IntegrityError, match=rf"{link} is a symbolic link; refused"):
        store.get_bytes(key, no_symlinks=True)


def test_missing_and_special_files_are_not_found(planted: tuple[LocalStore, Path]) -> None:
    store, _ = planted
    with pytest.raises(NotFoundError):
        store.get_bytes("reports/m/run-1/missing.html", no_symlinks=True)
    with pytest.raises(NotFoundError):
        store.get_bytes(f"{KEY}/below-a-file.html", no_symlinks=True)
    os.mkfifo(store.root / "reports/m/run-1/fifo.html")  # would block a plain read
    with pytest.raises(NotFoundError):
        store.get_bytes("reports/m/run-1/fifo.html", no_symlinks=True)
