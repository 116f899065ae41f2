"""Store faults: disk full, a read-only store, a stalled S3 endpoint, failed registrations."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_tasks.cli import main
from mlops_tasks.errors import StoreError
from mlops_tasks.registry import Registry
from mlops_tasks.storage import ArtifactStore, LocalStore, S3Store
from tests.unit.test_registry import lineage, model_bytes, register_gated


def _raise(code: int) -> object:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


FAULTS = [
    pytest.param("fsync", errno.ENOSPC, True, id="disk-full"),
    pytest.param("mkstemp", errno.EROFS, False, id="read-only"),
    pytest.param("mkstemp", errno.EACCES, False, id="permission-denied"),
]


def _inject(monkeypatch: pytest.MonkeyPatch, where: str, code: int) -> None:
    if where == "fsync":
        monkeypatch.setattr(os, "fsync", _raise(code))
    else:
        monkeypatch.setattr(tempfile, "mkstemp", _raise(code))


@pytest.mark.parametrize(("where", "code", "retryable"), FAULTS)
def test_local_write_faults_are_store_errors_and_leave_no_empty_folders(
    local_store: LocalStore, monkeypatch: pytest.MonkeyPatch, where: str, code: int, retryable: bool
) -> None:
    """Disk full / read-only surfaced as raw OSError and left empty dataset folders."""
    local_store.put_bytes("datasets/existing/data.parquet", b"old")
    _inject(monkeypatch, where, code)
    name = errno.errorcode[code]
    writes = [
        ("write", lambda: local_store.put_bytes("datasets/abc/data.parquet", b"x")),
        ("create", lambda: local_store.put_if_absent("models/m/versions/1/claim.json", b"x")),
        ("compare-and-swap", lambda: local_store.compare_and_swap("models/m/a/p.json", {}, None)),
    ]
    for op, write in writes:
        with pytest.raises(StoreError, match=rf"^{op} file://.* failed: .*\({name}\)") as info:
            write()
        assert info.value.retryable is retryable
    monkeypatch.undo()
    dirs = sorted(p.relative_to(local_store.root).as_posix() for p in local_store.root.rglob("*"))
    assert dirs == ["datasets", "datasets/existing", "datasets/existing/data.parquet"]


def test_cli_reports_a_read_only_store_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalStore(tmp_path / "s")
    register_gated(Registry(store), "m")
    _inject(monkeypatch, "mkstemp", errno.EROFS)
    code = main(["promote", "m", "1", "--reason", "x", "--store", store.uri])
    err = capsys.readouterr().err
    assert code == StoreError.exit_code
    assert "failed: Read-only file system (EROFS)" in err and "Traceback" not in err


def test_a_failed_registration_leaves_no_gap_in_version_numbers(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry(store)
    register_gated(reg, "m")
    real_put = store.put_bytes

    def full_disk(key: str, data: bytes) -> None:
        if key.endswith("model.skops"):
            raise StoreError(f"write {store.uri_for(key)} failed: No space left on device")
        real_put(key, data)

    monkeypatch.setattr(store, "put_bytes", full_disk)
    with pytest.raises(StoreError, match="No space left"):
        reg.register("m", model_bytes(1), lineage(), actor="ci")
    monkeypatch.setattr(store, "put_bytes", real_put)
    assert store.list_keys("models/m/versions/2/") == []
    assert reg.register("m", model_bytes(1), lineage(), actor="ci").version == 2
    assert reg.version_numbers("m") == [1, 2]
    assert reg.verify("m")["problems"] == []
    if isinstance(store, LocalStore):
        assert sorted(p.name for p in (store.root / "models/m/versions").iterdir()) == ["1", "2"]


# A stalled S3 endpoint ---------------------------------------------------------------------
@pytest.fixture
def stalled_endpoint() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP server that accepts every connection and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_stalled_s3_endpoint_fails_after_bounded_attempts(
    stalled_endpoint: tuple[str, list[socket.socket]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled endpoint used to hang a run for minutes: no timeouts, unbounded retries."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    url, accepted = stalled_endpoint
    store = S3Store("bucket", "p", endpoint_url=url, read_timeout=0.3, max_attempts=3)
    with pytest.raises(StoreError, match=r"S3 get s3://bucket/p/k.json failed: Read timeout"):
        store.get_bytes("k.json")
    assert len(accepted) == 3  # one connection per attempt, and no more
    with pytest.raises(StoreError, match=r"S3 put s3://bucket/p/k.json failed"):
        store.put_bytes("k.json", b"{}")
    assert len(accepted) == 6


def test_the_default_s3_client_has_explicit_timeouts_and_bounded_retries(s3_endpoint) -> None:
    config = S3Store("b", endpoint_url=s3_endpoint).client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (5.0, 60.0)
    assert config.retries == {"total_max_attempts": 4, "mode": "standard"}
