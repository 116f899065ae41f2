"""The production stack (docker-compose.yaml, Dockerfile, .env.example), checked without Docker.

No Docker engine runs on our machines, so nothing here starts a container. The structural tests
read the files; the preflight test runs the stack's own placeholder check under /bin/sh; the last
test asks a compose client to resolve the file (`config`) and skips when none is installed.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_tasks.settings import Settings
from mlops_tasks.signing import public_of
from scripts.compose_env import fernet_key
from scripts.compose_env import main as compose_env_main

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"

AIRFLOW = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
ONE_SHOT = {"preflight", "minio-init", "airflow-init"}
LONG_RUNNING = {"postgres", "redis", "minio", "serving", *AIRFLOW}
OUR_IMAGE = {*AIRFLOW, "airflow-init", "serving", "mlops"}
PUBLISHED = {"airflow-apiserver", "serving", "minio"}  # the UI, predictions, MinIO console
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY\b|_KEY_ID\b|AUTH$|ROOT_USER")
REQUIRED_REF = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]+\}")
URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@\s]+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment must be a mapping (KEY: value)"
    return {k: str(v) for k, v in env.items()}


def requirement_pin(path: Path, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==([^\s#;]+)", path.read_text(), re.MULTILINE)
    assert match, f"{name} is not pinned with == in {path.name}"
    return match.group(1)


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def test_every_service_of_the_stack_is_there(services: dict[str, Any]) -> None:
    assert set(services) == LONG_RUNNING | ONE_SHOT | {"mlops"}
    assert services["mlops"].get("profiles") == ["tools"], "the CLI service runs only on demand"


def test_long_running_services_have_healthchecks_and_restart(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        svc = services[name]
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name} healthcheck has no {key}"
        assert svc.get("restart") == "always", f"{name} is not restarted"
    for name in ONE_SHOT | {"mlops"}:
        assert services[name].get("restart") in (None, "no"), f"one-shot {name} would loop"


def test_dependencies_wait_for_health_or_completion(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert isinstance(spec, dict), f"{name} -> {dep}: use the long form with a condition"
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert spec.get("condition") == want, f"{name} -> {dep}: {spec}"

    def deps(name: str) -> set[str]:
        return set(services[name].get("depends_on") or {})

    for name in AIRFLOW:
        assert {"postgres", "redis", "airflow-init"} <= deps(name), name
    assert {"postgres", "redis"} <= deps("airflow-init")
    # Tasks need the execution API and the bucket; the service and the CLI need the bucket.
    assert {"airflow-apiserver", "minio", "minio-init"} <= deps("airflow-worker")
    assert {"minio", "minio-init"} <= deps("serving")
    assert {"minio", "minio-init"} <= deps("mlops")
    assert deps("minio-init") == {"minio"}
    # Nothing with state starts before the .env check passed.
    for name in ("postgres", "redis", "minio"):
        assert deps(name) == {"preflight"}, name


def test_environment_the_package_needs(services: dict[str, Any]) -> None:
    minio_port = "9000"
    assert minio_port in [str(p) for p in services["minio"]["expose"]]
    for name in OUR_IMAGE:
        env = env_of(services[name])
        assert env["MLOPS_STORE"].startswith("s3://"), name
        assert env["AWS_ENDPOINT_URL"] == f"http://minio:{minio_port}", name
        assert env["MLOPS_SPEC_DIR"] == "/opt/airflow/dags/specs", name
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            assert env.get(key), f"{name} has no {key}"
    for name in AIRFLOW | {"airflow-init"}:
        env = env_of(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "@postgres:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert "@redis:6379/" in env["AIRFLOW__CELERY__BROKER_URL"]
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-apiserver:8080/execution/"
        )
        for key in (
            "AIRFLOW__CORE__FERNET_KEY",
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__API__SECRET_KEY",
        ):
            assert env.get(key), f"{name} has no {key}"
        # Deploy verification reaches the prediction service on the compose network.
        assert env["MLOPS_SERVING_URL"] == "http://serving:8000", name
        for shared in ("MLOPS_SERVING_TOKEN", "MLOPS_SERVING_API_TOKEN", "MLOPS_VERIFY_KEYS"):
            assert env[shared] == env_of(services["serving"])[shared], (name, shared)
        assert env["MLOPS_SIGNING_KEY"] == "${MLOPS_SIGNING_KEY:?set MLOPS_SIGNING_KEY in .env}"
    assert "8080" in " ".join(services["airflow-apiserver"]["ports"])
    serve = services["serving"]["command"]
    assert serve[:2] == ["mlops", "serve"] and serve[serve.index("--port") + 1] == "8000"
    assert serve[serve.index("--host") + 1] == "0.0.0.0"  # published on 127.0.0.1 only
    # The package still reads these names (a rename must update the stack too).
    source = "\n".join(p.read_text() for p in (REPO / "mlops_tasks").rglob("*.py"))
    for key in (
        "MLOPS_STORE",
        "AWS_ENDPOINT_URL",
        "MLOPS_SERVING_URL",
        "MLOPS_SERVING_TOKEN",
        "MLOPS_SERVING_API_TOKEN",
        "MLOPS_SIGNING_KEY",
        "MLOPS_SPEC_DIR",
    ):
        assert f'"{key}"' in source, f"mlops_tasks no longer reads {key}"
    assert (REPO / "dags" / "specs").is_dir()


def _policy(services: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The statements of the bucket policy `name` that minio-init writes (bucket `mlops`)."""
    script = services["minio-init"]["command"][0]
    body = re.search(rf"cat > /tmp/{name}\.json <<EOF\n(.*?)\n\s*EOF\n", script, re.S)
    assert body, f"minio-init writes no policy {name}"
    doc = json.loads(body.group(1).replace("$${MLOPS_BUCKET}", "mlops"))
    assert f"mc admin policy create store {name} /tmp/{name}.json" in script
    return list(doc["Statement"])


