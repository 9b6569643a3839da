"""compose.yaml parses, agrees with the topic specs and the settings, and its
worker runs as the image would: as an unprivileged user in a folder it can't
write, with exactly compose's environment and secrets, against a real
secured Kafka and PostgreSQL, delivering to a phone a separate web process
registered."""

from __future__ import annotations

import os
import pwd
import re
import secrets as secrets_module
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from compose_support import (
    COMPOSE,
    MissingVariable,
    as_user,
    interpolate,
    load,
    moved_to,
    service_environment,
    unprivileged_account,
    volume_targets,
)
from support import revoke_application_acls, run_web_process, wait_until

from broker.encryption import KeyRing
from broker.localkafka.secure import SecureLocalKafka
from willowe_tasks.analytics import read_events
from willowe_tasks.app import App
from willowe_tasks.audit import read_trail
from willowe_tasks.database import PostgresDatabase
from willowe_tasks.database_url import DatabaseUrl
from willowe_tasks.registry.postgres import PostgresDeviceRegistry
from willowe_tasks.settings import Settings, load_settings, settings_from
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env
from willowe_tasks.testing.localpostgres import LocalPostgres
from willowe_tasks.topics import ALL_TOPIC_SPECS

ROOT = Path(__file__).resolve().parents[1]


def test_it_has_kafka_postgresql_the_setup_jobs_and_workers() -> None:
    services = load()["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["topics"]["command"] == ["python", "-m", "willowe_tasks", "topics"]
    assert services["worker"]["command"][:2] == ["dramatiq", "willowe_tasks"]
    assert services["worker"]["depends_on"]["topics"]["condition"] == \
        "service_completed_successfully"


def test_app_services_use_only_known_setting_names() -> None:
    known = {name.upper() for name in Settings.model_fields}
    for service in ("topics", "acls", "db", "worker"):
        env = load()["services"][service]["environment"]
        assert set(env) <= known, set(env) - known
    assert set(load()["x-web-env"]) <= known


def test_kafka_setup_needs_no_database_and_the_schema_job_no_kafka() -> None:
    topics = load()["services"]["topics"]
    db = load()["services"]["db"]
    assert topics["environment"]["KAFKA_BROKER"] == "kafka:9092"
    assert not any(name.startswith("DATABASE_") for name in topics["environment"])
    assert "postgres" not in topics.get("depends_on", {})
    assert db["command"] == ["python", "-m", "willowe_tasks", "db", "migrate"]
    assert not any(name.startswith("KAFKA_") for name in db["environment"])
    assert db["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_workers_are_replicas_on_postgresql_with_a_volume_to_write_to() -> None:
    compose = load()
    worker = compose["services"]["worker"]
    assert int(interpolate(str(worker["deploy"]["replicas"]), {})) >= 2
    for job in ("topics", "acls", "db"):
        assert worker["depends_on"][job]["condition"] == "service_completed_successfully"
    env = service_environment("worker", {"POSTGRES_PASSWORD": "secret"})
    assert env["KAFKA_BROKER"] == "kafka:9092"
    database = load_settings(database_url=env["DATABASE_URL"]).database
    assert database is not None and database.target == "postgres:5432/willowe"
    # Everything a worker writes lands on its volume, never in /app (read-only for nobody).
    volume, target = worker["volumes"][0].split(":")
    assert volume in compose["volumes"]
    assert env["ANALYTICS_PATH"].startswith(target + "/")
    # The database's user and name are the postgres service's own.
    postgres = compose["services"]["postgres"]["environment"]
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"]) == ("willowe", "willowe")
    assert postgres["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (in .env)}"


def test_compose_refuses_to_start_without_a_database_password() -> None:
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        service_environment("worker", {})
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        service_environment("db", {"POSTGRES_PASSWORD": ""})


def test_defaults_in_compose_match_the_settings_defaults() -> None:
    env = load()["services"]["worker"]["environment"]
    for name, value in env.items():
        default = re.fullmatch(r"\$\{\w+:-(.*)\}", str(value))
        if default:
            assert default.group(1) == str(Settings.model_fields[name.lower()].default), name


def test_topics_come_from_the_specs_not_from_auto_creation() -> None:
    text = COMPOSE.read_text()
    kafka_env = load()["services"]["kafka"]["environment"]
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # Any topic compose names must be one of ours; partition counts are never restated.
    named = set(re.findall(r"[a-z]+-priority-notifications(?:\.[DX]Q)?", text))
    assert named <= {spec.name for spec in ALL_TOPIC_SPECS}
    assert "partitions" not in text


# -- the compose worker, without Docker -------------------------------------------

#: Bound on each wait of the run below, in seconds.
WAIT_S = 120.0


def test_the_compose_worker_runs_unprivileged_in_a_read_only_folder_and_delivers(
    secure_kafka: SecureLocalKafka, local_postgres: LocalPostgres, postgres_database_url: str,
) -> None:
    account = unprivileged_account()
    scratch = Path(tempfile.mkdtemp(prefix="willowe-compose-"))
    scratch.chmod(0o755)  # the unprivileged user must get through to its parts
    try:
        with FakeAPNs() as apns, FakeFCM() as fcm:
            _run_compose_worker(secure_kafka, local_postgres, postgres_database_url,
                                account, scratch, apns, fcm)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_compose_worker(kafka: SecureLocalKafka, server: LocalPostgres, url: str,
                        account: pwd.struct_passwd | None, scratch: Path,
                        apns: FakeAPNs, fcm: FakeFCM) -> None:
    # What an operator's .env would hold: the password, a group of this test's
    # own (the test Kafka is shared), and the providers' settings.
    group = f"test-compose-{uuid.uuid4().hex[:8]}"
    secrets = _credentials(scratch / "secrets", apns, fcm, account)
    dotenv = {"POSTGRES_PASSWORD": _password(url), "KAFKA_GROUP_ID": group, **secrets}
    database = urlsplit(url).path.lstrip("/")
    # What compose mounts under /run/secrets: the test's secured Kafka's files.
    run_secrets = _kafka_secrets(kafka, scratch / "run-secrets", account)
    tmp = _owned_folder(scratch / "tmp", account)

    def container_env(service: str, volumes: dict[str, Path]) -> dict[str, str]:
        return moved(service_environment(service, dotenv), volumes)

    def moved(env: dict[str, str], volumes: dict[str, Path]) -> dict[str, str]:
        for name, value in env.items():
            for target, folder in {**volumes, "/run/secrets": run_secrets}.items():
                value = value.replace(target, str(folder))
            env[name] = value
        if "KAFKA_BROKER" in env:
            assert env["KAFKA_BROKER"] == "kafka:9092"
            env["KAFKA_BROKER"] = kafka.bootstrap_servers
        if "DATABASE_URL" in env:
            env["DATABASE_URL"] = moved_to(env["DATABASE_URL"], host=server.host,
                                           port=server.port, database=database)
        # Only what an image has besides: PATH, where the code is (this
        # checkout), and a /tmp of its own (the host's may hold folders other
        # users made, such as the static members' slots).
        return {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), **env}

    # /app: the image's working folder, which its user can't write.
    app_dir = scratch / "app"
    app_dir.mkdir(mode=0o555)
    assert not _can_write(app_dir, account)
    # The worker's volume, owned by the image's user (Dockerfile: chown nobody).
    volumes = {target: _owned_folder(scratch / f"volume{n}", account)
               for n, target in enumerate(volume_targets("worker"))}
    # env_file (.env) first: compose's `environment` wins over it.
    worker_env = {**secrets, **container_env("worker", volumes)}

    # The one-shot jobs, each with its own environment only (topics and acls
    # as Kafka's admin: the ACL table for this test's group).
    for job in ("db", "topics", "acls"):
        command = _image_command(load()["services"][job]["command"])
        done = subprocess.run(as_user(account, command), cwd=app_dir,
                              env=container_env(job, volumes), capture_output=True, text=True,
                              timeout=WAIT_S)
        assert done.returncode == 0, f"{job}: {done.stdout[-2000:]}{done.stderr[-2000:]}"

    flusher = App(settings_from({**kafka.client_env("admin"), "KAFKA_GROUP_ID": group}))
    flusher.broker.flush_all()  # earlier tests' messages are for other users
    flusher.close()

    log = scratch / "worker.log"
    with log.open("wb") as out:
        command = _image_command(load()["services"]["worker"]["command"])
        worker = subprocess.Popen(as_user(account, command), cwd=app_dir, env=worker_env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        registry = PostgresDeviceRegistry(PostgresDatabase(DatabaseUrl.parse(
            worker_env["DATABASE_URL"])))
        token = secrets_module.token_hex(32)
        # A web server registers the phone: Kafka settings only (as `web`), no database.
        web_env = moved({name: interpolate(str(value), dotenv)
                         for name, value in load()["x-web-env"].items()}, {})
        web_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp),
                   **web_env}
        said = run_web_process(web_env, [
            ["register_device", ["compose-user", "ios", token.upper(), apns.bundle_id]],
            ["register_device", ["compose-user", "ios", "not-hex", apns.bundle_id]]])
        assert said[0].startswith("sent ")
        assert said[1].startswith("error DeviceValidationError token: ")
        assert wait_until(lambda: bool(registry.devices_for("compose-user")) or
                          worker.poll() is not None, WAIT_S), log.read_text()[-3000:]
        assert worker.poll() is None, log.read_text()[-3000:]
        assert [d.token for d in registry.devices_for("compose-user")] == [token]
        # and later sends it a match, and an analytics event.
        run_web_process(web_env, [
            ["send_match", ["compose-user", {"name": "Анна", "age": 25}]],
            ["track_event", ["compose_login", {"userId": "compose-user"}]]])
        analytics = Path(worker_env["ANALYTICS_PATH"])
        # (The sink's file may exist before the event's line is in it.)
        assert wait_until(lambda: bool(apns.delivered) and analytics.exists()
                          and bool(read_events(analytics)), WAIT_S), log.read_text()[-3000:]
        [push] = apns.delivered
        assert push.token == token
        assert push.json["aps"]["alert"]["body"] == "Анна, 25"
        assert [e["event"] for e in read_events(analytics)] == ["compose_login"]
        registry.close()
    finally:
        _stop(worker)
        revoke_application_acls(kafka)  # other tests expect users without ACLs
    # The trail on the volume: the jobs' changes as admin, the worker as worker.
    trail = read_trail(worker_env["AUDIT_LOG_PATH"])
    whats = {(e["what"], e["who"]["principal"]) for e in trail}
    assert {("acl.grant", "User:admin"), ("worker.start", "User:worker"),
            ("device.register", "User:worker")} <= whats, whats
    # Nothing was written anywhere but the volume.
    assert list(app_dir.iterdir()) == []
    if account is not None:
        assert analytics.stat().st_uid == account.pw_uid
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _kafka_secrets(kafka: SecureLocalKafka, folder: Path,
                   account: pwd.struct_passwd | None) -> Path:
    """compose's Kafka secrets, from the secured Kafka's files, readable by
    the image's user (as docker mounts them), under the names compose gives."""
    folder.mkdir()
    files = {"kafka_ca": kafka.ca_file.read_text(),
             "payload_keys": KeyRing((KeyRing.new_key("compose"),)).render()}
    for user in ("admin", "web", "worker"):
        files[f"kafka_{user}_password"] = kafka.password(user) + "\n"
    for name, text in files.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o400)
    for path in [folder, *folder.iterdir()]:
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)
    return folder


