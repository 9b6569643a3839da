"""The two-hosts drill: two worker "hosts" share one PostgreSQL (registry and
delivery ledger) and one Kafka group, and nothing else. Each is SIGKILLed in
turn while pushes are in flight, and started again at once.

A host is a folder that is its worker's working directory, with its own
copies of the providers' key files, its own analytics file and Kafka client
id. Only the database can stop a notification that one host was pushing
when it died, and Kafka then handed to the other, from reaching a phone
twice: duplicated pushes must be 0, and lost ones too, apart from pairs the
ledger holds as maybe delivered (a claim whose worker died mid-push: skipped
by design, counted and reported).

The PostgreSQL is the drill's own, as its Kafka is: a ``LocalPostgres`` on
a free port, started here and stopped at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from bench.drills._common import Context, Result, spread, wait_until
from bench.drills._push import (
    FINISH_TIMEOUT_S,
    KILL_LATENCY_S,
    KILL_PUSH_TIMEOUT_S,
    LATE_S,
    RESUME_TIMEOUT_S,
)
from bench.drills._push_rig import PushRig
from bench.log import say
from bench.redis_server import free_port
from bench.runner import kill, terminate_all
from willowe_tasks.database import PostgresDatabase
from willowe_tasks.database_url import DatabaseUrl
from willowe_tasks.migrations import migrate
from willowe_tasks.testing.localpostgres import LocalPostgres

#: The hosts, killed in turn.
HOSTS = ("host-a", "host-b")

#: SIGKILLs in all, alternating between the hosts.
KILLS = 10

#: Notifications sent (about 2.25 phones each).
NOTIFICATIONS = 400


def two_hosts(ctx: Context) -> Result:
    """KILLS SIGKILLs at spread points of the deliveries, host-a and host-b in turn."""
    with private_postgres(ctx.workdir / "postgres") as url:
        # The push-kill drill's pace: pushes take KILL_LATENCY_S, so a kill
        # finds some in flight, and a dead worker's claims expire in seconds.
        settings = {"PUSH_TIMEOUT_S": KILL_PUSH_TIMEOUT_S, "DATABASE_URL": url}
        with PushRig(ctx, "two-hosts", latency_s=KILL_LATENCY_S, settings=settings) as rig:
            hosts = {name: rig.host(name) for name in HOSTS}
            rig.send(NOTIFICATIONS)
            expected = len(rig.expected())
            workers = {name: rig.start_worker(host) for name, host in hosts.items()}
            kills: list[tuple[str, int]] = []
            try:
                joined = wait_until(lambda: _members(rig) >= set(HOSTS), RESUME_TIMEOUT_S,
                                    progress=rig.progress)
                if joined is None:
                    raise RuntimeError(f"the hosts never both joined the group: {_members(rig)}")
                for i, at in enumerate(spread(expected, KILLS)):
                    name = HOSTS[i % len(HOSTS)]
                    if rig.wait_pushed(at, RESUME_TIMEOUT_S) is None:
                        raise RuntimeError(f"stuck before kill {i + 1}: {rig.progress()}")
                    kill(workers[name])
                    kills.append((name, rig.in_flight()))
                    say(f"  kill {i + 1}/{KILLS}: {name} at {rig.progress()}; "
                        f"{kills[-1][1]} claims in flight")
                    workers[name] = rig.start_worker(hosts[name])
                settled = wait_until(rig.settled, FINISH_TIMEOUT_S, progress=rig.progress)
                time.sleep(LATE_S)
            finally:
                codes = terminate_all(list(workers.values()))
            verdict = rig.verdict()
    maybe = verdict["maybe_delivered_skipped"]
    in_flight = sum(claims for _, claims in kills)
    per_host = ", ".join(f"{host} ×{sum(name == host for name, _ in kills)}" for host in HOSTS)
    return {**verdict, "kills": [name for name, _ in kills],
            "claims_in_flight_per_kill": [claims for _, claims in kills],
            "worker_exits": codes,
            "ok": verdict["ok"] and settled is not None and len(kills) == KILLS,
            "notes": f"{len(kills)} SIGKILLs ({per_host}) with {in_flight} claims in flight; "
                     f"{maybe} maybe-delivered pairs skipped by design, "
                     f"{verdict['maybe_delivered_but_pushed']} of the claims had been pushed"}


def _members(rig: PushRig) -> set[str]:
    """Client ids of the workers in the drill's consumer group."""
    group = rig.env["KAFKA_GROUP_ID"]
    admin = KafkaAdminClient(bootstrap_servers=rig.ctx.bootstrap, client_id="drills")
    try:
        described = admin.describe_groups([group]).get(group, {})
    except KafkaError:
        return set()  # the group's coordinator is still being set up
    finally:
        admin.close()
    return {str(member.get("client_id")) for member in described.get("members", [])}


@contextlib.contextmanager
def private_postgres(home: Path) -> Iterator[str]:
    """A PostgreSQL of the drill's own on a free port, with the schema
    applied; yields its URL and stops it on the way out."""
    scratch = None
    if not LocalPostgres(home).server_can_reach_home():
        # As root the server runs as `postgres`, which may not get into the
        # checkout; a temporary folder it can.
        scratch = home = Path(tempfile.mkdtemp(prefix="willowe-drill-postgres-"))
        home.chmod(0o755)
    server = LocalPostgres(home, port=free_port())
    try:
        server.start()
        database = PostgresDatabase(DatabaseUrl.parse(server.url), pool_size=1)
        try:
            migrate(database)
        finally:
            database.close()
        yield server.url
    finally:
        server.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