def test_the_service_reads_the_store_and_only_appends_its_logs(
    services: dict[str, Any],
) -> None:
    """Least privilege: the prediction service gets a store account of its own that can read
    the registry and add inference and feedback parts, and change nothing else."""
    serving, rw = env_of(services["serving"]), "${MLOPS_S3_ACCESS_KEY:?"
    assert serving["AWS_ACCESS_KEY_ID"].startswith("${MLOPS_S3_SERVING_ACCESS_KEY:?")
    assert serving["AWS_SECRET_ACCESS_KEY"].startswith("${MLOPS_S3_SERVING_SECRET_KEY:?")
    for name in OUR_IMAGE - {"serving"}:  # tasks, Models view and CLI write the registry
        env = env_of(services[name])
        assert env["AWS_ACCESS_KEY_ID"].startswith(rw), name
        assert "MLOPS_S3_SERVING" not in " ".join(env.values()), name
    statements = _policy(services, "mlops-serving")
    allowed = {(a, r) for st in statements for a in st["Action"] for r in st["Resource"]}
    assert all(st["Effect"] == "Allow" for st in statements)
    assert {a for a, _ in allowed} == {
        "s3:ListBucket",
        "s3:GetBucketLocation",
        "s3:GetObject",
        "s3:PutObject",
    }
    assert {r for a, r in allowed if a == "s3:PutObject"} == {
        "arn:aws:s3:::mlops/store/inference/*",
        "arn:aws:s3:::mlops/store/feedback/*",
    }
    assert {r for a, r in allowed if a == "s3:GetObject"} == {"arn:aws:s3:::mlops/*"}
    assert env_of(services["serving"])["MLOPS_STORE"] == "s3://${MLOPS_BUCKET:-mlops}/store"
    script = services["minio-init"]["command"][0]
    attach = 'mc admin policy attach store mlops-serving --user "$${MLOPS_S3_SERVING_ACCESS_KEY}"'
    assert attach in script
    assert 'mlops-rw --user "$${MLOPS_S3_SERVING_ACCESS_KEY}"' not in script
    rw_actions = {a for st in _policy(services, "mlops-rw") for a in st["Action"]}
    assert "s3:DeleteObject" in rw_actions  # the tasks' account is the one that may delete
    # The writers accept the keys of a rotation under way; every reader checks with the
    # public keys; the service holds no key that signs (an HMAC key or Ed25519 private key).
    for name in OUR_IMAGE:
        env = env_of(services[name])
        assert env["MLOPS_VERIFY_KEYS"].startswith("${MLOPS_VERIFY_KEYS:?"), name
        if name != "serving":
            assert env["MLOPS_SIGNING_PREVIOUS_KEYS"] == "${MLOPS_SIGNING_PREVIOUS_KEYS:-}", name
    assert serving["MLOPS_SIGNING_KEY"] == serving["MLOPS_SIGNING_PREVIOUS_KEYS"] == ""


def test_airflow_image_is_the_version_in_requirements() -> None:
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert len(froms) == 1, froms
    match = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", froms[0])
    assert match, f"not an exact official Airflow image tag: {froms[0]}"
    airflow, python = match.groups()
    assert airflow == requirement_pin(REPO / "requirements.txt", "apache-airflow")
    assert airflow == requirement_pin(REPO / "requirements.in", "apache-airflow")
    assert f'requires-python = ">={python}' in (REPO / "pyproject.toml").read_text()


