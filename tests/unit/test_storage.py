"""The artifact-store contract, run against the local backend and a real S3 endpoint."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mlops_tasks.errors import (
    ConcurrentUpdateError,
    IntegrityError,
    NotFoundError,
    StoreError,
)
from mlops_tasks.storage import ArtifactStore, LocalStore, S3Store, open_store, resolve


def test_put_get_roundtrip(store: ArtifactStore) -> None:
    store.put_bytes("a/b/c.bin", b"\x00\x01payload")
    assert store.get_bytes("a/b/c.bin") == b"\x00\x01payload"
    assert store.exists("a/b/c.bin")
    assert not store.exists("a/b/missing.bin")


def test_put_replaces_atomically(store: ArtifactStore) -> None:
    store.put_bytes("k", b"one")
    store.put_bytes("k", b"two")
    assert store.get_bytes("k") == b"two"


def test_get_missing_raises_not_found_naming_the_uri(store: ArtifactStore) -> None:
    with pytest.raises(NotFoundError, match=r"nope/x\.json does not exist"):
        store.get_bytes("nope/x.json")


def test_list_prefix_is_recursive_and_sorted(store: ArtifactStore) -> None:
    for k in ["m/2/x", "m/1/y", "m/1/sub/z", "other/q", "mm/no"]:
        store.put_bytes(k, b"-")
    assert store.list_keys("m/") == ["m/1/sub/z", "m/1/y", "m/2/x"]
    assert store.list_dirs("m") == ["1", "2"]
    assert store.list_keys("absent/") == []


def test_json_roundtrip_and_bad_json_names_the_uri(store: ArtifactStore) -> None:
    store.put_json("j/obj.json", {"a": [1, 2]})
    assert store.get_json("j/obj.json") == {"a": [1, 2]}
    store.put_bytes("j/bad.json", b"{not json")
    with pytest.raises(IntegrityError, match=r"j/bad.json: not valid JSON") as info:
        store.get_json("j/bad.json")
    assert info.value.exit_code == 5
    with pytest.raises(IntegrityError, match=r"j/bad.json: not valid JSON"):
        store.read_json_versioned("j/bad.json")
    data, token = store.read_bytes_versioned("j/bad.json")
    assert data == b"{not json" and token  # a repair can still compare-and-swap it


def test_put_if_absent_creates_once(store: ArtifactStore) -> None:
    assert store.put_if_absent("once", b"first") is True
    assert store.put_if_absent("once", b"second") is False
    assert store.get_bytes("once") == b"first"


def test_put_if_absent_has_exactly_one_winner_under_contention(store: ArtifactStore) -> None:
    """25 rounds of 8 threads racing for one key each: one winner per key (S3's guarantee,
    which `tests.s3server` gives moto's server)."""
    for round_ in range(25):
        key = f"race-{round_}"
        wins: list[int] = []
        barrier = threading.Barrier(8)

        def attempt(i: int, key: str = key, wins: list[int] = wins, barrier: Any = barrier) -> None:
            barrier.wait()
            if store.put_if_absent(key, str(i).encode()):
                wins.append(i)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1, (key, wins)
        assert store.get_bytes(key) == str(wins[0]).encode()


def test_compare_and_swap(store: ArtifactStore) -> None:
    assert store.read_json_versioned("alias.json") == (None, None)
    t1 = store.compare_and_swap("alias.json", {"v": 1}, None)
    with pytest.raises(ConcurrentUpdateError, match="changed since it was read"):
        store.compare_and_swap("alias.json", {"v": 9}, None)  # must-not-exist fails now
    obj, token = store.read_json_versioned("alias.json")
    assert obj == {"v": 1} and token == t1
    t2 = store.compare_and_swap("alias.json", {"v": 2}, t1)
    with pytest.raises(ConcurrentUpdateError):
        store.compare_and_swap("alias.json", {"v": 3}, t1)  # stale token
    assert store.read_json_versioned("alias.json") == ({"v": 2}, t2)


def test_cas_increments_are_never_lost(store: ArtifactStore) -> None:
    store.compare_and_swap("counter.json", {"n": 0}, None)

    def bump(times: int) -> None:
        done = 0
        while done < times:
            obj, token = store.read_json_versioned("counter.json")
            try:
                store.compare_and_swap("counter.json", {"n": obj["n"] + 1}, token)
                done += 1
            except ConcurrentUpdateError:
                continue

    threads = [threading.Thread(target=bump, args=(10,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_json("counter.json") == {"n": 40}


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("/abs", id="absolute"),
        pytest.param("a/../b", id="dotdot"),
        pytest.param("a//b", id="empty-segment"),
    ],
)
def test_invalid_keys_are_rejected(store: ArtifactStore, key: str) -> None:
    with pytest.raises(StoreError, match="invalid store key"):
        store.put_bytes(key, b"x")


def test_local_writes_leave_no_temp_files(local_store: LocalStore) -> None:
    for i in range(5):
        local_store.put_bytes("x/y", str(i).encode())
        local_store.compare_and_swap(f"x/a{i}.json", {"i": i}, None)
        local_store.put_if_absent("x/once", b"z")
    names = sorted(p.name for p in (local_store.root / "x").iterdir())
    assert not [n for n in names if n.endswith(".tmp")]
    assert local_store.list_keys("x/") == sorted(
        ["x/y", "x/once", *[f"x/a{i}.json" for i in range(5)]]
    )


def test_open_store_chooses_backend_by_uri(tmp_path, s3_endpoint) -> None:
    assert isinstance(open_store(tmp_path.as_uri()), LocalStore)
    s3 = open_store("s3://bucket-x/some/prefix", endpoint_url=s3_endpoint)
    assert isinstance(s3, S3Store) and s3.prefix == "some/prefix"
    assert s3.uri_for("k") == "s3://bucket-x/some/prefix/k"
    with pytest.raises(StoreError, match="unsupported store URI 'ftp://x'"):
        open_store("ftp://x")


def test_a_two_slash_file_uri_is_refused_at_once(tmp_path) -> None:
    """`file://data/x` names host `data`: refused up front instead of walking `/`."""
    with pytest.raises(StoreError, match=r"file:// needs an absolute path, as in file:///data"):
        open_store("file://data/store")


def test_settings_read_the_store_from_the_environment(tmp_path, s3_endpoint) -> None:
    from mlops_tasks.settings import Settings

    local = Settings.from_env({"MLOPS_STORE": (tmp_path / "env").as_uri()})
    assert local.open_store().uri == (tmp_path / "env").as_uri()
    remote = Settings.from_env({"MLOPS_STORE": "s3://b/p", "AWS_ENDPOINT_URL": s3_endpoint})
    store = remote.open_store()
    assert isinstance(store, S3Store) and store.endpoint_url == s3_endpoint


def test_resolve_store_relative_uris(local_store: LocalStore) -> None:
    st, key = resolve("store://demo/batches", local_store)
    assert st is local_store and key == "demo/batches"
    st2, key2 = resolve("file:///tmp/data/x.parquet", local_store)
    assert isinstance(st2, LocalStore) and key2 == "tmp/data/x.parquet"


def test_each_s3_store_reads_the_aws_chain_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3's default session keeps the keys it resolved first for the life of the process; a
    store built after the environment's keys changed (a rotation) must use the new ones."""
    import boto3

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "FIRSTKEY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "firstsecret01")
    boto3.client("s3", region_name="us-east-1")  # what an earlier user of the default session did
    first = S3Store("b", endpoint_url="http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ROTATEDKEY02")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rotatedsecret02")
    second = S3Store("b", endpoint_url="http://127.0.0.1:9")
    keys = [s.client._get_credentials() for s in (first, second)]
    assert [(k.access_key, k.secret_key) for k in keys] == [
        ("FIRSTKEY01", "firstsecret01"),
        ("ROTATEDKEY02", "rotatedsecret02"),
    ]
    # Another bucket of the same store is reached with the same client.
    assert second.sibling("other").client is second.client
