"""Store faults: disk full, a read-only store, a stalled S3 endpoint, failed registrations."""

from __future__ import annotations

import errno
import itertools
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_tasks.cli import main
from mlops_tasks.errors import StoreError
from mlops_tasks.registry import Registry
from mlops_tasks.storage import STALE_TEMPORARY_SECONDS, ArtifactStore, LocalStore, S3Store
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
    code = main(["promote", "m", "1", "--reason", "new model", "--store", store.uri])
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
    assert reg.verify("m").problems == ()
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


# A reply lost after S3 stored the write ------------------------------------------------------
def lose_replies(
    monkeypatch: pytest.MonkeyPatch, store: S3Store, matching: str, lost: Callable[[int], bool]
) -> list[str]:
    """Let the S3 server handle every request, then lose the reply of the n-th PUT whose URL
    contains `matching` when `lost(n)` (n from 0): the client sees a read timeout and its
    standard retry mode sends the same request again, as after a dropped connection. Returns
    the URLs whose replies were lost."""
    from botocore.exceptions import ReadTimeoutError

    session = store.client._endpoint.http_session
    send, puts, dropped = session.send, itertools.count(), []

    def flaky(request: Any) -> Any:
        reply = send(request)
        if request.method == "PUT" and matching in request.url and lost(next(puts)):
            dropped.append(request.url)
            raise ReadTimeoutError(endpoint_url=request.url)
        return reply

    monkeypatch.setattr(session, "send", flaky)
    return dropped


def test_an_audit_event_whose_reply_was_lost_is_appended_once(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 stored the event and the reply was lost: the client's retry found the key taken and
    the registry took that for a lost race, so the event went in again under the next number
    (20 calls gave 33 events) and verify said ok."""
    reg = Registry(s3_store)
    dropped = lose_replies(monkeypatch, s3_store, "/models/m/audit", lambda n: n % 2 == 0)
    for i in range(20):
        reg.record_event("m", "note", actor="ci", reason=f"change {i}")
    events = reg.audit("m")
    assert len(dropped) >= 20  # every event's first reply, and the head's too
    assert [e["reason"] for e in events] == [f"change {i}" for i in range(20)]
    assert [e["seq"] for e in events] == list(range(1, 21))
    assert len({e["event_id"] for e in events}) == 20
    monkeypatch.undo()
    assert reg.verify("m").problems == ()


def test_an_audit_event_stored_while_every_reply_was_lost_is_not_appended_again(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every attempt's reply lost: the client gives up with a StoreError although the first
    attempt stored the event. The append reads the key back and finds its own event there."""
    reg = Registry(s3_store)
    reg.record_event("m", "note", actor="ci", reason="before")
    dropped = lose_replies(monkeypatch, s3_store, "/models/m/audit/", lambda n: n < 4)
    reg.record_event("m", "note", actor="ci", reason="lost replies")
    assert len(dropped) == 4  # all of the client's attempts
    reg.record_event("m", "note", actor="ci", reason="after")
    monkeypatch.undo()
    assert [e["reason"] for e in reg.audit("m")] == ["before", "lost replies", "after"]
    assert reg.verify("m").problems == ()


# Temporary files that killed writers left ---------------------------------------------------
def _left_behind(root: Path, rel: str, age: float) -> Path:
    """A temporary file as a writer killed before its rename leaves it, `age` seconds old."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a document")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_a_write_removes_the_temporaries_killed_writers_left(tmp_path: Path) -> None:
    """SIGKILL between creating a temporary file and renaming it left `.tmp` files under
    `runs/` that nothing ever removed."""
    store = LocalStore(tmp_path / "s")
    store.put_bytes("runs/r1/result.json", b"{}")
    old = _left_behind(store.root, "runs/r2/.result.json.k3j2.tmp", STALE_TEMPORARY_SECONDS + 60)
    young = _left_behind(store.root, "runs/r3/.result.json.a8b1.tmp", 5)  # a live writer's
    (store.root / LocalStore.SWEPT).unlink(missing_ok=True)  # as if never swept

    LocalStore(store.root).put_bytes("runs/r4/result.json", b"{}")  # a new process sweeps

    assert not old.exists() and not old.parent.exists()  # its empty folder went with it
    assert young.exists()
    assert store.get_bytes("runs/r1/result.json") == b"{}"
    assert LocalStore.SWEPT not in store.list_keys("")  # the marker is never an object
    assert all(not k.endswith(".tmp") for k in store.list_keys(""))


def test_another_process_skips_a_sweep_made_this_period(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put_bytes("runs/r1/result.json", b"{}")  # a new store: nothing to sweep yet
    LocalStore(store.root).put_bytes("runs/r2/result.json", b"{}")  # sweeps, marks the sweep
    assert (store.root / LocalStore.SWEPT).exists()
    old = _left_behind(store.root, "runs/r2/.x.tmp", STALE_TEMPORARY_SECONDS + 60)
    LocalStore(store.root).put_bytes("runs/r5/result.json", b"{}")  # a second process
    assert old.exists()  # left for the next period's sweep


def test_mlops_clean_temporaries_removes_old_ones_and_refuses_a_tiny_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalStore(tmp_path / "s")
    store.put_bytes("models/m/a.json", b"{}")
    old = _left_behind(store.root, "models/m/.a.json.q1.tmp", 7200)
    young = _left_behind(store.root, "models/m/.a.json.q2.tmp", 30)
    assert main(["clean-temporaries", "--store", store.uri]) == 0
    assert capsys.readouterr().out.strip() == "models/m/.a.json.q1.tmp"
    assert not old.exists() and young.exists()
    assert main(["clean-temporaries", "--older-than", "5", "--store", store.uri]) == 2
    err = capsys.readouterr().err
    assert "--older-than 5: at least 60 seconds" in err and "Traceback" not in err
    assert young.exists()