def test_image_installs_the_pinned_providers_and_the_package(services: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text()
    assert "-r /tmp/mlops/requirements.txt" in text
    assert "pip install --no-cache-dir --no-deps /tmp/mlops" in text
    for directory in ("dags", "plugins"):
        assert re.search(rf"^COPY .*\b{directory} /opt/airflow/{directory}$", text, re.MULTILINE)
    pins = dict(re.findall(r'"(apache-airflow-providers-[a-z-]+)==([^"]+)"', text))
    assert {"apache-airflow-providers-celery", "apache-airflow-providers-fab"} <= set(pins)
    for name, version in pins.items():
        assert version == requirement_pin(REPO / "requirements.in", name), name
    # Our own image: one name for every service that runs it, tagged with what it contains.
    airflow = requirement_pin(REPO / "requirements.txt", "apache-airflow")
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version
    images = {services[name]["image"] for name in OUR_IMAGE}
    assert images == {f"mlops-platform:{version.group(1)}-airflow{airflow}"}
    for name in OUR_IMAGE:
        assert services[name]["build"]["context"] == ".", name


def test_every_image_is_pinned_by_tag(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        # A release, not a moving major line such as postgres:16.
        assert re.search(r"\d+\.\d+|RELEASE\.\d{4}-\d\d-\d\dT", tag), f"{name}: {image}"


def test_no_secret_literals(compose: dict[str, Any]) -> None:
    required = set()

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if value == "":  # withheld on purpose (the service's signing key)
                    continue
                if isinstance(value, (str, int, float)) and SECRET_NAME.search(str(key)):
                    ref = REQUIRED_REF.fullmatch(str(value))
                    assert ref, f"{where}.{key} must be ${{VAR:?...}} from .env, not a literal"
                    required.add(ref.group(1))
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
        elif isinstance(node, str):
            for password in URL_PASSWORD.findall(node):
                assert REQUIRED_REF.fullmatch(password), f"{where}: password in URL: {node}"
            for flag in re.findall(r"--(?:password|requirepass)\s+(\S+)", node):
                assert flag.strip("\"'").startswith("$"), f"{where}: literal {flag}"
            required.update(REQUIRED_REF.findall(node))

    walk(compose, "compose")
    # Every required value is documented in .env.example, with an obviously fake placeholder
    # where it is a secret; the real .env is ignored by git and by the image build.
    example = env_example()
    assert required <= set(example), sorted(required - set(example))
    for name, value in example.items():
        if SECRET_NAME.search(name) and name != "AIRFLOW_ADMIN_USERNAME":
            assert "CHANGE_ME" in value, f".env.example: {name} must be a placeholder"
    assert ".env" in (REPO / ".gitignore").read_text().split()
    ignore = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in ignore if ln and not ln.startswith("#")]
    assert rules[0] == "*", ".dockerignore must exclude everything, then allow what is copied"
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    assert not any(a.startswith(".env") for a in allowed)
    copied = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for source in " ".join(copied).split():
        assert source in allowed, f"the Dockerfile copies {source}, which .dockerignore drops"


def test_worker_is_scalable_and_only_three_ports_are_published(services: dict[str, Any]) -> None:
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker
    for name, svc in services.items():
        assert "container_name" not in svc, f"{name}: a fixed name blocks scaling and projects"
        assert "network_mode" not in svc, name
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert {n for n, s in services.items() if s.get("ports")} == PUBLISHED
    assert worker["command"] == "celery worker"
    assert env_of(worker)["DUMB_INIT_SETSID"] == "0"  # warm shutdown on stop


def test_init_jobs_migrate_create_the_admin_and_the_bucket(services: dict[str, Any]) -> None:
    init = " ".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "airflow users create --role Admin" in init
    assert "set -euo pipefail" in init  # a failed step fails the job and stops the stack
    bucket = services["minio-init"]["command"][0]
    assert "mc mb --ignore-existing" in bucket and "mc admin user add" in bucket
    assert bucket.lstrip().startswith("set -eu")
    assert services["minio-init"]["image"].startswith("minio/mc:")


def test_shell_scripts_parse(services: dict[str, Any]) -> None:
    """Every script the stack runs in a shell is at least valid shell (`sh -n`, `bash -n`)."""
    scripts: list[tuple[str, str, str]] = []
    for name, svc in services.items():
        entry, command = svc.get("entrypoint") or [], svc.get("command") or []
        if entry == ["/bin/sh", "-c"]:
            scripts.append((name, "sh", command[0]))
        elif isinstance(command, list) and command[:2] == ["bash", "-c"]:
            scripts.append((name, "bash", command[2]))
        elif isinstance(command, list) and command[:2] == ["sh", "-c"]:
            scripts.append((name, "sh", command[2]))
        test = (svc.get("healthcheck") or {}).get("test") or []
        if test[:1] == ["CMD-SHELL"]:
            scripts.append((f"{name} healthcheck", "sh", test[1]))
    assert {n for n, _, _ in scripts} >= {"preflight", "minio-init", "airflow-init", "redis"}
    for name, shell, script in scripts:
        out = subprocess.run(
            [shell, "-n", "-c", script.replace("$$", "$")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, f"{name}: {out.stderr}"


def _preflight(services: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = services["preflight"]["command"][0].replace("$$", "$")  # compose's escaping
    return subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_preflight_refuses_placeholders_and_bad_fernet_keys(
    services: dict[str, Any], tmp_path: Path
) -> None:
    names = set(env_of(services["preflight"]))
    example = {k: v for k, v in env_example().items() if k in names}
    assert set(example) == names
    out = _preflight(services, example)
    assert out.returncode == 1
    assert "POSTGRES_PASSWORD" in out.stdout and "CHANGE_ME" not in out.stdout  # names only

    assert compose_env_main(["--out", str(tmp_path / ".env")]) == 0
    generated = {k: v for k, v in _read_env(tmp_path / ".env").items() if k in names}
    out = _preflight(services, generated)
    assert out.returncode == 0, out.stdout + out.stderr

    rotating = f"{fernet_key()},{generated['AIRFLOW_FERNET_KEY']}"  # new,old during a rotation
    out = _preflight(services, {**generated, "AIRFLOW_FERNET_KEY": rotating})
    assert out.returncode == 0, out.stdout + out.stderr
    for bad in ("not-a-fernet-key", f"{fernet_key()},short", fernet_key()[:-4]):
        out = _preflight(services, {**generated, "AIRFLOW_FERNET_KEY": bad})
        assert out.returncode == 1 and "AIRFLOW_FERNET_KEY" in out.stdout, bad


def _read_env(path: Path) -> dict[str, str]:
    pairs = (ln.partition("=") for ln in path.read_text().splitlines())
    return {k: v for k, sep, v in pairs if sep and not k.startswith("#")}


def test_compose_env_writes_fresh_secrets_once(tmp_path: Path) -> None:
    out = tmp_path / ".env"
    assert compose_env_main(["--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    env = _read_env(out)
    assert set(env) == set(env_example())
    assert not [k for k, v in env.items() if "CHANGE_ME" in v]
    assert len(base64.urlsafe_b64decode(env["AIRFLOW_FERNET_KEY"])) == 32
    # A matching Ed25519 pair: the writers' private key, the public key everyone checks with.
    assert public_of(env["MLOPS_SIGNING_KEY"], "t") == env["MLOPS_VERIFY_KEYS"]
    assert Settings.from_env({"MLOPS_VERIFY_KEYS": env["MLOPS_VERIFY_KEYS"]}).keyring()
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", env["POSTGRES_PASSWORD"])
    assert 3 <= len(env["MLOPS_S3_ACCESS_KEY"]) <= 20 and len(env["MLOPS_S3_SECRET_KEY"]) <= 40
    before = out.read_text()
    assert compose_env_main(["--out", str(out)]) == 1  # never overwrites
    assert out.read_text() == before
    other = tmp_path / "other.env"
    compose_env_main(["--out", str(other)])
    assert _read_env(other)["POSTGRES_PASSWORD"] != env["POSTGRES_PASSWORD"]


def _compose_client() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose`; both resolve a file without an engine."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_config_accepts_the_file(tmp_path: Path) -> None:
    client = _compose_client()
    if client is None:
        pytest.skip(
            "no compose client installed (neither `docker compose` nor `docker-compose`;"
            " `apt-get install --no-install-recommends docker-compose` provides one that"
            " validates the file offline)"
        )
    env_file = tmp_path / ".env"
    assert compose_env_main(["--out", str(env_file)]) == 0
    clean_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}

    def config(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*client, "--env-file", str(path), "-f", str(COMPOSE), "config"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=clean_env,
            cwd=tmp_path,
        )

    out = config(env_file)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    secrets = _read_env(env_file)
    for name in OUR_IMAGE:
        env = resolved["services"][name]["environment"]
        assert env["MLOPS_STORE"] == "s3://mlops/store"
        account = "MLOPS_S3_SERVING_SECRET_KEY" if name == "serving" else "MLOPS_S3_SECRET_KEY"
        assert env["AWS_SECRET_ACCESS_KEY"] == secrets[account], name
        assert not [v for v in env.values() if "${" in str(v)], name
    assert (
        resolved["services"]["airflow-worker"]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
        == f"redis://:{secrets['REDIS_PASSWORD']}@redis:6379/0"
    )

    # Without the secrets it refuses, naming what is missing.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = config(empty)
    assert out.returncode != 0
    assert "in .env" in out.stderr