def _image_command(command: list[str]) -> list[str]:
    """compose's command with this checkout's interpreter and dramatiq."""
    tools = {"python": sys.executable, "dramatiq": str(Path(sys.executable).with_name("dramatiq"))}
    return [tools.get(command[0], command[0]), *command[1:]]


def _credentials(folder: Path, apns: FakeAPNs, fcm: FakeFCM,
                 account: pwd.struct_passwd | None) -> dict[str, str]:
    """The providers' settings, with their files copied where the image's user
    can read them (as key files mounted into a container would be)."""
    env = fake_provider_env(apns, fcm, folder, own_copies=True)
    for path in [folder, *folder.iterdir()]:
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)
    return {name: value for name, value in env.items() if name.startswith(("APNS_", "FCM_"))}


def _owned_folder(folder: Path, account: pwd.struct_passwd | None) -> Path:
    folder.mkdir()
    if account is not None:
        os.chown(folder, account.pw_uid, account.pw_gid)
    return folder


def _can_write(folder: Path, account: pwd.struct_passwd | None) -> bool:
    probe = subprocess.run(as_user(account, [
        sys.executable, "-c", f"import os, sys; sys.exit(os.access({str(folder)!r}, os.W_OK))"]))
    return probe.returncode == 1


def _password(url: str) -> str:
    return unquote(urlsplit(url).password or "")


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
